//! Health checks and the writer role.
//!
//! [`HealthMonitor`] runs one check task per backend (on `interval`, with a little jitter, each
//! check bounded by `timeout`; sooner, 50 ms after the last check at the earliest, when a
//! client's connect to the backend was refused or timed out) and a coordinator that elects each pool's writer. A check task
//! feeds its results through a rise/fall state machine ([`RiseFall`]) and writes the outcome into
//! the backend's [`BackendState`] atomics and report; it never touches the proxy, which only reads
//! those atomics. A state change is logged once, with the old state, the new one and the reason,
//! and (with `on_down: shutdown_sessions`) closes the backend's sessions.
//!
//! Whenever health or writability changes, the task wakes the coordinator, which runs
//! [`crate::state::snapshot::Pool::elect_writer`] for every pool. Only the coordinator elects, so
//! elections never race; the choice depends only on configuration and cluster state, so several
//! galera-lb instances agree on the writer without talking to each other. With
//! `writer_agreement: cluster` the coordinator instead follows the writer kept in a table on the
//! cluster, and proposes the next candidate there when that node is not usable ([`agreement`]),
//! so that the choice survives a restart of galera-lb.
//!
//! - [`probe`]: one check of one backend (tcp, handshake, wsrep, http).
//! - [`http`]: the `http` check's request and the reading of its answer.
//! - [`view`]: the comparison of the nodes' views that catches a node evicted while frozen,
//!   which still reports its old Primary view after it resumes.
//! - [`lag`]: whether a Synced node lags behind its cluster (`health.lag`), with hysteresis.
//! - [`seqno`]: asking a node for its `wsrep_last_committed` now, for `causal_reads: connect`.
//! - [`relay`]: the loopback relay that puts a PROXY header in front of a check's login, for
//!   backends that get PROXY headers.
//! - [`socket`]: the `tcp:` options of the checks' own connections (TCP_USER_TIMEOUT where
//!   galera-lb opens the socket, keepalive on mysql_async's).
//!
//! A backend that gets PROXY headers (its own `proxy_protocol`, or, when it sets none, that of a
//! listener routing to its pool) is checked with a header too: `PROXY UNKNOWN` (v1) or a v2
//! `LOCAL` header, which tell the node that the connection is galera-lb's own.

pub(crate) mod agreement;
pub(crate) mod http;
pub(crate) mod lag;
pub(crate) mod probe;
pub(crate) mod relay;
pub(crate) mod seqno;
pub(crate) mod socket;
pub mod view;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{CheckKind, HealthConfig, ProxyProtocol, SessionAction, WriterAgreement};
use crate::core::backend::{AdminState, BackendState, HealthReport};
use crate::state::snapshot::{Delta, Pool, Router, Snapshot};
use agreement::{AgreementStore, MysqlAgreement, Proposal};
use lag::{LagGate, Reading, Seqnos};
use probe::{Outcome, Probe};
use view::Views;

/// Consecutive-result thresholds: `fall` failures take an up backend down, `rise` passes bring a
/// down one up. The first result of all counts at once.
#[derive(Debug, Clone)]
pub(crate) struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    checked: bool,
    streak: u32,
}

impl RiseFall {
    pub(crate) fn new(rise: u32, fall: u32, up: bool) -> Self {
        RiseFall {
            rise,
            fall,
            up,
            checked: false,
            streak: 0,
        }
    }

    /// Continues from a state established earlier: the next result does not count at once.
    pub(crate) fn resume(&mut self) {
        self.checked = true;
    }

    /// Whether any result has been recorded yet.
    pub(crate) fn has_checked(&self) -> bool {
        self.checked
    }

    /// Takes the backend down at once, whatever `fall` says (an operator's maintenance).
    pub(crate) fn force_down(&mut self) -> bool {
        (self.checked, self.up, self.streak) = (true, false, 0);
        false
    }

    /// Records one result and returns the state after it.
    pub(crate) fn record(&mut self, passed: bool) -> bool {
        if !self.checked {
            self.checked = true;
            self.up = passed;
            self.streak = 0;
            return self.up;
        }
        if passed == self.up {
            self.streak = 0;
        } else {
            self.streak += 1;
            let needed = if self.up { self.fall } else { self.rise };
            if self.streak >= needed {
                self.up = passed;
                self.streak = 0;
            }
        }
        self.up
    }
}

/// One way of checking a backend: a real [`Probe`], or a fake in tests.
pub(crate) trait Check: Send {
    /// One check; the caller bounds it by `timeout`.
    fn check(&mut self) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>>;
    /// Drops whatever the check keeps between checks (after a timeout).
    fn reset(&mut self);
}

impl Check for Probe {
    fn check(&mut self) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(Probe::check(self))
    }

    fn reset(&mut self) {
        Probe::reset(self)
    }
}

/// Makes the [`Check`] of one backend: from the settings, where to connect and the PROXY
/// header to send first.
pub(crate) type MakeCheck =
    Arc<dyn Fn(&HealthSettings, SocketAddr, ProxyProtocol) -> Box<dyn Check> + Send + Sync>;

/// The health settings every check task shares.
#[derive(Debug)]
pub(crate) struct HealthSettings {
    pub config: HealthConfig,
    pub password: crate::core::secret::Secret,
    /// The `tcp:` options of the checks' connections.
    pub sockets: socket::CheckSockets,
}

