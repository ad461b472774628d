//! Stale views: a node that still believes in a Primary view its cluster has already left.
//!
//! A node frozen long enough to be evicted (SIGSTOP, a hung VM, a stalled disk) still reports its
//! old view after it resumes — Primary, ready, Synced — until it hears that the others moved on,
//! several seconds later (5–6 s seen in tests/health.rs). Then it refuses every query (1047)
//! while it rejoins. Its own status cannot tell, but the other nodes' can: every view change
//! raises `wsrep_cluster_conf_id` on each member of the new Primary component. [`Views`] keeps, per checked node, the Primary view
//! its checks last saw (the cluster's state UUID and the configuration id, and since when). A
//! node whose view is older than one another node of the same cluster has reported for
//! `health.stale_view_after` fails its check with reason `stale_view`.
//!
//! The delay tolerates the milliseconds between the nodes installing one view (and a node that
//! applies a little behind); only views reported by passing checks count, and a node's view is
//! forgotten as soon as one of its checks fails, so a node that went away cannot make others
//! look stale.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::probe::Outcome;

/// The Primary view each checked node reported last.
#[derive(Debug, Default)]
pub struct Views {
    nodes: Mutex<HashMap<SocketAddr, Seen>>,
}

#[derive(Debug, Clone)]
struct Seen {
    cluster: String,
    conf_id: u64,
    since: Instant,
}

/// Why a node's view is stale: node `ahead` of its cluster has been in a later view for
/// `ahead_for`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub conf_id: u64,
    pub ahead: SocketAddr,
    pub ahead_conf_id: u64,
    pub ahead_for: Duration,
}

