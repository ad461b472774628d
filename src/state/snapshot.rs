//! The routing snapshot and its single writer.
//!
//! A [`Snapshot`] is an immutable picture of everything a new client connection needs: the pools
//! with their members (backend, resolved address, weight, tier, limit) and, per listener, the
//! policy built for its pool. It lives behind one [`ArcSwap`] in [`Router`]: a connection does one
//! `load()`, one pick and is done with it; nothing on that path takes a lock.
//!
//! All changes go through the [`Updater`], the only writer, which builds a new snapshot and swaps
//! it in: from the configuration and what it has learnt, or, for a backend only the control port
//! added, from the current snapshot with one pool's member list copied and changed (the same
//! result, without a rebuild's pass over every backend). It keeps a registry of [`BackendState`]s
//! by address, so a backend that stays across a change (even with a new weight or in another
//! pool) keeps its health and counters, and it says what came and went ([`Delta`]).
//!
//! A configured host name that does not resolve when a snapshot is built is no error: the
//! backend is a member that is down, its reason `unresolved: ...`, with no address to connect to
//! ([`Member::unresolved`]), and the build reports it ([`Unresolved`]). `crate::sources::discovery`
//! resolves it again (on `resolve_every`, or with a back-off from [`RESOLVE_RETRY_FIRST`] to
//! [`RESOLVE_RETRY_MAX`]) and sends [`Change::Resolved`](crate::state::change::Change) once it
//! does. A name that resolved before and fails at a later build keeps its last address.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{
    CausalReads, CheckKind, Config, InitialState, PolicyKind, ProxyProtocol, Role, SessionAction,
    split_host_port,
};
use crate::core::backend::{AdminState, BackendCounters, BackendState, HealthReport};
use crate::state::balance::{Policy, build_policy};
use crate::state::writer::{WriterRole, WriterRoles};

/// A backend as a member of a pool.
#[derive(Debug, Clone)]
pub struct Member {
    pub backend: Arc<BackendState>,
    /// Where connections go: the configured address, resolved when the snapshot was built.
    pub socket_addr: SocketAddr,
    pub weight: f64,
    pub tier: u8,
    pub max_connections: Option<u32>,
    /// A backup: used only when no non-backup member is usable (see [`Route::pick`]).
    pub backup: bool,
    /// The port health checks connect to, when not the member's own.
    pub check_port: Option<u16>,
    /// How the member got here: configured, found in the DNS, or discovered.
    pub origin: Origin,
    /// The backend's own `proxy_protocol`; `None` follows the listener's.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Its host name did not resolve: `socket_addr` is a placeholder (the unspecified address
    /// and the configured port), so it is never in service, never checked, never the writer.
    pub unresolved: bool,
}

/// The first pause before a configured host name that did not resolve is resolved again (for
/// a backend without `resolve_every`); it doubles up to [`RESOLVE_RETRY_MAX`].
pub(crate) const RESOLVE_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between two attempts to resolve a name that does not resolve.
pub(crate) const RESOLVE_RETRY_MAX: Duration = Duration::from_secs(30);

/// A configured backend whose host name did not resolve when the routing was built: a member that
/// is down (reason `unresolved`) until the name resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct Unresolved {
    /// Where it is configured (`backends[1].address`).
    pub field: String,
    /// `HOST:PORT` as configured.
    pub address: String,
    /// What the resolver said.
    pub reason: String,
    /// The backend's `resolve_every`: how often it is resolved again (else the back-off).
    pub every: Option<Duration>,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} does not resolve now ({}); it starts as down and is resolved again ",
            self.field, self.address, self.reason
        )?;
        match self.every {
            Some(every) => write!(f, "every {every:?} (resolve_every)"),
            None => write!(
                f,
                "every {RESOLVE_RETRY_FIRST:?}, doubling to {RESOLVE_RETRY_MAX:?}, until it does"
            ),
        }
    }
}

/// Where a pool member comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A `backends:` entry.
    Configured,
    /// One of the addresses of a `resolve_every` backend's host name (the name is kept).
    Dns(String),
    /// Listed in a member's `wsrep_incoming_addresses` (`discover: wsrep`).
    Discovered,
    /// Added at run time over the control port.
    Control,
}

impl Member {
    /// Healthy, not drained by its admin state and with a weight above 0.
    pub(crate) fn is_in_service(&self) -> bool {
        !self.unresolved
            && self.backend.is_healthy()
            && self.weight > 0.0
            && self.backend.admin_state() == AdminState::Ready
    }

    /// Where health checks connect: the member's address, on `check_port` when it has one.
    pub(crate) fn check_addr(&self) -> SocketAddr {
        let mut address = self.socket_addr;
        if let Some(port) = self.check_port {
            address.set_port(port);
        }
        address
    }

    /// Whether the member can take a new client now: in service and below its own limit.
    pub(crate) fn is_usable(&self) -> bool {
        self.is_in_service()
            && self
                .max_connections
                .is_none_or(|max| self.backend.active() < u64::from(max))
    }
}

/// A named group of backends that listeners route to.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub members: Vec<Member>,
    /// The pool's writer role, shared with every other snapshot that has this pool.
    pub writer_role: Arc<WriterRole>,
    /// The segment whose nodes come first in the writer order (`locality.segment` with
    /// `locality.writer_prefers_segment`).
    pub writer_segment: Option<u8>,
}

impl Pool {
    pub(crate) fn new(
        name: String,
        members: Vec<Member>,
        writer_role: Arc<WriterRole>,
        writer_segment: Option<u8>,
    ) -> Pool {
        Pool {
            name,
            members,
            writer_role,
            writer_segment,
        }
    }

    /// The member that holds the writer role now.
    pub fn writer(&self) -> Option<usize> {
        let holder = self.writer_role.holder()?;
        self.members
            .iter()
            .position(|m| Arc::ptr_eq(&m.backend, &holder))
    }

    /// `"writer"` for the pool's writer, `"reader"` for every other member (for displays).
    pub(crate) fn role_of(&self, member: usize) -> &'static str {
        if self.writer() == Some(member) {
            "writer"
        } else {
            "reader"
        }
    }

    /// The writer candidates, best first: non-backups before backups, and backups in
    /// configuration order (as HAProxy uses them); then, with `writer_prefers_segment`, the
    /// nodes of the local segment; then lowest tier, then highest weight, then lowest
    /// `wsrep_local_index`, then address. The order depends only on configuration and cluster
    /// state, so every galera-lb instance with the same configuration computes the same one.
    pub(crate) fn writer_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        order.sort_by(|&a, &b| self.writer_cmp(a, b));
        order
    }

    /// The first of [`Pool::writer_order`] for which `eligible` holds, found in one pass (an
    /// election runs after every routing change: no sort of the whole pool for it).
    fn best_writer(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.members.len())
            .filter(|&i| eligible(i))
            .min_by(|&a, &b| self.writer_cmp(a, b))
    }

    /// The order of [`Pool::writer_order`] between members `ia` and `ib`.
    fn writer_cmp(&self, ia: usize, ib: usize) -> std::cmp::Ordering {
        let (a, b) = (&self.members[ia], &self.members[ib]);
        let backup_rank = |m: &Member, i: usize| if m.backup { i } else { 0 };
        let elsewhere = |m: &Member| {
            self.writer_segment
                .is_some_and(|local| m.backend.segment() != Some(local))
        };
        a.backup
            .cmp(&b.backup)
            .then(backup_rank(a, ia).cmp(&backup_rank(b, ib)))
            .then(elsewhere(a).cmp(&elsewhere(b)))
            .then(a.tier.cmp(&b.tier))
            .then(b.weight.total_cmp(&a.weight))
            .then(
                a.backend
                    .local_index()
                    .unwrap_or(u32::MAX)
                    .cmp(&b.backend.local_index().unwrap_or(u32::MAX)),
            )
            .then(a.backend.address.cmp(&b.backend.address))
    }

    /// Chooses the writer: the current one while it stays writable (unless `failback` prefers a
    /// better one), else the best writable candidate, and hands it the pool's [`WriterRole`].
    /// Returns `(old, new)` when it changed. Only the health coordinator calls this, so
    /// elections never race.
    pub fn elect_writer(&self, failback: bool) -> Option<(Option<usize>, Option<usize>)> {
        let chosen = self.writer_choice(failback, self.writer());
        self.hand_writer(chosen)
    }

    /// Whether member `i` may hold the writer role: resolved, weighted, up, ready and writable.
    pub(crate) fn writer_eligible(&self, i: usize) -> bool {
        let member = &self.members[i];
        !member.unresolved && member.weight > 0.0 && member.backend.is_writable()
    }

    /// What [`Pool::elect_writer`] would choose with `current` as the writer now, without
    /// handing the role: `current` while it stays eligible (unless `failback` prefers a better
    /// one), else the best eligible candidate. `writer_agreement: cluster` proposes this.
    pub(crate) fn writer_choice(&self, failback: bool, current: Option<usize>) -> Option<usize> {
        let eligible = |i: usize| self.writer_eligible(i);
        let best = || self.best_writer(eligible);
        let keep = current.filter(|&w| eligible(w));
        // Without failback a writer that stays eligible stays: no need to look at the others.
        if failback { best() } else { keep.or_else(best) }
    }

    /// Hands the writer role to member `chosen` (or to nobody); `(old, new)` when it changed.
    pub(crate) fn hand_writer(
        &self,
        chosen: Option<usize>,
    ) -> Option<(Option<usize>, Option<usize>)> {
        let current = self.writer();
        if chosen == current {
            return None;
        }
        self.writer_role
            .hand_to(chosen.map(|i| self.members[i].backend.clone()));
        Some((current, chosen))
    }
}

