//! The glbd-compatible control port: a line protocol on TCP that glbd users drive with `nc`.
//!
//! Requests, one per line (glbd reads one per `read()`; galera-lb splits lines, so several
//! requests may arrive in one packet):
//!
//! | request | reply |
//! |---|---|
//! | `getinfo` | the router table in glbd's layout |
//! | `getstat`, `getstats` | glbd's counters line, counted since the previous such request |
//! | `HOST:PORT[:WEIGHT]` | add a backend or set its weight (port defaults to the first listener's, weight to 1); `:0` drains it, a negative weight removes it and closes its sessions; `Ok` or `Error` |
//! | `getinfo json` | every pool and backend (address, name, ...) as JSON |
//! | `health` | each backend's state, role and reason, and its name (`name=`) |
//! | `drain HOST:PORT`, `maint HOST:PORT`, `ready HOST:PORT` | admin states; `Ok` or `Error` |
//! | `reload` | re-read the configuration file; `Ok` or `Error` |
//! | `interactive` | keep this connection open for more requests (until `quit` or idle) |
//! | `auth TOKEN` | with `control.token` set: allow this connection's changes; `Ok`, or `Error` and the connection closes |
//! | `help` | this list |
//!
//! Replies to changes are `Ok\n`, as glbd's, or `Error: REASON\n`: `Error` stays the first word
//! (glbd's scripts compare the reply with `Ok`, or look for `Error`), and the reason says why
//! (`Error: no backend 127.0.0.1:9999`). A connection answers what it
//! has received and then closes after a short pause without new requests, so that
//! `echo getinfo | nc 127.0.0.1 8011` returns even with a netcat that never half-closes; a client
//! that sends `interactive` first keeps the connection for as long as it keeps talking.
//!
//! Limits: at most `max_clients` connections (when all are taken, a new connection takes the
//! slot of the one idle longest, `crate::core::client_slots`: one between requests or without a
//! whole request yet; so an operator's request is always answered), lines of at most
//! `max_line` bytes (a longer one gets `Error` and the connection closes), a line must be
//! complete within [`LINE_DEADLINE`] of its first byte, a connection that has not made a request
//! closes [`LINE_DEADLINE`] after it opened (blank lines do not count), and a reply the client
//! does not read within [`REPLY_DEADLINE`] closes the connection: idle, slow or non-reading
//! clients cannot hold slots.
//!
//! Access (see `crate::core::access`): with `control.allow`, a client from another address gets one
//! line, `Error: ADDRESS is not allowed on the control port`, and the connection closes before
//! it takes a slot. With `control.token`, requests that change state (destinations, `drain`,
//! `maint`, `ready`, `reload`) get `Error: ...` until the connection has sent `auth TOKEN`; reads
//! (`getinfo`, `getstat`, `health`, `help`, `interactive`, `quit`) stay open. A wrong token gets
//! `Error: wrong token` and the connection closes, so each guess costs a connection. Without a
//! token, `auth` is answered `Ok` and changes nothing, so scripts may send it before a token is
//! configured. The token never appears in a log line. Without `allow` and `token`, the port
//! behaves exactly as glbd's.
//!
//! Every change goes to the updater task, the routing snapshot's only writer.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::ControlConfig;
use crate::core::access::{Access, Denied, count_denied};
use crate::core::backend::{AdminState, BackendCounters};
use crate::core::client_slots::{ClientSlot, ClientSlots};
use crate::core::limit::ActiveCount;
use crate::core::log_limit::LogLimit;
use crate::core::net;
use crate::core::secret::Secret;
use crate::state::change::{Change, ControlChange, ControlRequest};
use crate::state::snapshot::{Router, Snapshot};

/// How long a batch connection (one that did not ask for `interactive`) stays open after its
/// last request was answered.
pub(crate) const BATCH_LINGER: Duration = Duration::from_millis(250);
/// How long a client may take to send a whole line, and to send its first one.
pub(crate) const LINE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a client may leave a reply unread before its connection is closed.
pub(crate) const REPLY_DEADLINE: Duration = Duration::from_secs(5);

