//! Wiring: [`start`] builds every part from a [`Config`] and connects them; [`Running::drain`]
//! stops them in order; [`run`] does both around a shutdown future.
//!
//! [`prepare`] is start-up without the sockets: it reads the secrets and builds the first routing
//! (resolving the backends' host names). `start` begins with it and `galera-lb check` runs only
//! it, so `check` fails exactly where the start would (exit 64 with the file, the field and the
//! reason) and warns where the start would (a backend whose name does not resolve yet starts as
//! down and is resolved again, see `crate::state::snapshot`).
//!
//! This is the only place that knows every layer. It implements the updater's
//! [`Effects`](crate::state::updater::Effects) (what a routing change means for health checks,
//! listeners and discovery) in [`effects`], so that the state layer never imports the layers
//! above it.

mod effects;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::{self, AdminContext};
use crate::config::source::ConfigSource;
use crate::config::{Config, Secrets};
use crate::core::client_slots::ClientSlots;
use crate::core::fd_budget::{self, DescriptorBudget};
use crate::core::net::{self, BindError};
use crate::core::{access, notify};
use crate::proxy::listeners::{self, ListenerSet};
use crate::proxy::park::ParkingLot;
use crate::proxy::{ListenerState, ProxyContext, trim};
use crate::sources::control::{self, ControlContext};
use crate::sources::health::seqno::MysqlSeqnos;
use crate::sources::health::socket::CheckSockets;
use crate::sources::health::{HealthMonitor, HealthSettings};
use crate::sources::signals;
use crate::state::change::Change;
use crate::state::saved::{self, SavedState};
use crate::state::snapshot::{Router, Updater};
use crate::state::updater::UpdaterTask;
use effects::AppEffects;

/// Why galera-lb could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration names something that cannot be used (a password variable that is not
    /// set, a token file that cannot be read): reported like an invalid configuration.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Bind(#[from] BindError),
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
    /// Cancelled as the drain begins: the admin port's `/ready` answers 503 `draining` from then.
    draining: CancellationToken,
    stop_accepting: CancellationToken,
    accept_loops: TaskTracker,
    /// Stops the updater, health checks, discovery, the control and the admin port.
    stop_background: CancellationToken,
    /// Every task but the accept loops and the sessions: the updater, health checks,
    /// discovery, the control and admin ports and their connections, the heap trimmer.
    background: TaskTracker,
    ctx: Arc<ProxyContext>,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
}

/// What start-up reads and resolves before it opens a socket (see [`prepare`]).
pub struct Prepared {
    secrets: Secrets,
    updater: Updater,
    /// What `runtime.state_file` holds, when it names a file that exists and reads.
    saved: Option<SavedState>,
    /// What the start goes on despite, one line each, naming the file and the field (a backend
    /// whose host name does not resolve now).
    pub warnings: Vec<String>,
}

