//! The updater task: once galera-lb runs, the only place that changes what it routes to.
//!
//! Discovery, DNS following, the control port and reloads (SIGHUP or `reload`) all send a
//! [`Change`] here. The task applies it through the [`Updater`] (which builds and swaps the
//! routing snapshot), then brings the health checks in line with the new snapshot; a reload also
//! opens, closes or re-binds listeners and restarts health checks and discovery when their
//! settings changed. One task, one change at a time: changes never race.
//!
//! Runtime control changes and reloads combine simply: a reload makes the file the truth again,
//! so backends added, reweighted, drained by weight or removed over the control port since the
//! last start or reload are discarded (the log says how many). Admin states (`drain`, `maint`,
//! `ready`) belong to the backend and survive a reload while it stays.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::AdminState;
use crate::config::{Config, Discover};
use crate::control::{ControlChange, ControlRequest};
use crate::discovery;
use crate::health::{HealthMonitor, HealthSettings};
use crate::listeners::{self, ListenerSet};
use crate::reload;
use crate::snapshot::{Origin, Router, Updater, resolve_first};
use crate::source::ConfigSource;

/// A change for the updater task.
#[derive(Debug)]
pub enum Change {
    /// The complete list of addresses discovered for a pool, beyond its configured members.
    Discovered {
        pool: String,
        addresses: Vec<String>,
    },
    /// The addresses a `resolve_every` host name resolves to now.
    Resolved {
        name: String,
        addresses: Vec<SocketAddr>,
    },
    /// A request from the control port.
    Control(ControlRequest),
    /// Re-read the configuration file (SIGHUP), with where to say how it went, if anywhere.
    Reload(Option<oneshot::Sender<Result<(), String>>>),
}

/// Everything the updater task owns.
pub struct UpdaterTask {
    pub updater: Updater,
    pub health: HealthMonitor,
    pub listeners: ListenerSet,
    pub config: Config,
    /// The file to re-read on reload; `None` when galera-lb runs without one.
    pub config_file: Option<ConfigSource>,
    /// For the discovery tasks it (re)starts.
    pub changes: mpsc::Sender<Change>,
    /// Stops health checks and discovery at shutdown.
    pub background: CancellationToken,
    /// Stops the current discovery tasks (a child of `background`).
    pub discovery: CancellationToken,
}

impl UpdaterTask {
    fn router(&self) -> Arc<Router> {
        self.updater.router()
    }