/// One parsed request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    GetInfo {
        json: bool,
    },
    GetStat,
    /// Add or reweight (`weight` ≥ 0), or remove (`weight` < 0) a destination.
    Destination {
        address: String,
        weight: f64,
    },
    Admin {
        state: AdminState,
        address: String,
    },
    Health,
    Reload,
    Interactive,
    Quit,
    Help,
    /// `auth TOKEN`: allows this connection's changes when the token is right.
    Auth(Secret),
}

impl Request {
    /// Every kind [`Request::name`] gives, and `invalid` (a line that is no request): the
    /// `command` labels of `galera_lb_control_commands_total`.
    pub(crate) const NAMES: [&'static str; 16] = [
        "getinfo",
        "getinfo_json",
        "getstat",
        "remove",
        "drain_by_weight",
        "set_weight",
        "drain",
        "maint",
        "ready",
        "health",
        "reload",
        "interactive",
        "quit",
        "help",
        "auth",
        "invalid",
    ];

    /// The request's kind, for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::GetInfo { json: false } => "getinfo",
            Request::GetInfo { json: true } => "getinfo_json",
            Request::GetStat => "getstat",
            Request::Destination { weight, .. } if *weight < 0.0 => "remove",
            Request::Destination { weight, .. } if *weight == 0.0 => "drain_by_weight",
            Request::Destination { .. } => "set_weight",
            Request::Admin { state, .. } => state.as_str(),
            Request::Health => "health",
            Request::Reload => "reload",
            Request::Interactive => "interactive",
            Request::Quit => "quit",
            Request::Help => "help",
            Request::Auth(_) => "auth",
        }
    }

    /// Whether the request changes routing or configuration (and so needs the token, when one
    /// is configured).
    pub(crate) fn changes_state(&self) -> bool {
        matches!(
            self,
            Request::Destination { .. } | Request::Admin { .. } | Request::Reload
        )
    }
}

/// Parses one request line (already trimmed); `default_port` completes a destination without one.
pub fn parse(line: &str, default_port: u16) -> Result<Request, String> {
    let mut words = line.split_whitespace();
    let command = words.next().ok_or("empty request")?;
    let argument = words.next();
    let lower = command.to_ascii_lowercase();
    if lower == "auth" {
        // Checked before anything that quotes the line: the reasons must not contain the token.
        return match (argument, words.next()) {
            (Some(token), None) => Ok(Request::Auth(Secret::new(token.to_string()))),
            (None, _) => Err("auth needs the token: auth TOKEN".to_string()),
            (Some(_), Some(_)) => Err("auth takes one word, the token".to_string()),
        };
    }
    if words.next().is_some() {
        return Err(format!("too many words in '{line}'"));
    }
    let no_argument = |request: Request| match argument {
        None => Ok(request),
        Some(extra) => Err(format!("'{command}' takes no argument, got '{extra}'")),
    };
    match lower.as_str() {
        "getinfo" => match argument {
            None => Ok(Request::GetInfo { json: false }),
            Some(a) if a.eq_ignore_ascii_case("json") => Ok(Request::GetInfo { json: true }),
            Some(other) => Err(format!("getinfo takes 'json' or nothing, not '{other}'")),
        },
        "getstat" | "getstats" => no_argument(Request::GetStat),
        "health" => no_argument(Request::Health),
        "reload" => no_argument(Request::Reload),
        "interactive" => no_argument(Request::Interactive),
        "quit" | "exit" => no_argument(Request::Quit),
        "help" => no_argument(Request::Help),
        "drain" | "maint" | "ready" => {
            let state = match lower.as_str() {
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                _ => AdminState::Ready,
            };
            let target = argument.ok_or_else(|| format!("{lower} needs HOST:PORT"))?;
            let (address, _) = parse_destination(target, default_port)?;
            Ok(Request::Admin { state, address })
        }
        _ if argument.is_none() => {
            let (address, weight) = parse_destination(command, default_port)?;
            Ok(Request::Destination { address, weight })
        }
        _ => Err(format!("unknown request '{line}' (try 'help')")),
    }
}

