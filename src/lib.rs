//! galera-lb: a Galera-aware TCP load balancer for MariaDB Galera Cluster and Percona XtraDB
//! Cluster.
//!
//! Clients connect to a listener; each connection is proxied to one backend node chosen by the
//! listener's policy, and bytes are copied both ways until both sides are done. Routing state is an
//! immutable snapshot behind one `ArcSwap`, written only by the updater task; the hot path takes
//! no lock.
//!
//! # Layout
//!
//! - [`config`]: the YAML configuration, its defaults and validation (exit 64 on invalid input).
//! - [`glbd_cli`]: glbd's command line mapped onto a [`config::Config`], and glbd's daemon mode.
//! - [`haproxy`]: an HAProxy configuration read and translated into a [`config::Config`].
//! - [`source`]: where the configuration comes from (YAML or HAProxy file), for reloads.
//! - [`backend`]: a backend's identity (its address) and live state (health, counters).
//! - [`limit`]: lock-free connection counts with limits, released by guards.
//! - [`snapshot`]: pools, members and per-listener routes; the builder that swaps them.
//! - [`updater`]: the task that applies every change (discovery, DNS, control, reload).
//! - [`reload`]: what a new configuration changes, as a pure diff.
//! - [`balance`]: the policies (round robin, weighted, least connections, random, source, single).
//! - [`health`]: health checks (tcp, handshake, wsrep, http), rise/fall, and the writer election.
//! - [`discovery`]: nodes from `wsrep_incoming_addresses` and from DNS records.
//! - [`control`]: the glbd-compatible control port.
//! - [`access`]: who may use the control and admin ports (allowlist, token).
//! - [`admin`]: the admin HTTP port (`/metrics`, `/status`, `/ready`, `/live`, `/`).
//! - [`metrics`]: the Prometheus metrics.
//! - [`listeners`]: the open listeners, by name.
//! - [`proxy`]: a listener's accept loop (with back-off) and the per-connection handler.
//! - [`proxy_protocol`]: the PROXY protocol header (v1, v2) galera-lb sends to nodes and reads
//!   from an upstream load balancer.
//! - [`mysql_packet`]: the ERR packet galera-lb sends to clients it cannot serve.
//! - [`notify`]: READY/RELOADING/STOPPING for systemd's `Type=notify` (`NOTIFY_SOCKET`).
//! - [`port_owner`]: who holds a port, for a helpful "address in use" message.
//! - [`shutdown`]: SIGTERM/SIGINT as one future, SIGHUP as reload requests.
//!
//! [`run`] starts everything and, when its shutdown future completes, stops accepting at once,
//! lets open connections finish for `limits.shutdown_grace`, then closes the rest.

pub mod access;
pub mod admin;
pub mod backend;
pub mod balance;
pub mod config;
pub mod control;
pub mod discovery;
pub mod glbd_cli;
pub mod haproxy;
pub mod health;
pub mod limit;
pub mod listeners;
pub mod metrics;
pub mod mysql_packet;
pub mod notify;
pub mod park;
pub mod port_owner;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod shutdown;
pub mod snapshot;
pub mod source;
pub mod trim;
pub mod updater;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::AdminContext;
use crate::config::Config;
use crate::control::ControlContext;
use crate::health::{HealthMonitor, HealthSettings};
use crate::listeners::ListenerSet;
use crate::park::ParkingLot;
use crate::proxy::{ListenerState, ProxyContext};
use crate::snapshot::{Router, Updater};
use crate::source::ConfigSource;
use crate::updater::{Change, UpdaterTask};

/// Why galera-lb could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration names something that cannot be used (a host name that does not
    /// resolve, a password variable that is not set): reported like an invalid configuration.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Bind(#[from] proxy::BindError),
    /// The operating system refused a resource galera-lb needs (a thread, an epoll set).
    #[error("{0}")]
    Resource(String),
}

/// A started galera-lb: its listeners are bound and accepting.
pub struct Running {
    /// Each listener's name and the address it is bound to (useful when the port was 0).
    pub listeners: Vec<(String, SocketAddr)>,
    /// Where the control port listens, when it is on.
    pub control: Option<SocketAddr>,
    /// Where the admin HTTP port listens, when it is on.
    pub admin: Option<SocketAddr>,
    /// The current routing (read-only: changes go through the updater task).
    pub router: Arc<Router>,
    pub listener_states: Vec<Arc<ListenerState>>,
    /// Sends changes to the updater task (reload requests, for one).
    pub changes: mpsc::Sender<Change>,
    stop_accepting: CancellationToken,
    accept_loops: TaskTracker,
    /// Stops the updater, health checks, discovery and the control port.
    stop_background: CancellationToken,
    ctx: Arc<ProxyContext>,
    shutdown_grace: Duration,
}