/// Runs the check tasks and the writer coordinator.
pub(crate) struct HealthMonitor {
    settings: Arc<HealthSettings>,
    /// One check task per backend (address as configured, resolved address, PROXY header).
    tasks: HashMap<(String, SocketAddr, ProxyProtocol), CancellationToken>,
    changed: Arc<Notify>,
    /// The views the checks saw, shared by every check task.
    views: Arc<Views>,
    /// The nodes' latest `wsrep_last_committed`, shared by every check task.
    seqnos: Arc<Seqnos>,
    /// How many started check tasks have not finished their first check yet, plus one until the
    /// first [`HealthMonitor::sync`] has started them: the first election must not run before.
    first_checks_pending: Arc<watch::Sender<usize>>,
    /// Set once the coordinator has run its first election (with `writer_agreement: cluster`,
    /// its first round with the cluster's table).
    elected_once: watch::Receiver<bool>,
    synced_once: bool,
    stop: CancellationToken,
    /// Where the coordinator and the check tasks run, so that shutdown can wait for them.
    tracker: TaskTracker,
    make_check: MakeCheck,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("settings", &self.settings)
            .field("checked", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl HealthMonitor {
    /// Starts the coordinator for `router`'s pools; [`HealthMonitor::sync`] starts the checks
    /// (real ones: a [`Probe`] per backend). Every task runs on `tasks`.
    pub(crate) fn start(
        settings: HealthSettings,
        router: Arc<Router>,
        tasks: TaskTracker,
    ) -> HealthMonitor {
        let relays = tasks.clone();
        let probes: MakeCheck = Arc::new(move |settings, address, header| {
            Box::new(Probe::new(
                &settings.config,
                address,
                &settings.password,
                settings.sockets,
                header,
                relays.clone(),
            ))
        });
        // `writer_agreement: cluster`: the table on the cluster, as the check user.
        let agreement = (settings.config.writer_agreement == WriterAgreement::Cluster).then(|| {
            Arc::new(MysqlAgreement::new(
                &settings.config,
                &settings.password,
                settings.sockets,
            )) as Arc<dyn AgreementStore>
        });
        HealthMonitor::start_with(settings, router, tasks, probes, agreement)
    }

    /// [`HealthMonitor::start`] with the checks `make_check` makes and the agreement store
    /// `agreement` (fakes, in tests); `None` elects locally.
    pub(crate) fn start_with(
        settings: HealthSettings,
        router: Arc<Router>,
        tasks: TaskTracker,
        make_check: MakeCheck,
        agreement: Option<Arc<dyn AgreementStore>>,
    ) -> HealthMonitor {
        let settings = Arc::new(settings);
        let changed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let first_checks_pending = Arc::new(watch::Sender::new(1));
        let (elected, elected_once) = watch::channel(false);
        tasks.spawn(coordinate(
            router,
            settings.clone(),
            changed.clone(),
            first_checks_pending.subscribe(),
            stop.clone(),
            agreement,
            elected,
        ));
        HealthMonitor {
            settings,
            tasks: HashMap::new(),
            changed,
            views: Arc::new(Views::default()),
            seqnos: Arc::new(Seqnos::default()),
            first_checks_pending,
            elected_once,
            synced_once: false,
            stop,
            tracker: tasks,
            make_check,
        }
    }

    /// Waits until every check task started so far has finished its first check and the
    /// first election has run on their results (at most `limit` in all), so that routing starts
    /// from real health and a writer rather than the initial state.
    pub(crate) async fn first_round(&self, limit: Duration) {
        let mut pending = self.first_checks_pending.subscribe();
        let mut elected = self.elected_once.clone();
        let _ = tokio::time::timeout(limit, async {
            let _ = pending.wait_for(|n| *n == 0).await;
            let _ = elected.wait_for(|done| *done).await;
        })
        .await;
    }

    /// Starts a check task for every backend of `snapshot` that has none, and stops the tasks
    /// of backends it no longer has. Then asks for a writer election.
    pub(crate) fn sync(&mut self, snapshot: &Snapshot) {
        if self.settings.config.check == CheckKind::None {
            // No checks: every backend counts as usable, also one that was down when a reload
            // turned the checks off.
            // Not one whose name does not resolve: it has nowhere to take clients to.
            for member in snapshot.pools.iter().flat_map(|p| p.members.iter()) {
                if member.unresolved {
                    continue;
                }
                member.backend.set_healthy(true);
                member.backend.set_writable(true);
            }
        }
        let mut by_backend: HashMap<(String, SocketAddr), (Arc<BackendState>, ProxyProtocol)> =
            HashMap::new();
        for pool in &snapshot.pools {
            // A member whose name does not resolve is not checked: it has no address yet.
            for member in pool.members.iter().filter(|m| !m.unresolved) {
                let header = check_header(snapshot, pool, member);
                let entry = by_backend
                    .entry((member.backend.address.clone(), member.check_addr()))
                    .or_insert((member.backend.clone(), header));
                // The same backend in two pools: a header if either sends one.
                if entry.1 == ProxyProtocol::Off {
                    entry.1 = header;
                }
            }
        }
        let wanted: HashMap<(String, SocketAddr, ProxyProtocol), Arc<BackendState>> = by_backend
            .into_iter()
            .map(|((address, socket_addr), (backend, header))| {
                ((address, socket_addr, header), backend)
            })
            .collect();
        self.tasks.retain(|key, stop| {
            let keep = wanted.contains_key(key);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (key, backend) in wanted {
            self.start_task(key, backend);
        }
        if !std::mem::replace(&mut self.synced_once, true) {
            self.first_checks_pending
                .send_modify(|n| *n = n.saturating_sub(1));
        }
        self.changed.notify_one();
    }

    /// Follows a routing change: with the backends that came and went (`delta`), starts and
    /// stops only their check tasks (a change's cost does not grow with the number of
    /// backends); otherwise compares the whole snapshot ([`HealthMonitor::sync`]). Then asks
    /// for a writer election.
    pub(crate) fn follow(&mut self, snapshot: &Snapshot, delta: Delta) {
        let changes = match delta {
            Delta::Members(changes) if self.synced_once => changes,
            _ => return self.sync(snapshot),
        };
        for change in changes {
            let pool = &snapshot.pools[change.pool];
            let member = &change.member;
            // A member that came or went alone is in no other pool: its header is its pool's.
            let key = (
                member.backend.address.clone(),
                member.check_addr(),
                check_header(snapshot, pool, member),
            );
            if change.added {
                if self.settings.config.check == CheckKind::None {
                    member.backend.set_healthy(true);
                    member.backend.set_writable(true);
                }
                self.start_task(key, member.backend.clone());
            } else if let Some(stop) = self.tasks.remove(&key) {
                stop.cancel();
            }
        }
        self.changed.notify_one();
    }

    /// Starts the check task for `key` unless it runs already (with `check: none`, records the
    /// backend as followed and starts nothing).
    fn start_task(&mut self, key: (String, SocketAddr, ProxyProtocol), backend: Arc<BackendState>) {
        if self.tasks.contains_key(&key) {
            return;
        }
        let stop = self.stop.child_token();
        self.tasks.insert(key.clone(), stop.clone());
        if self.settings.config.check != CheckKind::None {
            self.first_checks_pending.send_modify(|n| *n += 1);
            let target = CheckTarget {
                backend,
                address: key.1,
                proxy_header: key.2,
            };
            self.tracker.spawn(run_checks(
                target,
                self.make_check.clone(),
                self.settings.clone(),
                self.changed.clone(),
                Shared {
                    views: self.views.clone(),
                    seqnos: self.seqnos.clone(),
                },
                self.first_checks_pending.clone(),
                stop,
            ));
        }
    }

    /// Asks for a writer election now (after an admin state changed, say).
    pub(crate) fn nudge(&self) {
        self.changed.notify_one();
    }

    /// Stops every check task and the coordinator.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The PROXY header a member's checks send: the member's own setting, else the first one set by
/// a listener routing to its pool (a node that gets headers from galera-lb may demand them).
/// None when the checks go to a `check_port` of their own (a clustercheck service, say), as in
/// HAProxy, where `send-proxy` applies to checks only without a check `port`.
fn check_header(
    snapshot: &Snapshot,
    pool: &Arc<crate::state::snapshot::Pool>,
    member: &crate::state::snapshot::Member,
) -> ProxyProtocol {
    if member.check_addr() != member.socket_addr {
        return ProxyProtocol::Off;
    }
    member.proxy_protocol.unwrap_or_else(|| {
        snapshot
            .routes
            .iter()
            .filter(|route| Arc::ptr_eq(&route.pool, pool))
            .map(|route| route.proxy_protocol)
            .find(|header| *header != ProxyProtocol::Off)
            .unwrap_or(ProxyProtocol::Off)
    })
}

/// What one check task checks.
struct CheckTarget {
    backend: Arc<BackendState>,
    /// Where the checks connect: the backend's address, or its `check_port`.
    address: SocketAddr,
    proxy_header: ProxyProtocol,
}

/// The least time between a check and one that traffic asked for
/// ([`BackendState::request_check`]).
const RECHECK_GAP: Duration = Duration::from_millis(50);

/// What the check tasks of every backend share: the views and the seqnos they saw.
struct Shared {
    views: Arc<Views>,
    seqnos: Arc<Seqnos>,
}

/// Checks one backend until stopped.
async fn run_checks(
    target: CheckTarget,
    make_check: MakeCheck,
    settings: Arc<HealthSettings>,
    changed: Arc<Notify>,
    shared: Shared,
    first_checks_pending: Arc<watch::Sender<usize>>,
    stop: CancellationToken,
) {
    let CheckTarget {
        backend,
        address,
        proxy_header,
    } = target;
    let Shared { views, seqnos } = shared;
    let config = &settings.config;
    // However the task ends, this node's view and seqno stop counting; and when it ends because
    // the backend was removed, the backend's series go (after the task's last check, so no
    // check can bring them back).
    let _forget = ForgetView(&views, &seqnos, address);
    let _forget_series = ForgetSeries(&backend);
    let mut lag = LagGate::new(&config.lag, backend.is_lagging());
    if !config.lag.enabled() {
        backend.set_lagging(false);
    }
    let mut first = true;
    let mut logged_reason: Option<String> = None;
    let mut probe = make_check(&settings, address, proxy_header);
    let mut state = RiseFall::new(config.rise, config.fall, backend.is_healthy());
    if backend.report().checked_at.is_some() {
        // Checked before (the checks restarted after a reload): rise/fall applies at once.
        state.resume();
    }
    loop {
        if backend.admin_state() == AdminState::Maint && !first {
            // Under maintenance: no checks, no noise; the state stays as it was. Its view and
            // seqno are no longer current, so they must not count against the other nodes'.
            views.forget(address);
            seqnos.forget(address);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(config.interval) => continue,
            }
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = tokio::time::timeout(config.timeout, probe.check()) => outcome,
        };
        let outcome = outcome.unwrap_or_else(|_| {
            probe.reset();
            Outcome::failed("timeout", format!("no answer within {:?}", config.timeout))
        });
        let duration = started.elapsed();
        let outcome = views.judge(address, outcome, Instant::now(), config.stale_view_after);
        let metrics = crate::core::counters::metrics();
        let name = backend.name();
        metrics
            .check_duration
            .with_label_values(&[backend.address.as_str(), name.as_str()])
            .observe(duration.as_secs_f64());
        if !outcome.passed {
            metrics
                .check_failures
                .with_label_values(&[
                    backend.address.as_str(),
                    name.as_str(),
                    outcome.reason.as_str(),
                ])
                .inc();
        }
        let seqno_lag = follow_lag(&backend, &mut lag, &seqnos, address, &outcome, config);
        let checked = Checked {
            outcome: &outcome,
            duration,
            lag: Lag {
                reason: lag.reason().to_string(),
                seqno_lag,
            },
        };
        apply(
            &backend,
            &mut state,
            &mut logged_reason,
            checked,
            config,
            &changed,
        );
        if std::mem::take(&mut first) {
            first_checks_pending.send_modify(|n| *n = n.saturating_sub(1));
        }
        let jitter = config.interval.mul_f64(fastrand::f64() * 0.1);
        let next = tokio::time::Instant::now() + config.interval + jitter;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
            // A client's connect just failed: check now, but not sooner than RECHECK_GAP after
            // this check, so that a burst of failures costs a few checks, not one each.
            _ = backend.check_requested() => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RECHECK_GAP.min(config.interval)) => {}
                }
            }
        }
    }
}

