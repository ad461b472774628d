//! A backend's identity and its live state.
//!
//! A backend is identified by its address as configured (`db1:3306`, `[::1]:3306`): never by its
//! weight or pool, so that a weight change keeps its health and counters. Its name (`backends[].name`,
//! HAProxy's `server NAME`; the address when none is given) is what displays, metrics and logs
//! call it besides; a reload may change it, so it is live state too. [`BackendState`] holds
//! everything that changes while galera-lb runs as atomics, shared by `Arc` between every snapshot
//! that includes the backend: the proxy reads health and updates counters without a lock, the
//! health checker writes health, and readers (metrics, control port) load them when asked.
//!
//! The last check's details (reason, timing, wsrep status) are an immutable [`HealthReport`]
//! behind an `ArcSwap`, for the status displays; routing only reads the atomics.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::{Notify, watch};

use crate::core::limit::ActiveCount;
use crate::core::wsrep::WsrepStatus;

/// The details of a backend's latest health check.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthReport {
    /// When the latest check finished; `None` before the first.
    pub checked_at: Option<SystemTime>,
    pub duration: Duration,
    /// Whether the latest check passed (routing follows rise/fall, see [`BackendState::is_healthy`]).
    pub passed: bool,
    /// A short reason: "synced", "non-Primary", "timeout", "error 1045", ...
    pub reason: String,
    pub wsrep: Option<WsrepStatus>,
    /// Why the node is lagging (`recv_queue 240 > 100`), while it is; else empty.
    pub lag: String,
    /// How many write-sets the node trails the most advanced node of its cluster by, at this
    /// check (`None` when unknown).
    pub seqno_lag: Option<u64>,
}

/// Why a connect to a backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectError {
    Refused = 0,
    Timeout = 1,
    Other = 2,
}

impl ConnectError {
    pub(crate) fn of(error: &std::io::Error) -> ConnectError {
        match error.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectError::Refused,
            std::io::ErrorKind::TimedOut => ConnectError::Timeout,
            _ => ConnectError::Other,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConnectError::Refused => "refused",
            ConnectError::Timeout => "timeout",
            ConnectError::Other => "other",
        }
    }
}

/// What an operator asked of a backend (control port `drain|maint|ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// In service.
    Ready,
    /// No new clients; open sessions stay.
    Drain,
    /// No new clients, open sessions stay, and health checks pause (the node is being worked on).
    Maint,
}

impl AdminState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

impl HealthReport {
    /// The node's `wsrep_local_state_comment` ("Synced", "Donor/Desynced", ...), empty when the
    /// last check did not read it.
    pub(crate) fn wsrep_state(&self) -> &str {
        self.wsrep.as_ref().map_or("", |w| w.state_comment.as_str())
    }
}

/// What a backend's open sessions are to do (see [`BackendState::session_closer`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Closing {
    /// Bumped for each request to close them all now.
    pub now: u64,
    /// Close each between transactions, the rest at this deadline.
    pub when_idle: Option<Instant>,
}

/// Live state of one backend, shared across routing snapshots.
#[derive(Debug)]
pub struct BackendState {
    /// The address as configured, the backend's identity.
    pub address: String,
    /// The backend's name: configured, else the address.
    name: ArcSwap<String>,
    /// When `healthy` last changed (or the state was made), in milliseconds since the epoch.
    since: AtomicU64,
    /// False while health checks consider the backend down.
    healthy: AtomicBool,
    /// Healthy and allowed to hold the writer role (not `read_only`).
    writable: AtomicBool,
    /// The node's `wsrep_local_index`, `u32::MAX` while unknown.
    local_index: AtomicU32,
    /// The node's `wsrep_last_committed` at its latest passing check, `u64::MAX` while unknown.
    last_committed: AtomicU64,
    /// The node's Galera segment, `u32::MAX` while unknown.
    segment: AtomicU32,
    /// Set while the node lags behind its cluster (see `health.lag`): no new reader sessions
    /// while another reader does not.
    lagging: AtomicBool,
    report: ArcSwap<HealthReport>,
    /// What the backend's open sessions are to do: close now, or between transactions.
    close_sessions: watch::Sender<Closing>,
    /// Wakes the backend's check task for a check now (a client's connect just failed).
    recheck: Notify,
    /// An [`AdminState`] as a number.
    admin: AtomicU8,
    /// Proxied connections open now, or being opened.
    active: ActiveCount,
    /// Proxied connections ever established.
    total: AtomicU64,
    /// Connect attempts that failed, by [`ConnectError`].
    connect_errors: [AtomicU64; 3],
    /// Reads that moved bytes, either way.
    transfers: AtomicU64,
    /// Bytes from clients to the backend.
    bytes_to_backend: AtomicU64,
    /// Bytes from the backend to clients.
    bytes_to_client: AtomicU64,
    /// Set once the backend is no longer routed to (removed from every pool).
    retired: AtomicBool,
}