/// Parses glbd's destination `HOST[:PORT[:WEIGHT]]` (IPv6 as `[::1][:PORT[:WEIGHT]]`) into a
/// `HOST:PORT` address and a weight (default 1; negative means "remove"). The control port and
/// the glbd command line share it.
pub fn parse_destination(text: &str, default_port: u16) -> Result<(String, f64), String> {
    let (host, rest, bracketed) = if let Some(inner) = text.strip_prefix('[') {
        let (host, rest) = inner
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing ']'".to_string())?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("'{host}' is not an IPv6 address"))?;
        if !(rest.is_empty() || rest.starts_with(':')) {
            return Err(format!("unexpected '{rest}' after ']'"));
        }
        (host, rest.strip_prefix(':'), true)
    } else if text.matches(':').count() > 2 || text.starts_with("::") {
        return Err("write an IPv6 address in brackets: [::1], [::1]:3306 or [::1]:3306:1".into());
    } else {
        match text.split_once(':') {
            Some((host, rest)) => (host, Some(rest), false),
            None => (text, None, false),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".to_string());
    }
    if !bracketed
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(format!("'{host}' is not a host name or address"));
    }
    let (port, weight) = match rest {
        None => (None, None),
        Some(rest) => match rest.split_once(':') {
            Some((port, weight)) => (Some(port), Some(weight)),
            None => (Some(rest), None),
        },
    };
    if weight.is_some_and(|w| w.contains(':')) {
        return Err("too many ':' fields: expected HOST[:PORT[:WEIGHT]]".to_string());
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("'{p}' is not a port number (1-65535)"))?,
    };
    if port == 0 {
        return Err("port 0 is not a port to connect to".to_string());
    }
    let weight = match weight {
        None => 1.0,
        Some(w) => w
            .parse::<f64>()
            .ok()
            .filter(|w| w.is_finite())
            .ok_or_else(|| format!("weight '{w}' is not a number"))?,
    };
    let address = if bracketed {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((address, weight))
}

/// The router table in glbd's layout, for the pool `pool`.
pub(crate) fn render_getinfo(
    snapshot: &Snapshot,
    pool: &str,
    open: u64,
    max_connections: u64,
) -> String {
    let rule = "-".repeat(54);
    let mut out =
        format!("Router:\n{rule}\n        Address       :   weight   usage    map  conns\n");
    let members = snapshot
        .pools
        .iter()
        .find(|p| p.name == pool)
        .map(|p| p.members.as_slice())
        .unwrap_or_default();
    for member in members {
        let conns = member.backend.active();
        let usage = 1.0 - 1.0 / (conns as f64 + 1.0);
        out.push_str(&format!(
            "{:>21} : {:>8.3} {:>7.3} {:>6} {:>6}\n",
            member.backend.address, member.weight, usage, "N/A", conns
        ));
    }
    out.push_str(&format!(
        "{rule}\nDestinations: {}, total connections: {open} of {max_connections} max\n",
        members.len()
    ));
    out
}

/// Every pool and backend as one JSON document.
pub(crate) fn render_getinfo_json(snapshot: &Snapshot) -> String {
    let pools: Vec<_> = snapshot
        .pools
        .iter()
        .map(|pool| {
            let writer = pool.writer();
            let members: Vec<_> = pool
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let c = m.backend.counters();
                    let report = m.backend.report();
                    json!({
                        "address": m.backend.address,
                        "name": m.backend.name().as_str(),
                        "socket_address": m.socket_addr.to_string(),
                        "weight": m.weight,
                        "tier": m.tier,
                        "admin": m.backend.admin_state().as_str(),
                        "healthy": m.backend.is_healthy(),
                        "writer": writer == Some(i),
                        "reason": report.reason,
                        "active": c.active,
                        "total": c.total,
                        "bytes_to_backend": c.bytes_to_backend,
                        "bytes_to_client": c.bytes_to_client,
                    })
                })
                .collect();
            json!({ "pool": pool.name, "backends": members })
        })
        .collect();
    let listeners: Vec<_> = snapshot
        .routes
        .iter()
        .map(|r| {
            json!({
                "listener": r.listener,
                "pool": r.pool.name,
                "policy": r.policy_kind.as_str(),
                "role": r.role.as_str(),
                "causal_reads": r.causal_reads.as_str(),
            })
        })
        .collect();
    format!("{}\n", json!({ "listeners": listeners, "pools": pools }))
}