/// Start-up without the sockets: reads the secrets (exit 64 with the file, the field and the
/// reason when one cannot be read) and builds the first routing, resolving the backends' host
/// names (one that does not resolve is a warning: it starts as down). `galera-lb check` runs
/// this and nothing else.
pub async fn prepare(config: &Config, config_file: &str) -> Result<Prepared, RunError> {
    let secrets = config
        .resolve_secrets(config_file)
        .map_err(|e| RunError::Config(e.to_string()))?;
    let updater = Updater::new(config)
        .await
        .map_err(|e| RunError::Config(format!("{config_file}: {e}")))?;
    let mut warnings: Vec<String> = updater
        .unresolved()
        .iter()
        .map(|unresolved| format!("{config_file}: {unresolved}"))
        .collect();
    let saved = match &config.runtime.state_file {
        Some(path) => saved::read(path).unwrap_or_else(|reason| {
            warnings.push(format!(
                "{config_file}: runtime.state_file: {}: {reason}; starting without the saved \
                 admin states and weights (it is written again at the next change)",
                path.display()
            ));
            None
        }),
        None => None,
    };
    Ok(Prepared {
        secrets,
        updater,
        saved,
        warnings,
    })
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
    let Prepared {
        secrets:
            Secrets {
                health_password: password,
                control: control_access,
                admin: admin_access,
            },
        mut updater,
        saved,
        warnings,
    } = prepare(config, config_file).await?;
    for warning in &warnings {
        warn!("{warning}");
    }
    if let (Some(saved), Some(path)) = (saved, &config.runtime.state_file) {
        for line in saved::restore(&mut updater, config, &saved).await {
            info!(file = %path.display(), "state file: {line}");
        }
        // Written back at once: what was dropped is gone from the file too.
        let (path, state) = (path.clone(), saved::capture(&updater, config));
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || saved::write(&path, &state)).await {
            warn!(error = %e, "cannot write the state file (runtime.state_file)");
        }
    }
    let budget = descriptor_budget(config);
    let mut sockets = Vec::new();
    for listener in &config.listeners {
        sockets.push((listener, listeners::bind(listener, &config.tcp)?));
    }
    let admin_socket = match &config.admin {
        Some(admin) => Some(net::bind(
            net::Port::Admin,
            admin.bind,
            config.tcp.listen_options(),
        )?),
        None => None,
    };
    let control_socket = match &config.control {
        Some(control) => Some(net::bind(
            net::Port::Control,
            control.bind,
            config.tcp.listen_options(),
        )?),
        None => None,
    };

    let router = updater.router();
    let seqnos = Arc::new(MysqlSeqnos::new(
        &config.health,
        &password,
        CheckSockets::of(&config.tcp),
    ));
    let ctx = Arc::new(ProxyContext {
        router: router.clone(),
        tcp: config.tcp.clone(),
        connect_timeout: config.limits.connect_timeout,
        global_active: Default::default(),
        max_connections: budget.sessions,
        capped_by_file_limit: budget.capped_by,
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
        seqnos: seqnos.clone(),
        held_clients: Default::default(),
        max_held_clients: Some(u64::from(config.limits.max_held_clients)),
    });
    let stop_background = CancellationToken::new();
    let background = TaskTracker::new();
    let draining = CancellationToken::new();
    let mut health = HealthMonitor::start(
        HealthSettings {
            config: config.health.clone(),
            password,
            sockets: CheckSockets::of(&config.tcp),
        },
        router.clone(),
        background.clone(),
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
            // As configured, as glbd shows its --max_conn (a lower descriptor budget is logged
            // at start and named in each refusal).
            max_connections: u64::from(config.limits.max_connections),
            open_connections: ctx.global_active.clone(),
            last_stat: Mutex::new((Instant::now(), router.totals())),
            clients: ClientSlots::new("control", control_config.max_clients as usize),
            access: access.clone(),
            accept_errors: Default::default(),
        });
        info!(
            address = %bound_address(control),
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
        let metrics = crate::core::counters::metrics();
        metrics.clients_evicted.with_label_values(&["control"]);
        for command in control::Request::NAMES {
            metrics.control_commands.with_label_values(&[command]);
        }
        background.spawn(control::serve(
            socket,
            control_ctx,
            background.clone(),
            stop_background.clone(),
        ));
    }
    let mut admin = None;
    if let (Some(admin_config), Some(socket), Some(access)) =
        (&config.admin, admin_socket, admin_access)
    {
        admin = socket.local_addr().ok();
        info!(
            address = %bound_address(admin),
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
            accept_errors: Default::default(),
            slots: ClientSlots::new("admin", admin_config.max_clients as usize),
            draining: draining.clone(),
            limits: admin::metrics::Limits {
                max_connections: u64::from(config.limits.max_connections),
                session_cap: budget.sessions,
            },
        });
        crate::core::counters::metrics()
            .clients_evicted
            .with_label_values(&["admin"]);
        background.spawn(admin::serve(
            socket,
            admin_ctx,
            background.clone(),
            stop_background.clone(),
        ));
    }
    let mut effects = AppEffects {
        router: router.clone(),
        health,
        seqnos,
        listeners: listener_set,
        changes: changes.clone(),
        tasks: background.clone(),
        background: stop_background.clone(),
        discovery: stop_background.child_token(),
    };
    effects.start_discovery(config);
    let task = UpdaterTask {
        updater,
        effects,
        config: config.clone(),
        config_file: source,
        stop: stop_background.clone(),
        reader: Default::default(),
    };
    background.spawn(task.run(change_rx));
    background.spawn(trim::run(ctx.clone(), stop_background.clone()));
    let snapshot = router.load_full();
    let backends = snapshot.backends();
    let usable = backends.iter().filter(|m| m.is_usable()).count();
    info!(
        listeners = config.listeners.len(),
        check = config.health.check.as_str(),
        backends = backends.len(),
        usable,
        "ready: {usable} of {} backends usable",
        backends.len()
    );
    Ok(Running {
        listeners,
        control,
        admin,
        router,
        listener_states,
        changes,
        draining,
        stop_accepting,
        accept_loops,
        stop_background,
        background,
        ctx,
        shutdown_delay: config.limits.shutdown_delay,
        shutdown_grace: config.limits.shutdown_grace,
    })
}

