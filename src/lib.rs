//! galera-lb: a Galera-aware TCP load balancer for MariaDB Galera Cluster and Percona XtraDB
//! Cluster.
//!
//! Clients connect to a listener; each connection is proxied to one backend node chosen by the
//! listener's policy, and bytes are copied both ways until both sides are done. Routing state is an
//! immutable snapshot behind one `ArcSwap`, written only by the [`snapshot::Updater`]; the hot path
//! takes no lock.
//!
//! # Layout
//!
//! - [`config`]: the YAML configuration, its defaults and validation (exit 64 on invalid input).
//! - [`backend`]: a backend's identity (its address) and live state (health, counters).
//! - [`limit`]: lock-free connection counts with limits, released by guards.
//! - [`snapshot`]: pools, members and per-listener routes; the single writer that swaps them.
//! - [`balance`]: the policies (round robin, weighted, least connections, random, source, single).
//! - [`health`]: health checks (tcp, handshake, wsrep), rise/fall, and the writer election.
//! - [`proxy`]: listeners (accept loop with back-off) and the per-connection handler.
//! - [`mysql_packet`]: the ERR packet galera-lb sends to clients it cannot serve.
//! - [`port_owner`]: who holds a port, for a helpful "address in use" message.
//! - [`shutdown`]: SIGTERM/SIGINT as one future.
//!
//! [`run`] starts everything and, when its shutdown future completes, stops accepting at once,
//! lets open connections finish for `limits.shutdown_grace`, then closes the rest.

pub mod backend;
pub mod balance;
pub mod config;
pub mod health;
pub mod limit;
pub mod mysql_packet;
pub mod port_owner;
pub mod proxy;
pub mod shutdown;
pub mod snapshot;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::health::{HealthMonitor, HealthSettings};
use crate::proxy::{ListenerState, ProxyContext};
use crate::snapshot::Updater;

/// Why galera-lb could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration names something that cannot be used (a host name that does not
    /// resolve, a password variable that is not set): reported like an invalid configuration.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Bind(#[from] proxy::BindError),
}

/// A started galera-lb: its listeners are bound and accepting.
pub struct Running {
    /// Each listener's name and the address it is bound to (useful when the port was 0).
    pub listeners: Vec<(String, SocketAddr)>,
    pub updater: Updater,
    pub health: HealthMonitor,
    pub listener_states: Vec<Arc<ListenerState>>,
    stop_accepting: CancellationToken,
    accept_loops: JoinSet<()>,
    ctx: Arc<ProxyContext>,
    shutdown_grace: Duration,
}

/// Resolves the backends, binds every listener and starts accepting.
pub async fn start(config: &Config, config_file: &str) -> Result<Running, RunError> {
    let password = config
        .health
        .resolve_password()
        .map_err(|reason| RunError::Config(format!("{config_file}: health.password: {reason}")))?;
    let updater = Updater::new(config)
        .await
        .map_err(|e| RunError::Config(format!("{config_file}: {e}")))?;
    let mut bound = Vec::new();
    for listener in &config.listeners {
        let address: SocketAddr = listener
            .bind
            .parse()
            .expect("validate() checked that every bind address parses");
        let socket = proxy::bind(&listener.name, address, &config.tcp)?;
        let local = socket.local_addr().unwrap_or(address);
        bound.push((listener, socket, local));
    }

    let ctx = Arc::new(ProxyContext {
        router: updater.router(),
        tcp: config.tcp.clone(),
        connect_timeout: config.limits.connect_timeout,
        global_active: Default::default(),
        max_connections: u64::from(config.limits.max_connections),
        tasks: TaskTracker::new(),
        force_close: CancellationToken::new(),
    });
    let mut health = HealthMonitor::start(
        HealthSettings {
            config: config.health.clone(),
            password,
        },
        updater.router(),
    );
    health.sync(&updater.router().load_full());
    // The sockets are bound, so clients wait in the backlog while the first checks run: routing
    // starts from real health, not from the initial state.
    health
        .first_round(config.health.timeout + Duration::from_millis(500))
        .await;
    let stop_accepting = CancellationToken::new();
    let mut accept_loops = JoinSet::new();
    let mut listeners = Vec::new();
    let mut listener_states = Vec::new();
    let snapshot = updater.router().load_full();
    for (listener, socket, local) in bound {
        let state = Arc::new(ListenerState::new(
            listener.name.clone(),
            listener.max_connections,
        ));
        let pool = snapshot.route(&listener.name).map(|r| r.pool.clone());
        info!(
            listener = %listener.name,
            address = %local,
            policy = listener.policy.as_str(),
            pool = %listener.pool,
            backends = pool.map_or(0, |p| p.members.len()),
            "listening"
        );
        accept_loops.spawn(proxy::serve(
            socket,
            state.clone(),
            ctx.clone(),
            stop_accepting.clone(),
        ));
        listeners.push((listener.name.clone(), local));
        listener_states.push(state);
    }
    info!(
        listeners = listeners.len(),
        check = config.health.check.as_str(),
        "ready"
    );
    Ok(Running {
        listeners,
        updater,
        health,
        listener_states,
        stop_accepting,
        accept_loops,
        ctx,
        shutdown_grace: config.limits.shutdown_grace,
    })
}

impl Running {
    /// Stops accepting at once, waits up to the shutdown grace period for open connections to
    /// finish, then closes the rest.
    pub async fn drain(mut self) {
        self.stop_accepting.cancel();
        while self.accept_loops.join_next().await.is_some() {}
        self.ctx.tasks.close();
        let open = self.ctx.global_active.get();
        if open > 0 {
            info!(open, grace = ?self.shutdown_grace, "waiting for open connections to finish");
        }
        if tokio::time::timeout(self.shutdown_grace, self.ctx.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                open = self.ctx.global_active.get(),
                "shutdown grace period is over; closing the remaining connections"
            );
            self.ctx.force_close.cancel();
            self.ctx.tasks.wait().await;
        }
        self.health.stop();
        info!("all connections closed");
    }

    /// Client connections open now, across all listeners.
    pub fn active_connections(&self) -> u64 {
        self.ctx.global_active.get()
    }
}

/// Runs galera-lb until `shutdown` completes, then drains (see [`Running::drain`]).
pub async fn run(
    config: &Config,
    config_file: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let running = start(config, config_file).await?;
    shutdown.await;
    running.drain().await;
    Ok(())
}
