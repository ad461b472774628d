//! Lag-aware readers: whether a Synced node has fallen behind its cluster.
//!
//! A node can be Synced and still behind: write-sets wait in its receive queue while a long
//! query blocks its appliers or its disk is slow. Each passing `wsrep` check reads the node's
//! `wsrep_local_recv_queue` and `wsrep_last_committed`; [`Seqnos`] keeps the latest
//! `wsrep_last_committed` of every checked node per cluster, so a check can say how far its node
//! trails the most advanced one. [`LagGate`] turns the readings into a lagging flag with
//! hysteresis (`health.lag`): over a limit for `fall` checks in a row makes a node lagging, within
//! the lower resume limits for `rise` checks in a row makes it a reader again, and anything in
//! between keeps the state, so a node does not flap at the limit. Routing reads the flag from
//! the backend's state (`BackendState::is_lagging`); the writer never moves for lag.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::config::LagConfig;
use crate::core::wsrep::WsrepStatus;

/// The latest `wsrep_last_committed` of every checked node, by cluster.
#[derive(Debug, Default)]
pub(crate) struct Seqnos {
    nodes: Mutex<HashMap<SocketAddr, (String, u64)>>,
}

impl Seqnos {
    /// Records `node`'s `committed` seqno in `cluster` and returns how far it trails the most
    /// advanced node of that cluster (0 when it is the most advanced).
    pub(crate) fn record(&self, node: SocketAddr, cluster: &str, committed: u64) -> u64 {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.insert(node, (cluster.to_string(), committed));
        let most = nodes
            .values()
            .filter(|(c, _)| c == cluster)
            .map(|(_, seqno)| *seqno)
            .max()
            .unwrap_or(committed);
        most.saturating_sub(committed)
    }

    /// Forgets `node`: its check failed, or it is no longer checked.
    pub(crate) fn forget(&self, node: SocketAddr) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node);
    }
}

/// What one check says about a node's lag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    /// Over a limit: why (`recv_queue 240 > 100`).
    pub over: Option<String>,
    /// Within every resume limit.
    pub back: bool,
    /// How far the node trails the most advanced node it was compared with.
    pub seqno_lag: Option<u64>,
}

impl Reading {
    /// Compares a node's status (and its seqno gap, when known) with the limits.
    pub(crate) fn of(config: &LagConfig, wsrep: &WsrepStatus, seqno_lag: Option<u64>) -> Reading {
        let mut over = Vec::new();
        let mut back = true;
        if let (Some(max), Some(queue)) = (config.max_recv_queue, wsrep.recv_queue) {
            if queue > max {
                over.push(format!("recv_queue {queue} > {max}"));
            }
            back &= config
                .resume_recv_queue()
                .is_none_or(|resume| queue <= resume);
        }
        if let (Some(max), Some(gap)) = (config.max_seqno_lag, seqno_lag) {
            if gap > max {
                over.push(format!("seqno_lag {gap} > {max}"));
            }
            back &= config.resume_seqno_lag().is_none_or(|resume| gap <= resume);
        }
        Reading {
            over: (!over.is_empty()).then(|| over.join(", ")),
            back,
            seqno_lag,
        }
    }
}

/// The lagging flag of one node, with hysteresis.
#[derive(Debug, Clone)]
pub(crate) struct LagGate {
    fall: u32,
    rise: u32,
    lagging: bool,
    streak: u32,
    /// Why the node went lagging (the reading that made it so).
    reason: String,
}

impl LagGate {
    pub(crate) fn new(config: &LagConfig, lagging: bool) -> LagGate {
        LagGate {
            fall: config.fall(),
            rise: config.rise(),
            lagging,
            streak: 0,
            reason: String::new(),
        }
    }