/// What one listener routes to, and how.
#[derive(Debug, Clone)]
pub struct Route {
    pub listener: String,
    pub policy_kind: PolicyKind,
    pub role: Role,
    pub exclude_writer: bool,
    /// With no usable non-backup member: every usable backup, not only the first.
    pub all_backups: bool,
    /// What this (writer) listener's sessions do when the writer moves to another node
    /// (`health.on_writer_change`; always `None` for other listeners).
    pub writer_moved: SessionAction,
    /// How long sessions closing between transactions may take (`health.drain_timeout`).
    pub drain_timeout: Duration,
    /// The listener's `proxy_protocol`, for members without their own.
    pub proxy_protocol: ProxyProtocol,
    /// The listener reads a PROXY header from each new client (`accept_proxy`).
    pub accept_proxy: bool,
    /// A floor at connect: only nodes that have committed what the writer had (`causal_reads`).
    pub causal_reads: CausalReads,
    /// The segment whose nodes readers prefer (`locality.segment`).
    pub local_segment: Option<u8>,
    /// How long a client waits for a usable backend before the ERR packet (`failover_hold`).
    pub failover_hold: Option<Duration>,
    pub pool: Arc<Pool>,
    /// Shared by the snapshots that keep this route's pool as it was.
    policy: Arc<dyn Policy>,
}

/// Why [`Route::pick`] found no member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMember {
    /// The pool has members, but none is usable (down, or at its connection limit).
    NoneUsable,
    /// Every usable member has already been tried for this client.
    AllTried,
}

impl Route {
    /// The PROXY header a connection through this route sends to `member`: the member's own
    /// setting, else the listener's.
    pub(crate) fn proxy_protocol_for(&self, member: &Member) -> ProxyProtocol {
        member.proxy_protocol.unwrap_or(self.proxy_protocol)
    }

    /// Picks a member for `client`, skipping the members in `tried`.
    ///
    /// `any` and `reader` listeners use the non-backup members while one of them is usable and
    /// untried: the lowest tier that still has one, and within it the policy's choice (a reader
    /// with `exclude_writer` leaves the writer out while another member is usable). When none is
    /// left, backups: the first usable one in configuration order, or with `all_backups` the
    /// policy's choice among every usable backup of the lowest tier. A `writer` listener takes
    /// the pool's writer, and after a failed connect the next writer candidate.
    ///
    /// Before that, `any` and `reader` listeners narrow the usable members, each step only when
    /// it leaves someone (see [`Route::preferred`]): with `causal_reads: connect` to the nodes
    /// that have committed what the writer had (none: the writer); then to the nodes that are
    /// not lagging; then to the nodes of the local segment.
    pub fn pick(&self, client: IpAddr, tried: &[usize]) -> Result<usize, NoMember> {
        let members = &self.pool.members;
        let available = |i: usize| !tried.contains(&i) && members[i].is_usable();
        let none_left = || {
            if tried.is_empty() {
                NoMember::NoneUsable
            } else {
                NoMember::AllTried
            }
        };
        if self.role == Role::Writer {
            if let Some(writer) = self.pool.writer().filter(|&w| available(w)) {
                return Ok(writer);
            }
            return self
                .pool
                .writer_order()
                .into_iter()
                .find(|&i| available(i) && members[i].backend.is_writable())
                .ok_or_else(none_left);
        }
        let left_out = match (self.exclude_writer, self.pool.writer()) {
            (true, Some(writer)) if (0..members.len()).any(|i| i != writer && available(i)) => {
                Some(writer)
            }
            _ => None,
        };
        let not_left_out = |i: usize| available(i) && Some(i) != left_out;
        let preferred = match self.preferred(&not_left_out, &available) {
            Preferred::Members(preferred) => preferred,
            Preferred::Writer(writer) => return Ok(writer),
        };
        let candidate = |i: usize| not_left_out(i) && preferred.as_ref().is_none_or(|p| p[i]);
        let primary = |i: usize| candidate(i) && !members[i].backup;
        let backups = (0..members.len()).any(|i| !primary(i) && candidate(i));
        let group: &dyn Fn(usize) -> bool = if (0..members.len()).any(primary) {
            &primary
        } else if backups && !self.all_backups {
            return (0..members.len())
                .find(|&i| candidate(i))
                .ok_or(NoMember::AllTried);
        } else {
            &candidate
        };
        let Some(tier) = (0..members.len())
            .filter(|&i| group(i))
            .map(|i| members[i].tier)
            .min()
        else {
            return Err(none_left());
        };
        self.policy
            .pick(members, client, &|i| members[i].tier == tier && group(i))
            .ok_or(NoMember::AllTried)
    }
}

/// Which members a reading pick may choose from (see [`Route::preferred`]).
enum Preferred {
    /// Those marked `true`; `None`: every available member (nothing to narrow).
    Members(Option<Vec<bool>>),
    /// Only the writer: no other node has committed what it had (`causal_reads: connect`).
    Writer(usize),
}

impl Route {
    /// The Galera-aware narrowing of a reading pick among the `candidates` (the available
    /// members, less the writer with `exclude_writer`: a listener that keeps reads off the
    /// writer keeps them off it for lag too), each step taken only when some member is left
    /// after it:
    /// 1. `causal_reads: connect`: the nodes whose `wsrep_last_committed` at their latest check
    ///    is at least the writer's at its latest check; when none is, the writer itself (the
    ///    one node that has certainly committed it), and when it is not available (its connect
    ///    just failed), nobody: a client error is retried, a stale read is not noticed. Without
    ///    a writer, or before its first seqno is known, there is no floor. This is the cheap
    ///    first cut: the proxy then asks the writer and the picked node for their seqnos now
    ///    (`crate::core::seqno`);
    /// 2. the nodes that are not lagging (`health.lag`);
    /// 3. the nodes of `locality.segment`.
    fn preferred(
        &self,
        candidates: &dyn Fn(usize) -> bool,
        available: &dyn Fn(usize) -> bool,
    ) -> Preferred {
        let members = &self.pool.members;
        let causal = self.causal_reads == CausalReads::Connect;
        let lag = members.iter().any(|m| m.backend.is_lagging());
        if !causal && !lag && self.local_segment.is_none() {
            return Preferred::Members(None);
        }
        let mut allowed: Vec<bool> = (0..members.len()).map(candidates).collect();
        let mut narrow = |keep: &dyn Fn(&Member) -> bool| {
            let narrowed: Vec<bool> = allowed
                .iter()
                .zip(members)
                .map(|(&allowed, member)| allowed && keep(member))
                .collect();
            let left = narrowed.iter().any(|&m| m);
            if left {
                allowed = narrowed;
            }
            left
        };
        if causal {
            let writer = self.pool.writer();
            let floor = writer.and_then(|w| members[w].backend.last_committed());
            if let (Some(writer), Some(floor)) = (writer, floor) {
                let fresh = |m: &Member| m.backend.last_committed().is_some_and(|c| c >= floor);
                if !narrow(&fresh) {
                    // The writer, or nobody: a stale node would break the promise.
                    return match available(writer) {
                        true => Preferred::Writer(writer),
                        false => Preferred::Members(Some(vec![false; members.len()])),
                    };
                }
            }
        }
        if lag {
            narrow(&|m: &Member| !m.backend.is_lagging());
        }
        if let Some(local) = self.local_segment {
            narrow(&|m: &Member| m.backend.segment() == Some(local));
        }
        Preferred::Members(Some(allowed))
    }
}

/// The immutable routing state read by every listener.
#[derive(Debug)]
pub struct Snapshot {
    /// Counts swaps, for logs and tests.
    pub generation: u64,
    pub pools: Vec<Arc<Pool>>,
    pub routes: Vec<Route>,
}

impl Snapshot {
    pub fn route(&self, listener: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.listener == listener)
    }

    /// The member known by `address` (its identity) or listening at `socket_addr`, in any pool.
    pub fn find(&self, address: &str, socket_addr: Option<SocketAddr>) -> Option<&Member> {
        let members = || self.pools.iter().flat_map(|p| p.members.iter());
        members()
            .find(|m| m.backend.address == address)
            .or_else(|| members().find(|m| Some(m.socket_addr) == socket_addr))
    }

    /// Whether some listener routes by `pool`'s writer: a `role: writer` listener, or a reader
    /// listener with `exclude_writer` or `causal_reads`. Only such pools elect one.
    pub fn uses_writer(&self, pool: &Pool) -> bool {
        self.routes.iter().any(|route| {
            route.pool.name == pool.name
                && (route.role == Role::Writer
                    || route.exclude_writer
                    || route.causal_reads == CausalReads::Connect)
        })
    }

    /// Every distinct backend, in pool order.
    pub(crate) fn backends(&self) -> Vec<&Member> {
        // One address is one `BackendState` in a snapshot (the updater's registry), so the
        // state's identity stands for the address.
        let mut seen = HashSet::new();
        self.pools
            .iter()
            .flat_map(|p| p.members.iter())
            .filter(|m| seen.insert(state_key(&m.backend)))
            .collect()
    }
}