/// A point-in-time copy of a backend's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendCounters {
    pub active: u64,
    pub total: u64,
    pub connect_errors: u64,
    pub transfers: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
}

impl BackendState {
    /// A backend that starts out healthy (and writable) or not.
    pub(crate) fn new(address: String, healthy: bool) -> Self {
        BackendState {
            name: ArcSwap::from_pointee(address.clone()),
            since: AtomicU64::new(unix_millis(SystemTime::now())),
            address,
            healthy: AtomicBool::new(healthy),
            writable: AtomicBool::new(healthy),
            local_index: AtomicU32::new(u32::MAX),
            last_committed: AtomicU64::new(u64::MAX),
            segment: AtomicU32::new(u32::MAX),
            lagging: AtomicBool::new(false),
            report: ArcSwap::from_pointee(HealthReport::default()),
            close_sessions: watch::Sender::new(Closing::default()),
            recheck: Notify::new(),
            admin: AtomicU8::new(0),
            active: ActiveCount::default(),
            total: AtomicU64::new(0),
            connect_errors: Default::default(),
            transfers: AtomicU64::new(0),
            bytes_to_backend: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    /// Marks the backend as gone from every pool: whatever still runs for it (its check task)
    /// cleans up after itself when it ends. A backend that comes back is a new state.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Whether the backend is gone from every pool.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// `"up"` or `"down"` (for displays).
    pub(crate) fn health_str(&self) -> &'static str {
        if self.is_healthy() { "up" } else { "down" }
    }

    pub fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            self.since
                .store(unix_millis(SystemTime::now()), Ordering::Relaxed);
        }
    }

    /// When the backend went up or down last (when it was first known, if it never changed).
    pub(crate) fn since(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.since.load(Ordering::Relaxed))
    }

    /// The backend's name (the address when none was configured).
    pub(crate) fn name(&self) -> Arc<String> {
        self.name.load_full()
    }

    /// Names the backend; true when that changed its name.
    pub(crate) fn set_name(&self, name: &str) -> bool {
        if self.name.load().as_str() == name {
            return false;
        }
        self.name.store(Arc::new(name.to_string()));
        true
    }

    /// Healthy, in service and not read-only: may be the writer.
    pub(crate) fn is_writable(&self) -> bool {
        self.is_healthy()
            && self.admin_state() == AdminState::Ready
            && self.writable.load(Ordering::Relaxed)
    }

    pub fn set_writable(&self, writable: bool) {
        self.writable.store(writable, Ordering::Relaxed);
    }

    /// The node's position in the Galera view (`wsrep_local_index`), when known.
    pub(crate) fn local_index(&self) -> Option<u32> {
        match self.local_index.load(Ordering::Relaxed) {
            u32::MAX => None,
            index => Some(index),
        }
    }

    pub(crate) fn set_local_index(&self, index: Option<u32>) {
        self.local_index
            .store(index.unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// The node's `wsrep_last_committed` at its latest passing check, when known.
    pub(crate) fn last_committed(&self) -> Option<u64> {
        match self.last_committed.load(Ordering::Relaxed) {
            u64::MAX => None,
            seqno => Some(seqno),
        }
    }

    pub(crate) fn set_last_committed(&self, seqno: Option<u64>) {
        self.last_committed
            .store(seqno.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The node's Galera segment, when known.
    pub(crate) fn segment(&self) -> Option<u8> {
        u8::try_from(self.segment.load(Ordering::Relaxed)).ok()
    }

    pub(crate) fn set_segment(&self, segment: Option<u8>) {
        self.segment
            .store(segment.map_or(u32::MAX, u32::from), Ordering::Relaxed);
    }

    /// Whether the node lags behind its cluster (see `health.lag`).
    pub(crate) fn is_lagging(&self) -> bool {
        self.lagging.load(Ordering::Relaxed)
    }

    pub(crate) fn set_lagging(&self, lagging: bool) {
        self.lagging.store(lagging, Ordering::Relaxed);
    }

    pub(crate) fn report(&self) -> Arc<HealthReport> {
        self.report.load_full()
    }

    pub(crate) fn set_report(&self, report: HealthReport) {
        self.report.store(Arc::new(report));
    }

    /// Asks for a check of this backend now rather than at the next interval: traffic just
    /// showed it may be gone (a refused or timed-out connect). Requests made while one is
    /// pending count once.
    pub(crate) fn request_check(&self) {
        self.recheck.notify_one();
    }

    /// Completes when [`BackendState::request_check`] has been called (for the check task).
    pub(crate) async fn check_requested(&self) {
        self.recheck.notified().await
    }

    /// A receiver that changes when [`BackendState::close_sessions`] or
    /// [`BackendState::close_sessions_when_idle`] is called.
    pub(crate) fn session_closer(&self) -> watch::Receiver<Closing> {
        self.close_sessions.subscribe()
    }

    /// Closes every open client session to this backend.
    pub fn close_sessions(&self) {
        self.close_sessions.send_modify(|c| c.now += 1);
    }

    /// Closes each open session to this backend at its next point between transactions, and
    /// those still open after `within` then. An earlier deadline already set stays.
    pub fn close_sessions_when_idle(&self, within: Duration) {
        let deadline = Instant::now() + within;
        self.close_sessions.send_if_modified(|c| match c.when_idle {
            Some(earlier) if earlier <= deadline => false,
            _ => {
                c.when_idle = Some(deadline);
                true
            }
        });
    }

    /// Withdraws [`BackendState::close_sessions_when_idle`] (the node is back in service).
    pub(crate) fn keep_sessions(&self) {
        self.close_sessions
            .send_if_modified(|c| c.when_idle.take().is_some());
    }

    pub fn active(&self) -> u64 {
        self.active.get()
    }

    pub(crate) fn count_established(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_connect_error(&self, kind: ConnectError) {
        self.connect_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed connects by reason, for metrics.
    pub(crate) fn connect_errors_by_reason(&self) -> [(&'static str, u64); 3] {
        [
            ConnectError::Refused,
            ConnectError::Timeout,
            ConnectError::Other,
        ]
        .map(|kind| {
            (
                kind.as_str(),
                self.connect_errors[kind as usize].load(Ordering::Relaxed),
            )
        })
    }

    pub(crate) fn add_bytes_to_backend(&self, n: u64) {
        self.bytes_to_backend.fetch_add(n, Ordering::Relaxed);
        self.transfers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes_to_client(&self, n: u64) {
        self.bytes_to_client.fetch_add(n, Ordering::Relaxed);
        self.transfers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn admin_state(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    pub(crate) fn set_admin_state(&self, state: AdminState) {
        let value = match state {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        };
        self.admin.store(value, Ordering::Relaxed);
    }

    pub fn counters(&self) -> BackendCounters {
        BackendCounters {
            active: self.active.get(),
            total: self.total.load(Ordering::Relaxed),
            connect_errors: self
                .connect_errors
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum(),
            transfers: self.transfers.load(Ordering::Relaxed),
            bytes_to_backend: self.bytes_to_backend.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_to_client.load(Ordering::Relaxed),
        }
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl std::ops::AddAssign for BackendCounters {
    fn add_assign(&mut self, other: BackendCounters) {
        self.active += other.active;
        self.total += other.total;
        self.connect_errors += other.connect_errors;
        self.transfers += other.transfers;
        self.bytes_to_backend += other.bytes_to_backend;
        self.bytes_to_client += other.bytes_to_client;
    }
}

impl AsRef<ActiveCount> for BackendState {
    fn as_ref(&self) -> &ActiveCount {
        &self.active
    }
}
