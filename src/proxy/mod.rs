//! The TCP proxy: listeners that accept clients, and the per-connection handler.
//!
//! [`bind`] opens a listening socket with the configured socket options. [`serve`] runs its accept
//! loop: it takes a slot in the global and the listener's connection limits (over a limit the
//! client gets ERR 1040), backs off on resource errors such as EMFILE instead of spinning, and
//! spawns one handler task per client on the shared [`TaskTracker`] so shutdown can wait for them.
//!
//! A handler loads the routing snapshot once, asks its listener's route for a member, connects
//! (with a timeout) and on a refused or timed-out connect asks again with that member excluded, so
//! the client never notices a dead node. When no member is left it answers with a MySQL ERR packet.
//! Once connected it copies bytes both ways until both sides are done, forwarding half-closes.
//!
//! The PROXY protocol ([`crate::core::proxy_protocol`]) enters at two points: a listener with
//! `accept_proxy` reads the header an upstream load balancer sends before anything else, and takes
//! the client's address from it (a bad header closes the connection, counted); and a backend that
//! gets headers (`proxy_protocol`, the backend's own or its listener's) is sent one right after
//! the connect, before any client byte.
//!
//! The `tcp:` options (TCP_NODELAY, keepalive) are set on both of a session's sockets by
//! [`sockopt`]; one the kernel refuses is logged and left unset, never a reason to fail a session.
//!
//! The copy loop holds no buffer while a connection is idle: it waits for readability, then reads
//! into a stack buffer and writes straight through; only bytes the destination cannot take at once
//! are kept on the heap, and only until they are written.

pub(crate) mod listeners;
pub(crate) mod park;
mod sockopt;
pub(crate) mod trim;

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{debug, warn};

use crate::config::{CausalReads, Role, SessionAction, TcpConfig};
use crate::core::backend::{BackendState, Closing, ConnectError};
use crate::core::limit::{ActiveCount, Slot, try_acquire};
use crate::core::log_limit::LogLimit;
use crate::core::mysql_follow::Follower;
use crate::core::mysql_packet::{self, ServerError};
use crate::core::net;
use crate::core::proxy_protocol::{self, Addresses, Header};
use crate::core::seqno::SeqnoProbe;
use crate::state::snapshot::{NoMember, Route, Router};
use crate::state::writer::WriterRole;
use park::ParkingLot;

/// Everything a listener and its handlers share with the rest of galera-lb.
#[derive(Debug)]
pub(crate) struct ProxyContext {
    pub router: Arc<Router>,
    pub tcp: TcpConfig,
    pub connect_timeout: Duration,
    /// Client connections across all listeners.
    pub global_active: Arc<ActiveCount>,
    /// Sessions across all listeners: `limits.max_connections`, or fewer when the open-files
    /// limit has no room for that many (`crate::core::fd_budget`).
    pub max_connections: u64,
    /// Set when `max_connections` is the descriptor budget's cap: the open-files limit.
    pub capped_by_file_limit: Option<u64>,
    /// Tracks every handler task, so shutdown can wait for them to finish.
    pub tasks: TaskTracker,
    /// Cancelled when the shutdown grace period is over: open connections are closed.
    pub force_close: CancellationToken,
    /// Where idle sessions wait (`limits.park_idle_after`); `None` keeps them in their tasks.
    pub parking: Option<ParkingLot<Session>>,
    pub park_idle_after: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
    /// The runtime that resumed sessions run on.
    pub runtime: tokio::runtime::Handle,
    /// Asks nodes for their `wsrep_last_committed` now (`causal_reads: connect`).
    pub seqnos: Arc<dyn SeqnoProbe>,
    /// Clients waiting for a usable backend (`failover_hold`), at most `max_held_clients`.
    pub held_clients: Arc<ActiveCount>,
    pub max_held_clients: Option<u64>,
}

/// A listener's own counters, kept for as long as it runs.
#[derive(Debug, Default)]
pub struct ListenerState {
    pub name: String,
    /// The listener's own connection limit, 0 for none (a reload may change it).
    max_connections: AtomicU32,
    active: ActiveCount,
    /// Clients accepted.
    pub accepted: AtomicU64,
    /// Clients turned away with an ERR packet (limit reached, no backend).
    pub refused: AtomicU64,
    /// accept() failures (EMFILE and friends).
    pub accept_errors: AtomicU64,
}

impl ListenerState {
    pub(crate) fn new(name: String, max_connections: Option<u32>) -> Self {
        ListenerState {
            name,
            max_connections: AtomicU32::new(max_connections.unwrap_or(0)),
            ..Default::default()
        }
    }

    pub(crate) fn max_connections(&self) -> Option<u32> {
        match self.max_connections.load(Ordering::Relaxed) {
            0 => None,
            max => Some(max),
        }
    }