/// Shared access to the current snapshot.
#[derive(Debug)]
pub struct Router {
    current: ArcSwap<Snapshot>,
    /// The counters of backends that are gone, so that totals never go backwards.
    retired: std::sync::Mutex<BackendCounters>,
}

impl Router {
    /// Traffic totals over every backend there has been.
    pub(crate) fn totals(&self) -> BackendCounters {
        let mut totals = *self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for member in self.load().backends() {
            totals += member.backend.counters();
        }
        totals
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// A problem that stops a snapshot from being built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{field}: cannot resolve '{address}': {reason}")]
    Resolve {
        field: String,
        address: String,
        reason: String,
    },
    /// Only a configuration that skipped [`Config::validate`] gets here: a loaded one names
    /// pools that exist.
    #[error("{field}: no pool named '{pool}'")]
    UnknownPool { field: String, pool: String },
}

/// What the running galera-lb has learnt beyond its configuration.
#[derive(Debug, Clone, Default)]
struct Learnt {
    /// Control-port changes: the weight of a backend added or reweighted at run time (0 drains
    /// it), by address, in the order they were made.
    weights: Weights,
    /// Configured backends removed at run time over the control port.
    removed: HashSet<String>,
    /// Per pool, the addresses discovery added (`discover: wsrep`).
    discovered: HashMap<String, Vec<String>>,
    /// Per `resolve_every` host name (as configured), the addresses it resolved to last.
    resolved: HashMap<String, Vec<SocketAddr>>,
}

/// Control-port weights by address, in the order they were last set: looking one up, setting
/// one (which moves it last) and dropping one take no pass over the others.
#[derive(Debug, Clone, Default)]
struct Weights {
    /// By the number of the change that set it last.
    in_order: BTreeMap<u64, (String, f64)>,
    /// Each address's number in `in_order`.
    by_address: HashMap<String, u64>,
    next: u64,
}

impl Weights {
    fn get(&self, address: &str) -> Option<f64> {
        self.by_address.get(address).map(|n| self.in_order[n].1)
    }

    /// Sets `address`'s weight and makes it the newest.
    fn set(&mut self, address: &str, weight: f64) {
        self.remove(address);
        self.by_address.insert(address.to_string(), self.next);
        self.in_order
            .insert(self.next, (address.to_string(), weight));
        self.next += 1;
    }

    fn remove(&mut self, address: &str) {
        if let Some(n) = self.by_address.remove(address) {
            self.in_order.remove(&n);
        }
    }

    /// Oldest first.
    fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.in_order.values().map(|(a, w)| (a.as_str(), *w))
    }

    fn len(&self) -> usize {
        self.in_order.len()
    }

    fn clear(&mut self) {
        self.in_order.clear();
        self.by_address.clear();
    }
}

/// One member that came or went in a swap (see [`Delta`]).
#[derive(Debug, Clone)]
pub(crate) struct MemberChange {
    /// The member's pool: its index in the snapshot's `pools`.
    pub pool: usize,
    pub member: Member,
    /// Whether it came (or went).
    pub added: bool,
}

/// What the swaps since the last [`Updater::take_delta`] changed in the backend set, so that
/// whoever follows it (the health checks) need not compare whole snapshots.
#[derive(Debug, Clone)]
pub(crate) enum Delta {
    /// Anything may have changed (a rebuild from the configuration): compare everything.
    Any,
    /// Only these members came and went, in this order; every other member is still there, in
    /// the same pool, at the same address (its weight or position may have changed).
    Members(Vec<MemberChange>),
}

impl Delta {
    /// Nothing changed.
    pub(crate) fn none() -> Delta {
        Delta::Members(Vec::new())
    }

    fn push(&mut self, change: MemberChange) {
        if let Delta::Members(changes) = self {
            changes.push(change);
        }
    }
}

/// The only writer of the routing snapshot.
#[derive(Debug)]
pub struct Updater {
    router: Arc<Router>,
    config: Config,
    learnt: Learnt,
    /// Every backend of the current snapshot, by identity (exactly those).
    backends: HashMap<String, Arc<BackendState>>,
    writer_roles: WriterRoles,
    /// Every address `config` lists in any pool (host names as written).
    configured: HashSet<String>,
    /// What the swaps since the last [`Updater::take_delta`] changed.
    delta: Delta,
    /// The last address each configured host name (without `resolve_every`) resolved to: used
    /// when it fails to resolve at a later build.
    last_resolved: HashMap<String, SocketAddr>,
    /// The configured backends whose names did not resolve at the last build.
    unresolved: Vec<Unresolved>,
}

impl Updater {
    /// Builds the first snapshot from `config`.
    pub async fn new(config: &Config) -> Result<Updater, BuildError> {
        let mut backends = HashMap::new();
        let mut writer_roles = WriterRoles::default();
        let learnt = Learnt::default();
        let mut last_resolved = HashMap::new();
        let (snapshot, unresolved) = build(
            config,
            &learnt,
            &mut backends,
            &mut Registered::default(),
            &mut writer_roles,
            &mut last_resolved,
            0,
        )
        .await?;
        Ok(Updater {
            router: Arc::new(Router {
                current: ArcSwap::from_pointee(snapshot),
                retired: Default::default(),
            }),
            config: config.clone(),
            learnt,
            backends,
            writer_roles,
            configured: configured_addresses(config),
            delta: Delta::Any,
            last_resolved,
            unresolved,
        })
    }

    pub fn router(&self) -> Arc<Router> {
        self.router.clone()
    }

    /// The configured backends whose host names did not resolve at the last build (each is a
    /// member that is down until its name resolves).
    pub fn unresolved(&self) -> &[Unresolved] {
        &self.unresolved
    }

    /// What the swaps since the last call changed (all of it, on the first call).
    pub(crate) fn take_delta(&mut self) -> Delta {
        std::mem::replace(&mut self.delta, Delta::none())
    }

    /// The identity of the backend `address` names: a backend of that identity, or else the
    /// first member listening at `socket_addr` (see [`Snapshot::find`]); `None` for a new one.
    pub(crate) fn identity(
        &self,
        address: &str,
        socket_addr: Option<SocketAddr>,
    ) -> Option<String> {
        if self.backends.contains_key(address) {
            return Some(address.to_string());
        }
        let snapshot = self.router.load();
        snapshot
            .pools
            .iter()
            .flat_map(|p| p.members.iter())
            .find(|m| Some(m.socket_addr) == socket_addr)
            .map(|m| m.backend.address.clone())
    }

    /// Replaces the routing with one built from `config`; backends that stay keep their state.
    #[cfg(test)]
    pub(crate) async fn apply(&mut self, config: &Config) -> Result<(), BuildError> {
        self.config = config.clone();
        self.configured = configured_addresses(config);
        self.rebuild().await
    }

    /// Adds a backend to the control pool, or sets the weight of one in any pool (0 drains it:
    /// no new clients, open sessions stay). `address` must name a member as it is known (see
    /// [`Snapshot::find`]) or be a new `HOST:PORT`.
    ///
    /// A backend that only the control port added (or adds now) changes in place: the new
    /// snapshot is the current one with the control pool's member list copied and changed
    /// (see [`Updater::control_only`]), which is what a rebuild would give, without resolving,
    /// looking up and comparing every other backend again. Anything else is rebuilt.
    pub async fn set_weight(&mut self, address: &str, weight: f64) -> Result<(), BuildError> {
        let snapshot = self.router.load_full();
        if let Some((pool, at)) = self.control_only(&snapshot, address) {
            let socket_addr =
                resolve_member(address, || format!("control-port backend {address}")).await?;
            self.learnt.removed.remove(address);
            self.learnt.weights.set(address, weight);
            let mut members = snapshot.pools[pool].members.clone();
            let old = at.map(|i| members.remove(i));
            let healthy_at_start = healthy_at_start(&self.config);
            let backend = self
                .backends
                .entry(address.to_string())
                .or_insert_with(|| {
                    Arc::new(BackendState::new(address.to_string(), healthy_at_start))
                })
                .clone();
            let member = control_member(backend, socket_addr, weight);
            match old {
                Some(old) if old.socket_addr == socket_addr => {}
                old => {
                    if let Some(old) = old {
                        self.delta.push(MemberChange {
                            pool,
                            member: old,
                            added: false,
                        });
                    }
                    self.delta.push(MemberChange {
                        pool,
                        member: member.clone(),
                        added: true,
                    });
                }
            }
            // Last of the control pool: where a rebuild puts the newest control-port weight.
            members.push(member);
            self.replace_pool(&snapshot, pool, members);
            return Ok(());
        }
        let before = self.learnt.clone();
        self.learnt.removed.remove(address);
        self.learnt.weights.set(address, weight);
        let result = self.rebuild().await;
        if result.is_err() {
            self.learnt = before;
        }
        result
    }

    /// Removes a backend from every pool; returns its state, so the caller can close its
    /// sessions, or `None` if no pool had it. One that only the control port added goes in
    /// place, as in [`Updater::set_weight`].
    pub(crate) async fn remove(
        &mut self,
        address: &str,
    ) -> Result<Option<Arc<BackendState>>, BuildError> {
        let Some(state) = self.backends.get(address).cloned() else {
            return Ok(None);
        };
        let snapshot = self.router.load_full();
        if let Some((pool, Some(at))) = self.control_only(&snapshot, address) {
            self.learnt.weights.remove(address);
            self.learnt.removed.insert(address.to_string());
            let mut members = snapshot.pools[pool].members.clone();
            let old = members.remove(at);
            self.delta.push(MemberChange {
                pool,
                member: old,
                added: false,
            });
            self.backends.remove(address);
            self.retire(&state);
            crate::core::counters::metrics().forget("backend", address);
            self.replace_pool(&snapshot, pool, members);
            return Ok(Some(state));
        }
        let before = self.learnt.clone();
        self.learnt.weights.remove(address);
        self.learnt.removed.insert(address.to_string());
        for discovered in self.learnt.discovered.values_mut() {
            discovered.retain(|a| a != address);
        }
        if let Err(e) = self.rebuild().await {
            self.learnt = before;
            return Err(e);
        }
        Ok(Some(state))
    }

