//! What a configuration reload changes, computed as a pure diff of the old and the new file.
//!
//! [`diff`] compares two validated configurations and says which listeners to open, close or
//! re-bind, which backends come, go or change, whether the health settings changed, and which
//! settings only take effect at the next start. The updater task applies it (see
//! `crate::state::updater`): routing through the snapshot's single writer, listeners through the
//! listener set, so that connections to kept backends are never touched.

use crate::config::{BackendConfig, Config, ListenerConfig};

/// The difference between a running configuration and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    /// Same name, new `bind`: opened on the new address, closed on the old.
    pub listeners_rebound: Vec<String>,
    /// Same name and bind, new policy, role, pool, limit or PROXY protocol setting: only routing
    /// changes (new connections follow it).
    pub listeners_rerouted: Vec<String>,
    /// `(pool, address)`
    pub backends_added: Vec<(String, String)>,
    pub backends_removed: Vec<(String, String)>,
    /// Weight, tier, limit or DNS following changed.
    pub backends_changed: Vec<(String, String)>,
    pub health_changed: bool,
    pub discovery_changed: bool,
    /// Settings that a reload cannot change; they take effect at the next start.
    pub needs_restart: Vec<&'static str>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

/// Compares `old` and `new`.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut d = ConfigDiff::default();
    for listener in &new.listeners {
        match old.listeners.iter().find(|l| l.name == listener.name) {
            None => d.listeners_added.push(listener.name.clone()),
            Some(before) if before.bind != listener.bind => {
                d.listeners_rebound.push(listener.name.clone())
            }
            Some(before) if !same_route(before, listener) => {
                d.listeners_rerouted.push(listener.name.clone())
            }
            Some(_) => {}
        }
    }
    for listener in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == listener.name) {
            d.listeners_removed.push(listener.name.clone());
        }
    }

    let old_pools = old.pools();
    let new_pools = new.pools();
    for pool in &new_pools {
        let before: &[BackendConfig] = old_pools
            .iter()
            .find(|p| p.name == pool.name)
            .map(|p| p.backends)
            .unwrap_or_default();
        for backend in pool.backends {
            match before.iter().find(|b| b.address == backend.address) {
                None => d
                    .backends_added
                    .push((pool.name.to_string(), backend.address.clone())),
                Some(b) if b != backend => d
                    .backends_changed
                    .push((pool.name.to_string(), backend.address.clone())),
                Some(_) => {}
            }
        }
        if old_pools
            .iter()
            .find(|p| p.name == pool.name)
            .is_none_or(|p| p.discover != pool.discover || p.retire_after != pool.retire_after)
        {
            d.discovery_changed |= pool.discover != crate::config::Discover::None;
        }
    }
    for pool in &old_pools {
        let after: &[BackendConfig] = new_pools
            .iter()
            .find(|p| p.name == pool.name)
            .map(|p| p.backends)
            .unwrap_or_default();
        for backend in pool.backends {
            if !after.iter().any(|b| b.address == backend.address) {
                d.backends_removed
                    .push((pool.name.to_string(), backend.address.clone()));
            }
        }
        if pool.discover != crate::config::Discover::None
            && !new_pools
                .iter()
                .any(|p| p.name == pool.name && p.discover == pool.discover)
        {
            d.discovery_changed = true;
        }
    }

    d.health_changed = old.health != new.health;
    if old.runtime != new.runtime {
        d.needs_restart.push("runtime");
    }
    if old.log != new.log {
        d.needs_restart.push("log");
    }
    if old.tcp != new.tcp {
        d.needs_restart.push("tcp");
    }
    if old.limits != new.limits {
        d.needs_restart.push("limits");
    }
    if old.control != new.control {
        d.needs_restart.push("control");
    }
    if old.admin != new.admin {
        d.needs_restart.push("admin");
    }
    d
}