    pub(crate) fn set_max_connections(&self, max: Option<u32>) {
        self.max_connections
            .store(max.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn active(&self) -> u64 {
        self.active.get()
    }
}

impl AsRef<ActiveCount> for ListenerState {
    fn as_ref(&self) -> &ActiveCount {
        &self.active
    }
}

/// Runs a listener's accept loop until `stop_accepting` is cancelled; the socket is closed on
/// return, so new clients are refused at once while handlers already spawned go on.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<ListenerState>,
    ctx: Arc<ProxyContext>,
    stop_accepting: CancellationToken,
) {
    net::accept_loop(
        listener,
        &state.name,
        &state.accept_errors,
        &stop_accepting,
        |stream, peer| {
            state.accepted.fetch_add(1, Ordering::Relaxed);
            admit(stream, peer, &state, &ctx);
        },
        |stream, peer| {
            state.accepted.fetch_add(1, Ordering::Relaxed);
            let reason = "galera-lb is out of file descriptors (see the log)".to_string();
            refuse_in_background(stream, peer, &state, &ctx, reason);
        },
    )
    .await;
}

/// Applies the global and listener limits, then hands the client to a handler task.
fn admit(stream: TcpStream, peer: SocketAddr, state: &Arc<ListenerState>, ctx: &Arc<ProxyContext>) {
    let Some(global) = try_acquire(&ctx.global_active, Some(ctx.max_connections)) else {
        let reason = match ctx.capped_by_file_limit {
            Some(soft) => format!(
                "the open-files limit ({soft}) leaves room for {} sessions, all open",
                ctx.max_connections
            ),
            None => format!(
                "the global max_connections ({}) is reached",
                ctx.max_connections
            ),
        };
        return refuse_in_background(stream, peer, state, ctx, reason);
    };
    let Some(local) = try_acquire(state, state.max_connections().map(u64::from)) else {
        let reason = format!(
            "listener '{}' has reached its max_connections ({})",
            state.name,
            state.max_connections().unwrap_or_default()
        );
        return refuse_in_background(stream, peer, state, ctx, reason);
    };
    let ctx_for_task = ctx.clone();
    let state = state.clone();
    ctx.tasks
        .spawn(async move { handle(stream, peer, state, ctx_for_task, (global, local)).await });
}

fn refuse_in_background(
    stream: TcpStream,
    peer: SocketAddr,
    state: &Arc<ListenerState>,
    ctx: &ProxyContext,
    reason: String,
) {
    let state = state.clone();
    ctx.tasks.spawn(async move {
        let message = format!("Too many connections (galera-lb: {reason})");
        let error = (mysql_packet::TOO_MANY_CONNECTIONS, "too_many_connections");
        send_error(&stream, peer, &state, error, message).await;
    });
}

/// A client's connection to the backend it was given.
struct Connected {
    stream: TcpStream,
    slot: Slot<BackendState>,
    /// Set for writer listeners with an `on_writer_change` action.
    follows_writer: Option<FollowsWriter>,
}

/// The writer role a session follows (the pool's, shared by every snapshot, so a rebuild does
/// not hide a move), what it does when the role moves away, and the drain's timeout then.
#[derive(Debug)]
struct FollowsWriter {
    role: Arc<WriterRole>,
    action: SessionAction,
    drain_timeout: Duration,
}

/// How long an `accept_proxy` listener waits for a new connection's PROXY header.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// The client as backends are told of it: its address and the one it connected to (from the
/// socket, or from the PROXY header an upstream load balancer sent), and any bytes it sent
/// after that header, which go to the backend first.
#[derive(Debug)]
struct ClientOrigin {
    peer: SocketAddr,
    destination: SocketAddr,
    early_bytes: Vec<u8>,
}

/// Reads the PROXY header of a client on an `accept_proxy` listener. A connection whose header
/// is missing, malformed, too long, unsupported or late is counted, logged and closed: it never
/// reaches a node. `UNKNOWN` and `LOCAL` keep the socket's addresses.
async fn accept_proxy_header(
    client: &mut TcpStream,
    socket_peer: SocketAddr,
    destination: SocketAddr,
    listener: &ListenerState,
) -> Option<ClientOrigin> {
    match proxy_protocol::read_header(client, PROXY_HEADER_TIMEOUT).await {
        Ok(received) => {
            let (peer, destination) = match received.header {
                Header::Proxy(addresses) => (addresses.source, addresses.destination),
                Header::Local => (socket_peer, destination),
            };
            debug!(listener = %listener.name, upstream = %socket_peer, client = %peer, "PROXY header accepted");
            Some(ClientOrigin {
                peer,
                destination,
                early_bytes: received.rest,
            })
        }
        Err(refused) => {
            crate::core::counters::metrics()
                .proxy_header_rejected
                .with_label_values(&[listener.name.as_str(), refused.reason.as_str()])
                .inc();
            static LOG: LogLimit = LogLimit::new();
            if let Some(suppressed) = LOG.allow() {
                warn!(listener = %listener.name, client = %socket_peer, reason = refused.reason.as_str(), suppressed,
                    "closing a connection without a valid PROXY header (accept_proxy): {}", refused.detail);
            }
            None
        }
    }
}

/// Serves one client: pick and connect with failover, then copy until both sides are done.
async fn handle(
    mut client: TcpStream,
    socket_peer: SocketAddr,
    listener: Arc<ListenerState>,
    ctx: Arc<ProxyContext>,
    slots: (Slot<ActiveCount>, Slot<ListenerState>),
) {
    sockopt::apply(&client, &ctx.tcp, sockopt::Side::Client);
    let destination = client
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let accept_proxy = ctx
        .router
        .load()
        .route(&listener.name)
        .is_some_and(|route| route.accept_proxy);
    let origin = if accept_proxy {
        let Some(origin) = Box::pin(accept_proxy_header(
            &mut client,
            socket_peer,
            destination,
            &listener,
        ))
        .await
        else {
            return;
        };
        origin
    } else {
        ClientOrigin {
            peer: socket_peer,
            destination,
            early_bytes: Vec::new(),
        }
    };
    let peer = origin.peer;
    // Boxed, so that the connect phase's state is not part of the session's task while it copies.
    let Some(connected) = Box::pin(connect_with_failover(&origin, &listener, &ctx, &client)).await
    else {
        return;
    };
    let backend = connected.slot.owner().clone();
    backend.count_established();
    debug!(listener = %listener.name, client = %peer, backend = %backend.address, name = %backend.name(), "proxying");
    let backend_down = backend.session_closer();
    let closed_now_seen = backend_down.borrow().now;
    let mut follower = Follower::new();
    follower.client_bytes(&origin.early_bytes);
    let session = Session {
        peer,
        backend_down,
        closed_now_seen,
        listener,
        _slots: slots,
        backend: connected.slot,
        follows_writer: connected.follows_writer,
        follow: Box::new(Follow {
            follower: std::sync::Mutex::new(follower),
            close_when_idle: AtomicBool::new(false),
        }),
        writer_drain_deadline: std::sync::OnceLock::new(),
        idle_before_park: Duration::ZERO,
        _tracked: ctx.tasks.token(),
        ctx,
    };
    run_session(client, connected.stream, session).await;
}

/// A proxied session: what it needs to go on, also while it is parked.
#[derive(Debug)]
pub(crate) struct Session {
    peer: SocketAddr,
    listener: Arc<ListenerState>,
    ctx: Arc<ProxyContext>,
    _slots: (Slot<ActiveCount>, Slot<ListenerState>),
    backend: Slot<BackendState>,
    /// The writer role this session follows, if any (see [`Connected::follows_writer`]).
    follows_writer: Option<FollowsWriter>,
    /// Changes when the backend's sessions are to be closed, now (`on_down:
    /// shutdown_sessions`, a removal) or between transactions (a drain).
    backend_down: watch::Receiver<Closing>,
    /// [`Closing::now`] when the session started: a larger one closes it.
    closed_now_seen: u64,
    /// The session's packets, followed to find the points between its transactions. Boxed: a
    /// parked session's slot in the parking lot stays small (the lot keeps its slots).
    follow: Box<Follow>,
    /// Set when the writer moved away under `on_writer_change: close_when_idle`: the session
    /// closes at its next idle point or at this deadline.
    writer_drain_deadline: std::sync::OnceLock<Instant>,
    /// How long the session had been idle when it was parked.
    idle_before_park: Duration,
    /// Counts the session as a running task for the shutdown drain, also while it is parked.
    _tracked: TaskTrackerToken,
}

impl Session {
    /// The writer role this session follows, once it has moved away from its backend.
    fn writer_moved(&self) -> Option<&FollowsWriter> {
        self.follows_writer
            .as_ref()
            .filter(|follows| !follows.role.is_held_by(self.backend.owner()))
    }

