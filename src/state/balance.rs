//! Load-balancing policies: which pool member gets the next client.
//!
//! A [`Policy`] is built for one pool's member list when a routing snapshot is built, so it can
//! precompute what it needs (the weighted sequence, the single-node order) off the hot path. A pick
//! is lock-free: at most one atomic increment plus reads of the members' atomic counters.
//!
//! `pick` takes an `eligible` predicate so the caller can exclude members that are unusable, full,
//! in a higher tier, or already tried: connect failover asks the same policy again with the failed
//! member excluded, which gives "the policy's next candidate" for every policy.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::PolicyKind;
use crate::state::snapshot::Member;

/// Chooses a member index for a client.
pub(crate) trait Policy: Send + Sync + std::fmt::Debug {
    /// Picks one of `members` for which `eligible(index)` holds, or `None` when there is none.
    fn pick(
        &self,
        members: &[Member],
        client: IpAddr,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize>;
}

/// Builds the policy of the given kind for a pool's members.
pub(crate) fn build_policy(kind: PolicyKind, members: &[Member]) -> Box<dyn Policy> {
    match kind {
        PolicyKind::RoundRobin => Box::new(RoundRobin::default()),
        PolicyKind::Weighted => Box::new(Weighted::new(members)),
        PolicyKind::LeastConn => Box::new(LeastConn::default()),
        PolicyKind::Random => Box::new(Random),
        PolicyKind::Source => Box::new(Source),
        PolicyKind::SourceMap => Box::new(SourceMap),
        PolicyKind::Single => Box::new(Single::new(members)),
    }
}

/// Every index below `n` once, starting one place further round at each call.
fn rotation(counter: &AtomicUsize, n: usize) -> impl Iterator<Item = usize> {
    let start = match n {
        0 => 0,
        n => counter.fetch_add(1, Ordering::Relaxed) % n,
    };
    (0..n).map(move |k| (start + k) % n)
}

/// Equal turns: each pick starts one place further round the member list.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn pick(
        &self,
        members: &[Member],
        _: IpAddr,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        // Turns go round the eligible members only, so a member that is left out does not hand
        // its turns to its neighbour.
        let count = (0..members.len()).filter(|&i| eligible(i)).count();
        if count == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % count;
        (0..members.len()).filter(|&i| eligible(i)).nth(turn)
    }
}

/// Smooth weighted round robin (nginx's interleaving), precomputed as one cycle of member indices so
/// that a pick is one atomic increment. Weights 1:2:3 give the cycle `[2, 1, 2, 0, 1, 2]`: the right
/// proportions over every full cycle and never a long run of one member.
#[derive(Debug)]
pub(crate) struct Weighted {
    cycle: Vec<usize>,
    next: AtomicUsize,
}

/// The longest weighted cycle; weights are scaled down to integers whose sum fits.
const MAX_WEIGHTED_CYCLE: u64 = 10_000;

impl Weighted {
    pub(crate) fn new(members: &[Member]) -> Self {
        let weights: Vec<u64> = integer_weights(members.iter().map(|m| m.weight));
        let total: u64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut cycle = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += *w as i64;
            }
            let best = (0..current.len())
                .max_by(|&a, &b| current[a].cmp(&current[b]).then(b.cmp(&a)))
                .expect("total > 0 implies a member");
            current[best] -= total as i64;
            cycle.push(best);
        }
        Weighted {
            cycle,
            next: AtomicUsize::new(0),
        }
    }
}

/// Turns float weights into small integers with the same proportions (to 3 decimal places),
/// reduced by their common divisor and capped so their sum stays within [`MAX_WEIGHTED_CYCLE`].
fn integer_weights(weights: impl Iterator<Item = f64>) -> Vec<u64> {
    let mut ints: Vec<u64> = weights
        .map(|w| ((w * 1000.0).round() as u64).max(1))
        .collect();
    let divisor = ints.iter().copied().fold(0, gcd);
    if divisor > 1 {
        ints.iter_mut().for_each(|w| *w /= divisor);
    }
    let total: u64 = ints.iter().sum();
    if total > MAX_WEIGHTED_CYCLE {
        let scale = MAX_WEIGHTED_CYCLE as f64 / total as f64;
        ints.iter_mut()
            .for_each(|w| *w = ((*w as f64 * scale).round() as u64).max(1));
    }
    ints
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Policy for Weighted {
    fn pick(&self, _: &[Member], _: IpAddr, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.cycle.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|k| self.cycle[(start + k) % n])
            .find(|&i| eligible(i))
    }
}