    /// Applies changes until galera-lb stops.
    pub async fn run(mut self, mut changes: mpsc::Receiver<Change>) {
        start_discovery(&self.config, &self.router(), &self.changes, &self.discovery);
        loop {
            let change = tokio::select! {
                _ = self.background.cancelled() => break,
                change = changes.recv() => match change {
                    Some(change) => change,
                    None => {
                        self.background.cancelled().await;
                        break;
                    }
                },
            };
            match change {
                Change::Discovered { pool, addresses } => {
                    info!(pool = %pool, discovered = ?addresses, "discovery changed the pool");
                    let result = self.updater.set_discovered(&pool, addresses).await;
                    self.after_change(result.map_err(|e| e.to_string()), "discovery");
                }
                Change::Resolved { name, addresses } => {
                    info!(name = %name, addresses = ?addresses, "DNS records changed");
                    let result = self.updater.set_resolved(&name, addresses).await;
                    self.after_change(result.map_err(|e| e.to_string()), "DNS");
                }
                Change::Control(ControlRequest { change, reply }) => {
                    let result = self.apply_control(change).await;
                    let _ = reply.send(result);
                }
                Change::Reload(reply) => {
                    let result = self.reload().await;
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
            }
        }
        self.health.stop();
    }

    fn after_change(&mut self, result: Result<(), String>, what: &str) {
        match result {
            Ok(()) => self.health.sync(&self.router().load_full()),
            Err(e) => {
                warn!(error = %e, "cannot apply a {what} change; keeping the current routing")
            }
        }
    }

    async fn apply_control(&mut self, change: ControlChange) -> Result<(), String> {
        match change {
            ControlChange::Destination { address, weight } => {
                let identity = self.identity(&address).await;
                if weight < 0.0 {
                    let removed = self
                        .updater
                        .remove(&identity)
                        .await
                        .map_err(|e| e.to_string())?;
                    let Some(backend) = removed else {
                        return Err(format!("no backend {address}"));
                    };
                    info!(backend = %identity, sessions = backend.active(), "removed over the control port; closing its sessions");
                    backend.close_sessions();
                } else {
                    self.updater
                        .set_weight(&identity, weight)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                self.health.sync(&self.router().load_full());
                Ok(())
            }
            ControlChange::Admin { state, address } => {
                let identity = self.identity(&address).await;
                let snapshot = self.router().load_full();
                let member = snapshot
                    .find(&identity, None)
                    .ok_or_else(|| format!("no backend {address}"))?;
                member.backend.set_admin_state(state);
                info!(backend = %identity, state = state.as_str(), "admin state set over the control port");
                // A drained writer must give its role up: let the coordinator elect.
                self.health.nudge();
                if state == AdminState::Ready {
                    self.health.sync(&snapshot);
                }
                Ok(())
            }
            ControlChange::Reload => self.reload().await,
        }
    }

    /// The identity of the backend that `address` names: the member known by that address, or
    /// the one at the same socket address (so `localhost:3316` finds `127.0.0.1:3316`), or the
    /// address itself for a new backend.
    async fn identity(&self, address: &str) -> String {
        // The same choice of address as building a member makes.
        let socket = resolve_first(address, "control").await.ok();
        let snapshot = self.router().load_full();
        snapshot
            .find(address, socket)
            .map_or_else(|| address.to_string(), |m| m.backend.address.clone())
    }

    /// Re-reads the configuration file and applies the difference; on any problem the running
    /// configuration stays as it was.
    async fn reload(&mut self) -> Result<(), String> {
        let result = self.try_reload().await;
        let outcome = match &result {
            Ok(()) => "ok",
            Err(reason) => {
                warn!(%reason, "reload refused; the running configuration stays");
                "error"
            }
        };
        crate::metrics::metrics()
            .reloads
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn try_reload(&mut self) -> Result<(), String> {
        let path = self.config_file.clone().ok_or(
            "galera-lb runs without a configuration file (the built-in default or a glbd command \
             line): there is nothing to reload",
        )?;
        let new = path.load()?;
        let path = path.path().to_path_buf();
        let password = new
            .health
            .resolve_password()
            .map_err(|reason| format!("{}: health.password: {reason}", path.display()))?;
        let diff = reload::diff(&self.config, &new);

        // Open every new socket first: if one cannot be bound, nothing has changed yet.
        let mut sockets = Vec::new();
        for name in diff.listeners_added.iter().chain(&diff.listeners_rebound) {
            let listener = new
                .listeners
                .iter()
                .find(|l| &l.name == name)
                .expect("the diff names listeners of the new configuration");
            sockets.push((
                listener.clone(),
                listeners::bind(listener, &new.tcp).map_err(|e| e.to_string())?,
            ));
        }
        let before = self.router().load_full();
        let discarded = self.updater.runtime_changes();
        self.updater
            .reload(&new)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let after = self.router().load_full();

        // Backends that are gone lose their sessions, as with a removal over the control port.
        for member in before.backends() {
            if after.find(&member.backend.address, None).is_none() {
                member.backend.close_sessions();
            }
        }
        for name in &diff.listeners_removed {
            info!(listener = %name, "reload: listener closed");
            self.listeners.stop(name);
        }
        for (listener, (socket, local)) in sockets {
            self.listeners.start(&listener, socket, local);
        }
        for name in &diff.listeners_rerouted {
            if let Some(listener) = new.listeners.iter().find(|l| &l.name == name) {
                self.listeners.update(listener);
            }
        }
        if diff.health_changed {
            self.health.stop();
            self.health = HealthMonitor::start(
                HealthSettings {
                    config: new.health.clone(),
                    password,
                },
                self.router(),
            );
        }
        self.health.sync(&after);
        if diff.discovery_changed
            || !diff.backends_added.is_empty()
            || !diff.backends_changed.is_empty()
        {
            self.discovery.cancel();
            self.discovery = self.background.child_token();
            start_discovery(&new, &self.router(), &self.changes, &self.discovery);
        }
        if !diff.needs_restart.is_empty() {
            warn!(sections = ?diff.needs_restart, "reload: these sections changed but take effect only at the next start");
        }
        info!(
            file = %path.display(),
            backends_added = diff.backends_added.len(),
            backends_removed = diff.backends_removed.len(),
            backends_changed = diff.backends_changed.len(),
            listeners_added = diff.listeners_added.len(),
            listeners_removed = diff.listeners_removed.len(),
            listeners_rebound = diff.listeners_rebound.len(),
            health_changed = diff.health_changed,
            runtime_changes_discarded = discarded,
            "configuration reloaded"
        );
        self.config = new;
        Ok(())
    }
}

/// Starts `discover: wsrep` for the pools that ask for it and `resolve_every` for the backends
/// that have it; they report through `changes` until `stop`.
pub fn start_discovery(
    config: &Config,
    router: &Arc<Router>,
    changes: &mpsc::Sender<Change>,
    stop: &CancellationToken,
) {
    let snapshot = router.load_full();
    let mut followed: Vec<&str> = Vec::new();
    for pool in config.pools() {
        if pool.discover == Discover::Wsrep {
            tokio::spawn(discovery::watch_wsrep(
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
                .filter(|m| m.origin == Origin::Dns(backend.address.clone()))
                .map(|m| m.socket_addr)
                .collect();
            current.sort();
            current.dedup();
            tokio::spawn(discovery::follow_dns(
                backend.address.clone(),
                every,
                current,
                changes.clone(),
                stop.clone(),
            ));
        }
    }
}