/// A bound port's address for the log (`?` when the socket cannot say).
fn bound_address(bound: Option<SocketAddr>) -> String {
    bound.map_or_else(|| "?".to_string(), |address| address.to_string())
}

/// How many sessions the open-files limit leaves room for, after raising it toward the hard
/// limit as far as the configured limits need (see `crate::core::fd_budget`).
struct SessionBudget {
    sessions: u64,
    /// The soft limit, when it is what caps sessions below `limits.max_connections`.
    capped_by: Option<u64>,
}

fn descriptor_budget(config: &Config) -> SessionBudget {
    let backends: usize = config.pools().iter().map(|p| p.backends.len()).sum();
    let budget = DescriptorBudget {
        fixed: fd_budget::RESERVE
            + config.listeners.len() as u64
            + config.admin.as_ref().map_or(0, |a| u64::from(a.max_clients))
            + config.control.as_ref().map_or(0, |c| u64::from(c.max_clients))
            // A health check and a PROXY-header relay per backend.
            + 2 * backends as u64,
        max_connections: u64::from(config.limits.max_connections),
    };
    let limit = match fd_budget::raise_soft_limit(budget.needed()) {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "cannot read or raise the open-files limit; assuming limits.max_connections fits");
            return SessionBudget {
                sessions: budget.max_connections,
                capped_by: None,
            };
        }
    };
    let sessions = budget.sessions(limit.soft);
    if sessions < budget.max_connections {
        warn!(
            open_files = limit.soft,
            hard_limit = limit.hard,
            needed = budget.needed(),
            sessions,
            max_connections = budget.max_connections,
            "the open-files limit leaves room for {sessions} client sessions (two descriptors \
             each), fewer than limits.max_connections; clients past that get ERROR 1040. Raise \
             the limit (LimitNOFILE= in the systemd unit, `ulimit -n`, or the container's \
             nofile) to {} or lower limits.max_connections",
            budget.needed()
        );
    }
    SessionBudget {
        sessions,
        capped_by: (sessions < budget.max_connections).then_some(limit.soft),
    }
}

impl Running {
    /// Drains, in this order:
    ///
    /// 1. at once, the admin port's `/ready` answers 503 `draining` (probes and keepalived see
    ///    it while everything still works);
    /// 2. for `limits.shutdown_delay` (0 by default), the listeners still accept, so clients
    ///    routed here before the probes notice are served, not refused;
    /// 3. the listeners close, and open connections get up to `limits.shutdown_grace` to
    ///    finish; the rest are closed;
    /// 4. the background tasks stop: the admin port (which answered through 1 to 3), the
    ///    control port, health checks, discovery and the updater.
    pub async fn drain(self) {
        self.draining.cancel();
        if !self.shutdown_delay.is_zero() {
            info!(
                delay = ?self.shutdown_delay,
                "/ready answers 503 draining; still accepting for limits.shutdown_delay"
            );
            tokio::time::sleep(self.shutdown_delay).await;
        }
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
        self.background.close();
        self.background.wait().await;
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
    let reload_signals = signals::ReloadSignals::install()
        .map_err(|e| warn!(error = %e, "cannot install the SIGHUP/SIGUSR2 handlers: reload with the control port's `reload`"))
        .ok();
    let running = start_from(config, config_file, source).await?;
    notify::ready();
    let hangups = reload_signals
        .map(|signals| tokio::spawn(signals::forward_reloads(signals, running.changes.clone())));
    shutdown.await;
    if let Some(hangups) = hangups {
        hangups.abort();
    }
    notify::stopping();
    running.drain().await;
    Ok(())
}