/// Forgets a node's view and seqno when its check task ends.
struct ForgetView<'a>(&'a Views, &'a Seqnos, SocketAddr);

impl Drop for ForgetView<'_> {
    fn drop(&mut self) {
        self.0.forget(self.2);
        self.1.forget(self.2);
    }
}

/// One check's result, as [`apply`] records it.
struct Checked<'a> {
    outcome: &'a Outcome,
    duration: Duration,
    lag: Lag,
}

/// A node's lag as the report shows it.
struct Lag {
    reason: String,
    seqno_lag: Option<u64>,
}

/// Follows a node's lag from a check's outcome: its seqno and segment, how far it trails the
/// most advanced node of its cluster, and (with `health.lag` limits) whether it is lagging,
/// logged when that changes. A failed check forgets its seqno and leaves the flag as it was.
/// Returns the seqno gap.
fn follow_lag(
    backend: &BackendState,
    gate: &mut LagGate,
    seqnos: &Seqnos,
    address: SocketAddr,
    outcome: &Outcome,
    config: &HealthConfig,
) -> Option<u64> {
    let wsrep = outcome.wsrep.as_ref().filter(|_| outcome.passed);
    let Some(wsrep) = wsrep else {
        seqnos.forget(address);
        return None;
    };
    backend.set_last_committed(wsrep.last_committed);
    backend.set_segment(wsrep.segment);
    let seqno_lag = wsrep
        .last_committed
        .filter(|_| !wsrep.cluster_uuid.is_empty())
        .map(|committed| seqnos.record(address, &wsrep.cluster_uuid, committed));
    if !config.lag.enabled() {
        return seqno_lag;
    }
    let was = gate.is_lagging();
    let lagging = gate.record(&Reading::of(&config.lag, wsrep, seqno_lag));
    backend.set_lagging(lagging);
    if lagging && !was {
        warn!(backend = %backend.address, name = %backend.name(), reason = %gate.reason(),
            "backend lagging: no new reader sessions while another reader is not");
    } else if was && !lagging {
        info!(backend = %backend.address, name = %backend.name(),
            recv_queue = wsrep.recv_queue.unwrap_or(0), seqno_lag = seqno_lag.unwrap_or(0),
            "backend caught up: a reader again");
    }
    seqno_lag
}