    /// Whether the session must end now, and why: closed at once by its backend or the
    /// writer's move, or a drain between transactions that is at an idle point or at its
    /// deadline. Also arms the copy loop to close at the next idle point while a drain is on.
    fn verdict(&self) -> Option<Ending> {
        if self.backend_down.borrow().now != self.closed_now_seen {
            return Some(Ending::Now(BACKEND_DOWN));
        }
        let writer_deadline = match self.writer_moved() {
            Some(moved) if moved.action == SessionAction::ShutdownSessions => {
                return Some(Ending::Now(WRITER_MOVED));
            }
            Some(moved) => Some(
                *self
                    .writer_drain_deadline
                    .get_or_init(|| Instant::now() + moved.drain_timeout),
            ),
            None => None,
        };
        let backend_deadline = self.backend_down.borrow().when_idle;
        let deadline = [writer_deadline, backend_deadline]
            .into_iter()
            .flatten()
            .min();
        self.follow
            .close_when_idle
            .store(deadline.is_some(), Ordering::Relaxed);
        let deadline = deadline?;
        if self.follow.is_idle() {
            return Some(Ending::BetweenTransactions);
        }
        (Instant::now() >= deadline).then_some(Ending::DrainDeadline)
    }

    /// The next moment [`Session::verdict`] may change without a signal: a drain's deadline.
    fn drain_deadline(&self) -> Option<Instant> {
        let writer = self.writer_drain_deadline.get().copied();
        [writer, self.backend_down.borrow().when_idle]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Why a session is closed by galera-lb rather than by either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Now(&'static str),
    /// A drain found it between transactions.
    BetweenTransactions,
    /// A drain's deadline passed before it was.
    DrainDeadline,
}

impl Ending {
    fn reason(self) -> &'static str {
        match self {
            Ending::Now(reason) => reason,
            Ending::BetweenTransactions => "closed between transactions (a drain)",
            Ending::DrainDeadline => {
                "closed at the drain's deadline, not between transactions (health.drain_timeout)"
            }
        }
    }

    /// Counts a drain's ending in `galera_lb_session_drains_total`.
    fn count(self, listener: &str) {
        let outcome = match self {
            Ending::Now(_) => return,
            Ending::BetweenTransactions => "between_transactions",
            Ending::DrainDeadline => "deadline",
        };
        crate::core::counters::metrics()
            .session_drains
            .with_label_values(&[listener, outcome])
            .inc();
    }
}

/// A session's [`Follower`], fed by the copy loop, and whether the loop closes the session at
/// its next idle point (a drain is on).
#[derive(Debug)]
struct Follow {
    follower: std::sync::Mutex<Follower>,
    close_when_idle: AtomicBool,
}

impl Follow {
    fn is_idle(&self) -> bool {
        self.follower.lock().is_ok_and(|f| f.is_idle())
    }