/// Each backend's health, admin state, role and name, one line each; `lagging` at the end of
/// the line of a node that lags (`health.lag`).
pub(crate) fn render_health(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    for pool in &snapshot.pools {
        for (i, m) in pool.members.iter().enumerate() {
            let report = m.backend.report();
            let state = m.backend.health_str();
            let role = pool.role_of(i);
            let wsrep = report.wsrep_state();
            out.push_str(&format!(
                "{} {} {} admin={} role={} reason={} wsrep={} name={}\n",
                pool.name,
                m.backend.address,
                state,
                m.backend.admin_state().as_str(),
                role,
                if report.reason.is_empty() {
                    "-"
                } else {
                    &report.reason
                },
                if wsrep.is_empty() { "-" } else { wsrep },
                m.backend.name(),
            ));
            if m.backend.is_lagging() {
                out.insert_str(out.len() - 1, " lagging");
            }
        }
    }
    out
}

/// glbd's counters line for the traffic between two readings of the totals.
pub(crate) fn render_getstat(
    now: &BackendCounters,
    before: &BackendCounters,
    open: u64,
    elapsed: Duration,
) -> String {
    let bytes_in = now.bytes_to_backend - before.bytes_to_backend;
    let bytes_out = now.bytes_to_client - before.bytes_to_client;
    let transfers = now.transfers - before.transfers;
    let opened = now.total - before.total;
    let moved = bytes_in + bytes_out;
    // galera-lb counts reads that moved bytes (each is one send as well, as a rule); it does not
    // count polls, which glbd's last figures are, so they are 0.
    format!(
        "in: {bytes_in} out: {bytes_out} recv: {moved} / {transfers} send: {moved} / {transfers} \
         conns: {opened} / {open} poll: 0 / 0 / 0 elapsed: {:.5}\n",
        elapsed.as_secs_f64()
    )
}

const HELP: &str = "\
getinfo                 the router table (glbd layout)
getinfo json            every pool and backend as JSON
getstat | getstats      traffic since the previous getstat (glbd layout)
HOST:PORT[:WEIGHT]      add a backend or set its weight; :0 drains it, a negative weight removes it
drain HOST:PORT         no new clients; open sessions stay
maint HOST:PORT         like drain, its health checks pause, and its sessions close
                        between transactions (within health.drain_timeout)
ready HOST:PORT         back in service
health                  each backend's state, role and reason
reload                  re-read the configuration file
interactive             keep this connection open for more requests
auth TOKEN              with control.token set: allow this connection's changes
                        (destinations, drain, maint, ready, reload); reads need no token
quit                    close this connection
help                    this list
";

/// What the control server shares with its connections.
#[derive(Debug)]
pub(crate) struct ControlContext {
    pub router: Arc<Router>,
    pub changes: mpsc::Sender<Change>,
    pub config: ControlConfig,
    /// The port a destination without one gets: the first listener's.
    pub default_port: u16,
    /// The pool `getinfo` shows and new destinations join: the first listener's.
    pub pool: String,
    pub max_connections: u64,
    pub open_connections: Arc<ActiveCount>,
    /// Totals at the previous `getstat`, and when it was.
    pub last_stat: Mutex<(Instant, BackendCounters)>,
    /// `control.max_clients` connection slots, the idlest evicted for a new one.
    pub clients: Arc<ClientSlots>,
    /// The allowlist and the token (resolved at start).
    pub access: Access,
    /// Failed accepts on the control port.
    pub accept_errors: AtomicU64,
}