/// Deletes a removed backend's series when its check task ends.
struct ForgetSeries<'a>(&'a BackendState);

impl Drop for ForgetSeries<'_> {
    fn drop(&mut self) {
        if self.0.is_retired() {
            crate::core::counters::metrics().forget("backend", &self.0.address);
        }
    }
}

/// Writes one check's outcome into the backend's state; logs and acts on a change of state.
fn apply(
    backend: &BackendState,
    state: &mut RiseFall,
    logged_reason: &mut Option<String>,
    checked: Checked<'_>,
    config: &HealthConfig,
    changed: &Notify,
) {
    let Checked {
        outcome,
        duration,
        lag,
    } = checked;
    let was_up = backend.is_healthy();
    let was_writable = backend.is_writable();
    let first = !state.has_checked();
    let leaving = outcome.wsrep.as_ref().and_then(|w| w.leaving());
    let up = match leaving {
        Some(_) => state.force_down(),
        None => state.record(outcome.passed),
    };
    if outcome.passed {
        // Writability and position follow passing checks only: a failed check is not a reason
        // to move the writer before `fall` says the node is down.
        backend.set_writable(outcome.writable);
        if let Some(index) = outcome.wsrep.as_ref().and_then(|w| w.local_index) {
            backend.set_local_index(Some(index));
        }
    }
    backend.set_healthy(up);
    backend.set_report(HealthReport {
        checked_at: Some(SystemTime::now()),
        duration,
        passed: outcome.passed,
        reason: outcome.reason.clone(),
        wsrep: outcome.wsrep.clone(),
        lag: lag.reason,
        seqno_lag: lag.seqno_lag,
    });

    // Log each state once, and a new reason for the same state once (read_only while up, say,
    // or a login error after timeouts while down); results that rise/fall absorbs are not logged.
    let (old, new) = (up_down(was_up), up_down(up));
    let reason = &outcome.reason;
    let agrees = outcome.passed == up;
    if first {
        // The first check: there is no earlier state to name.
        if up {
            info!(backend = %backend.address, name = %backend.name(), reason = %reason, "backend up");
        } else {
            warn!(backend = %backend.address, name = %backend.name(), reason = %reason, detail = %outcome.detail,
                "backend down");
        }
        *logged_reason = Some(reason.clone());
    } else if up != was_up {
        if up {
            info!(backend = %backend.address, name = %backend.name(), old, new, reason = %reason, "backend up");
        } else if outcome.detail.is_empty() {
            warn!(backend = %backend.address, name = %backend.name(), old, new, reason = %reason, "backend down");
        } else {
            warn!(backend = %backend.address, name = %backend.name(), old, new, reason = %reason,
                detail = %outcome.detail, "backend down");
        }
        *logged_reason = Some(reason.clone());
    } else if agrees && logged_reason.as_ref() != Some(reason) {
        let old_reason = logged_reason.as_deref().unwrap_or("");
        if up {
            info!(backend = %backend.address, name = %backend.name(), old = %old_reason, new = %reason, "backend state");
        } else {
            warn!(backend = %backend.address, name = %backend.name(), old = %old_reason, new = %reason,
                detail = %outcome.detail, "backend still down");
        }
        *logged_reason = Some(reason.clone());
    }
    if was_up && !up {
        let sessions = backend.active();
        let (address, name) = (&backend.address, backend.name());
        match (leaving, config.on_down) {
            (Some(leaving), _) => {
                let within = leaving
                    .within
                    .map_or(config.drain_timeout, |t| t.min(config.drain_timeout));
                info!(backend = %address, name = %name, sessions, within = ?within,
                    "closing the sessions of a node taken out for maintenance between transactions");
                backend.close_sessions_when_idle(within);
            }
            (None, SessionAction::ShutdownSessions) => {
                info!(backend = %address, name = %name, sessions, "closing the sessions of a backend that went down");
                backend.close_sessions();
            }
            (None, SessionAction::CloseWhenIdle) => {
                info!(backend = %address, name = %name, sessions, within = ?config.drain_timeout,
                    "closing the sessions of a backend that went down between transactions");
                backend.close_sessions_when_idle(config.drain_timeout);
            }
            (None, SessionAction::None) => {}
        }
    } else if up && !was_up {
        backend.keep_sessions();
    }
    if up != was_up || backend.is_writable() != was_writable {
        changed.notify_one();
    }
}