    fn observe(&self, towards_client: bool, data: &[u8]) {
        if let Ok(mut follower) = self.follower.lock() {
            match towards_client {
                true => follower.server_bytes(data),
                false => follower.client_bytes(data),
            }
        }
    }

    /// Whether a drain is on and the session just reached an idle point.
    fn closes_now(&self) -> bool {
        self.close_when_idle.load(Ordering::Relaxed) && self.is_idle()
    }
}

/// The error a copy loop ends with when a drain closes its session between transactions.
#[derive(Debug)]
struct ClosedBetweenTransactions;

impl std::fmt::Display for ClosedBetweenTransactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Ending::BetweenTransactions.reason())
    }
}

impl std::error::Error for ClosedBetweenTransactions {}

impl park::Session for Session {
    fn must_end(&self, parked_for: Duration) -> Option<String> {
        if self.ctx.force_close.is_cancelled() {
            return Some("closed at the end of the shutdown grace period".into());
        }
        if let Some(ending) = self.verdict() {
            ending.count(&self.listener.name);
            return Some(ending.reason().into());
        }
        let idle = self.idle_before_park + parked_for;
        let timeout = self.ctx.client_idle_timeout?;
        if idle < timeout {
            return None;
        }
        crate::core::counters::metrics()
            .idle_timeouts
            .with_label_values(&[self.listener.name.as_str()])
            .inc();
        Some(idle_timeout_message(idle))
    }

    fn resume(self, client: std::net::TcpStream, backend: std::net::TcpStream) {
        let runtime = self.ctx.runtime.clone();
        let tasks = self.ctx.tasks.clone();
        tasks.spawn_on(
            async move {
                match (TcpStream::from_std(client), TcpStream::from_std(backend)) {
                    (Ok(client), Ok(backend)) => run_session(client, backend, self).await,
                    (Err(e), _) | (_, Err(e)) => {
                        warn!(listener = %self.listener.name, client = %self.peer, error = %e,
                            "cannot resume a parked session; closing it")
                    }
                }
            },
            &runtime,
        );
    }

    fn describe(&self) -> String {
        format!(
            "listener {} client {} backend {}",
            self.listener.name,
            self.peer,
            self.backend.owner().address
        )
    }
}

const BACKEND_DOWN: &str = "closed: the backend went down (on_down: shutdown_sessions)";
const WRITER_MOVED: &str = "closed: the writer moved (on_writer_change: shutdown_sessions)";

fn idle_timeout_message(idle: Duration) -> String {
    format!(
        "closed: idle for {:.1} s (limits.client_idle_timeout)",
        idle.as_secs_f64()
    )
}

/// How a session's copying stopped.
enum Stop {
    Ended(io::Result<()>),
    /// galera-lb closes it (see [`Session::verdict`]).
    Closed(Ending),
    /// Quiet for `limits.park_idle_after` with nothing in flight.
    Park(Duration),
    /// Quiet for `limits.client_idle_timeout`.
    IdleTimeout(Duration),
}

/// Copies until the session ends, parking it whenever it falls idle.
async fn run_session(mut client: TcpStream, mut backend_stream: TcpStream, mut session: Session) {
    loop {
        let stop = copy_until_stop(&mut client, &mut backend_stream, &session).await;
        let (listener, peer, address) = (
            &session.listener.name,
            session.peer,
            &session.backend.owner().address,
        );
        match stop {
            Stop::Ended(Ok(())) => {
                debug!(listener = %listener, client = %peer, backend = %address, "session ended");
                return;
            }
            Stop::Ended(Err(e)) => {
                debug!(listener = %listener, client = %peer, backend = %address, error = %e, "session ended with an error");
                return;
            }
            Stop::Closed(ending) => {
                ending.count(listener);
                debug!(listener = %listener, client = %peer, backend = %address, "session {}", ending.reason());
                return;
            }
            Stop::IdleTimeout(idle) => {
                crate::core::counters::metrics()
                    .idle_timeouts
                    .with_label_values(&[listener.as_str()])
                    .inc();
                debug!(listener = %listener, client = %peer, backend = %address, "session ended: {}", idle_timeout_message(idle));
                return;
            }
            Stop::Park(idle) => {
                let ctx = session.ctx.clone();
                let Some(lot) = ctx.parking.as_ref() else {
                    continue;
                };
                let (client_std, backend_std) = match (client.into_std(), backend_stream.into_std())
                {
                    (Ok(c), Ok(b)) => (c, b),
                    (Err(e), _) | (_, Err(e)) => {
                        warn!(listener = %listener, client = %peer, error = %e, "cannot park an idle session; closing it");
                        return;
                    }
                };
                session.idle_before_park = idle;
                match lot.park(session, client_std, backend_std) {
                    Ok(()) => return,
                    Err((returned, c, b, e)) => {
                        debug!(client = %peer, error = %e, "cannot park an idle session; it stays in its task");
                        session = returned;
                        match (TcpStream::from_std(c), TcpStream::from_std(b)) {
                            (Ok(c), Ok(b)) => (client, backend_stream) = (c, b),
                            _ => return,
                        }
                    }
                }
            }
        }
    }
}