/// Accepts control connections until `stop`; each runs on `tasks`.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<ControlContext>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    net::accept_loop(
        listener,
        "control",
        &ctx.accept_errors,
        &stop,
        |stream, peer| {
            if !ctx.access.allow.allows(peer.ip()) {
                refuse(stream, peer, &tasks);
                return;
            }
            let slot = ctx.clients.admit();
            let ctx = ctx.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = slot.evicted() => {
                        debug!(client = %peer, "control: closing the idlest connection for a new one (control.max_clients)");
                    }
                    result = session(stream, peer, &ctx, &slot) => {
                        if let Err(e) = result {
                            debug!(client = %peer, error = %e, "control: connection ended");
                        }
                    }
                }
            });
        },
        |stream, _| drop(stream),
    )
    .await;
}

/// Tells a client whose address is not in `control.allow` so, in one line, and closes. The line
/// starts with `Error` like glbd's own refusals, so a script that checks for `Ok` (or greps for
/// `Error`) sees a failure, and a person running `nc` sees why rather than an empty answer that
/// looks like a network problem. It takes no client slot, and at most a second.
fn refuse(mut stream: TcpStream, peer: SocketAddr, tasks: &TaskTracker) {
    let address = peer.ip().to_canonical();
    static LOG: LogLimit = LogLimit::new();
    if let Some(suppressed) = LOG.allow() {
        warn!(client = %peer, suppressed, "control: address not in control.allow; closing");
    }
    count_denied("control", Denied::NotAllowed);
    tasks.spawn(async move {
        let reply = format!("Error: {address} is not allowed on the control port\n");
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(reply.as_bytes()).await?;
            close_gently(&mut stream).await
        })
        .await;
    });
}

/// Half-closes after a last reply, then reads what the client still sends for a moment before
/// the connection is dropped: closing with unread input would reset the connection, and the
/// reset could destroy the reply before the client reads it.
async fn close_gently(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.shutdown().await?;
    let drain = async {
        let mut chunk = [0u8; 1024];
        let mut read_total = 0usize;
        while read_total < (1 << 20) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read_total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
    Ok(())
}

/// Serves one control connection.
async fn session(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &ControlContext,
    slot: &ClientSlot,
) -> std::io::Result<()> {
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut interactive = false;
    let mut answered = false;
    // Without a token every connection may make changes, as in glbd.
    let mut authenticated = ctx.access.token.is_none();
    // Only real requests move these: blank lines or a trickle of bytes do not keep a slot.
    let mut last_request = Instant::now();
    let mut line_started: Option<Instant> = None;
    loop {
        let mut deadline = last_request
            + if interactive {
                ctx.config.idle_timeout
            } else if answered {
                BATCH_LINGER
            } else {
                LINE_DEADLINE
            };
        if let Some(started) = line_started {
            deadline = deadline.min(started + LINE_DEADLINE);
        }
        let read = match tokio::time::timeout_at(deadline.into(), stream.read(&mut chunk)).await {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        };
        let at_end = read == 0;
        buffer.extend_from_slice(&chunk[..read]);
        if !buffer.is_empty() && line_started.is_none() {
            line_started = Some(Instant::now());
        }
        // Complete lines; at the end of the stream, what is left counts as a line too.
        while let Some(line) = take_line(&mut buffer, at_end) {
            line_started = (!buffer.is_empty()).then(Instant::now);
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            // A request being answered is not idle: its slot goes last.
            let _busy = slot.busy();
            let reply = match handle(text, peer, ctx, &mut authenticated).await {
                Reply::Text(reply) => reply,
                Reply::Interactive => {
                    interactive = true;
                    "Ok\n".to_string()
                }
                Reply::Quit => return Ok(()),
                Reply::Close(reply) => {
                    write_reply(&mut stream, reply.as_bytes()).await?;
                    return close_gently(&mut stream).await;
                }
            };
            write_reply(&mut stream, reply.as_bytes()).await?;
            answered = true;
            last_request = Instant::now();
        }
        if buffer.len() > ctx.config.max_line {
            static LOG: LogLimit = LogLimit::new();
            if let Some(suppressed) = LOG.allow() {
                warn!(client = %peer, limit = ctx.config.max_line, suppressed, "control: request line too long; closing");
            }
            let reply = format!(
                "Error: the request line is longer than {} bytes (control.max_line)\n",
                ctx.config.max_line
            );
            write_reply(&mut stream, reply.as_bytes()).await?;
            return close_gently(&mut stream).await;
        }
        if at_end {
            return Ok(());
        }
    }
}

/// Writes a reply; a client that does not read it within [`REPLY_DEADLINE`] loses its
/// connection, so it cannot hold a slot by never reading.
async fn write_reply(stream: &mut TcpStream, reply: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(REPLY_DEADLINE, stream.write_all(reply)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client does not read its replies",
        )),
    }
}