    /// Records one reading and returns whether the node is lagging after it.
    pub(crate) fn record(&mut self, reading: &Reading) -> bool {
        let toward = if self.lagging {
            reading.back
        } else {
            reading.over.is_some()
        };
        // A reading between the limits keeps the state and starts the count again.
        if toward {
            self.streak += 1;
            if self.streak >= if self.lagging { self.rise } else { self.fall } {
                self.lagging = !self.lagging;
                self.streak = 0;
                self.reason = reading.over.clone().unwrap_or_default();
            }
        } else {
            self.streak = 0;
        }
        if self.lagging {
            // Keep the latest figures while it lags, or the last ones over the limit.
            if let Some(over) = &reading.over {
                self.reason = over.clone();
            }
        } else {
            self.reason.clear();
        }
        self.lagging
    }

    pub(crate) fn is_lagging(&self) -> bool {
        self.lagging
    }

    /// Why the node is lagging; empty while it is not.
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LagConfig {
        LagConfig {
            max_recv_queue: Some(100),
            max_seqno_lag: Some(1000),
            fall: Some(2),
            rise: Some(3),
            ..LagConfig::default()
        }
    }

    fn status(queue: u64) -> WsrepStatus {
        WsrepStatus {
            recv_queue: Some(queue),
            ..WsrepStatus::default()
        }
    }

    #[test]
    fn readings_name_the_limit_they_pass_and_resume_below_a_quarter() {
        let config = config();
        let reading = Reading::of(&config, &status(240), Some(5));
        assert_eq!(reading.over.as_deref(), Some("recv_queue 240 > 100"));
        assert!(!reading.back);
        let both = Reading::of(&config, &status(101), Some(1001));
        assert_eq!(
            both.over.as_deref(),
            Some("recv_queue 101 > 100, seqno_lag 1001 > 1000")
        );
        // Between the resume limit (25) and the limit (100): neither over nor back.
        let between = Reading::of(&config, &status(50), Some(0));
        assert_eq!((between.over.is_some(), between.back), (false, false));
        let back = Reading::of(&config, &status(25), Some(250));
        assert_eq!((back.over.is_some(), back.back), (false, true));
        let gap = Reading::of(&config, &status(0), Some(251));
        assert!(!gap.back, "the seqno gap has its own resume limit");
        assert_eq!(
            Reading::of(&LagConfig::default(), &status(1_000_000), Some(1_000_000)),
            Reading {
                over: None,
                back: true,
                seqno_lag: Some(1_000_000)
            },
            "no limits: never lagging"
        );
    }

    #[test]
    fn the_gate_needs_fall_readings_over_and_rise_readings_back_and_ignores_the_middle() {
        let config = config();
        let mut gate = LagGate::new(&config, false);
        let read = |queue| Reading::of(&config, &status(queue), None);
        assert!(!gate.record(&read(500)), "one reading over is not enough");
        assert!(!gate.record(&read(50)), "a reading in between starts again");
        assert!(!gate.record(&read(500)));
        assert!(gate.record(&read(300)), "two in a row");
        assert_eq!(gate.reason(), "recv_queue 300 > 100");
        // Under the limit but over the resume limit: still lagging, however long.
        for _ in 0..10 {
            assert!(gate.record(&read(60)));
        }
        assert!(gate.record(&read(10)));
        assert!(gate.record(&read(10)));
        assert!(gate.record(&read(120)), "over again: the count restarts");
        assert!(gate.record(&read(0)));
        assert!(gate.record(&read(0)));
        assert!(
            !gate.record(&read(0)),
            "three in a row within the resume limits"
        );
        assert_eq!(gate.reason(), "");
    }

    #[test]
    fn the_gap_is_to_the_most_advanced_node_of_the_same_cluster() {
        let seqnos = Seqnos::default();
        let node = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(seqnos.record(node(1), "a", 100), 0);
        assert_eq!(seqnos.record(node(2), "a", 40), 60);
        assert_eq!(seqnos.record(node(3), "b", 5), 0, "another cluster");
        assert_eq!(seqnos.record(node(1), "a", 120), 0);
        assert_eq!(seqnos.record(node(2), "a", 40), 80);
        seqnos.forget(node(1));
        assert_eq!(seqnos.record(node(2), "a", 41), 0);
    }
}