/// Copies until the session ends, falls idle for parking or its idle timeout, or galera-lb
/// closes it ([`Session::verdict`], looked at again on each signal: the backend's sessions to
/// close, the writer's move, a drain's deadline). A signal does not stop the copy: bytes on
/// their way are never dropped.
async fn copy_until_stop(
    client: &mut TcpStream,
    backend_stream: &mut TcpStream,
    session: &Session,
) -> Stop {
    if let Some(ending) = session.verdict() {
        return Stop::Closed(ending);
    }
    let backend = session.backend.owner();
    let activity = Activity::default();
    let ctx = &session.ctx;
    let parking = ctx.parking.as_ref().and(ctx.park_idle_after);
    let copy = copy_both_ways(client, backend_stream, backend, &activity, &session.follow);
    let idle = until_idle(&activity, parking, ctx.client_idle_timeout);
    tokio::pin!(copy, idle);
    let mut closing = session.backend_down.clone();
    closing.borrow_and_update();
    let mut closing_open = true;
    let role = session.follows_writer.as_ref().map(|f| &f.role);
    let mut writer_here = role.is_some();
    loop {
        let deadline = session.drain_deadline();
        let far = Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            outcome = &mut copy => {
                return match outcome {
                    Err(e) if e.get_ref().is_some_and(|e| e.is::<ClosedBetweenTransactions>()) => {
                        Stop::Closed(Ending::BetweenTransactions)
                    }
                    outcome => Stop::Ended(outcome),
                };
            }
            stop = &mut idle => return stop,
            _ = ctx.force_close.cancelled() => {
                return Stop::Ended(Err(io::Error::other("closed at the end of the shutdown grace period")));
            }
            changed = closing.changed(), if closing_open => closing_open = changed.is_ok(),
            _ = writer_moved_away(role, backend), if writer_here => writer_here = false,
            _ = tokio::time::sleep_until(deadline.unwrap_or(far).into()), if deadline.is_some() => {}
        }
        if let Some(ending) = session.verdict() {
            return Stop::Closed(ending);
        }
    }
}

/// What the copy loop tells the idle watch: bytes moved, and whether anything is in flight or
/// half-closed (such a session is never parked).
#[derive(Debug, Default)]
struct Activity {
    moved: AtomicU64,
    unsettled: AtomicU32,
}

/// Completes when the session has moved no bytes for the parking delay (and can be parked) or
/// for the idle timeout; never when neither is set.
async fn until_idle(
    activity: &Activity,
    park_after: Option<Duration>,
    timeout: Option<Duration>,
) -> Stop {
    // Checked in steps: a session parks between 1 and 1.5 times the delay after it fell quiet,
    // and times out between 1 and 1.25 times the timeout.
    let step = [park_after.map(|p| p / 2), timeout.map(|t| t / 4)]
        .into_iter()
        .flatten()
        .min()
        .map(|step| step.max(Duration::from_millis(10)));
    let Some(step) = step else {
        return std::future::pending().await;
    };
    let mut seen = activity.moved.load(Ordering::Relaxed);
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(step).await;
        let moved = activity.moved.load(Ordering::Relaxed);
        if moved != seen {
            (seen, quiet) = (moved, Duration::ZERO);
            continue;
        }
        quiet += step;
        if timeout.is_some_and(|t| quiet >= t) {
            return Stop::IdleTimeout(quiet);
        }
        let settled = activity.unsettled.load(Ordering::Relaxed) == 0;
        if settled && park_after.is_some_and(|p| quiet >= p) {
            return Stop::Park(quiet);
        }
    }
}