/// Removes and returns the first line of `buffer` (without its newline); at the end of the
/// stream, the rest.
pub fn take_line(buffer: &mut Vec<u8>, at_end: bool) -> Option<Vec<u8>> {
    match buffer.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let mut line: Vec<u8> = buffer.drain(..=end).collect();
            line.pop();
            Some(line)
        }
        None if at_end && !buffer.is_empty() => Some(std::mem::take(buffer)),
        None => None,
    }
}

enum Reply {
    Text(String),
    Interactive,
    Quit,
    /// Send this, then close the connection.
    Close(String),
}

/// A request line as it may be logged: never the argument of `auth`, never the token wherever
/// it appears (a token sent without `auth` parses as a host name), at most 80 characters.
fn shown(line: &str, token: Option<&Secret>) -> String {
    let first = line.split_whitespace().next().unwrap_or("");
    if first.eq_ignore_ascii_case("auth") {
        return "auth ****".to_string();
    }
    let masked = match token {
        Some(token) if !token.expose().is_empty() => line.replace(token.expose(), "****"),
        _ => line.to_string(),
    };
    masked
        .chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

/// The reason a request failed, as it may be logged: reasons quote parts of the line, so when
/// the line holds the token (or is an `auth` request) the reason is left out.
fn shown_reason(reason: &str, line: &str, token: Option<&Secret>) -> String {
    let first = line.split_whitespace().next().unwrap_or("");
    let holds_token = first.eq_ignore_ascii_case("auth")
        || token.is_some_and(|t| !t.expose().is_empty() && line.contains(t.expose()));
    if holds_token {
        "a malformed request (not repeated: it holds the token)".to_string()
    } else {
        reason.to_string()
    }
}

/// `Error: REASON` on one line, the reason cut at 200 characters (it may quote the request).
fn error_reply(reason: &str) -> String {
    let one_line = reason.replace(['\n', '\r'], " ");
    match one_line.char_indices().nth(200) {
        Some((cut, _)) => format!("Error: {}...\n", &one_line[..cut]),
        None => format!("Error: {one_line}\n"),
    }
}

async fn handle(
    line: &str,
    peer: SocketAddr,
    ctx: &ControlContext,
    authenticated: &mut bool,
) -> Reply {
    let parsed = parse(line, ctx.default_port);
    crate::core::counters::metrics()
        .control_commands
        .with_label_values(&[parsed.as_ref().map_or("invalid", Request::name)])
        .inc();
    let logged = || shown(line, ctx.access.token.as_ref());
    let request = match parsed {
        Ok(request) => request,
        Err(reason) => {
            let reason = shown_reason(&reason, line, ctx.access.token.as_ref());
            info!(client = %peer, request = %logged(), %reason, "control: bad request");
            return Reply::Text(error_reply(&reason));
        }
    };
    if request.changes_state() && !*authenticated {
        static LOG: LogLimit = LogLimit::new();
        if let Some(suppressed) = LOG.allow() {
            warn!(client = %peer, request = %logged(), suppressed, "control: a change without auth; refused");
        }
        count_denied("control", Denied::NoToken);
        return Reply::Text(
            "Error: this request needs the control token: send auth TOKEN first\n".to_string(),
        );
    }
    let change = match request {
        Request::GetInfo { json: false } => {
            let snapshot = ctx.router.load_full();
            let open = ctx.open_connections.get();
            return Reply::Text(render_getinfo(
                &snapshot,
                &ctx.pool,
                open,
                ctx.max_connections,
            ));
        }
        Request::GetInfo { json: true } => {
            return Reply::Text(render_getinfo_json(&ctx.router.load_full()));
        }
        Request::Health => return Reply::Text(render_health(&ctx.router.load_full())),
        Request::GetStat => {
            let now = ctx.router.totals();
            let mut last = ctx.last_stat.lock().unwrap_or_else(|e| e.into_inner());
            let (then, before) = std::mem::replace(&mut *last, (Instant::now(), now));
            let open = ctx.open_connections.get();
            return Reply::Text(render_getstat(&now, &before, open, then.elapsed()));
        }
        Request::Help => return Reply::Text(HELP.to_string()),
        Request::Auth(given) => {
            if ctx.access.token.is_none() {
                debug!(client = %peer, "control: auth without a configured token; nothing to do");
                return Reply::Text("Ok\n".to_string());
            }
            if ctx.access.token_matches(given.expose().as_bytes()) {
                *authenticated = true;
                info!(client = %peer, "control: authenticated");
                return Reply::Text("Ok\n".to_string());
            }
            *authenticated = false;
            static LOG: LogLimit = LogLimit::new();
            if let Some(suppressed) = LOG.allow() {
                warn!(client = %peer, suppressed, "control: wrong token; closing");
            }
            count_denied("control", Denied::WrongToken);
            return Reply::Close("Error: wrong token\n".to_string());
        }
        Request::Interactive => return Reply::Interactive,
        Request::Quit => return Reply::Quit,
        Request::Destination { address, weight } => ControlChange::Destination { address, weight },
        Request::Admin { state, address } => ControlChange::Admin { state, address },
        Request::Reload => ControlChange::Reload,
    };
    let (reply, outcome) = oneshot::channel();
    let request = ControlRequest { change, reply };
    const STOPPING: &str = "Error: galera-lb is shutting down\n";
    if ctx.changes.send(Change::Control(request)).await.is_err() {
        return Reply::Text(STOPPING.to_string());
    }
    match outcome.await {
        Ok(Ok(())) => {
            info!(client = %peer, request = %logged(), "control: applied");
            Reply::Text("Ok\n".to_string())
        }
        Ok(Err(reason)) => {
            let reason = shown_reason(&reason, line, ctx.access.token.as_ref());
            info!(client = %peer, request = %logged(), %reason, "control: refused");
            Reply::Text(error_reply(&reason))
        }
        Err(_) => Reply::Text(STOPPING.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let cases: &[(&str, Request)] = &[
            ("getinfo", Request::GetInfo { json: false }),
            ("GETINFO", Request::GetInfo { json: false }),
            ("getinfo json", Request::GetInfo { json: true }),
            ("getstat", Request::GetStat),
            ("getstats", Request::GetStat),
            ("health", Request::Health),
            ("reload", Request::Reload),
            ("interactive", Request::Interactive),
            ("quit", Request::Quit),
            ("help", Request::Help),
            (
                "10.0.0.1:3306:0.75",
                Request::Destination {
                    address: "10.0.0.1:3306".into(),
                    weight: 0.75,
                },
            ),
            (
                "10.0.0.1:3306",
                Request::Destination {
                    address: "10.0.0.1:3306".into(),
                    weight: 1.0,
                },
            ),
            (
                "db1",
                Request::Destination {
                    address: "db1:3306".into(),
                    weight: 1.0,
                },
            ),
            (
                "db1:3307:-1",
                Request::Destination {
                    address: "db1:3307".into(),
                    weight: -1.0,
                },
            ),
            (
                "[::1]:3306:2",
                Request::Destination {
                    address: "[::1]:3306".into(),
                    weight: 2.0,
                },
            ),
            (
                "[::1]",
                Request::Destination {
                    address: "[::1]:3306".into(),
                    weight: 1.0,
                },
            ),
            (
                "drain 10.0.0.1:3306",
                Request::Admin {
                    state: AdminState::Drain,
                    address: "10.0.0.1:3306".into(),
                },
            ),
            (
                "maint db1",
                Request::Admin {
                    state: AdminState::Maint,
                    address: "db1:3306".into(),
                },
            ),
            (
                "ready db1:3306",
                Request::Admin {
                    state: AdminState::Ready,
                    address: "db1:3306".into(),
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(&parse(line, 3306).unwrap(), expected, "{line}");
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        for line in [
            "",
            "getinfo xml",
            "getstat now",
            "db1:notaport",
            "db1:3306:heavy",
            "db1:3306:NaN",
            "db1:3306:inf",
            "db1:99999",
            "[::1",
            "[::1]x",
            ":3306",
            "drain",
            "a b c",
            "rm -rf /",
            "\u{0}\u{1}binary",
            "db$1:3306",
        ] {
            assert!(parse(line, 3306).is_err(), "{line:?} should be refused");
        }
    }

    #[test]
    fn auth_parses_and_its_errors_never_quote_the_token() {
        assert_eq!(
            parse("auth s3cret", 3306).unwrap(),
            Request::Auth(Secret::new("s3cret".into()))
        );
        assert_eq!(
            parse("AUTH s3cret", 3306).unwrap(),
            Request::Auth(Secret::new("s3cret".into()))
        );
        assert!(parse("auth", 3306).is_err());
        let error = parse("auth s3cret and more", 3306).unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        assert!(!format!("{:?}", parse("auth s3cret", 3306)).contains("s3cret"));
        // Only changes need the token.
        for line in [
            "10.0.0.1:3306:1",
            "db1:3306:-1",
            "drain db1",
            "maint db1",
            "ready db1",
            "reload",
        ] {
            assert!(parse(line, 3306).unwrap().changes_state(), "{line}");
        }
        for line in [
            "getinfo",
            "getinfo json",
            "getstat",
            "health",
            "help",
            "quit",
            "interactive",
            "auth x",
        ] {
            assert!(!parse(line, 3306).unwrap().changes_state(), "{line}");
        }
    }

    #[test]
    fn logged_lines_and_reasons_never_hold_the_token() {
        let token = Secret::new("Tok-123.xyz".into());
        let token = Some(&token);
        assert_eq!(shown("auth Tok-123.xyz", token), "auth ****");
        assert_eq!(shown("Auth wrong", token), "auth ****");
        assert_eq!(shown("Tok-123.xyz:3306:1", token), "****:3306:1");
        assert_eq!(shown("getinfo", token), "getinfo");
        assert_eq!(shown("getinfo", None), "getinfo");
        let reason = "'Tok-123.xyz' is not a host name";
        assert!(!shown_reason(reason, "Tok-123.xyz!", token).contains("Tok"));
        assert!(!shown_reason("x", "auth a b", None).contains('x'));
        assert_eq!(shown_reason("bad port", "db1:x", token), "bad port");
    }

    #[test]
    fn lines_are_split_and_the_rest_counts_at_the_end() {
        let mut buffer = b"getinfo\ngetstat\r\npartial".to_vec();
        assert_eq!(take_line(&mut buffer, false).unwrap(), b"getinfo");
        assert_eq!(take_line(&mut buffer, false).unwrap(), b"getstat\r");
        assert_eq!(take_line(&mut buffer, false), None);
        assert_eq!(take_line(&mut buffer, true).unwrap(), b"partial");
        assert_eq!(take_line(&mut buffer, true), None);
    }

    #[test]
    fn getstat_counts_the_interval() {
        let before = BackendCounters {
            total: 10,
            transfers: 100,
            bytes_to_backend: 1000,
            bytes_to_client: 2000,
            ..Default::default()
        };
        let now = BackendCounters {
            total: 16,
            transfers: 118,
            bytes_to_backend: 7000,
            bytes_to_client: 8102,
            ..Default::default()
        };
        let line = render_getstat(&now, &before, 6, Duration::from_millis(8134));
        assert_eq!(
            line,
            "in: 6000 out: 6102 recv: 12102 / 18 send: 12102 / 18 conns: 6 / 6 \
             poll: 0 / 0 / 0 elapsed: 8.13400\n"
        );
    }
}