fn up_down(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

/// Elects every pool's writer whenever a check task reports a change (and when the backend set
/// changes). The one place that elects. With an agreement store (`writer_agreement: cluster`) it
/// also looks at the cluster's table every `health.interval`, so that it follows a writer another
/// instance agreed.
async fn coordinate(
    router: Arc<Router>,
    settings: Arc<HealthSettings>,
    changed: Arc<Notify>,
    mut first_checks_pending: watch::Receiver<usize>,
    stop: CancellationToken,
    agreement: Option<Arc<dyn AgreementStore>>,
    elected: watch::Sender<bool>,
) {
    // The first election waits for every backend's first check, so that it does not go to
    // whichever node happened to answer first: the result must not depend on timing.
    let first_round = settings.config.timeout + Duration::from_millis(500);
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::timeout(first_round, first_checks_pending.wait_for(|n| *n == 0)) => {}
    }
    let mut agreeing = Agreeing::default();
    // Local elections run on a change only; agreement also looks at the table on every tick.
    let every = agreement.as_ref().map(|_| settings.config.interval);
    loop {
        let tick = async {
            match every {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed.notified() => {}
            _ = tick => {}
        }
        let snapshot = router.load_full();
        for pool in &snapshot.pools {
            if !snapshot.uses_writer(pool) {
                // No listener routes by this pool's writer (round-robin pools, an HAProxy
                // import): nothing to elect, log or count; a role left from a configuration
                // that used one is given up.
                if pool.writer_role.holder().is_some() {
                    pool.writer_role.hand_to(None);
                }
                continue;
            }
            let change = match &agreement {
                None => pool.elect_writer(settings.config.failback),
                Some(store) => {
                    let agree = agreeing.agree(pool, store.as_ref(), settings.config.failback);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        change = agree => change,
                    }
                }
            };
            let Some((old, new)) = change else {
                continue;
            };
            crate::core::counters::metrics()
                .writer_changes
                .with_label_values(&[pool.name.as_str()])
                .inc();
            if old.is_none() && new.is_some() {
                info!(pool = %pool.name, writer = %member_name(pool, new), "writer elected");
            } else {
                warn!(pool = %pool.name, old = %member_name(pool, old), new = %member_name(pool, new), "writer changed");
            }
        }
        elected.send_if_modified(|done| !std::mem::replace(done, true));
    }
}

/// `NAME (ADDRESS)`, or the address alone for a backend named by it; `none` for no member.
fn member_name(pool: &Pool, i: Option<usize>) -> String {
    i.map_or("none".to_string(), |i| {
        let backend = &pool.members[i].backend;
        let name = backend.name();
        if *name == backend.address {
            backend.address.clone()
        } else {
            format!("{name} ({})", backend.address)
        }
    })
}

/// Proposals in one round, at most: a lost one is followed by a read of the winner.
const PROPOSALS_PER_ROUND: usize = 2;

/// The coordinator's memory for `writer_agreement: cluster`: which pools' tables could not be
/// read at the last attempt (each outage is logged once, and its end once).
#[derive(Debug, Default)]
struct Agreeing {
    unreadable: HashMap<String, String>,
}

