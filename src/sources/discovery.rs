//! Finding nodes beyond the configured ones: from Galera itself and from the DNS.
//!
//! [`watch_wsrep`] runs for a pool with `discover: wsrep`. Every health interval it reads the
//! `wsrep_incoming_addresses` that the pool's passing wsrep checks reported (the health checks
//! already fetch them: no query of its own), and asks the updater to add the addresses no member
//! has. A discovered node missing from every report for `discover_retire_after` rounds in a row is
//! retired; configured nodes never are. A round in which no member passed its check changes
//! nothing: not seeing the cluster is no evidence that a node left it.
//!
//! [`follow_dns`] runs for a backend with `resolve_every`: it re-resolves the host name and tells
//! the updater when the set of addresses changes, so that each address is a backend of its own
//! (Docker Swarm's `tasks.SERVICE`, a Kubernetes headless service). A name that did not resolve
//! when the routing was built starts with no addresses, so its first answer is a change.
//!
//! [`resolve_until_found`] runs for a configured backend (without `resolve_every`) whose name did
//! not resolve when the routing was built (DNS not up yet at boot, a service not created yet): it
//! tries again after 1 s, doubling the pause up to 30 s, and tells the updater once the name
//! resolves; then the backend is checked like any other.
//!
//! Neither changes routing itself: both send a [`Change`] to the updater, the snapshot's only
//! writer.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, Discover};
use crate::state::change::Change;
use crate::state::snapshot::{
    Origin, RESOLVE_RETRY_FIRST, RESOLVE_RETRY_MAX, Router, resolve_all, resolve_first,
};

/// Discovery state for one pool, kept between rounds.
#[derive(Debug, Default)]
pub(crate) struct WsrepDiscovery {
    /// Discovered addresses, with the number of rounds in a row each has been missing.
    discovered: HashMap<String, u32>,
}

impl WsrepDiscovery {
    /// One round: `reported` is the union of the addresses the passing checks reported (`None`
    /// when no check passed), `members` the addresses (configured and resolved) the pool has.
    /// Returns the new discovered list when it changed.
    pub(crate) fn round(
        &mut self,
        reported: Option<&BTreeSet<String>>,
        members: &[(String, SocketAddr)],
        retire_after: u32,
    ) -> Option<Vec<String>> {
        let reported = reported?;
        let mut changed = false;
        for address in reported {
            let known = members.iter().any(|(name, socket)| {
                name == address || address.parse::<SocketAddr>().is_ok_and(|a| a == *socket)
            });
            if let Some(missing) = self.discovered.get_mut(address) {
                *missing = 0;
            } else if !known {
                self.discovered.insert(address.clone(), 0);
                changed = true;
            }
        }
        self.discovered.retain(|address, missing| {
            if reported.contains(address) {
                return true;
            }
            *missing += 1;
            let keep = *missing < retire_after;
            changed |= !keep;
            keep
        });
        changed.then(|| {
            let mut list: Vec<String> = self.discovered.keys().cloned().collect();
            list.sort();
            list
        })
    }
}

/// Runs `discover: wsrep` for `pool` until `stop`.
pub(crate) async fn watch_wsrep(
    pool: String,
    retire_after: u32,
    interval: Duration,
    router: Arc<Router>,
    changes: mpsc::Sender<Change>,
    stop: CancellationToken,
) {
    let mut discovery = WsrepDiscovery::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let snapshot = router.load_full();
        let Some(current) = snapshot.pools.iter().find(|p| p.name == pool) else {
            return;
        };
        let mut reported: Option<BTreeSet<String>> = None;
        let mut members = Vec::new();
        for member in &current.members {
            if member.origin != Origin::Discovered {
                members.push((member.backend.address.clone(), member.socket_addr));
            }
            let report = member.backend.report();
            if let (true, Some(wsrep)) = (report.passed, &report.wsrep) {
                reported
                    .get_or_insert_with(BTreeSet::new)
                    .extend(wsrep.incoming_addresses.iter().cloned());
            }
        }
        if let Some(addresses) = discovery.round(reported.as_ref(), &members, retire_after) {
            let change = Change::Discovered {
                pool: pool.clone(),
                addresses,
            };
            if changes.send(change).await.is_err() {
                return;
            }
        }
    }
}

/// Runs `resolve_every` for one host name until `stop`.
pub(crate) async fn follow_dns(
    name: String,
    every: Duration,
    mut last: Vec<SocketAddr>,
    changes: mpsc::Sender<Change>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match resolve_all(&name, "resolve_every").await {
            Ok(addresses) if addresses != last => {
                last = addresses.clone();
                let change = Change::Resolved {
                    name: name.clone(),
                    addresses,
                };
                if changes.send(change).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            // Keep the last good answer: a resolver hiccup must not empty the pool.
            Err(e) => {
                warn!(name = %name, error = %e, "cannot re-resolve; keeping the last addresses")
            }
        }
    }
}

