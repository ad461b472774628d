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
//! - [`discovery`]: nodes from `wsrep_incoming_addresses` and from DNS records.
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
pub mod discovery;
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

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, Discover};
use crate::discovery::Change;
use crate::health::{HealthMonitor, HealthSettings};
use crate::proxy::{ListenerState, ProxyContext};
use crate::snapshot::Updater;
use crate::snapshot::{Origin, Router};

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
    /// The current routing (read-only: changes go through the updater task).
    pub router: Arc<Router>,
    pub listener_states: Vec<Arc<ListenerState>>,
    stop_accepting: CancellationToken,
    /// Stops the updater, health checks and discovery.
    stop_background: CancellationToken,
    accept_loops: JoinSet<()>,
    ctx: Arc<ProxyContext>,
    shutdown_grace: Duration,
}

/// Resolves the backends, binds every listener, runs the first health checks and starts
/// accepting.
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
    let router = updater.router();
    let stop_background = CancellationToken::new();
    let (changes, change_rx) = mpsc::channel(64);
    start_discovery(config, &router, &changes, &stop_background);
    tokio::spawn(run_updater(
        updater,
        health,
        change_rx,
        stop_background.clone(),
    ));
    info!(
        listeners = listeners.len(),
        check = config.health.check.as_str(),
        "ready"
    );
    Ok(Running {
        listeners,
        router,
        listener_states,
        stop_accepting,
        stop_background,
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
        self.stop_background.cancel();
        info!("all connections closed");
    }

    /// Client connections open now, across all listeners.
    pub fn active_connections(&self) -> u64 {
        self.ctx.global_active.get()
    }
}

/// Starts `discover: wsrep` for the pools that ask for it and `resolve_every` for the backends
/// that have it; they report to the updater through `changes`.
fn start_discovery(
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

/// The updater task: the only writer of the routing snapshot once galera-lb runs. It applies
/// each [`Change`] and then starts or stops health checks to match the new snapshot.
async fn run_updater(
    mut updater: Updater,
    mut health: HealthMonitor,
    mut changes: mpsc::Receiver<Change>,
    stop: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            _ = stop.cancelled() => break,
            change = changes.recv() => match change {
                Some(change) => change,
                // Nothing can send any more, but the health checks run until galera-lb stops.
                None => {
                    stop.cancelled().await;
                    break;
                }
            },
        };
        let result = match &change {
            Change::Discovered { pool, addresses } => {
                info!(pool = %pool, discovered = ?addresses, "discovery changed the pool");
                updater.set_discovered(pool, addresses.clone()).await
            }
            Change::Resolved { name, addresses } => {
                info!(name = %name, addresses = ?addresses, "DNS records changed");
                updater.set_resolved(name, addresses.clone()).await
            }
        };
        match result {
            Ok(()) => health.sync(&updater.router().load_full()),
            Err(e) => {
                warn!(error = %e, ?change, "cannot apply a change; keeping the current routing")
            }
        }
    }
    health.stop();
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