/// Resolves the backends, binds every listener, runs the first health checks and starts
/// accepting. `config_file` names the configuration in messages; when it is a file, reloads
/// re-read it.
pub async fn start(config: &Config, config_file: &str) -> Result<Running, RunError> {
    let source = Path::new(config_file)
        .is_file()
        .then(|| ConfigSource::Yaml(Path::new(config_file).to_path_buf()));
    start_from(config, config_file, source).await
}

/// [`start`], with where reloads re-read the configuration (`None`: nowhere).
pub async fn start_from(
    config: &Config,
    config_file: &str,
    source: Option<ConfigSource>,
) -> Result<Running, RunError> {
    let password = config
        .health
        .resolve_password()
        .map_err(|reason| RunError::Config(format!("{config_file}: health.password: {reason}")))?;
    let control_access = config
        .control
        .as_ref()
        .map(|c| c.access_fields().resolve())
        .transpose()
        .map_err(|reason| RunError::Config(format!("{config_file}: {reason}")))?;
    let admin_access = config
        .admin
        .as_ref()
        .map(|a| a.access_fields().resolve())
        .transpose()
        .map_err(|reason| RunError::Config(format!("{config_file}: {reason}")))?;
    let updater = Updater::new(config)
        .await
        .map_err(|e| RunError::Config(format!("{config_file}: {e}")))?;
    let mut sockets = Vec::new();
    for listener in &config.listeners {
        sockets.push((listener, listeners::bind(listener, &config.tcp)?));
    }
    let admin_socket = match &config.admin {
        Some(admin) => {
            let address: SocketAddr = admin.bind.parse().expect("validate() checked it");
            Some(proxy::bind("admin", address, &config.tcp)?)
        }
        None => None,
    };
    let control_socket = match &config.control {
        Some(control) => {
            let address: SocketAddr = control.bind.parse().expect("validate() checked it");
            Some(proxy::bind("control", address, &config.tcp)?)
        }
        None => None,
    };

    let router = updater.router();
    let ctx = Arc::new(ProxyContext {
        router: router.clone(),
        tcp: config.tcp.clone(),
        connect_timeout: config.limits.connect_timeout,
        global_active: Default::default(),
        max_connections: u64::from(config.limits.max_connections),
        tasks: TaskTracker::new(),
        force_close: CancellationToken::new(),
        parking: match config.limits.park_idle_after {
            Some(_) => Some(ParkingLot::start().map_err(|e| {
                RunError::Resource(format!(
                    "cannot start the thread for idle sessions (limits.park_idle_after): {e}"
                ))
            })?),
            None => None,
        },
        park_idle_after: config.limits.park_idle_after,
        client_idle_timeout: config.limits.client_idle_timeout,
        runtime: tokio::runtime::Handle::current(),
    });
    let stop_background = CancellationToken::new();
    let mut health = HealthMonitor::start(
        HealthSettings {
            config: config.health.clone(),
            password,
        },
        router.clone(),
    );
    health.sync(&router.load_full());
    // The sockets are bound, so clients wait in the backlog while the first checks run: routing
    // starts from real health, not from the initial state.
    health
        .first_round(config.health.timeout + Duration::from_millis(500))
        .await;

    let stop_accepting = CancellationToken::new();
    let mut listener_set = ListenerSet::new(ctx.clone(), stop_accepting.clone());
    for (listener, (socket, local)) in sockets {
        listener_set.start(listener, socket, local);
    }
    let listeners: Vec<(String, SocketAddr)> = listener_set
        .open()
        .iter()
        .map(|l| (l.name.clone(), l.local))
        .collect();
    let listener_states = listener_set
        .open()
        .iter()
        .map(|l| l.state.clone())
        .collect();
    let accept_loops = listener_set.accept_loops();

    let (changes, change_rx) = mpsc::channel(64);
    let mut control = None;
    if let (Some(control_config), Some(socket), Some(access)) =
        (&config.control, control_socket, control_access)
    {
        control = socket.local_addr().ok();
        let first = &config.listeners[0];
        // The port the first listener really has (it differs from the configured one for 0).
        let default_port = listeners
            .first()
            .map_or(3306, |(_, address)| address.port());
        let control_ctx = Arc::new(ControlContext {
            router: router.clone(),
            changes: changes.clone(),
            config: control_config.clone(),
            default_port,
            pool: first.pool.clone(),
            max_connections: u64::from(config.limits.max_connections),
            open_connections: ctx.global_active.clone(),
            last_stat: Mutex::new((Instant::now(), router.totals())),
            clients: Default::default(),
            access: access.clone(),
        });
        info!(
            address = ?control,
            token = access.token.is_some(),
            allow = control_config.allow.len(),
            "control port listening"
        );
        if let Some(warning) = control.and_then(|bind| {
            access::exposure_warning("control", bind, &access, "change the routing")
        }) {
            warn!("{warning}");
        }
        access::register_port("control");
        tokio::spawn(control::serve(socket, control_ctx, stop_background.clone()));
    }
    let mut admin = None;
    if let (Some(admin_config), Some(socket), Some(access)) =
        (&config.admin, admin_socket, admin_access)
    {
        admin = socket.local_addr().ok();
        info!(
            address = ?admin,
            token = access.token.is_some(),
            allow = admin_config.allow.len(),
            "admin port listening"
        );
        if let Some(warning) = admin.and_then(|bind| {
            access::exposure_warning(
                "admin",
                bind,
                &access,
                "read the cluster's layout, state and traffic",
            )
        }) {
            warn!("{warning}");
        }
        access::register_port("admin");
        let admin_ctx = Arc::new(AdminContext {
            router: router.clone(),
            listeners: listener_set.states(),
            access,
        });
        tokio::spawn(admin::serve(socket, admin_ctx, stop_background.clone()));
    }
    let task = UpdaterTask {
        updater,
        health,
        listeners: listener_set,
        config: config.clone(),
        config_file: source,
        changes: changes.clone(),
        discovery: stop_background.child_token(),
        background: stop_background.clone(),
    };
    tokio::spawn(task.run(change_rx));
    tokio::spawn(trim::run(ctx.clone(), stop_background.clone()));
    info!(
        listeners = config.listeners.len(),
        check = config.health.check.as_str(),
        "ready"
    );
    Ok(Running {
        listeners,
        control,
        admin,
        router,
        listener_states,
        changes,
        stop_accepting,
        accept_loops,
        stop_background,
        ctx,
        shutdown_grace: config.limits.shutdown_grace,
    })
}