/// The member with the fewest active connections per unit of weight; ties go round in turn so
/// that an idle pool is still spread evenly.
#[derive(Debug, Default)]
pub(crate) struct LeastConn {
    tie_break: AtomicUsize,
}

impl Policy for LeastConn {
    fn pick(
        &self,
        members: &[Member],
        _: IpAddr,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for i in rotation(&self.tie_break, members.len()) {
            if !eligible(i) {
                continue;
            }
            let load = (members[i].backend.active() + 1) as f64 / members[i].weight;
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// A random member, in proportion to the weights.
#[derive(Debug)]
pub(crate) struct Random;

impl Policy for Random {
    fn pick(
        &self,
        members: &[Member],
        _: IpAddr,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let total: f64 = (0..members.len())
            .filter(|&i| eligible(i))
            .map(|i| members[i].weight)
            .sum();
        if total <= 0.0 {
            return None;
        }
        let mut point = fastrand::f64() * total;
        let mut last = None;
        for i in (0..members.len()).filter(|&i| eligible(i)) {
            last = Some(i);
            point -= members[i].weight;
            if point < 0.0 {
                return Some(i);
            }
        }
        last
    }
}

/// Rendezvous (highest random weight) hashing of the client IP: the same client gets the same
/// member while the member set is unchanged, a removed member moves only its own clients, and
/// the hash is the same in every galera-lb process and build (FNV-1a, not the std hasher).
#[derive(Debug)]
pub(crate) struct Source;

impl Policy for Source {
    fn pick(
        &self,
        members: &[Member],
        client: IpAddr,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let client_hash = match client {
            IpAddr::V4(ip) => fnv1a(FNV_OFFSET, &ip.octets()),
            IpAddr::V6(ip) => fnv1a(FNV_OFFSET, &ip.octets()),
        };
        (0..members.len())
            .filter(|&i| eligible(i))
            .map(|i| {
                let h = mix(fnv1a(client_hash, members[i].backend.address.as_bytes()));
                // A uniform value in (0, 1]: the score -w/ln(u) is weighted rendezvous hashing.
                let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                (i, -members[i].weight / u.ln())
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }
}

/// HAProxy's map-based source hashing (`balance source` without `hash-type consistent`), so a
/// configuration imported from HAProxy sends each client address to the node HAProxy sends it
/// to. The key is the address's 32-bit words, big-endian, XORed; the node is the key modulo the
/// size of HAProxy's server map, which holds each eligible member `weight / gcd` times in the
/// interleaved order HAProxy's `recalc_server_map` builds (declaration order first among equals).
#[derive(Debug)]
pub(crate) struct SourceMap;

impl Policy for SourceMap {
    fn pick(
        &self,
        members: &[Member],
        client: IpAddr,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let candidates: Vec<(usize, u64)> = (0..members.len())
            .filter(|&i| eligible(i))
            // HAProxy's weights are whole numbers from 1 to 256.
            .map(|i| (i, members[i].weight.round().clamp(1.0, 256.0) as u64))
            .collect();
        let map = haproxy_server_map(&candidates);
        let key = match client {
            IpAddr::V4(ip) => u32::from_be_bytes(ip.octets()),
            IpAddr::V6(ip) => ip
                .octets()
                .chunks_exact(4)
                .map(|word| u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
                .fold(0, |key, word| key ^ word),
        };
        (!map.is_empty()).then(|| map[key as usize % map.len()])
    }
}

/// HAProxy's server map for `(member, weight)` in declaration order: each member
/// `weight / gcd(weights)` times, interleaved by the scores HAProxy's `recalc_server_map` keeps.
fn haproxy_server_map(candidates: &[(usize, u64)]) -> Vec<usize> {
    let gcd = candidates.iter().fold(0, |g, &(_, w)| {
        let (mut a, mut b) = (g, w);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    });
    let weights: Vec<i64> = candidates
        .iter()
        .map(|&(_, w)| (w / gcd.max(1)) as i64)
        .collect();
    let total: i64 = weights.iter().sum();
    let mut scores = vec![0i64; candidates.len()];
    let mut map = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best: Option<(usize, i64)> = None;
        for (k, weight) in weights.iter().enumerate() {
            scores[k] += weight;
            let v = (scores[k] + total) / total;
            if best.is_none_or(|(_, max)| v > max) {
                best = Some((k, v));
            }
        }
        if let Some((k, _)) = best {
            scores[k] -= total;
            map.push(candidates[k].0);
        }
    }
    map
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every client to one member: the highest weight, then the first configured; the next in that
/// order only when it is not eligible (down, full, or its connect failed).
#[derive(Debug)]
pub(crate) struct Single {
    order: Vec<usize>,
}

impl Single {
    pub(crate) fn new(members: &[Member]) -> Self {
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| {
            members[b]
                .weight
                .total_cmp(&members[a].weight)
                .then(a.cmp(&b))
        });
        Single { order }
    }
}

impl Policy for Single {
    fn pick(&self, _: &[Member], _: IpAddr, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.order.iter().copied().find(|&i| eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::backend::BackendState;
    use crate::core::limit::{Slot, try_acquire};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    fn members(weights: &[f64]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let address = format!("127.0.0.1:{}", 3316 + 10 * i);
                Member {
                    backend: Arc::new(BackendState::new(address.clone(), true)),
                    socket_addr: address.parse().unwrap(),
                    weight,
                    tier: 1,
                    max_connections: None,
                    backup: false,
                    check_port: None,
                    origin: crate::state::snapshot::Origin::Configured,
                    proxy_protocol: None,
                    unresolved: false,
                }
            })
            .collect()
    }

    fn hold(backend: &Arc<BackendState>) -> Slot<BackendState> {
        try_acquire(backend, None).unwrap()
    }

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));

    fn counts(policy: &dyn Policy, members: &[Member], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; members.len()];
        for _ in 0..picks {
            counts[policy.pick(members, CLIENT, &|_| true).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_gives_equal_turns_in_order() {
        let m = members(&[1.0, 5.0, 1.0]);
        let policy = RoundRobin::default();
        let picks: Vec<usize> = (0..6)
            .map(|_| policy.pick(&m, CLIENT, &|_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(counts(&policy, &m, 300), [100, 100, 100]);
    }

    #[test]
    fn round_robin_skips_ineligible_members() {
        let m = members(&[1.0, 1.0, 1.0]);
        let policy = RoundRobin::default();
        let mut counts = [0; 3];
        for _ in 0..100 {
            counts[policy.pick(&m, CLIENT, &|i| i != 1).unwrap()] += 1;
        }
        assert_eq!(
            counts,
            [50, 0, 50],
            "the left-out member's turns are shared evenly"
        );
        assert_eq!(policy.pick(&m, CLIENT, &|_| false), None);
    }

    #[test]
    fn weighted_gives_exact_proportions_interleaved() {
        let m = members(&[1.0, 2.0, 3.0]);
        let policy = Weighted::new(&m);
        let picks: Vec<usize> = (0..600)
            .map(|_| policy.pick(&m, CLIENT, &|_| true).unwrap())
            .collect();
        let mut counts = [0; 3];
        picks.iter().for_each(|&i| counts[i] += 1);
        assert_eq!(counts, [100, 200, 300]);
        let longest_run = picks
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap();
        assert!(longest_run <= 2, "a run of {longest_run} picks of one node");
    }

    #[test]
    fn weighted_handles_fractional_weights() {
        let m = members(&[0.75, 1.0]);
        let policy = Weighted::new(&m);
        assert_eq!(counts(&policy, &m, 700), [300, 400]);
        let m = members(&[0.001, 1000.0]);
        let policy = Weighted::new(&m);
        let c = counts(&policy, &m, 10_000);
        assert!(c[0] >= 1 && c[0] <= 10, "{c:?}");
    }

    #[test]
    fn weighted_falls_over_to_others_in_proportion() {
        let m = members(&[1.0, 2.0, 3.0]);
        let policy = Weighted::new(&m);
        let mut counts = [0; 3];
        for _ in 0..600 {
            counts[policy.pick(&m, CLIENT, &|i| i != 2).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!(counts[1] > counts[0], "{counts:?}");
    }

    #[test]
    fn least_conn_prefers_fewest_connections_per_weight() {
        let m = members(&[1.0, 1.0, 2.0]);
        let _held: Vec<_> = (0..4).map(|_| hold(&m[0].backend)).collect();
        let _held2: Vec<_> = (0..2).map(|_| hold(&m[2].backend)).collect();
        // loads: (4+1)/1 = 5, (0+1)/1 = 1, (2+1)/2 = 1.5
        assert_eq!(LeastConn::default().pick(&m, CLIENT, &|_| true), Some(1));
    }

    #[test]
    fn least_conn_fills_in_proportion_to_weight() {
        let m = members(&[1.0, 1.0, 2.0]);
        let policy = LeastConn::default();
        let held: Vec<_> = (0..400)
            .map(|_| hold(&m[policy.pick(&m, CLIENT, &|_| true).unwrap()].backend))
            .collect();
        let active: Vec<u64> = m.iter().map(|x| x.backend.active()).collect();
        assert_eq!(active.iter().sum::<u64>(), 400);
        for (a, expected) in active.iter().zip([100, 100, 200]) {
            assert!(a.abs_diff(expected) <= 1, "{active:?}");
        }
        drop(held);
    }

    #[test]
    fn least_conn_spreads_ties_evenly() {
        let m = members(&[1.0, 1.0, 1.0]);
        assert_eq!(counts(&LeastConn::default(), &m, 300), [100, 100, 100]);
    }

    #[test]
    fn random_follows_weights() {
        let m = members(&[1.0, 3.0]);
        let c = counts(&Random, &m, 40_000);
        // Expected 10000 / 30000; 6 standard deviations is about 520.
        assert!(c[0].abs_diff(10_000) < 600, "{c:?}");
        assert_eq!(Random.pick(&m, CLIENT, &|i| i == 0), Some(0));
        assert_eq!(Random.pick(&m, CLIENT, &|_| false), None);
    }

    #[test]
    fn source_is_stable_per_client_and_spreads_clients() {
        let m = members(&[1.0, 1.0, 1.0]);
        let mut spread = [0usize; 3];
        for a in 0..=255u8 {
            for b in 0..12u8 {
                let client = IpAddr::V4(Ipv4Addr::new(10, 0, b, a));
                let first = Source.pick(&m, client, &|_| true).unwrap();
                assert_eq!(Source.pick(&m, client, &|_| true), Some(first));
                spread[first] += 1;
            }
        }
        for count in spread {
            assert!(count.abs_diff(1024) < 150, "{spread:?}");
        }
    }

    #[test]
    fn source_moves_only_the_clients_of_an_excluded_member() {
        let m = members(&[1.0, 1.0, 1.0]);
        for a in 0..=255u8 {
            let client = IpAddr::V4(Ipv4Addr::new(192, 168, 0, a));
            let first = Source.pick(&m, client, &|_| true).unwrap();
            let excluded = (first + 1) % 3;
            assert_eq!(Source.pick(&m, client, &|i| i != excluded), Some(first));
        }
    }

    #[test]
    fn source_map_picks_the_node_haproxy_picks() {
        // Equal weights: the map is the members in order, the key the address as a number.
        let m = members(&[1.0, 1.0, 1.0]);
        let at = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        // 127.0.0.1 = 2130706433, which is 2 modulo 3: the third (HAProxy 2.6 picked node3 on
        // the sandbox, tests/haproxy_import.rs).
        assert_eq!(SourceMap.pick(&m, at(127, 0, 0, 1), &|_| true), Some(2));
        assert_eq!(SourceMap.pick(&m, at(10, 0, 0, 3), &|_| true), Some(1));
        // Without the third, two remain: 2130706433 is 1 modulo 2.
        assert_eq!(SourceMap.pick(&m, at(127, 0, 0, 1), &|i| i != 2), Some(1));
        // Weights 1 and 2: HAProxy's map is [first, second, second].
        let weighted = [(0, 1), (1, 2)];
        assert_eq!(haproxy_server_map(&weighted), [0, 1, 1]);
        // Common factors do not grow the map: 2 and 4 is 1 and 2.
        assert_eq!(haproxy_server_map(&[(0, 2), (1, 4)]), [0, 1, 1]);
        assert_eq!(haproxy_server_map(&[(0, 1), (1, 1), (2, 1)]), [0, 1, 2]);
        // IPv6: the four words XORed.
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(SourceMap.pick(&m, v6, &|_| true), Some(1));
        assert_eq!(SourceMap.pick(&m, v6, &|_| false), None);
    }

    #[test]
    fn single_sends_everyone_to_the_heaviest_then_first() {
        let m = members(&[1.0, 2.0, 2.0]);
        let policy = Single::new(&m);
        assert_eq!(counts(&policy, &m, 50), [0, 50, 0]);
        assert_eq!(policy.pick(&m, CLIENT, &|i| i != 1), Some(2));
        assert_eq!(policy.pick(&m, CLIENT, &|i| i == 0), Some(0));
        let m = members(&[1.0, 1.0, 1.0]);
        assert_eq!(counts(&Single::new(&m), &m, 10), [10, 0, 0]);
    }
}