impl Views {
    /// Records that `node` reported view `conf_id` of `cluster` at `now`, and says whether that
    /// view is stale: another node of the same cluster has reported a later one for `after`.
    pub fn observe(
        &self,
        node: SocketAddr,
        cluster: &str,
        conf_id: u64,
        now: Instant,
        after: Duration,
    ) -> Option<Stale> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        // `since` is when this node was first seen in this view: keep it while the view stays.
        let same_view = |seen: &Seen| seen.cluster == cluster && seen.conf_id == conf_id;
        if !nodes.get(&node).is_some_and(same_view) {
            let seen = Seen {
                cluster: cluster.to_string(),
                conf_id,
                since: now,
            };
            nodes.insert(node, seen);
        }
        nodes
            .iter()
            .filter(|(other, seen)| {
                **other != node
                    && seen.cluster == cluster
                    && seen.conf_id > conf_id
                    && now.saturating_duration_since(seen.since) >= after
            })
            .max_by_key(|(other, seen)| (seen.conf_id, std::cmp::Reverse(**other)))
            .map(|(other, seen)| Stale {
                conf_id,
                ahead: *other,
                ahead_conf_id: seen.conf_id,
                ahead_for: now.saturating_duration_since(seen.since),
            })
    }

    /// Forgets `node`'s view: its check failed, or it is no longer checked.
    pub(crate) fn forget(&self, node: SocketAddr) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node);
    }

    /// Feeds one check's outcome through the comparison: a passing `wsrep` check whose view is
    /// stale becomes a failure with reason `stale_view`; a failed check forgets the node's view.
    /// `after` is `health.stale_view_after` (`None`: no comparison).
    pub(crate) fn judge(
        &self,
        node: SocketAddr,
        outcome: Outcome,
        now: Instant,
        after: Option<Duration>,
    ) -> Outcome {
        let Some(after) = after else {
            return outcome;
        };
        if !outcome.passed {
            self.forget(node);
            return outcome;
        }
        let Some(wsrep) = &outcome.wsrep else {
            return outcome;
        };
        let (Some(conf_id), false) = (wsrep.conf_id, wsrep.cluster_uuid.is_empty()) else {
            return outcome;
        };
        match self.observe(node, &wsrep.cluster_uuid, conf_id, now, after) {
            None => outcome,
            Some(stale) => Outcome {
                passed: false,
                writable: false,
                reason: "stale_view".to_string(),
                detail: format!(
                    "wsrep_cluster_conf_id is {} while {} has been at {} for {:.1}s: the node \
                     has not yet learned that its cluster moved on (it was likely evicted while \
                     frozen) and will refuse queries once it does",
                    stale.conf_id,
                    stale.ahead,
                    stale.ahead_conf_id,
                    stale.ahead_for.as_secs_f64()
                ),
                error_code: None,
                wsrep: outcome.wsrep,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wsrep::WsrepStatus;

    const AFTER: Duration = Duration::from_secs(1);

    fn node(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 3306 + n))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn passing(cluster: &str, conf_id: u64) -> Outcome {
        Outcome {
            passed: true,
            writable: true,
            reason: "synced".to_string(),
            detail: String::new(),
            error_code: None,
            wsrep: Some(WsrepStatus {
                conf_id: Some(conf_id),
                cluster_uuid: cluster.to_string(),
                ..WsrepStatus::default()
            }),
        }
    }

    #[test]
    fn one_view_for_all_is_never_stale() {
        let views = Views::default();
        let t0 = Instant::now();
        for step in 0..10 {
            for n in 1..=3 {
                let now = t0 + secs(step as f64);
                assert_eq!(views.observe(node(n), "c", 7, now, AFTER), None);
            }
        }
    }

    #[test]
    fn a_node_left_behind_is_stale_once_another_has_held_a_later_view_long_enough() {
        let views = Views::default();
        let t0 = Instant::now();
        views.observe(node(1), "c", 7, t0, AFTER);
        views.observe(node(3), "c", 7, t0, AFTER);
        views.observe(node(1), "c", 8, t0 + secs(1.0), AFTER);
        // The moment between two nodes installing one view: not stale yet.
        assert_eq!(views.observe(node(3), "c", 7, t0 + secs(1.5), AFTER), None);
        let stale = views
            .observe(node(3), "c", 7, t0 + secs(2.0), AFTER)
            .expect("node 3 is one view behind for 1 s");
        assert_eq!(
            stale,
            Stale {
                conf_id: 7,
                ahead: node(1),
                ahead_conf_id: 8,
                ahead_for: secs(1.0),
            }
        );
        // Once it catches up it is not.
        assert_eq!(views.observe(node(3), "c", 8, t0 + secs(3.0), AFTER), None);
    }

    #[test]
    fn the_delay_counts_from_when_the_later_view_was_first_seen() {
        let views = Views::default();
        let t0 = Instant::now();
        views.observe(node(1), "c", 8, t0, AFTER);
        views.observe(node(1), "c", 8, t0 + secs(5.0), AFTER);
        assert!(
            views
                .observe(node(2), "c", 7, t0 + secs(5.0), AFTER)
                .is_some()
        );
        // A newer view restarts the delay.
        views.observe(node(1), "c", 9, t0 + secs(5.5), AFTER);
        let stale = views
            .observe(node(2), "c", 8, t0 + secs(6.0), AFTER)
            .is_some();
        assert!(!stale, "node 1 has held view 9 for only 0.5 s");
    }

    #[test]
    fn other_clusters_and_forgotten_nodes_do_not_count() {
        let views = Views::default();
        let t0 = Instant::now();
        views.observe(node(1), "other", 50, t0, AFTER);
        assert_eq!(views.observe(node(2), "c", 7, t0 + secs(9.0), AFTER), None);
        views.observe(node(3), "c", 8, t0, AFTER);
        views.forget(node(3));
        assert_eq!(views.observe(node(2), "c", 7, t0 + secs(9.0), AFTER), None);
    }

    #[test]
    fn the_newest_view_ahead_is_named() {
        let views = Views::default();
        let t0 = Instant::now();
        views.observe(node(1), "c", 8, t0, AFTER);
        views.observe(node(2), "c", 9, t0, AFTER);
        let stale = views.observe(node(3), "c", 7, t0 + secs(2.0), AFTER);
        assert_eq!(
            stale.map(|s| (s.ahead, s.ahead_conf_id)),
            Some((node(2), 9))
        );
    }

    #[test]
    fn judge_fails_a_stale_check_and_forgets_a_failed_node() {
        let views = Views::default();
        let t0 = Instant::now();
        let on = Some(AFTER);
        assert!(views.judge(node(1), passing("c", 8), t0, on).passed);
        let stale = views.judge(node(2), passing("c", 7), t0 + secs(1.0), on);
        assert!(!stale.passed && !stale.writable);
        assert_eq!(stale.reason, "stale_view");
        assert!(
            stale.detail.contains("wsrep_cluster_conf_id is 7")
                && stale.detail.contains("127.0.0.1:3307 has been at 8"),
            "{}",
            stale.detail
        );
        assert!(stale.wsrep.is_some(), "the status stays on record");

        // Node 1's check fails: its view no longer counts.
        let failed = Outcome::failed("timeout", String::new());
        assert!(!views.judge(node(1), failed, t0 + secs(2.0), on).passed);
        assert!(
            views
                .judge(node(2), passing("c", 7), t0 + secs(2.0), on)
                .passed
        );

        // Switched off: nothing is compared.
        views.judge(node(1), passing("c", 8), t0, None);
        assert!(
            views
                .judge(node(3), passing("c", 1), t0 + secs(9.0), None)
                .passed
        );
    }

    #[test]
    fn checks_without_a_view_pass_through() {
        let views = Views::default();
        let t0 = Instant::now();
        views.observe(node(1), "c", 8, t0, AFTER);
        let mut unknown = passing("", 7);
        assert!(
            views
                .judge(node(2), unknown.clone(), t0 + secs(5.0), Some(AFTER))
                .passed
        );
        unknown.wsrep = None;
        assert!(
            views
                .judge(node(2), unknown, t0 + secs(5.0), Some(AFTER))
                .passed
        );
    }
}