/// Completes when `backend` no longer holds the writer role the session follows; never when
/// the session does not follow the writer.
async fn writer_moved_away(follows: Option<&Arc<WriterRole>>, backend: &BackendState) {
    let Some(role) = follows else {
        return std::future::pending().await;
    };
    let mut changes = role.watch();
    loop {
        if !role.is_held_by(backend) {
            return;
        }
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// How often a held client (`failover_hold`) looks for a usable backend again.
const HOLD_POLL: Duration = Duration::from_millis(20);

/// Asks the route for members until one accepts a connection; the client gets an ERR packet
/// when none does. While no backend of the listener's pool is in service (for a writer
/// listener: no writable one; every node drained or read_only, the cluster re-forming), a
/// listener with
/// `failover_hold` keeps the client waiting, looking again every [`HOLD_POLL`], for up to that
/// long before the ERR packet; at most `limits.max_held_clients` wait at once.
async fn connect_with_failover(
    origin: &ClientOrigin,
    listener: &ListenerState,
    ctx: &ProxyContext,
    client: &TcpStream,
) -> Option<Connected> {
    let peer = origin.peer;
    let metrics = crate::core::counters::metrics();
    let mut held: Option<Held> = None;
    loop {
        let snapshot = ctx.router.load_full();
        let Some(route) = snapshot.route(&listener.name) else {
            let message = format!("galera-lb: listener '{}' has no route", listener.name);
            let error = (mysql_packet::NO_BACKEND, "no_route");
            send_error(client, peer, listener, error, message).await;
            return None;
        };
        let (no_member, connect_failures) = match try_members(origin, listener, ctx, route).await {
            Ok(connected) => {
                if held.is_some() {
                    metrics
                        .client_holds
                        .with_label_values(&[listener.name.as_str(), "served"])
                        .inc();
                }
                return Some(connected);
            }
            Err(failure) => failure,
        };
        let pool = &route.pool;
        // A writer listener can use only a writable node (not read_only): with none, it has
        // no usable backend whatever the others' state.
        let writer_only = route.role == Role::Writer;
        let any_in_service = pool
            .members
            .iter()
            .any(|m| m.is_in_service() && (!writer_only || m.backend.is_writable()));
        if let (Some(hold), false) = (route.failover_hold, any_in_service) {
            if held.is_none() {
                held = Held::start(ctx, hold);
                if held.is_none() {
                    metrics
                        .client_holds
                        .with_label_values(&[listener.name.as_str(), "full"])
                        .inc();
                }
            }
            if let Some(Held { deadline, .. }) = &held
                && Instant::now() < *deadline
            {
                tokio::select! {
                    _ = tokio::time::sleep(HOLD_POLL) => {}
                    _ = ctx.force_close.cancelled() => return None,
                }
                continue;
            }
            if held.take().is_some() {
                metrics
                    .client_holds
                    .with_label_values(&[listener.name.as_str(), "expired"])
                    .inc();
            }
        }
        let (error, message) = match no_member {
            NoMember::AllTried if !connect_failures.is_empty() => (
                (mysql_packet::NO_BACKEND, "connect_failed"),
                format!(
                    "galera-lb: cannot connect to any backend for listener '{}': {}",
                    listener.name,
                    connect_failures.join("; ")
                ),
            ),
            // Members in service that could not be picked or taken are full.
            _ if any_in_service => (
                (mysql_packet::TOO_MANY_CONNECTIONS, "too_many_connections"),
                format!(
                    "Too many connections (galera-lb: every usable backend of pool '{}' is at its \
                     max_connections)",
                    pool.name
                ),
            ),
            _ => (
                (mysql_packet::NO_BACKEND, "no_usable_backend"),
                format!(
                    "galera-lb: no usable backend for listener '{}' (pool '{}': {} backends, none \
                     usable{})",
                    listener.name,
                    pool.name,
                    pool.members.len(),
                    if writer_only {
                        " as the writer: down, drained or read_only"
                    } else {
                        ""
                    }
                ),
            ),
        };
        send_error(client, peer, listener, error, message).await;
        return None;
    }
}

/// A client waiting for a usable backend: its place among `limits.max_held_clients`, counted
/// in `galera_lb_clients_held` until it is dropped.
struct Held {
    _slot: Slot<ActiveCount>,
    deadline: Instant,
}

impl Held {
    /// A place for `hold`, unless `limits.max_held_clients` wait already.
    fn start(ctx: &ProxyContext, hold: Duration) -> Option<Held> {
        let slot = try_acquire(&ctx.held_clients, ctx.max_held_clients)?;
        crate::core::counters::metrics().clients_held.inc();
        Some(Held {
            _slot: slot,
            deadline: Instant::now() + hold,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        crate::core::counters::metrics().clients_held.dec();
    }
}

/// One round of [`connect_with_failover`] over `route`: members in the route's order until one
/// accepts a connection; else why none did, and the connect failures on the way.
async fn try_members(
    origin: &ClientOrigin,
    listener: &ListenerState,
    ctx: &ProxyContext,
    route: &Route,
) -> Result<Connected, (NoMember, Vec<String>)> {
    let peer = origin.peer;
    let mut causal = match route.causal_reads {
        CausalReads::Connect => causal_order(route, peer.ip(), ctx.seqnos.as_ref())
            .await
            .map(Vec::into_iter),
        CausalReads::None => None,
    };
    let mut tried: Vec<usize> = Vec::new();
    let mut connect_failures: Vec<String> = Vec::new();
    loop {
        let picked = match causal.as_mut() {
            Some(order) => order.next().ok_or(match tried.is_empty() {
                true => NoMember::NoneUsable,
                false => NoMember::AllTried,
            }),
            None => route.pick(peer.ip(), &tried),
        };
        let index = match picked {
            Ok(index) => index,
            Err(no_member) => return Err((no_member, connect_failures)),
        };
        tried.push(index);
        let member = &route.pool.members[index];
        // Another client may have filled the member since the pick: then try the next one.
        let Some(slot) = try_acquire(&member.backend, member.max_connections.map(u64::from)) else {
            continue;
        };
        let header = route.proxy_protocol_for(member).version().map(|version| {
            let addresses = Addresses {
                source: origin.peer,
                destination: origin.destination,
            };
            proxy_protocol::encode(version, Some(addresses))
        });
        let connected = connect_backend(member.socket_addr, ctx.connect_timeout, &ctx.tcp).await;
        let connected = match connected {
            Ok(stream) => {
                send_first(stream, header, &origin.early_bytes, ctx.connect_timeout).await
            }
            Err(e) => Err(e),
        };
        match connected {
            Ok(stream) => {
                let follows_writer =
                    (route.writer_moved != SessionAction::None).then(|| FollowsWriter {
                        role: route.pool.writer_role.clone(),
                        action: route.writer_moved,
                        drain_timeout: route.drain_timeout,
                    });
                return Ok(Connected {
                    stream,
                    slot,
                    follows_writer,
                });
            }
            Err(e) => {
                let kind = ConnectError::of(&e);
                member.backend.count_connect_error(kind);
                if kind != ConnectError::Other {
                    // Refused or timed out: the node may be gone; its checks look now.
                    member.backend.request_check();
                }
                warn!(listener = %listener.name, client = %peer, backend = %member.backend.address,
                    name = %member.backend.name(), error = %e, "cannot connect to backend; trying the next one");
                connect_failures.push(format!("{}: {e}", member.backend.address));
            }
        }
    }
}

/// `causal_reads: connect`: the members a new session may go to, in order. The route's pick
/// (which already leaves out nodes behind the writer's last checked seqno) names a reader; the
/// writer is asked for its `wsrep_last_committed` now, then that reader, and the reader comes
/// first only if it has committed at least as much, so it has committed every write the writer
/// had acknowledged before this client connected. The writer is always in the list: it comes
/// next when the reader's connect fails, and alone when the reader is behind or an answer does
/// not come in time. `None` without a usable writer: the route's pick decides alone.
async fn causal_order(
    route: &Route,
    client: IpAddr,
    seqnos: &dyn SeqnoProbe,
) -> Option<Vec<usize>> {
    let members = &route.pool.members;
    let writer = route.pool.writer().filter(|&w| members[w].is_usable())?;
    let reader = route.pick(client, &[]).ok()?;
    if reader == writer {
        return Some(vec![writer]);
    }
    let Some(floor) = seqnos.last_committed(members[writer].socket_addr).await else {
        return Some(vec![writer]);
    };
    match seqnos.last_committed(members[reader].socket_addr).await {
        Some(committed) if committed >= floor => Some(vec![reader, writer]),
        _ => Some(vec![writer]),
    }
}

/// Answers a client that cannot be served with an ERR packet in place of the server greeting,
/// then half-closes; counted (with `reason` as the metric label) and logged once.
async fn send_error(
    client: &TcpStream,
    peer: SocketAddr,
    listener: &ListenerState,
    (error, reason): (ServerError, &'static str),
    message: String,
) {
    listener.refused.fetch_add(1, Ordering::Relaxed);
    crate::core::counters::metrics()
        .client_errors
        .with_label_values(&[listener.name.as_str(), reason])
        .inc();
    static LOG: LogLimit = LogLimit::new();
    if let Some(suppressed) = LOG.allow() {
        warn!(listener = %listener.name, client = %peer, code = error.code, suppressed,
            "refusing client: {message}");
    }
    let packet = mysql_packet::err_packet(error, &message);
    let write = async {
        let mut written = 0;
        while written < packet.len() {
            client.writable().await?;
            match client.try_write(&packet[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        SockRef::from(client).shutdown(Shutdown::Write)
    };
    // A client that does not read its error must not hold the task for long.
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}

/// Writes what must reach a new backend connection before the client's bytes: the PROXY header
/// (when the backend gets one) and whatever the client sent after its own PROXY header.
async fn send_first(
    mut stream: TcpStream,
    header: Option<Vec<u8>>,
    early_bytes: &[u8],
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut first = header.unwrap_or_default();
    first.extend_from_slice(early_bytes);
    if first.is_empty() {
        return Ok(stream);
    }
    match tokio::time::timeout(timeout, stream.write_all(&first)).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(io::Error::new(
            e.kind(),
            format!("sending the PROXY header failed: {e}"),
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("sending the PROXY header timed out after {timeout:?}"),
        )),
    }
}

/// Opens a connection to a backend with the configured socket options and timeout.
async fn connect_backend(
    address: SocketAddr,
    timeout: Duration,
    tcp: &TcpConfig,
) -> io::Result<TcpStream> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // An option the kernel refuses is logged, not a failed connect (see `sockopt`).
    sockopt::apply(&socket, tcp, sockopt::Side::Backend);
    match tokio::time::timeout(timeout, socket.connect(address)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        )),
    }
}

/// Copies client→backend and backend→client until both directions have ended. An end of stream
/// on one side is passed on as a half-close of the other; an error on either ends both.
async fn copy_both_ways(
    client: &mut TcpStream,
    backend_stream: &mut TcpStream,
    backend: &BackendState,
    activity: &Activity,
    follow: &Follow,
) -> io::Result<()> {
    let (client_read, client_write) = client.split();
    let (backend_read, backend_write) = backend_stream.split();
    let upstream = pump(
        client_read,
        backend_write,
        activity,
        follow,
        Towards::Backend(backend),
    );
    let downstream = pump(
        backend_read,
        client_write,
        activity,
        follow,
        Towards::Client(backend),
    );
    tokio::pin!(upstream, downstream);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            result = &mut upstream, if !up_done => { result?; up_done = true; }
            result = &mut downstream, if !down_done => { result?; down_done = true; }
        }
    }
    Ok(())
}

/// The size of the stack buffer one read fills.
const READ_CHUNK: usize = 32 * 1024;

/// Which way a pump moves bytes, and the backend whose counters it bumps.
#[derive(Clone, Copy)]
enum Towards<'a> {
    Backend(&'a BackendState),
    Client(&'a BackendState),
}

/// Moves bytes from `src` to `dst` until `src` ends, then half-closes `dst`. `activity` learns
/// of every read, and is unsettled while bytes wait for `dst` and once `src` has ended;
/// `follow` sees every byte, and ends the session (with [`ClosedBetweenTransactions`]) once
/// what was read is written and a drain finds the session idle. A backend that resets the
/// connection gets a check now: the node may be gone.
async fn pump(
    mut src: ReadHalf<'_>,
    mut dst: WriteHalf<'_>,
    activity: &Activity,
    follow: &Follow,
    towards: Towards<'_>,
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let to_client = matches!(towards, Towards::Client(_));
    loop {
        let transfer =
            poll_fn(|cx| transfer_ready(cx, &mut src, &mut dst, &mut pending, follow, to_client))
                .await?;
        if let (Transfer::ReadFailed(e), Towards::Client(backend)) = (&transfer, towards)
            && e.kind() == io::ErrorKind::ConnectionReset
        {
            backend.request_check();
        }
        if let Transfer::Moved(n) | Transfer::Blocked(n) = transfer {
            match towards {
                Towards::Backend(backend) => backend.add_bytes_to_backend(n as u64),
                Towards::Client(backend) => backend.add_bytes_to_client(n as u64),
            }
            activity.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        match transfer {
            Transfer::ReadFailed(e) => return Err(e),
            Transfer::Moved(_) => {}
            Transfer::Blocked(_) => {
                activity.unsettled.fetch_add(1, Ordering::Relaxed);
                dst.write_all(&pending).await?;
                activity.unsettled.fetch_sub(1, Ordering::Relaxed);
                pending = Vec::new();
            }
            Transfer::End => {
                activity.unsettled.fetch_add(1, Ordering::Relaxed);
                return match SockRef::from(dst.as_ref()).shutdown(Shutdown::Write) {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
                    _ => Ok(()),
                };
            }
        }
        if follow.closes_now() {
            return Err(io::Error::other(ClosedBetweenTransactions));
        }
    }
}

enum Transfer {
    /// This many bytes were read and all written.
    Moved(usize),
    /// This many bytes were read; what `dst` could not take is in `pending`.
    Blocked(usize),
    /// `src` reached its end.
    End,
    /// Reading `src` failed (writing `dst` failing is the poll's error).
    ReadFailed(io::Error),
}

/// One read from `src` into a stack buffer and as much of it written to `dst` as it takes now.
///
/// A plain function called from [`poll_fn`], so the buffer lives only while it runs and is never
/// part of the connection's stored state. It reads through `poll_read`, which (unlike
/// `try_read`) lets tokio note that a short read drained the socket, so the next wait goes
/// straight to epoll instead of costing a `recvfrom` that returns EAGAIN; and into uninitialised
/// memory, so no 32 KiB are zeroed per read.
fn transfer_ready(
    cx: &mut Context<'_>,
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    pending: &mut Vec<u8>,
    follow: &Follow,
    to_client: bool,
) -> Poll<io::Result<Transfer>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut read_buf = ReadBuf::uninit(&mut buf);
    if let Err(e) = ready!(Pin::new(&mut *src).poll_read(cx, &mut read_buf)) {
        return Poll::Ready(Ok(Transfer::ReadFailed(e)));
    }
    let data = read_buf.filled();
    if data.is_empty() {
        return Poll::Ready(Ok(Transfer::End));
    }
    follow.observe(to_client, data);
    let mut written = 0;
    while written < data.len() {
        match Pin::new(&mut *dst).poll_write(cx, &data[written..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(k)) => written += k,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                pending.extend_from_slice(&data[written..]);
                return Poll::Ready(Ok(Transfer::Blocked(data.len())));
            }
        }
    }
    Poll::Ready(Ok(Transfer::Moved(data.len())))
}