fn same_route(a: &ListenerConfig, b: &ListenerConfig) -> bool {
    a.policy == b.policy
        && a.pool == b.pool
        && a.role == b.role
        && a.exclude_writer == b.exclude_writer
        && a.all_backups == b.all_backups
        && a.max_connections == b.max_connections
        && a.proxy_protocol == b.proxy_protocol
        && a.accept_proxy == b.accept_proxy
        && a.causal_reads == b.causal_reads
        && a.failover_hold == b.failover_hold
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "
listeners:
  - name: rw
    bind: 127.0.0.1:3306
  - name: ro
    bind: 127.0.0.1:3307
    role: reader
backends:
  - address: 127.0.0.1:3316
  - address: 127.0.0.1:3326
  - address: 127.0.0.1:3336
health:
  user: monitor
";

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, "test.yaml").unwrap()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(p, a)| (p.to_string(), a.to_string()))
            .collect()
    }

    #[test]
    fn each_kind_of_change_is_recognised() {
        type Expect = fn(&ConfigDiff) -> bool;
        let cases: &[(&str, String, Expect)] = &[
            ("nothing", BASE.to_string(), |d| d.is_empty()),
            (
                "a backend added",
                BASE.replace(
                    "  - address: 127.0.0.1:3336\n",
                    "  - address: 127.0.0.1:3336\n  - address: 127.0.0.1:3346\n",
                ),
                |d| {
                    d.backends_added == pairs(&[("default", "127.0.0.1:3346")])
                        && d.backends_removed.is_empty()
                },
            ),
            (
                "a backend removed",
                BASE.replace("  - address: 127.0.0.1:3326\n", ""),
                |d| d.backends_removed == pairs(&[("default", "127.0.0.1:3326")]),
            ),
            (
                "a backend reweighted",
                BASE.replace(
                    "  - address: 127.0.0.1:3316\n",
                    "  - address: 127.0.0.1:3316\n    weight: 3\n",
                ),
                |d| {
                    d.backends_changed == pairs(&[("default", "127.0.0.1:3316")])
                        && d.backends_added.is_empty()
                },
            ),
            (
                "a listener added",
                BASE.replace(
                    "backends:",
                    "  - name: extra\n    bind: 127.0.0.1:3308\nbackends:",
                ),
                |d| d.listeners_added == ["extra"],
            ),
            (
                "a listener removed",
                BASE.replace(
                    "  - name: ro\n    bind: 127.0.0.1:3307\n    role: reader\n",
                    "",
                ),
                |d| d.listeners_removed == ["ro"],
            ),
            (
                "a listener moved",
                BASE.replace("127.0.0.1:3307", "127.0.0.1:3309"),
                |d| d.listeners_rebound == ["ro"] && d.listeners_rerouted.is_empty(),
            ),
            (
                "a listener's policy changed",
                BASE.replace(
                    "    role: reader\n",
                    "    role: reader\n    policy: least_conn\n",
                ),
                |d| d.listeners_rerouted == ["ro"],
            ),
            (
                "a listener's PROXY settings changed",
                BASE.replace(
                    "    role: reader\n",
                    "    role: reader\n    proxy_protocol: v2\n    accept_proxy: true\n",
                ),
                |d| d.listeners_rerouted == ["ro"] && d.listeners_rebound.is_empty(),
            ),
            (
                "a backend's PROXY setting changed",
                BASE.replace(
                    "  - address: 127.0.0.1:3316\n",
                    "  - address: 127.0.0.1:3316\n    proxy_protocol: v1\n",
                ),
                |d| d.backends_changed == pairs(&[("default", "127.0.0.1:3316")]),
            ),
            (
                "health settings changed",
                BASE.replace("  user: monitor\n", "  user: monitor\n  interval: 2s\n"),
                |d| d.health_changed && d.needs_restart.is_empty(),
            ),
            (
                "settings that need a restart",
                format!("{BASE}runtime:\n  worker_threads: 1\ncontrol:\n  bind: 127.0.0.1:8011\n"),
                |d| d.needs_restart == ["runtime", "control"],
            ),
            (
                "discovery switched on",
                format!("{BASE}discover: wsrep\n"),
                |d| d.discovery_changed,
            ),
        ];
        let old = config(BASE);
        for (name, yaml, expect) in cases {
            let d = diff(&old, &config(yaml));
            assert!(expect(&d), "{name}: {d:?}");
        }
    }

    #[test]
    fn a_diff_back_undoes_a_diff() {
        let old = config(BASE);
        let new = config(&BASE.replace("  - address: 127.0.0.1:3326\n", ""));
        assert_eq!(
            diff(&old, &new).backends_removed,
            diff(&new, &old).backends_added
        );
    }
}