/// Resolves the configured backend `name` (`HOST:PORT`) until it resolves, pausing from
/// [`RESOLVE_RETRY_FIRST`] doubling to [`RESOLVE_RETRY_MAX`], then sends its address to the
/// updater and ends; or until `stop`.
pub(crate) async fn resolve_until_found(
    name: String,
    changes: mpsc::Sender<Change>,
    stop: CancellationToken,
) {
    let mut pause = RESOLVE_RETRY_FIRST;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        match resolve_first(&name, "backend").await {
            Ok(address) => {
                info!(backend = %name, %address, "the backend's name resolves now; checking it");
                let change = Change::Resolved {
                    name,
                    addresses: vec![address],
                };
                let _ = changes.send(change).await;
                return;
            }
            Err(e) => {
                tracing::debug!(backend = %name, error = %e, next = ?pause * 2, "still does not resolve")
            }
        }
        pause = (pause * 2).min(RESOLVE_RETRY_MAX);
    }
}

/// Starts `discover: wsrep` for the pools that ask for it and `resolve_every` for the backends
/// that have it, and resolves again the configured names that did not resolve (see
/// [`resolve_until_found`]), on `tasks`; they report through `changes` until `stop`.
pub(crate) fn start(
    config: &Config,
    router: &Arc<Router>,
    changes: &mpsc::Sender<Change>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) {
    let snapshot = router.load_full();
    let mut followed: Vec<&str> = Vec::new();
    for pool in config.pools() {
        if pool.discover == Discover::Wsrep {
            tasks.spawn(watch_wsrep(
                pool.name.to_string(),
                pool.retire_after,
                config.health.interval,
                router.clone(),
                changes.clone(),
                stop.clone(),
            ));
        }
        for backend in pool.backends {
            let Some(every) = backend.resolve_every else {
                continue;
            };
            if followed.contains(&backend.address.as_str()) {
                continue;
            }
            followed.push(&backend.address);
            let mut current: Vec<SocketAddr> = snapshot
                .pools
                .iter()
                .flat_map(|p| p.members.iter())
                .filter(|m| m.origin == Origin::Dns(backend.address.clone()) && !m.unresolved)
                .map(|m| m.socket_addr)
                .collect();
            current.sort();
            current.dedup();
            tasks.spawn(follow_dns(
                backend.address.clone(),
                every,
                current,
                changes.clone(),
                stop.clone(),
            ));
        }
    }
    let mut retried: Vec<&str> = Vec::new();
    for member in snapshot.pools.iter().flat_map(|p| p.members.iter()) {
        let name = member.backend.address.as_str();
        if member.unresolved && member.origin == Origin::Configured && !retried.contains(&name) {
            retried.push(name);
            tasks.spawn(resolve_until_found(
                name.to_string(),
                changes.clone(),
                stop.clone(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addresses: &[&str]) -> BTreeSet<String> {
        addresses.iter().map(|a| a.to_string()).collect()
    }

    fn members(addresses: &[&str]) -> Vec<(String, SocketAddr)> {
        addresses
            .iter()
            .map(|a| (a.to_string(), a.parse().unwrap()))
            .collect()
    }

    #[test]
    fn new_addresses_are_added_and_known_ones_are_not() {
        let mut d = WsrepDiscovery::default();
        let configured = members(&["127.0.0.1:3316"]);
        let seen = set(&["127.0.0.1:3316", "127.0.0.1:3326", "127.0.0.1:3336"]);
        assert_eq!(
            d.round(Some(&seen), &configured, 3),
            Some(vec![
                "127.0.0.1:3326".to_string(),
                "127.0.0.1:3336".to_string()
            ])
        );
        assert_eq!(d.round(Some(&seen), &configured, 3), None, "nothing new");
    }

    #[test]
    fn discovered_nodes_retire_after_missing_rounds_and_configured_ones_never() {
        let mut d = WsrepDiscovery::default();
        let configured = members(&["127.0.0.1:3316"]);
        d.round(
            Some(&set(&["127.0.0.1:3316", "127.0.0.1:3326"])),
            &configured,
            3,
        );
        let without = set(&[]);
        assert_eq!(d.round(Some(&without), &configured, 3), None);
        assert_eq!(d.round(Some(&without), &configured, 3), None);
        assert_eq!(
            d.round(Some(&without), &configured, 3),
            Some(vec![]),
            "retired"
        );
        assert_eq!(d.round(Some(&without), &configured, 3), None);
    }

    #[test]
    fn a_node_that_comes_back_resets_its_count() {
        let mut d = WsrepDiscovery::default();
        let configured = members(&["127.0.0.1:3316"]);
        let with = set(&["127.0.0.1:3326"]);
        let without = set(&[]);
        d.round(Some(&with), &configured, 2);
        assert_eq!(d.round(Some(&without), &configured, 2), None);
        assert_eq!(d.round(Some(&with), &configured, 2), None);
        assert_eq!(
            d.round(Some(&without), &configured, 2),
            None,
            "the count restarted"
        );
    }

    #[test]
    fn a_round_without_any_passing_check_changes_nothing() {
        let mut d = WsrepDiscovery::default();
        let configured = members(&["127.0.0.1:3316"]);
        d.round(Some(&set(&["127.0.0.1:3326"])), &configured, 1);
        for _ in 0..5 {
            assert_eq!(d.round(None, &configured, 1), None);
        }
    }
}