impl Agreeing {
    /// One round of agreement for `pool`: read the agreed writer; follow it while it is eligible
    /// here; otherwise propose what [`Pool::elect_writer`] would choose (the agreed node as the
    /// current writer: the next by the writer order, or with `failback` the best) and follow
    /// the winner. Without an answer from the cluster (no Primary component, no node up, an
    /// error) nothing changes, except that a writer that is not eligible any more is given up:
    /// no writer rather than one of this instance's own choosing. Returns `(old, new)` when the
    /// role here changed.
    async fn agree(
        &mut self,
        pool: &Pool,
        store: &dyn AgreementStore,
        failback: bool,
    ) -> Option<(Option<usize>, Option<usize>)> {
        let metrics = crate::core::counters::metrics();
        // Each outcome shows 0 from the first round on, as other counters of known things do.
        for outcome in ["won", "lost", "failed"] {
            metrics
                .writer_proposals
                .with_label_values(&[pool.name.as_str(), outcome]);
        }
        let count = |outcome: &str| {
            metrics
                .writer_proposals
                .with_label_values(&[pool.name.as_str(), outcome])
                .inc()
        };
        // Any node that passes its checks can answer (reads wait for the cluster's commits).
        let nodes: Vec<SocketAddr> = pool
            .writer_order()
            .into_iter()
            .map(|i| &pool.members[i])
            .filter(|m| !m.unresolved && m.backend.is_healthy())
            .map(|m| m.socket_addr)
            .collect();
        let keep_if_eligible = || {
            let keep = pool.writer().filter(|&w| pool.writer_eligible(w));
            pool.hand_writer(keep)
        };
        let mut proposals = 0;
        loop {
            let agreed = match store.read(&nodes, &pool.name).await {
                Ok(agreed) => agreed,
                Err(reason) => {
                    if !self.unreadable.contains_key(&pool.name) {
                        warn!(pool = %pool.name, reason = %reason,
                            writer = %member_name(pool, pool.writer()),
                            "writer agreement: cannot read the agreed writer; no change of writer \
                             (the current one is kept while it is usable) until it can be read");
                    }
                    self.unreadable.insert(pool.name.clone(), reason);
                    return keep_if_eligible();
                }
            };
            if self.unreadable.remove(&pool.name).is_some() {
                info!(pool = %pool.name, "writer agreement: the agreed writer can be read again");
            }
            let member = |node: &str| pool.members.iter().position(|m| m.backend.address == node);
            let agreed_member = agreed.as_ref().and_then(|a| member(&a.node));
            if let Some(a) = &agreed {
                pool.writer_role.set_epoch(a.epoch);
                if agreed_member.is_none() {
                    warn!(pool = %pool.name, node = %a.node, epoch = a.epoch,
                        "writer agreement: the agreed writer is no backend of this pool here \
                         (do all instances name the nodes alike?)");
                }
            }
            // With no row yet, the writer this instance holds (none at start) is the current one.
            let current = match &agreed {
                Some(_) => agreed_member,
                None => pool.writer(),
            };
            let choice = pool.writer_choice(failback, current);
            if agreed.is_some() && choice == agreed_member {
                return pool.hand_writer(agreed_member);
            }
            let Some(candidate) = choice else {
                // Nothing eligible to propose: no writer here; the row stays as it is.
                return pool.hand_writer(None);
            };
            if proposals == PROPOSALS_PER_ROUND {
                // Lost every time: try again next round, with what is eligible now.
                return keep_if_eligible();
            }
            proposals += 1;
            let expected = agreed.as_ref().map(|a| a.epoch);
            let node = &pool.members[candidate].backend.address;
            let old = agreed.as_ref().map_or("none", |a| a.node.as_str());
            match store.propose(&nodes, &pool.name, node, expected).await {
                Proposal::Won(epoch) => {
                    count("won");
                    pool.writer_role.set_epoch(epoch);
                    info!(pool = %pool.name, old = %old, new = %member_name(pool, Some(candidate)),
                        epoch, "writer agreement: proposed a new writer and won");
                    return pool.hand_writer(Some(candidate));
                }
                Proposal::Lost => {
                    count("lost");
                    info!(pool = %pool.name, old = %old, proposed = %member_name(pool, Some(candidate)),
                        expected_epoch = expected.unwrap_or(0),
                        "writer agreement: proposed a new writer and lost (another instance's \
                         proposal won): following it");
                }
                Proposal::Failed(reason) => {
                    count("failed");
                    warn!(pool = %pool.name, old = %old, proposed = %member_name(pool, Some(candidate)),
                        reason = %reason,
                        "writer agreement: a proposal of a new writer failed; no change of writer");
                    return keep_if_eligible();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::wsrep::WsrepStatus;
    use crate::state::snapshot::Updater;

    /// What each fake check answers, by address, and how long it takes to.
    #[derive(Clone, Default)]
    struct Script(Arc<std::sync::Mutex<HashMap<SocketAddr, (Outcome, Duration)>>>);

    impl Script {
        fn set(&self, port: u16, outcome: Outcome, takes: Duration) {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            self.0.lock().unwrap().insert(address, (outcome, takes));
        }
    }

    struct FakeCheck {
        address: SocketAddr,
        script: Script,
    }

    impl Check for FakeCheck {
        fn check(&mut self) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
            let (outcome, takes) = self.script.0.lock().unwrap()[&self.address].clone();
            Box::pin(async move {
                tokio::time::sleep(takes).await;
                outcome
            })
        }

        fn reset(&mut self) {}
    }

    fn synced(local_index: u32) -> Outcome {
        Outcome {
            wsrep: Some(WsrepStatus {
                local_index: Some(local_index),
                ..WsrepStatus::default()
            }),
            ..Outcome::passed("synced")
        }
    }

    fn read_only(local_index: u32) -> Outcome {
        Outcome {
            writable: false,
            ..synced(local_index)
        }
    }

    const NOW: Duration = Duration::ZERO;
    const NODES: [u16; 3] = [3316, 3326, 3336];

    /// A monitor of three backends (3316, 3326, 3336) behind a writer listener, whose checks
    /// answer from `script`.
    async fn monitor(script: &Script) -> (Arc<Router>, HealthMonitor) {
        monitor_with_role(script, "writer").await
    }

    /// [`monitor`], the listener with `role`.
    async fn monitor_with_role(script: &Script, role: &str) -> (Arc<Router>, HealthMonitor) {
        let yaml = format!(
            "listeners:\n  - name: rw\n    bind: 127.0.0.1:0\n    role: {role}\nbackends:\n  \
             - address: 127.0.0.1:3316\n  - address: 127.0.0.1:3326\n  \
             - address: 127.0.0.1:3336\nhealth:\n  check: wsrep\n  interval: 1s\n  \
             timeout: 2s\n  rise: 2\n  fall: 2\n  on_down: shutdown_sessions\n"
        );
        let config = Config::from_yaml(&yaml, "test.yaml").unwrap();
        let router = Updater::new(&config).await.unwrap().router();
        let settings = HealthSettings {
            config: config.health.clone(),
            password: Default::default(),
            sockets: Default::default(),
        };
        let script = script.clone();
        let fakes: MakeCheck = Arc::new(move |_, address, _| {
            Box::new(FakeCheck {
                address,
                script: script.clone(),
            })
        });
        let mut monitor =
            HealthMonitor::start_with(settings, router.clone(), TaskTracker::new(), fakes, None);
        monitor.sync(&router.load_full());
        (router, monitor)
    }

    fn writer_port(router: &Router) -> Option<u16> {
        let snapshot = router.load_full();
        let pool = &snapshot.pools[0];
        pool.writer().map(|i| pool.members[i].socket_addr.port())
    }

    fn backend(router: &Router, port: u16) -> Arc<BackendState> {
        let snapshot = router.load_full();
        let member = snapshot.pools[0]
            .members
            .iter()
            .find(|m| m.socket_addr.port() == port)
            .unwrap();
        member.backend.clone()
    }

    /// Three synced nodes (wsrep_local_index 0, 1, 2) after the first round: 3316 is the writer.
    async fn three_synced_nodes() -> (Script, Arc<Router>, HealthMonitor) {
        let script = Script::default();
        for (i, port) in NODES.into_iter().enumerate() {
            script.set(port, synced(i as u32), NOW);
        }
        let (router, monitor) = monitor(&script).await;
        monitor.first_round(Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(writer_port(&router), Some(3316));
        (script, router, monitor)
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_no_listener_routes_by_writer_elects_nothing() {
        let script = Script::default();
        for (i, port) in NODES.into_iter().enumerate() {
            script.set(port, synced(i as u32), NOW);
        }
        for role in ["any", "reader"] {
            let (router, monitor) = monitor_with_role(&script, role).await;
            monitor.first_round(Duration::from_secs(3)).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(NODES.iter().all(|&p| backend(&router, p).is_healthy()));
            assert_eq!(writer_port(&router), None, "role: {role}");
            // A node going down changes no writer either.
            script.set(3316, Outcome::failed("refused", String::new()), NOW);
            tokio::time::sleep(Duration::from_millis(2300)).await;
            assert!(!backend(&router, 3316).is_healthy());
            assert_eq!(writer_port(&router), None, "role: {role}");
            script.set(3316, synced(0), NOW);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_election_waits_for_every_first_check() {
        let script = Script::default();
        // The best candidate (lowest wsrep_local_index) answers last.
        script.set(3316, synced(0), Duration::from_millis(300));
        script.set(3326, synced(1), NOW);
        script.set(3336, synced(2), NOW);
        let (router, monitor) = monitor(&script).await;
        monitor.first_round(Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(writer_port(&router), Some(3316));
        assert!(NODES.iter().all(|&p| backend(&router, p).is_healthy()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_moves_after_fall_failures_and_its_sessions_are_closed() {
        let (script, router, _monitor) = three_synced_nodes().await;
        let sessions = backend(&router, 3316).session_closer();

        script.set(3316, Outcome::failed("refused", String::new()), NOW);
        // One failure is absorbed by fall: 2 (checks run every 1 s plus up to 10 % jitter).
        tokio::time::sleep(Duration::from_millis(1150)).await;
        assert!(backend(&router, 3316).is_healthy());
        assert_eq!(writer_port(&router), Some(3316));
        assert!(!sessions.has_changed().unwrap());
        // The second takes it down: the role goes to the next by wsrep_local_index.
        tokio::time::sleep(Duration::from_millis(1150)).await;
        assert!(!backend(&router, 3316).is_healthy());
        assert_eq!(writer_port(&router), Some(3326));
        assert!(
            sessions.has_changed().unwrap(),
            "on_down closes its sessions"
        );

        // Back up after rise passes; no failback, so the writer stays where it is.
        script.set(3316, synced(0), NOW);
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert!(backend(&router, 3316).is_healthy());
        assert_eq!(writer_port(&router), Some(3326));
    }

    #[tokio::test(start_paused = true)]
    async fn pxc_maint_mode_takes_a_node_out_at_the_first_check_and_drains_it_within_the_transition()
     {
        let (script, router, _monitor) = three_synced_nodes().await;
        let node = backend(&router, 3326);
        let sessions = node.session_closer();
        let maintenance = Outcome {
            wsrep: Some(WsrepStatus {
                local_index: Some(1),
                maint_mode: "MAINTENANCE".into(),
                maint_transition_period: Some(10),
                ..WsrepStatus::default()
            }),
            ..Outcome::failed("pxc_maint_mode=MAINTENANCE", String::new())
        };
        script.set(3326, maintenance, NOW);
        // One check, not fall (2): an operator's decision is acted on at once.
        tokio::time::sleep(Duration::from_millis(1150)).await;
        assert!(!node.is_healthy());
        let closing = *sessions.borrow();
        assert_eq!(
            closing.now, 0,
            "on_down's shutdown_sessions does not cut them"
        );
        let within = closing
            .when_idle
            .expect("its sessions close between transactions")
            .saturating_duration_since(std::time::Instant::now());
        assert!(
            within > Duration::from_secs(9) && within <= Duration::from_secs(10),
            "within pxc_maint_transition_period (10 s), below drain_timeout (30 s): {within:?}"
        );

        // Back in service: the drain not yet done is withdrawn.
        script.set(3326, synced(1), NOW);
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert!(node.is_healthy());
        assert_eq!(sessions.borrow().when_idle, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_only_writer_gives_up_the_role_at_once_and_stays_up() {
        let (script, router, _monitor) = three_synced_nodes().await;

        script.set(3316, read_only(0), NOW);
        tokio::time::sleep(Duration::from_millis(1150)).await;
        assert_eq!(writer_port(&router), Some(3326));
        assert!(
            backend(&router, 3316).is_healthy(),
            "read_only keeps it a reader"
        );
    }

    /// The cluster's table, faked: rows by pool, a switch that makes it unreadable, and a rival
    /// instance whose proposal commits just before this one's.
    #[derive(Default)]
    struct FakeTable {
        rows: std::sync::Mutex<HashMap<String, agreement::Agreed>>,
        unreadable: std::sync::atomic::AtomicBool,
        /// The next proposal loses: this node's proposal by another instance commits first.
        rival: std::sync::Mutex<Option<String>>,
        /// Every proposal: the node, the epoch it expected.
        proposals: std::sync::Mutex<Vec<(String, Option<u64>)>>,
    }

    impl FakeTable {
        fn set(&self, node: u16, epoch: u64) {
            let agreed = agreement::Agreed {
                node: format!("127.0.0.1:{node}"),
                epoch,
            };
            self.rows.lock().unwrap().insert("default".into(), agreed);
        }

        fn row(&self) -> Option<(u16, u64)> {
            let rows = self.rows.lock().unwrap();
            let row = rows.get("default")?;
            let port = row.node.rsplit(':').next().unwrap().parse().unwrap();
            Some((port, row.epoch))
        }

        fn unreadable(&self, yes: bool) {
            self.unreadable
                .store(yes, std::sync::atomic::Ordering::Relaxed);
        }

        fn proposals(&self) -> Vec<(u16, Option<u64>)> {
            let proposals = self.proposals.lock().unwrap();
            proposals
                .iter()
                .map(|(node, e)| (node.rsplit(':').next().unwrap().parse().unwrap(), *e))
                .collect()
        }
    }

    impl AgreementStore for FakeTable {
        fn read<'a>(
            &'a self,
            nodes: &'a [SocketAddr],
            pool: &'a str,
        ) -> agreement::AgreementFuture<'a, Result<Option<agreement::Agreed>, String>> {
            let answer = if self.unreadable.load(std::sync::atomic::Ordering::Relaxed) {
                Err("no Primary component".to_string())
            } else if nodes.is_empty() {
                Err("no node is up to ask".to_string())
            } else {
                Ok(self.rows.lock().unwrap().get(pool).cloned())
            };
            Box::pin(async move { answer })
        }

        fn propose<'a>(
            &'a self,
            _nodes: &'a [SocketAddr],
            pool: &'a str,
            node: &'a str,
            expected: Option<u64>,
        ) -> agreement::AgreementFuture<'a, Proposal> {
            self.proposals
                .lock()
                .unwrap()
                .push((node.to_string(), expected));
            let mut rows = self.rows.lock().unwrap();
            if let Some(rival) = self.rival.lock().unwrap().take() {
                let epoch = rows.get(pool).map_or(1, |r| r.epoch + 1);
                rows.insert(pool.to_string(), agreement::Agreed { node: rival, epoch });
            }
            let outcome = if self.unreadable.load(std::sync::atomic::Ordering::Relaxed) {
                Proposal::Failed("no Primary component".into())
            } else if rows.get(pool).map(|r| r.epoch) != expected {
                Proposal::Lost
            } else {
                let epoch = expected.map_or(1, |e| e + 1);
                let agreed = agreement::Agreed {
                    node: node.to_string(),
                    epoch,
                };
                rows.insert(pool.to_string(), agreed);
                Proposal::Won(epoch)
            };
            Box::pin(async move { outcome })
        }
    }

    /// [`monitor`] with `writer_agreement: cluster` over `table`.
    async fn agreeing_monitor(
        script: &Script,
        table: &Arc<FakeTable>,
    ) -> (Arc<Router>, HealthMonitor) {
        let yaml = "listeners:\n  - name: rw\n    bind: 127.0.0.1:0\n    role: writer\n\
             backends:\n  - address: 127.0.0.1:3316\n  - address: 127.0.0.1:3326\n  \
             - address: 127.0.0.1:3336\nhealth:\n  check: wsrep\n  interval: 1s\n  \
             timeout: 2s\n  rise: 2\n  fall: 2\n  writer_agreement: cluster\n";
        let config = Config::from_yaml(yaml, "test.yaml").unwrap();
        let router = Updater::new(&config).await.unwrap().router();
        let settings = HealthSettings {
            config: config.health.clone(),
            password: Default::default(),
            sockets: Default::default(),
        };
        let script = script.clone();
        let fakes: MakeCheck = Arc::new(move |_, address, _| {
            Box::new(FakeCheck {
                address,
                script: script.clone(),
            })
        });
        let store: Arc<dyn AgreementStore> = table.clone();
        let mut monitor = HealthMonitor::start_with(
            settings,
            router.clone(),
            TaskTracker::new(),
            fakes,
            Some(store),
        );
        monitor.sync(&router.load_full());
        monitor.first_round(Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        (router, monitor)
    }

    fn all_synced() -> Script {
        let script = Script::default();
        for (i, port) in NODES.into_iter().enumerate() {
            script.set(port, synced(i as u32), NOW);
        }
        script
    }

    fn epoch(router: &Router) -> u64 {
        router.load_full().pools[0].writer_role.epoch()
    }

    #[tokio::test(start_paused = true)]
    async fn agreement_follows_the_agreed_writer_rather_than_electing_its_own() {
        // As after a restart: the others agreed on 3336 (3316 had failed meanwhile).
        let table = Arc::new(FakeTable::default());
        table.set(3336, 7);
        let (router, _monitor) = agreeing_monitor(&all_synced(), &table).await;
        assert_eq!(
            writer_port(&router),
            Some(3336),
            "not 3316, the local choice"
        );
        assert_eq!(epoch(&router), 7);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(writer_port(&router), Some(3336));
        assert!(table.proposals().is_empty(), "{:?}", table.proposals());
    }

    #[tokio::test(start_paused = true)]
    async fn agreement_without_a_row_proposes_the_local_choice() {
        let table = Arc::new(FakeTable::default());
        let (router, _monitor) = agreeing_monitor(&all_synced(), &table).await;
        assert_eq!(writer_port(&router), Some(3316));
        assert_eq!(table.row(), Some((3316, 1)));
        assert_eq!(table.proposals(), [(3316, None)]);
        assert_eq!(epoch(&router), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn agreement_moves_the_writer_off_a_down_node_and_does_not_fail_back() {
        let script = all_synced();
        let table = Arc::new(FakeTable::default());
        table.set(3316, 1);
        let (router, _monitor) = agreeing_monitor(&script, &table).await;
        assert_eq!(writer_port(&router), Some(3316));
        script.set(3316, Outcome::failed("refused", String::new()), NOW);
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert_eq!(writer_port(&router), Some(3326));
        assert_eq!(table.row(), Some((3326, 2)));
        assert_eq!(table.proposals(), [(3326, Some(1))]);
        // Back, and better by the writer order: the agreed writer stays.
        script.set(3316, synced(0), NOW);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(backend(&router, 3316).is_healthy());
        assert_eq!(writer_port(&router), Some(3326));
        assert_eq!(table.row(), Some((3326, 2)));
    }

    #[tokio::test(start_paused = true)]
    async fn agreement_follows_a_change_another_instance_made_within_an_interval() {
        let table = Arc::new(FakeTable::default());
        table.set(3316, 1);
        let (router, _monitor) = agreeing_monitor(&all_synced(), &table).await;
        assert_eq!(writer_port(&router), Some(3316));
        table.set(3336, 2);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(writer_port(&router), Some(3336));
        assert_eq!(epoch(&router), 2);
        assert!(table.proposals().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_proposal_follows_the_winner() {
        let script = all_synced();
        let table = Arc::new(FakeTable::default());
        table.set(3316, 1);
        let (router, _monitor) = agreeing_monitor(&script, &table).await;
        // Another instance moves the writer to 3336 just before this one proposes 3326.
        *table.rival.lock().unwrap() = Some("127.0.0.1:3336".into());
        script.set(3316, Outcome::failed("refused", String::new()), NOW);
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert_eq!(table.proposals(), [(3326, Some(1))]);
        assert_eq!(table.row(), Some((3336, 2)));
        assert_eq!(writer_port(&router), Some(3336), "the winner's choice");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_table_changes_no_writer() {
        let script = all_synced();
        let table = Arc::new(FakeTable::default());
        table.unreadable(true);
        // At start: no writer of this instance's own choosing.
        let (router, _monitor) = agreeing_monitor(&script, &table).await;
        assert_eq!(writer_port(&router), None);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(writer_port(&router), None);
        assert!(table.proposals().is_empty());
        // Readable: the first proposal makes 3316 the writer.
        table.unreadable(false);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(writer_port(&router), Some(3316));
        // Unreadable again: a change of the table is not seen, the usable writer is kept...
        table.unreadable(true);
        table.set(3336, 2);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(writer_port(&router), Some(3316));
        // ...and one that goes down is given up, with no successor chosen alone.
        script.set(3316, Outcome::failed("refused", String::new()), NOW);
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert!(!backend(&router, 3316).is_healthy());
        assert_eq!(writer_port(&router), None);
        assert!(table.proposals().len() == 1, "{:?}", table.proposals());
        // Readable: the agreed 3336 it had not seen.
        table.unreadable(false);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(writer_port(&router), Some(3336));
        assert_eq!(epoch(&router), 2);
    }

    #[test]
    fn the_first_result_counts_at_once() {
        let mut state = RiseFall::new(2, 2, false);
        assert!(state.record(true));
        let mut state = RiseFall::new(2, 2, true);
        assert!(!state.record(false));
    }

    #[test]
    fn fall_failures_take_it_down_and_rise_passes_bring_it_up() {
        let mut state = RiseFall::new(3, 2, true);
        state.record(true);
        assert!(state.record(false), "one blip does not take it down");
        assert!(state.record(true));
        assert!(state.record(false));
        assert!(!state.record(false), "two failures in a row do");
        assert!(!state.record(true));
        assert!(!state.record(true));
        assert!(!state.record(false), "a failure resets the rise count");
        assert!(!state.record(true));
        assert!(!state.record(true));
        assert!(state.record(true), "three passes in a row bring it up");
    }
}