impl Running {
    /// Stops accepting at once, waits up to the shutdown grace period for open connections to
    /// finish, then closes the rest.
    pub async fn drain(self) {
        self.stop_accepting.cancel();
        self.accept_loops.close();
        self.accept_loops.wait().await;
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

    /// Asks the updater task to re-read the configuration file, and waits for the outcome.
    pub async fn reload(&self) -> Result<(), String> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.changes
            .send(Change::Reload(Some(reply)))
            .await
            .map_err(|_| "galera-lb is shutting down".to_string())?;
        outcome
            .await
            .map_err(|_| "galera-lb is shutting down".to_string())?
    }
}

/// Runs galera-lb until `shutdown` completes, then drains (see [`Running::drain`]). SIGHUP
/// (and SIGUSR2, HAProxy's reload signal) reloads the configuration file meanwhile.
///
/// `shutdown` is first polled only once galera-lb is ready (every listener bound and accepting,
/// the first health round run): glbd's `--daemon` mode relies on that to tell its parent, and
/// the service manager is told `READY=1` at that moment too ([`notify`]).
pub async fn run(
    config: &Config,
    config_file: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let source = Path::new(config_file)
        .is_file()
        .then(|| ConfigSource::Yaml(Path::new(config_file).to_path_buf()));
    run_from(config, config_file, source, shutdown).await
}

/// [`run`], with where reloads re-read the configuration.
pub async fn run_from(
    config: &Config,
    config_file: &str,
    source: Option<ConfigSource>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let running = start_from(config, config_file, source).await?;
    notify::ready();
    let reloads = running.changes.clone();
    let hangups = tokio::spawn(async move {
        let (Ok(mut hangup), Ok(mut usr2)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined2()),
        ) else {
            warn!(
                "cannot install the SIGHUP/SIGUSR2 handlers: reload with the control port's `reload`"
            );
            return;
        };
        loop {
            let name = tokio::select! {
                Some(()) = hangup.recv() => "SIGHUP",
                Some(()) = usr2.recv() => "SIGUSR2",
                else => return,
            };
            info!("received {name}: reloading the configuration");
            notify::reloading();
            // The updater logs and counts the outcome; either way the reload is over (a refused
            // one keeps the running configuration), and systemd waits for READY=1 to say so.
            let (reply, outcome) = tokio::sync::oneshot::channel();
            if reloads.send(Change::Reload(Some(reply))).await.is_err() {
                return;
            }
            let _ = outcome.await;
            notify::ready();
        }
    });
    shutdown.await;
    hangups.abort();
    notify::stopping();
    running.drain().await;
    Ok(())
}