    /// Where the backend `address` is when a change of its control-port weight or its removal
    /// touches nothing but its own member: the control pool's index in `snapshot`, and the
    /// member's index there (`None`: no backend has that identity yet). That holds when no pool
    /// configures or discovered the address, the control pool has no discovered members (they
    /// come after the control port's, and may be left out for them), and the backend, if any,
    /// is one member only, of the control pool, added over the control port. A rebuild puts
    /// such a member last of the control pool, at its address resolved again, with the weight
    /// given; nothing else in the snapshot depends on it but the routes over that pool.
    fn control_only(&self, snapshot: &Snapshot, address: &str) -> Option<(usize, Option<usize>)> {
        let control_pool = &self.config.listeners.first()?.pool;
        let pool = snapshot
            .pools
            .iter()
            .position(|p| &p.name == control_pool)?;
        if self.configured.contains(address)
            || self
                .learnt
                .discovered
                .values()
                .flatten()
                .any(|a| a == address)
            || self
                .learnt
                .discovered
                .get(control_pool)
                .is_some_and(|d| !d.is_empty())
        {
            return None;
        }
        let Some(state) = self.backends.get(address) else {
            return Some((pool, None));
        };
        let mut found = None;
        for (p, members) in snapshot.pools.iter().enumerate() {
            for (i, member) in members.members.iter().enumerate() {
                if Arc::ptr_eq(&member.backend, state) {
                    if found.is_some() || p != pool || member.origin != Origin::Control {
                        return None;
                    }
                    found = Some(i);
                }
            }
        }
        found.map(|i| (pool, Some(i)))
    }

    /// Swaps in `snapshot` with the pool at `index` holding `members` now (same name, same
    /// writer role), and the routes over it with their policies built again; every other route
    /// keeps its policy.
    fn replace_pool(&mut self, snapshot: &Snapshot, index: usize, members: Vec<Member>) {
        let old = &snapshot.pools[index];
        let pool = Arc::new(Pool::new(
            old.name.clone(),
            members,
            old.writer_role.clone(),
            old.writer_segment,
        ));
        let mut pools = snapshot.pools.clone();
        pools[index] = pool.clone();
        let routes = snapshot
            .routes
            .iter()
            .map(|route| {
                let mut route = route.clone();
                if Arc::ptr_eq(&route.pool, old) {
                    route.policy = Arc::from(build_policy(route.policy_kind, &pool.members));
                    route.pool = pool.clone();
                }
                route
            })
            .collect();
        self.router.current.store(Arc::new(Snapshot {
            generation: snapshot.generation + 1,
            pools,
            routes,
        }));
    }

    /// The weights set over the control port, by backend identity, oldest first.
    pub(crate) fn runtime_weights(&self) -> Vec<(String, f64)> {
        self.learnt
            .weights
            .iter()
            .map(|(address, weight)| (address.to_string(), weight))
            .collect()
    }

    /// Runtime changes made over the control port that a reload would discard.
    pub(crate) fn runtime_changes(&self) -> usize {
        self.learnt.weights.len() + self.learnt.removed.len()
    }

    /// Replaces the configuration (a reload): the file is the truth again, so control-port
    /// changes are discarded; discovered and DNS-resolved members stay.
    pub(crate) async fn reload(&mut self, config: &Config) -> Result<(), BuildError> {
        let previous = (self.config.clone(), self.learnt.clone());
        self.config = config.clone();
        self.learnt.weights.clear();
        self.learnt.removed.clear();
        let result = self.rebuild().await;
        if result.is_err() {
            (self.config, self.learnt) = previous;
        } else {
            self.configured = configured_addresses(config);
        }
        result
    }

    /// Sets the addresses discovery found for `pool` (beyond its configured members).
    pub(crate) async fn set_discovered(
        &mut self,
        pool: &str,
        addresses: Vec<String>,
    ) -> Result<(), BuildError> {
        self.learnt.discovered.insert(pool.to_string(), addresses);
        self.rebuild().await
    }

    /// Sets the addresses a `resolve_every` host name resolves to now, or the address a
    /// configured name that did not resolve resolves to at last.
    pub(crate) async fn set_resolved(
        &mut self,
        name: &str,
        addresses: Vec<SocketAddr>,
    ) -> Result<(), BuildError> {
        if let Some(first) = addresses.first() {
            self.last_resolved.insert(name.to_string(), *first);
        }
        self.learnt.resolved.insert(name.to_string(), addresses);
        self.rebuild().await
    }

    async fn rebuild(&mut self) -> Result<(), BuildError> {
        let generation = self.router.load().generation + 1;
        let mut changed = Registered::default();
        let built = build(
            &self.config,
            &self.learnt,
            &mut self.backends,
            &mut changed,
            &mut self.writer_roles,
            &mut self.last_resolved,
            generation,
        )
        .await;
        let snapshot = match built {
            Ok((snapshot, unresolved)) => {
                self.unresolved = unresolved;
                snapshot
            }
            Err(e) => {
                for address in changed.inserted {
                    self.backends.remove(&address);
                }
                return Err(e);
            }
        };
        self.writer_roles
            .retain(|name| snapshot.pools.iter().any(|p| p.name == name));
        let in_use: HashSet<usize> = snapshot
            .pools
            .iter()
            .flat_map(|p| p.members.iter().map(|m| state_key(&m.backend)))
            .collect();
        let mut gone = Vec::new();
        self.backends.retain(|address, state| {
            let keep = in_use.contains(&state_key(state));
            if !keep {
                gone.push((address.clone(), state.clone()));
            }
            keep
        });
        for (_, state) in &gone {
            self.retire(state);
        }
        // The series of backends that went, and those under a name a backend no longer has.
        let addresses: HashSet<&str> = gone
            .iter()
            .map(|(a, _)| a.as_str())
            .chain(changed.renamed.iter().map(String::as_str))
            .collect();
        crate::core::counters::metrics().forget_all("backend", &addresses);
        self.router.current.store(Arc::new(snapshot));
        self.delta = Delta::Any;
        Ok(())
    }

    /// A backend has left every pool: its counters go to the retired totals. The caller
    /// deletes its series (this covers the series of a backend that had no check task; one
    /// that had forgets its own when it stops after this change).
    fn retire(&self, state: &BackendState) {
        let mut counters = state.counters();
        counters.active = 0;
        *self
            .router
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner()) += counters;
        state.retire();
    }
}

/// Stands for a backend's identity in sets: one address is one `BackendState` in a snapshot.
fn state_key(state: &Arc<BackendState>) -> usize {
    Arc::as_ptr(state) as usize
}

/// Every address `config` lists in any pool.
fn configured_addresses(config: &Config) -> HashSet<String> {
    config
        .pools()
        .iter()
        .flat_map(|p| p.backends.iter().map(|b| b.address.clone()))
        .collect()
}

fn healthy_at_start(config: &Config) -> bool {
    config.health.check == CheckKind::None || config.health.initial == InitialState::Up
}

/// A member added over the control port.
fn control_member(backend: Arc<BackendState>, socket_addr: SocketAddr, weight: f64) -> Member {
    Member {
        backend,
        socket_addr,
        weight,
        tier: 1,
        max_connections: None,
        backup: false,
        check_port: None,
        origin: Origin::Control,
        proxy_protocol: None,
        unresolved: false,
    }
}

/// The reason a lookup failed, or the error when it is not about resolving.
fn unresolved_reason(error: BuildError) -> Result<String, BuildError> {
    match error {
        BuildError::Resolve { reason, .. } => Ok(reason),
        other => Err(other),
    }
}

/// Marks `state` down with the reason `unresolved: REASON` (for a member whose name did not
/// resolve).
fn mark_unresolved(state: &BackendState, reason: &str) {
    state.set_healthy(false);
    state.set_writable(false);
    state.set_report(HealthReport {
        reason: format!("unresolved: {reason}"),
        ..HealthReport::default()
    });
}

/// Clears the `unresolved` reason of a backend whose name resolves now (its checks, if any,
/// report from here on).
fn clear_unresolved(state: &BackendState) {
    if state.report().reason.starts_with("unresolved: ") {
        state.set_report(HealthReport::default());
    }
}

/// Where an unresolved member "is": the unspecified address and the configured port.
fn placeholder(address: &str) -> SocketAddr {
    let port = split_host_port(address).map_or(0, |(_, port)| port);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}

/// A pool's member list while it is built, with what it holds so far by address and backend.
struct PoolMembers {
    members: Vec<Member>,
    sockets: HashSet<SocketAddr>,
    states: HashSet<usize>,
}

impl PoolMembers {
    fn push(&mut self, member: Member) {
        self.sockets.insert(member.socket_addr);
        self.states.insert(state_key(&member.backend));
        self.members.push(member);
    }

