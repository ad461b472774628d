//! What a routing change means for the running parts: the updater task's
//! [`Effects`](crate::state::updater::Effects), implemented where every layer is known.
//!
//! After any change the health checks follow the new snapshot (and the writer is elected
//! again). A reload first binds the sockets of new and re-bound listeners and resolves the new
//! health-check password, so that a failure refuses the reload before anything changed; once the
//! routing follows the new file it opens, closes and re-routes listeners, restarts the health
//! checks when their settings changed and discovery when it may have.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::diff::ConfigDiff;
use crate::config::{Config, ListenerConfig};
use crate::core::secret::Secret;
use crate::proxy::listeners::{self, ListenerSet};
use crate::sources::discovery;
use crate::sources::health::seqno::MysqlSeqnos;
use crate::sources::health::socket::CheckSockets;
use crate::sources::health::{HealthMonitor, HealthSettings};
use crate::state::change::Change;
use crate::state::snapshot::{Delta, Router, Snapshot};
use crate::state::updater::Effects;

/// The parts of galera-lb that follow routing changes.
pub(crate) struct AppEffects {
    pub(crate) router: Arc<Router>,
    pub(crate) health: HealthMonitor,
    /// The `causal_reads: connect` probe, which logs in as the health checks do.
    pub(crate) seqnos: Arc<MysqlSeqnos>,
    pub(crate) listeners: ListenerSet,
    /// For the discovery tasks it (re)starts.
    pub(crate) changes: mpsc::Sender<Change>,
    /// Where health checks and discovery run.
    pub(crate) tasks: TaskTracker,
    /// Stops health checks and discovery at shutdown.
    pub(crate) background: CancellationToken,
    /// Stops the current discovery tasks (a child of `background`).
    pub(crate) discovery: CancellationToken,
}

impl AppEffects {
    /// Starts discovery for `config` (at start, and after a reload that may change it).
    pub(crate) fn start_discovery(&mut self, config: &Config) {
        self.discovery.cancel();
        self.discovery = self.background.child_token();
        discovery::start(
            config,
            &self.router,
            &self.changes,
            &self.discovery,
            &self.tasks,
        );
    }
}

/// What a reload prepared before anything changed.
pub(crate) struct Prepared {
    sockets: Vec<(ListenerConfig, (TcpListener, SocketAddr))>,
    password: Secret,
}

impl Effects for AppEffects {
    type Prepared = Prepared;

    fn routing_changed(&mut self, snapshot: &Arc<Snapshot>, delta: Delta) {
        self.health.follow(snapshot, delta);
    }

    fn elect_writers(&mut self) {
        self.health.nudge();
    }

    fn prepare_reload(
        &mut self,
        new: &Config,
        diff: &ConfigDiff,
        file: &str,
    ) -> Result<Prepared, String> {
        let password = new
            .health
            .resolve_password(file)
            .map_err(|e| e.to_string())?;
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
        Ok(Prepared { sockets, password })
    }

    fn reload_applied(&mut self, prepared: Prepared, new: &Config, diff: &ConfigDiff) {
        for name in &diff.listeners_removed {
            info!(listener = %name, "reload: listener closed");
            self.listeners.stop(name);
            crate::core::counters::metrics().forget("listener", name);
        }
        for (listener, (socket, local)) in prepared.sockets {
            self.listeners.start(&listener, socket, local);
        }
        for name in &diff.listeners_rerouted {
            if let Some(listener) = new.listeners.iter().find(|l| &l.name == name) {
                self.listeners.update(listener);
            }
        }
        if diff.health_changed {
            self.seqnos.configure(&new.health, &prepared.password);
            self.health.stop();
            self.health = HealthMonitor::start(
                HealthSettings {
                    config: new.health.clone(),
                    password: prepared.password,
                    sockets: CheckSockets::of(&new.tcp),
                },
                self.router.clone(),
                self.tasks.clone(),
            );
        }
        if diff.discovery_changed
            || !diff.backends_added.is_empty()
            || !diff.backends_changed.is_empty()
        {
            self.start_discovery(new);
        }
    }

    fn stop(&mut self) {
        self.health.stop();
    }
}