    /// Whether a member has the identity `address` (whose state, if any, is in `registry`).
    fn has(&self, registry: &HashMap<String, Arc<BackendState>>, address: &str) -> bool {
        registry
            .get(address)
            .is_some_and(|state| self.states.contains(&state_key(state)))
    }
}

/// What a build changed in the registry of backend states, by identity.
#[derive(Debug, Default)]
struct Registered {
    /// States made for new identities.
    inserted: Vec<String>,
    /// States whose name changed.
    renamed: Vec<String>,
}

/// Builds a snapshot; `registry` gets a state for every new identity (see [`Registered`]).
async fn build(
    config: &Config,
    learnt: &Learnt,
    registry: &mut HashMap<String, Arc<BackendState>>,
    changed: &mut Registered,
    writer_roles: &mut WriterRoles,
    last_resolved: &mut HashMap<String, SocketAddr>,
    generation: u64,
) -> Result<(Snapshot, Vec<Unresolved>), BuildError> {
    let mut unresolved = Vec::new();
    let healthy_at_start = healthy_at_start(config);
    // One address has one name in every pool (`Config::validate`); a backend no configuration
    // names (control port, discovery, DNS) is named by its address.
    let pool_views = config.pools();
    let names: HashMap<&str, &str> = pool_views
        .iter()
        .flat_map(|p| p.backends.iter())
        .map(|b| (b.address.as_str(), b.name()))
        .collect();
    let mut state_of = |registry: &mut HashMap<String, Arc<BackendState>>, address: &str| {
        let name = names.get(address).copied().unwrap_or(address);
        if let Some(state) = registry.get(address) {
            if state.set_name(name) {
                changed.renamed.push(address.to_string());
            }
            return state.clone();
        }
        changed.inserted.push(address.to_string());
        let state = Arc::new(BackendState::new(address.to_string(), healthy_at_start));
        state.set_name(name);
        registry.insert(address.to_string(), state.clone());
        state
    };
    let control_pool = &config.listeners[0].pool;
    let mut pools = Vec::new();
    for pool in config.pools() {
        let mut members = PoolMembers {
            members: Vec::with_capacity(pool.backends.len()),
            sockets: HashSet::new(),
            states: HashSet::new(),
        };
        for (i, backend) in pool.backends.iter().enumerate() {
            if learnt.removed.contains(&backend.address) {
                continue;
            }
            let weight = learnt
                .weights
                .get(&backend.address)
                .unwrap_or(backend.weight);
            let field = || format!("{}[{i}].address", pool.field);
            if backend.resolve_every.is_some() {
                let addresses = match learnt.resolved.get(&backend.address) {
                    Some(addresses) => addresses.clone(),
                    None => match resolve_all(&backend.address, &field()).await {
                        Ok(addresses) => addresses,
                        Err(e) => {
                            let reason = unresolved_reason(e)?;
                            let state = state_of(registry, &backend.address);
                            mark_unresolved(&state, &reason);
                            members.push(Member {
                                backend: state,
                                socket_addr: placeholder(&backend.address),
                                weight,
                                tier: backend.tier,
                                max_connections: backend.max_connections,
                                backup: backend.backup,
                                check_port: backend.check_port,
                                origin: Origin::Dns(backend.address.clone()),
                                proxy_protocol: backend.proxy_protocol,
                                unresolved: true,
                            });
                            unresolved.push(Unresolved {
                                field: field(),
                                address: backend.address.clone(),
                                reason,
                                every: backend.resolve_every,
                            });
                            continue;
                        }
                    },
                };
                for socket_addr in addresses {
                    let identity = socket_addr.to_string();
                    if members.sockets.contains(&socket_addr) {
                        continue;
                    }
                    members.push(Member {
                        backend: state_of(registry, &identity),
                        socket_addr,
                        weight,
                        tier: backend.tier,
                        max_connections: backend.max_connections,
                        backup: backend.backup,
                        check_port: backend.check_port,
                        origin: Origin::Dns(backend.address.clone()),
                        proxy_protocol: backend.proxy_protocol,
                        unresolved: false,
                    });
                }
            } else {
                let resolved = match resolve_member(&backend.address, field).await {
                    Ok(socket_addr) => {
                        last_resolved.insert(backend.address.clone(), socket_addr);
                        Ok(socket_addr)
                    }
                    Err(e) => {
                        let reason = unresolved_reason(e)?;
                        match last_resolved.get(&backend.address) {
                            Some(last) => {
                                tracing::warn!(
                                    backend = %backend.address,
                                    error = %reason,
                                    address = %last,
                                    "cannot resolve the backend's name again; keeping its last address"
                                );
                                Ok(*last)
                            }
                            None => Err(reason),
                        }
                    }
                };
                let state = state_of(registry, &backend.address);
                let (socket_addr, is_unresolved) = match resolved {
                    Ok(socket_addr) => {
                        clear_unresolved(&state);
                        (socket_addr, false)
                    }
                    Err(reason) => {
                        mark_unresolved(&state, &reason);
                        unresolved.push(Unresolved {
                            field: format!("{}[{i}].address", pool.field),
                            address: backend.address.clone(),
                            reason,
                            every: None,
                        });
                        (placeholder(&backend.address), true)
                    }
                };
                members.push(Member {
                    backend: state,
                    socket_addr,
                    weight,
                    tier: backend.tier,
                    max_connections: backend.max_connections,
                    backup: backend.backup,
                    check_port: backend.check_port,
                    origin: Origin::Configured,
                    proxy_protocol: backend.proxy_protocol,
                    unresolved: is_unresolved,
                });
            }
        }
        if pool.name == control_pool {
            for (address, weight) in learnt.weights.iter() {
                if members.has(registry, address) {
                    continue;
                }
                let socket_addr =
                    resolve_member(address, || format!("control-port backend {address}")).await?;
                members.push(control_member(
                    state_of(registry, address),
                    socket_addr,
                    weight,
                ));
            }
        }
        for address in learnt.discovered.get(pool.name).into_iter().flatten() {
            if learnt.removed.contains(address) {
                continue;
            }
            let field = || format!("discovered address of pool '{}'", pool.name);
            let Ok(socket_addr) = resolve_member(address, field).await else {
                continue;
            };
            if members.sockets.contains(&socket_addr) || members.has(registry, address) {
                continue;
            }
            members.push(Member {
                backend: state_of(registry, address),
                socket_addr,
                weight: 1.0,
                tier: 1,
                max_connections: None,
                backup: false,
                check_port: None,
                origin: Origin::Discovered,
                proxy_protocol: None,
                unresolved: false,
            });
        }
        pools.push(Arc::new(Pool::new(
            pool.name.to_string(),
            members.members,
            writer_roles.of(pool.name),
            config
                .locality
                .segment
                .filter(|_| config.locality.writer_prefers_segment),
        )));
    }
    let routes = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| {
            let pool = pools
                .iter()
                .find(|p| p.name == listener.pool)
                .ok_or_else(|| BuildError::UnknownPool {
                    field: format!("listeners[{i}].pool"),
                    pool: listener.pool.clone(),
                })?
                .clone();
            if listener.accept_proxy {
                crate::core::proxy_protocol::register_listener(&listener.name);
            }
            crate::core::counters::metrics().register_listener(&listener.name);
            Ok(Route {
                listener: listener.name.clone(),
                policy_kind: listener.policy,
                role: listener.role,
                exclude_writer: listener.exclude_writer,
                all_backups: listener.all_backups,
                writer_moved: match listener.role {
                    Role::Writer => config.health.on_writer_change,
                    _ => SessionAction::None,
                },
                drain_timeout: config.health.drain_timeout,
                proxy_protocol: listener.proxy_protocol,
                accept_proxy: listener.accept_proxy,
                causal_reads: listener.causal_reads,
                local_segment: config.locality.segment,
                failover_hold: listener.failover_hold,
                policy: Arc::from(build_policy(listener.policy, &pool.members)),
                pool,
            })
        })
        .collect::<Result<_, _>>()?;
    let snapshot = Snapshot {
        generation,
        pools,
        routes,
    };
    for pool in &snapshot.pools {
        if snapshot.uses_writer(pool) {
            crate::core::counters::metrics().register_writer_pool(&pool.name);
        }
    }
    Ok((snapshot, unresolved))
}

/// A member's address: an IP address and port stand for themselves (read without building the
/// `field` for a message); anything else is resolved by [`resolve_first`].
async fn resolve_member(
    address: &str,
    field: impl FnOnce() -> String,
) -> Result<SocketAddr, BuildError> {
    match address.parse::<SocketAddr>() {
        Ok(socket_addr) if socket_addr.port() != 0 => Ok(socket_addr),
        _ => resolve_first(address, &field()).await,
    }
}

/// Resolves `HOST:PORT` to its first address in the resolver's order of preference (an IP
/// address stands for itself).
pub(crate) async fn resolve_first(address: &str, field: &str) -> Result<SocketAddr, BuildError> {
    lookup(address, field).await.map(|all| all[0])
}

/// Resolves `HOST:PORT` to every address the name has, sorted, so that an unchanged record set
/// compares equal.
pub(crate) async fn resolve_all(address: &str, field: &str) -> Result<Vec<SocketAddr>, BuildError> {
    let mut addresses = lookup(address, field).await?;
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

async fn lookup(address: &str, field: &str) -> Result<Vec<SocketAddr>, BuildError> {
    let error = |reason: String| BuildError::Resolve {
        field: field.to_string(),
        address: address.to_string(),
        reason,
    };
    let (host, port) = split_host_port(address).map_err(error)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| error(e.to_string()))?
        .collect();
    if addresses.is_empty() {
        return Err(error("the name has no addresses".to_string()));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, "test.yaml").unwrap()
    }

    const TWO_POOLS: &str = "
listeners:
  - name: rw
    bind: 127.0.0.1:3306
    policy: single
  - name: ro
    bind: 127.0.0.1:3307
    pool: readers
backends:
  - address: 127.0.0.1:3316
  - address: 127.0.0.1:3326
    tier: 2
pools:
  - name: readers
    backends:
      - address: 127.0.0.1:3326
      - address: localhost:3336
health:
  check: none
";

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn builds_pools_and_routes_and_resolves_names() {
        let updater = Updater::new(&config(TWO_POOLS)).await.unwrap();
        let snapshot = updater.router().load_full();
        assert_eq!(snapshot.pools.len(), 2);
        let ro = snapshot.route("ro").unwrap();
        assert_eq!(ro.pool.name, "readers");
        assert!(ro.pool.members[1].socket_addr.ip().is_loopback());
        assert_eq!(ro.pool.members[1].socket_addr.port(), 3336);
        // The same address in two pools is one backend with one set of counters.
        let rw = snapshot.route("rw").unwrap();
        assert!(Arc::ptr_eq(
            &rw.pool.members[1].backend,
            &ro.pool.members[0].backend
        ));
    }

    #[tokio::test]
    async fn higher_tiers_are_used_only_when_lower_ones_are_unusable() {
        let updater = Updater::new(&config(TWO_POOLS)).await.unwrap();
        let snapshot = updater.router().load_full();
        let rw = snapshot.route("rw").unwrap();
        assert_eq!(rw.pick(LOCAL, &[]), Ok(0));
        assert_eq!(rw.pick(LOCAL, &[0]), Ok(1));
        assert_eq!(rw.pick(LOCAL, &[0, 1]), Err(NoMember::AllTried));
        rw.pool.members[0].backend.set_healthy(false);
        assert_eq!(rw.pick(LOCAL, &[]), Ok(1));
        rw.pool.members[1].backend.set_healthy(false);
        assert_eq!(rw.pick(LOCAL, &[]), Err(NoMember::NoneUsable));
    }

    #[tokio::test]
    async fn backups_serve_only_when_no_other_member_is_usable() {
        // HAProxy's writer pattern: node 1, then the first usable backup in file order; with
        // all_backups every usable backup by the policy.
        let yaml = "
listeners:
  - name: first
    bind: 127.0.0.1:3306
  - name: all
    bind: 127.0.0.1:3307
    all_backups: true
  - name: writer
    bind: 127.0.0.1:3308
    role: writer
backends:
  - address: 127.0.0.1:3336
    backup: true
    weight: 5
  - address: 127.0.0.1:3316
  - address: 127.0.0.1:3326
    backup: true
    check_port: 9200
health:
  check: none
";
        let updater = Updater::new(&config(yaml)).await.unwrap();
        let snapshot = updater.router().load_full();
        let (first, all) = (
            snapshot.route("first").unwrap(),
            snapshot.route("all").unwrap(),
        );
        let members = &first.pool.members;
        assert_eq!(members[2].check_addr().port(), 9200);
        assert_eq!(members[1].check_addr(), members[1].socket_addr);
        for _ in 0..4 {
            assert_eq!(first.pick(LOCAL, &[]), Ok(1), "the non-backup member");
            assert_eq!(all.pick(LOCAL, &[]), Ok(1));
        }
        members[1].backend.set_healthy(false);
        for _ in 0..4 {
            assert_eq!(
                first.pick(LOCAL, &[]),
                Ok(0),
                "the first backup in file order"
            );
        }
        let spread: std::collections::HashSet<usize> =
            (0..6).map(|_| all.pick(LOCAL, &[]).unwrap()).collect();
        assert_eq!(spread, [0, 2].into(), "all_backups: every usable backup");
        assert_eq!(
            first.pick(LOCAL, &[0]),
            Ok(2),
            "failover to the next backup"
        );
        members[0].backend.set_healthy(false);
        assert_eq!(first.pick(LOCAL, &[]), Ok(2));
        members[2].backend.set_healthy(false);
        assert_eq!(first.pick(LOCAL, &[]), Err(NoMember::NoneUsable));

        // The writer order: non-backups first, then backups in file order, whatever the weight.
        assert_eq!(first.pool.writer_order(), [1, 0, 2]);
    }

    #[tokio::test]
    async fn a_member_at_its_limit_is_skipped() {
        let yaml = TWO_POOLS.replace(
            "  - address: 127.0.0.1:3316\n",
            "  - address: 127.0.0.1:3316\n    max_connections: 1\n",
        );
        let updater = Updater::new(&config(&yaml)).await.unwrap();
        let snapshot = updater.router().load_full();
        let rw = snapshot.route("rw").unwrap();
        let _held = crate::core::limit::try_acquire(&rw.pool.members[0].backend, None);
        assert_eq!(rw.pick(LOCAL, &[]), Ok(1));
    }

    #[tokio::test]
    async fn backends_keep_their_state_across_an_update() {
        let mut updater = Updater::new(&config(TWO_POOLS)).await.unwrap();
        let before = updater.router().load_full();
        let kept = before.pools[0].members[0].backend.clone();
        let _conn = crate::core::limit::try_acquire(&kept, None);
        let reweighted = TWO_POOLS.replace(
            "  - address: 127.0.0.1:3316\n",
            "  - address: 127.0.0.1:3316\n    weight: 5\n",
        );
        updater.apply(&config(&reweighted)).await.unwrap();
        let after = updater.router().load_full();
        assert_eq!(after.generation, 1);
        let member = &after.pools[0].members[0];
        assert_eq!(member.weight, 5.0);
        assert!(Arc::ptr_eq(&member.backend, &kept));
        assert_eq!(member.backend.active(), 1);
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_a_member_that_is_down_until_it_resolves() {
        let yaml = TWO_POOLS
            .replace("localhost:3336", "no-such-host.invalid:3336")
            .replace("health:\n  check: none\n", "health:\n  initial: up\n");
        let mut updater = Updater::new(&config(&yaml)).await.unwrap();
        let unresolved = updater.unresolved().to_vec();
        assert_eq!(unresolved.len(), 1);
        assert_eq!(unresolved[0].field, "pools[0].backends[1].address");
        assert_eq!(unresolved[0].address, "no-such-host.invalid:3336");
        let message = unresolved[0].to_string();
        assert!(
            message.starts_with(
                "pools[0].backends[1].address: no-such-host.invalid:3336 does not resolve now ("
            ) && message.ends_with(
                "it starts as down and is resolved again every 1s, doubling to 30s, until it does"
            ),
            "{message}"
        );
        let snapshot = updater.router().load_full();
        let ro = snapshot.route("ro").unwrap();
        let member = &ro.pool.members[1];
        assert!(member.unresolved && !member.is_usable());
        assert_eq!(member.socket_addr, "0.0.0.0:3336".parse().unwrap());
        assert_eq!(member.backend.health_str(), "down");
        assert!(member.backend.report().reason.starts_with("unresolved: "));
        // Never picked, never the writer: the other member serves.
        for _ in 0..4 {
            assert_eq!(ro.pick(LOCAL, &[]), Ok(0));
        }
        member.backend.set_healthy(true);
        member.backend.set_writable(true);
        assert_eq!(ro.pick(LOCAL, &[0]), Err(NoMember::AllTried));
        ro.pool.members[0].backend.set_writable(false);
        assert_eq!(ro.pool.elect_writer(false), None);

        // Resolved at last: a member like any other, with the address it resolved to.
        let found: SocketAddr = "127.0.0.9:3336".parse().unwrap();
        updater
            .set_resolved("no-such-host.invalid:3336", vec![found])
            .await
            .unwrap();
        assert!(updater.unresolved().is_empty());
        let snapshot = updater.router().load_full();
        let member = &snapshot.route("ro").unwrap().pool.members[1];
        assert!(!member.unresolved);
        assert_eq!(member.socket_addr, found);
        assert_eq!(
            member.backend.report().reason,
            "",
            "the checks report from here on"
        );
        // A later build where it fails to resolve again keeps that address.
        updater.set_weight("127.0.0.1:3399", 1.0).await.unwrap();
        let snapshot = updater.router().load_full();
        assert_eq!(
            snapshot.route("ro").unwrap().pool.members[1].socket_addr,
            found
        );
    }

    #[tokio::test]
    async fn an_unresolvable_followed_name_waits_for_its_first_answer() {
        let yaml = "
listeners:
  - name: rw
    bind: 127.0.0.1:3306
backends:
  - address: 127.0.0.1:3316
  - address: tasks.no-such-service.invalid:3306
    resolve_every: 5s
health:
  check: none
";
        let mut updater = Updater::new(&config(yaml)).await.unwrap();
        assert_eq!(updater.unresolved()[0].every, Some(Duration::from_secs(5)));
        assert!(
            updater.unresolved()[0]
                .to_string()
                .ends_with("resolved again every 5s (resolve_every)")
        );
        let snapshot = updater.router().load_full();
        let members = &snapshot.pools[0].members;
        assert_eq!(members.len(), 2);
        assert!(members[1].unresolved);
        let addresses: Vec<SocketAddr> = vec![
            "127.0.0.5:3306".parse().unwrap(),
            "127.0.0.6:3306".parse().unwrap(),
        ];
        updater
            .set_resolved("tasks.no-such-service.invalid:3306", addresses.clone())
            .await
            .unwrap();
        let snapshot = updater.router().load_full();
        let members = &snapshot.pools[0].members;
        let followed: Vec<SocketAddr> = members[1..].iter().map(|m| m.socket_addr).collect();
        assert_eq!(followed, addresses);
        assert!(members.iter().all(|m| !m.unresolved));
    }

    const ROLES: &str = "
listeners:
  - name: rw
    bind: 127.0.0.1:3306
    role: writer
  - name: ro
    bind: 127.0.0.1:3307
    role: reader
    exclude_writer: true
backends:
  - address: 127.0.0.1:3316
  - address: 127.0.0.1:3326
  - address: 127.0.0.1:3336
health:
  initial: up
";

    #[tokio::test]
    async fn the_writer_is_chosen_by_tier_weight_local_index_then_address() {
        let yaml = ROLES.replace(
            "  - address: 127.0.0.1:3336\n",
            "  - address: 127.0.0.1:3336\n  - address: 127.0.0.1:3346\n    tier: 2\n    weight: 9\n",
        );
        let updater = Updater::new(&config(&yaml)).await.unwrap();
        let snapshot = updater.router().load_full();
        let pool = &snapshot.pools[0];
        let index = |i: usize, n: u32| pool.members[i].backend.set_local_index(Some(n));
        index(0, 2);
        index(1, 0);
        index(2, 1);
        index(3, 3);
        assert_eq!(
            pool.writer_order(),
            [1, 2, 0, 3],
            "tier 1 by local index, then tier 2"
        );
        pool.members[2].backend.set_local_index(None);
        assert_eq!(
            pool.writer_order(),
            [1, 0, 2, 3],
            "an unknown index comes last"
        );
        assert_eq!(pool.elect_writer(false), Some((None, Some(1))));
        assert_eq!(pool.elect_writer(false), None, "nothing changed");
    }

    /// [`ROLES`] (a writer listener and a round-robin reader listener over three nodes, every
    /// node up from the start) with `reader` as the reader listener's extra lines instead of
    /// `exclude_writer`, and `extra` at the end of the file.
    fn galera_reads(reader: &str, extra: &str) -> String {
        ROLES.replace("    exclude_writer: true\n", reader) + extra
    }

    /// Which members `route` picks over `n` clients, in order.
    fn picks(route: &Route, n: usize) -> Vec<usize> {
        (0..n).map(|_| route.pick(LOCAL, &[]).unwrap()).collect()
    }

    #[tokio::test]
    async fn readers_leave_out_a_lagging_node_while_another_is_not_and_the_writer_stays() {
        let updater = Updater::new(&config(&galera_reads("", ""))).await.unwrap();
        let snapshot = updater.router().load_full();
        let pool = &snapshot.pools[0];
        pool.elect_writer(false);
        let (rw, ro) = (snapshot.route("rw").unwrap(), snapshot.route("ro").unwrap());
        assert_eq!(rw.pick(LOCAL, &[]), Ok(0));
        pool.members[2].backend.set_lagging(true);
        let mut seen = picks(ro, 6);
        seen.sort();
        assert_eq!(
            seen,
            [0, 0, 0, 1, 1, 1],
            "node 3 lags: the others take turns"
        );
        pool.members[0].backend.set_lagging(true);
        assert_eq!(rw.pick(LOCAL, &[]), Ok(0), "the writer never moves for lag");
        assert_eq!(picks(ro, 3), [1, 1, 1]);
        pool.members[1].backend.set_lagging(true);
        let mut all = picks(ro, 3);
        all.sort();
        assert_eq!(all, [0, 1, 2], "every reader lags: every one serves");
        pool.members[1].backend.set_healthy(false);
        pool.members[0].backend.set_lagging(false);
        assert_eq!(picks(ro, 2), [0, 0], "the one that does not lag");
        // Failover after a failed connect: a lagging node before none at all.
        assert_eq!(ro.pick(LOCAL, &[0]), Ok(2));
    }

    #[tokio::test]
    async fn exclude_writer_keeps_reads_off_the_writer_even_when_the_other_readers_lag() {
        let yaml = galera_reads("    exclude_writer: true\n", "");
        let updater = Updater::new(&config(&yaml)).await.unwrap();
        let snapshot = updater.router().load_full();
        let pool = &snapshot.pools[0];
        pool.elect_writer(false);
        let ro = snapshot.route("ro").unwrap();
        pool.members[1].backend.set_lagging(true);
        assert_eq!(picks(ro, 2), [2, 2]);
        pool.members[2].backend.set_lagging(true);
        let mut seen = picks(ro, 4);
        seen.sort();
        assert_eq!(seen, [1, 1, 2, 2], "lagging readers, not the writer");
    }

    #[tokio::test]
    async fn readers_prefer_the_local_segment_and_fall_back_to_the_others() {
        let yaml = galera_reads("", "locality:\n  segment: 1\n");
        let updater = Updater::new(&config(&yaml)).await.unwrap();
        let snapshot = updater.router().load_full();
        let pool = &snapshot.pools[0];
        let ro = snapshot.route("ro").unwrap();
        for (i, segment) in [0, 1, 1].into_iter().enumerate() {
            pool.members[i].backend.set_segment(Some(segment));
        }
        let mut seen = picks(ro, 4);
        seen.sort();
        assert_eq!(seen, [1, 1, 2, 2], "segment 1 only");
        pool.members[1].backend.set_healthy(false);
        assert_eq!(picks(ro, 2), [2, 2]);
        pool.members[2].backend.set_lagging(true);
        assert_eq!(
            picks(ro, 2),
            [0, 0],
            "not lagging comes before the local segment"
        );
        pool.members[2].backend.set_lagging(false);
        pool.members[2].backend.set_healthy(false);
        assert_eq!(
            picks(ro, 2),
            [0, 0],
            "no usable node in segment 1: the others"
        );
        assert_eq!(
            pool.writer_order(),
            [0, 1, 2],
            "the writer does not prefer the segment unless asked"
        );
    }

    #[tokio::test]
    async fn the_writer_prefers_the_local_segment_only_when_asked_and_instances_agree() {
        let yaml = galera_reads(
            "",
            "locality:\n  segment: 1\n  writer_prefers_segment: true\n",
        );
        let elect = || async {
            let updater = Updater::new(&config(&yaml)).await.unwrap();
            let snapshot = updater.router().load_full();
            let pool = &snapshot.pools[0];
            for (i, segment) in [0, 1, 1].into_iter().enumerate() {
                pool.members[i].backend.set_segment(Some(segment));
                pool.members[i].backend.set_local_index(Some(i as u32));
            }
            pool.elect_writer(false);
            (pool.writer_order(), pool.writer())
        };
        let (first, second) = (elect().await, elect().await);
        assert_eq!(first, (vec![1, 2, 0], Some(1)));
        assert_eq!(first, second, "two instances with the same setting agree");
        let refused = Config::from_yaml(
            &galera_reads("", "locality:\n  writer_prefers_segment: true\n"),
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("locality.writer_prefers_segment")
                && refused.contains("needs locality.segment"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_causal_floor_sends_readers_to_nodes_that_committed_what_the_writer_had() {
        let yaml = galera_reads("    causal_reads: connect\n", "");
        let updater = Updater::new(&config(&yaml)).await.unwrap();
        let snapshot = updater.router().load_full();
        assert!(
            snapshot.uses_writer(&snapshot.pools[0]),
            "the floor is the writer's"
        );
        let pool = &snapshot.pools[0];
        let ro = snapshot.route("ro").unwrap();
        let committed = |seqnos: [u64; 3]| {
            for (i, seqno) in seqnos.into_iter().enumerate() {
                pool.members[i].backend.set_last_committed(Some(seqno));
            }
        };
        // No writer yet: no floor.
        let mut seen = picks(ro, 3);
        seen.sort();
        assert_eq!(seen, [0, 1, 2]);
        pool.elect_writer(false);
        committed([100, 100, 90]);
        let mut seen = picks(ro, 4);
        seen.sort();
        assert_eq!(seen, [0, 0, 1, 1], "node 3 has not committed 100 yet");
        committed([100, 99, 90]);
        assert_eq!(picks(ro, 3), [0, 0, 0], "none but the writer: the writer");
        committed([100, 101, 100]);
        let mut seen = picks(ro, 3);
        seen.sort();
        assert_eq!(
            seen,
            [0, 1, 2],
            "checked later, ahead of the writer's check"
        );
        // After a failed connect to the writer, nothing else has the floor: all tried.
        committed([100, 99, 90]);
        assert_eq!(ro.pick(LOCAL, &[0]), Err(NoMember::AllTried));
        let refused = Config::from_yaml(
            &galera_reads("    causal_reads: connect\n", "")
                .replace("health:\n  initial: up\n", "health:\n  check: tcp\n"),
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("listeners[1].causal_reads") && refused.contains("wsrep"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn the_writer_is_sticky_unless_failback_is_set() {
        let updater = Updater::new(&config(ROLES)).await.unwrap();
        let snapshot = updater.router().load_full();
        let pool = &snapshot.pools[0];
        pool.members[0].backend.set_writable(false); // read_only
        assert_eq!(pool.elect_writer(false), Some((None, Some(1))));
        pool.members[0].backend.set_writable(true);
        assert_eq!(
            pool.elect_writer(false),
            None,
            "the writer stays while usable"
        );
        assert_eq!(
            pool.elect_writer(true),
            Some((Some(1), Some(0))),
            "failback"
        );
        pool.members[0].backend.set_healthy(false);
        assert_eq!(pool.elect_writer(false), Some((Some(0), Some(1))));
        for m in &pool.members {
            m.backend.set_healthy(false);
        }
        assert_eq!(pool.elect_writer(false), Some((Some(1), None)));
    }

    #[tokio::test]
    async fn roles_route_to_the_writer_and_the_readers() {
        let updater = Updater::new(&config(ROLES)).await.unwrap();
        let snapshot = updater.router().load_full();
        let (rw, ro) = (snapshot.route("rw").unwrap(), snapshot.route("ro").unwrap());
        let pool = &snapshot.pools[0];
        pool.elect_writer(false);
        assert_eq!(pool.writer(), Some(0));
        for _ in 0..5 {
            assert_eq!(rw.pick(LOCAL, &[]), Ok(0));
            assert_ne!(ro.pick(LOCAL, &[]), Ok(0), "exclude_writer");
        }
        assert_eq!(
            rw.pick(LOCAL, &[0]),
            Ok(1),
            "a failed connect goes to the next candidate"
        );
        // A read_only node may read but not write.
        pool.members[1].backend.set_writable(false);
        assert_eq!(rw.pick(LOCAL, &[0]), Ok(2));
        // The writer is read only when it is the only usable node.
        pool.members[1].backend.set_healthy(false);
        pool.members[2].backend.set_healthy(false);
        assert_eq!(ro.pick(LOCAL, &[]), Ok(0));
    }

    #[tokio::test]
    async fn a_rebuilt_snapshot_shares_the_writer_role_and_sees_its_moves() {
        let mut updater = Updater::new(&config(ROLES)).await.unwrap();
        let before = updater.router().load_full();
        before.pools[0].elect_writer(false);
        let writer = before.pools[0].writer().unwrap();
        let held_by = before.pools[0].members[writer].backend.clone();

        updater.set_weight("127.0.0.1:3399", 1.0).await.unwrap();
        let after = updater.router().load_full();
        assert!(after.generation > before.generation);
        assert!(
            Arc::ptr_eq(&before.pools[0].writer_role, &after.pools[0].writer_role),
            "one writer role per pool, whatever the snapshot"
        );

        // A session opened on the old snapshot follows the role through the old pool: a move
        // elected on the new snapshot is seen there too.
        let moved = before.pools[0].writer_role.watch();
        held_by.set_writable(false);
        after.pools[0].elect_writer(false);
        assert!(moved.has_changed().unwrap());
        assert!(!before.pools[0].writer_role.is_held_by(&held_by));
        let new_writer = after.pools[0].writer().unwrap();
        assert_eq!(
            before.pools[0].writer(),
            before.pools[0].members.iter().position(
                |m| m.backend.address == after.pools[0].members[new_writer].backend.address
            ),
        );
    }

    #[tokio::test]
    async fn a_reload_keeps_the_writer() {
        let mut updater = Updater::new(&config(ROLES)).await.unwrap();
        let before = updater.router().load_full();
        before.pools[0].members[0].backend.set_writable(false);
        before.pools[0].elect_writer(false);
        before.pools[0].members[0].backend.set_writable(true);
        assert_eq!(before.pools[0].writer(), Some(1));
        let reordered = ROLES.replace(
            "  - address: 127.0.0.1:3316\n  - address: 127.0.0.1:3326\n",
            "  - address: 127.0.0.1:3326\n  - address: 127.0.0.1:3316\n",
        );
        updater.apply(&config(&reordered)).await.unwrap();
        let after = updater.router().load_full();
        let writer = after.pools[0].writer().unwrap();
        assert_eq!(
            after.pools[0].members[writer].backend.address,
            "127.0.0.1:3326"
        );
    }

    #[tokio::test]
    async fn a_followed_name_becomes_one_member_per_address() {
        let yaml = "
listeners:
  - name: rw
    bind: 127.0.0.1:3306
backends:
  - address: localhost:3316
    resolve_every: 5s
    weight: 2
health:
  check: none
";
        let mut updater = Updater::new(&config(yaml)).await.unwrap();
        let snapshot = updater.router().load_full();
        let members = &snapshot.pools[0].members;
        assert!(
            members
                .iter()
                .any(|m| m.socket_addr == "127.0.0.1:3316".parse().unwrap())
        );
        assert!(
            members
                .iter()
                .all(|m| m.origin == Origin::Dns("localhost:3316".into()))
        );
        assert!(members.iter().all(|m| m.weight == 2.0));

        let kept: SocketAddr = "127.0.0.2:3316".parse().unwrap();
        let other: SocketAddr = "127.0.0.3:3316".parse().unwrap();
        updater
            .set_resolved("localhost:3316", vec![kept, other])
            .await
            .unwrap();
        let state = updater.router().load_full().pools[0].members[0]
            .backend
            .clone();
        let _held = crate::core::limit::try_acquire(&state, None);
        updater
            .set_resolved("localhost:3316", vec![kept])
            .await
            .unwrap();
        let snapshot = updater.router().load_full();
        let addresses: Vec<SocketAddr> = snapshot.pools[0]
            .members
            .iter()
            .map(|m| m.socket_addr)
            .collect();
        assert_eq!(addresses, [kept]);
        assert_eq!(
            snapshot.pools[0].members[0].backend.active(),
            1,
            "state is kept"
        );
    }

    /// Each pool as its members (identity, address, weight, origin, state), and each route's
    /// pool and policy.
    #[allow(clippy::type_complexity)]
    fn shape(
        snapshot: &Snapshot,
    ) -> (
        Vec<(String, Vec<(String, SocketAddr, f64, Origin, usize)>)>,
        Vec<(String, String, PolicyKind)>,
    ) {
        let pools = snapshot
            .pools
            .iter()
            .map(|p| {
                let members = p
                    .members
                    .iter()
                    .map(|m| {
                        let id = m.backend.address.clone();
                        (
                            id,
                            m.socket_addr,
                            m.weight,
                            m.origin.clone(),
                            state_key(&m.backend),
                        )
                    })
                    .collect();
                (p.name.clone(), members)
            })
            .collect();
        let routes = snapshot
            .routes
            .iter()
            .map(|r| (r.listener.clone(), r.pool.name.clone(), r.policy_kind))
            .collect();
        (pools, routes)
    }

    #[tokio::test]
    async fn a_change_in_place_gives_what_a_rebuild_gives() {
        // Configured addresses (in one pool or two), new ones, a host name; adds, reweights,
        // drains by weight and removals in a seeded random order. After each change the
        // snapshot must be what a rebuild from the same state gives, with the same backend
        // states, and the registry must hold exactly its backends.
        let mut updater = Updater::new(&config(TWO_POOLS)).await.unwrap();
        let addresses = [
            "127.0.0.1:3316",
            "127.0.0.1:3326",
            "localhost:3336",
            "127.0.0.1:3401",
            "127.0.0.1:3402",
            "127.0.0.1:3403",
            "[::1]:3404",
            "localhost:3405",
        ];
        let mut rng = fastrand::Rng::with_seed(22);
        let (mut in_place, mut rebuilt) = (0, 0);
        for step in 0..600 {
            let address = addresses[rng.usize(..addresses.len())];
            let before = updater.router().load().generation;
            if rng.u8(..4) == 0 {
                let _ = updater.remove(address).await.unwrap();
            } else {
                let weight = f64::from(rng.u8(..4));
                updater.set_weight(address, weight).await.unwrap();
            }
            let changed = updater.take_delta();
            let after = updater.router().load_full();
            if after.generation == before {
                continue;
            }
            match changed {
                Delta::Members(_) => in_place += 1,
                Delta::Any => rebuilt += 1,
            }
            updater.rebuild().await.unwrap();
            updater.take_delta();
            let again = updater.router().load_full();
            assert_eq!(shape(&after), shape(&again), "step {step}: {address}");
            let mut registry: Vec<&String> = updater.backends.keys().collect();
            let mut members: Vec<String> = again
                .backends()
                .iter()
                .map(|m| m.backend.address.clone())
                .collect();
            registry.sort();
            members.sort();
            assert_eq!(registry, members.iter().collect::<Vec<_>>(), "step {step}");
        }
        assert!(
            in_place > 200 && rebuilt > 50,
            "{in_place} in place, {rebuilt} rebuilt"
        );
    }

    #[tokio::test]
    async fn discovered_addresses_join_the_pool_once() {
        let mut updater = Updater::new(&config(TWO_POOLS)).await.unwrap();
        let discovered = vec![
            "127.0.0.1:3316".to_string(), // configured already
            "127.0.0.1:3346".to_string(),
        ];
        updater.set_discovered("default", discovered).await.unwrap();
        let snapshot = updater.router().load_full();
        let members = &snapshot.pools[0].members;
        assert_eq!(members.len(), 3);
        assert_eq!(members[2].backend.address, "127.0.0.1:3346");
        assert_eq!(members[2].origin, Origin::Discovered);
        updater.set_discovered("default", vec![]).await.unwrap();
        assert_eq!(updater.router().load_full().pools[0].members.len(), 2);
    }
}
