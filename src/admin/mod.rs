//! The admin HTTP port (hyper 1.x, HTTP/1.1, GET only).
//!
//! | endpoint | answer |
//! |---|---|
//! | `/metrics` | Prometheus text format (see [`crate::core::counters`]) |
//! | `/status` | JSON: listeners (policy, role, connections, usable backends of how many, the writer's name, and with `writer_agreement: cluster` the agreed writer's `writer_epoch`) and backends (address, name, pool, weight, admin state, health and since when, reason, role, wsrep state, cluster size and configuration id, connections, bytes, last check time and duration) |
//! | `/ready` | 200 `ready` once the first health round has run and every listener has a usable backend; 503 with the reason otherwise, and 503 `not ready: draining ...` from SIGTERM/SIGINT on |
//! | `/live` | 200 `live` while the process serves HTTP, draining included |
//! | `/` | an HTML status page that refreshes itself every 2 s, no external assets: per listener how many backends are usable of how many and the writer; per backend its name, state and for how long, reason, cluster size and configuration id, last check and its latency |
//!
//! Everything is read from the routing snapshot and the backends' atomics when asked: serving
//! this port never slows the proxy.
//!
//! Access (see `crate::core::access`): with `admin.allow`, a connection from another address is closed
//! at once. With `admin.token`, every endpoint but `/live` and `/ready` needs
//! `Authorization: Bearer TOKEN`; without it, or with a wrong one, the answer is 401 with
//! `WWW-Authenticate: Bearer`. `/live` and `/ready` stay open because orchestrators' probes
//! (kubelet, Docker's HEALTHCHECK, a load balancer's check) rarely can send a token, and they
//! tell no more than "up" and "ready, or why not".
//!
//! Shutdown: the port keeps answering until the drain is over (`limits.shutdown_delay`, then
//! `limits.shutdown_grace`; see `crate::Running::drain`), so probes see `/ready` fail and `/live`
//! pass while the proxy drains, and `/metrics` and `/status` can be read meanwhile.
//!
//! Bounds: at most `admin.max_clients` connections; a new one takes the slot of the connection
//! idle longest (`crate::core::client_slots`), so clients that hold connections open cannot keep
//! a probe or an operator out, nor take the descriptors the proxy needs. A request's headers
//! must arrive within 10 s.

pub(crate) mod metrics;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::Role;
use crate::core::access::{Access, Denied, count_denied};
use crate::core::client_slots::ClientSlots;
use crate::core::log_limit::LogLimit;
use crate::core::net;
use crate::proxy::ListenerState;
use crate::state::snapshot::{Route, Router, Snapshot};

/// What the admin port reads.
#[derive(Debug)]
pub(crate) struct AdminContext {
    pub router: Arc<Router>,
    /// The open listeners' states (kept current by the listener set).
    pub listeners: Arc<Mutex<Vec<Arc<ListenerState>>>>,
    /// The allowlist and the token (resolved at start).
    pub access: Access,
    /// Failed accepts on the admin port.
    pub accept_errors: AtomicU64,
    /// `admin.max_clients` connection slots, the idlest evicted for a new one.
    pub slots: Arc<ClientSlots>,
    /// Cancelled when galera-lb starts to drain (SIGTERM/SIGINT): from then on it is not ready.
    pub draining: CancellationToken,
    /// The process-wide connection limits, for `/metrics`.
    pub limits: metrics::Limits,
}

/// The endpoints that need no token: liveness and readiness probes.
pub(crate) const OPEN_PATHS: [&str; 2] = ["/live", "/ready"];

/// Serves the admin port until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<AdminContext>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    net::accept_loop(
        listener,
        "admin",
        &ctx.accept_errors,
        &stop,
        |stream, peer| {
            if !ctx.access.allow.allows(peer.ip()) {
                static LOG: LogLimit = LogLimit::new();
                if let Some(suppressed) = LOG.allow() {
                    warn!(client = %peer, suppressed, "admin: address not in admin.allow; closing");
                }
                count_denied("admin", Denied::NotAllowed);
                drop(stream);
                return;
            }
            let slot = Arc::new(ctx.slots.admit());
            let ctx = ctx.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                let in_service = slot.clone();
                let service = service_fn(move |request| {
                    let ctx = ctx.clone();
                    let busy = in_service.busy();
                    async move {
                        let response = refusal(&request, &ctx, peer)
                            .unwrap_or_else(|| respond(&request, &ctx));
                        drop(busy);
                        Ok::<_, Infallible>(response)
                    }
                });
                let connection = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = slot.evicted() => {
                        debug!(client = %peer, "admin: closing the idlest connection for a new one (admin.max_clients)");
                    }
                    result = connection => {
                        if let Err(e) = result {
                            debug!(client = %peer, error = %e, "admin: connection ended");
                        }
                    }
                }
            });
        },
        |stream, _| drop(stream),
    )
    .await;
}

/// The 401 to send when a token is configured, the request is not for an open path, and it does
/// not carry `Authorization: Bearer TOKEN` with the right token (compared in constant time);
/// `None` lets the request through.
fn refusal(
    request: &Request<Incoming>,
    ctx: &AdminContext,
    peer: std::net::SocketAddr,
) -> Option<Response<Full<Bytes>>> {
    let token = ctx.access.token.as_ref()?;
    let path = request.uri().path();
    if OPEN_PATHS.contains(&path) {
        return None;
    }
    let shown: String = path.chars().take(80).collect();
    let shown = shown.escape_debug();
    match request.headers().get(AUTHORIZATION).and_then(bearer) {
        Some(given) if token.matches(given) => None,
        Some(_) => {
            static LOG: LogLimit = LogLimit::new();
            if let Some(suppressed) = LOG.allow() {
                warn!(client = %peer, path = %shown, suppressed, "admin: wrong bearer token; 401");
            }
            count_denied("admin", Denied::WrongToken);
            Some(unauthorized(true))
        }
        None => {
            static LOG: LogLimit = LogLimit::new();
            if let Some(suppressed) = LOG.allow() {
                warn!(client = %peer, path = %shown, suppressed, "admin: no bearer token; 401");
            }
            count_denied("admin", Denied::NoToken);
            Some(unauthorized(false))
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case).
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let space = bytes.iter().position(|&b| b == b' ')?;
    let (scheme, token) = (&bytes[..space], bytes[space..].trim_ascii());
    (scheme.eq_ignore_ascii_case(b"Bearer") && !token.is_empty()).then_some(token)
}

/// 401 with the challenge of RFC 6750 (`error="invalid_token"` when a token was sent).
fn unauthorized(wrong: bool) -> Response<Full<Bytes>> {
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "unauthorized: send Authorization: Bearer TOKEN (admin.token); /live and /ready need none\n"
            .into(),
    );
    let challenge = if wrong {
        r#"Bearer realm="galera-lb", error="invalid_token""#
    } else {
        r#"Bearer realm="galera-lb""#
    };
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

fn respond(request: &Request<Incoming>, ctx: &AdminContext) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        response.headers_mut().insert(
            hyper::header::ALLOW,
            "GET, HEAD".parse().expect("a valid header"),
        );
        return response;
    }
    let listeners = ctx
        .listeners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match request.uri().path() {
        "/metrics" => with_type(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render(&ctx.router, &listeners, ctx.limits),
        ),
        "/status" => with_type(
            StatusCode::OK,
            "application/json",
            status_json(&ctx.router.load_full(), &listeners, &ctx.draining),
        ),
        "/ready" => match readiness(&ctx.router.load_full(), &ctx.draining) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        "/live" => text(StatusCode::OK, "live\n".into()),
        "/" => with_type(
            StatusCode::OK,
            "text/html; charset=utf-8",
            status_page(&ctx.router.load_full(), &listeners, &ctx.draining),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /status, /metrics, /ready or /live\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        content_type.parse().expect("a valid content type"),
    );
    headers.insert(CACHE_CONTROL, "no-store".parse().expect("a valid header"));
    response
}

/// What `/ready` says from SIGTERM/SIGINT on: orchestrators and keepalived move new clients
/// elsewhere while the listeners still accept (`limits.shutdown_delay`) and open sessions finish.
pub(crate) const DRAINING: &str = "draining: shutting down (SIGTERM/SIGINT received); new \
    clients belong elsewhere";

/// How one listener stands: how many of its pool's backends could take a new client now (for a
/// writer listener, writable ones), and the pool's writer.
pub(crate) struct ListenerReadiness<'a> {
    pub route: &'a Route,
    pub usable: usize,
    pub backends: usize,
    /// The name of the pool's writer, when it has one.
    pub writer: Option<Arc<String>>,
}

impl ListenerReadiness<'_> {
    /// `1 of 3 backends usable, writer db1` (for displays).
    fn summary(&self) -> String {
        let mut text = format!(
            "{} of {} backend{} usable",
            self.usable,
            self.backends,
            if self.backends == 1 { "" } else { "s" }
        );
        match &self.writer {
            Some(writer) => {
                let _ = write!(text, ", writer {writer}");
            }
            None if self.route.role == Role::Writer => text.push_str(", no writer"),
            None => {}
        }
        text
    }
}

/// Each listener's [`ListenerReadiness`], in the snapshot's order.
pub(crate) fn listener_readiness(snapshot: &Snapshot) -> Vec<ListenerReadiness<'_>> {
    snapshot
        .routes
        .iter()
        .map(|route| {
            let members = &route.pool.members;
            ListenerReadiness {
                route,
                usable: members
                    .iter()
                    .filter(|m| {
                        m.is_usable() && (route.role != Role::Writer || m.backend.is_writable())
                    })
                    .count(),
                backends: members.len(),
                writer: route.pool.writer().map(|w| members[w].backend.name()),
            }
        })
        .collect()
}

/// Ready when galera-lb is not draining and every listener has a backend it can send a client to
/// (for a writer listener, a writable one). The first health round has run before the admin port
/// opens.
pub(crate) fn readiness(snapshot: &Snapshot, draining: &CancellationToken) -> Result<(), String> {
    if draining.is_cancelled() {
        return Err(DRAINING.to_string());
    }
    let not_ready: Vec<String> = listener_readiness(snapshot)
        .iter()
        .filter(|l| l.usable == 0)
        .map(|l| format!("listener '{}' has no usable backend", l.route.listener))
        .collect();
    if not_ready.is_empty() {
        Ok(())
    } else {
        Err(not_ready.join("; "))
    }
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `/status` document.
pub(crate) fn status_json(
    snapshot: &Snapshot,
    listeners: &[Arc<ListenerState>],
    draining: &CancellationToken,
) -> String {
    let listeners: Vec<_> = listener_readiness(snapshot)
        .iter()
        .map(|ready| {
            let route = ready.route;
            let state = listeners.iter().find(|l| l.name == route.listener);
            let mut entry = json!({
                "name": route.listener,
                "pool": route.pool.name,
                "policy": route.policy_kind.as_str(),
                "role": route.role.as_str(),
                "active": state.map_or(0, |s| s.active()),
                "accepted": state.map_or(0, |s| s.accepted.load(std::sync::atomic::Ordering::Relaxed)),
                "usable_backends": ready.usable,
                "backends": ready.backends,
                "writer": ready.writer.as_deref(),
            });
            // `writer_agreement: cluster`: the agreed writer's epoch, once read.
            let epoch = route.pool.writer_role.epoch();
            if epoch > 0 && route.role == Role::Writer {
                entry["writer_epoch"] = json!(epoch);
            }
            entry
        })
        .collect();
    let mut backends = Vec::new();
    for pool in &snapshot.pools {
        for (i, member) in pool.members.iter().enumerate() {
            let backend = &member.backend;
            let c = backend.counters();
            let report = backend.report();
            let wsrep = report.wsrep.as_ref();
            backends.push(json!({
                "address": backend.address,
                "name": backend.name().as_str(),
                "socket_address": member.socket_addr.to_string(),
                "pool": pool.name,
                "weight": member.weight,
                "tier": member.tier,
                "admin": backend.admin_state().as_str(),
                "health": backend.health_str(),
                "health_since": unix_seconds(backend.since()),
                "usable": member.is_usable(),
                "reason": report.reason,
                "role": pool.role_of(i),
                "wsrep_local_state": wsrep.and_then(|w| w.local_state),
                "wsrep_state": wsrep.map(|_| report.wsrep_state()),
                "cluster_size": wsrep.and_then(|w| w.cluster_size),
                "cluster_conf_id": wsrep.and_then(|w| w.conf_id),
                "segment": backend.segment(),
                "recv_queue": wsrep.and_then(|w| w.recv_queue),
                "last_committed": wsrep.and_then(|w| w.last_committed),
                "seqno_lag": report.seqno_lag,
                "flow_control_paused": wsrep.and_then(|w| w.flow_control_paused_ppm).map(|ppm| f64::from(ppm) / 1e6),
                "lagging": backend.is_lagging(),
                "lag_reason": (!report.lag.is_empty()).then_some(report.lag.as_str()),
                "active": c.active,
                "total": c.total,
                "connect_errors": c.connect_errors,
                "bytes_to_backend": c.bytes_to_backend,
                "bytes_to_client": c.bytes_to_client,
                "last_check": report.checked_at.map(unix_seconds),
                "last_check_duration_seconds": report.checked_at.map(|_| report.duration.as_secs_f64()),
            }));
        }
    }
    let ready = readiness(snapshot, draining);
    format!(
        "{}\n",
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "ready": ready.is_ok(),
            "draining": draining.is_cancelled(),
            "not_ready_reason": ready.err(),
            "listeners": listeners,
            "backends": backends,
        })
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A duration as an operator reads it: `45s`, `3m 12s`, `2h 5m`, `3d 4h`.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `2026-01-31 12:04:05 UTC`.
fn utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// How long ago `time` was, from `now` (`0s` for a time ahead of it).
fn ago(now: SystemTime, time: SystemTime) -> Duration {
    now.duration_since(time).unwrap_or_default()
}

/// The `/` page, for an operator who leaves it open: whether galera-lb is ready and, per
/// listener, how many backends it can use and its writer; a table of backends (name, address,
/// state and since when, why, role, the cluster size and configuration id the node reports, the
/// last check and its latency, traffic); one of listeners. The browser refreshes it.
pub(crate) fn status_page(
    snapshot: &Snapshot,
    listeners: &[Arc<ListenerState>],
    draining: &CancellationToken,
) -> String {
    let now = SystemTime::now();
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>galera-lb</title><style>\
         body{font-family:sans-serif;margin:1.5em;color:#222}\
         table{border-collapse:collapse;margin-bottom:1.5em}\
         th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}\
         th{background:#eee}\
         .up{background:#d4f7d4}.down{background:#f7d4d4}.drain,.maint{background:#f7efd0}\
         .writer{font-weight:bold}.none{color:#b00;font-weight:bold}\
         </style></head><body>",
    );
    let ready = readiness(snapshot, draining);
    let per_listener = listener_readiness(snapshot);
    let _ = write!(
        html,
        "<h1>galera-lb {}</h1><p id=\"ready\">{}</p><ul id=\"readiness\">",
        env!("CARGO_PKG_VERSION"),
        match &ready {
            Ok(()) => "Ready: every listener has a usable backend.".to_string(),
            Err(reason) => format!("NOT READY: {}", escape(reason)),
        }
    );
    for listener in &per_listener {
        let _ = write!(
            html,
            "<li data-listener=\"{name}\" data-usable=\"{usable}\" data-backends=\"{backends}\"{class}>\
             listener <b>{name}</b> ({role}, pool {pool}): {summary}</li>",
            name = escape(&listener.route.listener),
            usable = listener.usable,
            backends = listener.backends,
            class = if listener.usable == 0 {
                " class=\"none\""
            } else {
                ""
            },
            role = listener.route.role.as_str(),
            pool = escape(&listener.route.pool.name),
            summary = escape(&listener.summary()),
        );
    }
    html.push_str(
        "</ul><h2>Backends</h2><table id=\"backends\"><tr><th>pool</th><th>backend</th><th>state</th>\
         <th>reason</th><th>role</th><th>wsrep</th><th>name</th><th>for</th><th>cluster size</th>\
         <th>conf id</th><th>segment</th><th>recv queue</th><th>seqno lag</th><th>last check</th><th>latency</th><th>weight</th><th>admin</th>\
         <th>active</th><th>total</th><th>to backend</th><th>to clients</th></tr>",
    );
    for pool in &snapshot.pools {
        for (i, member) in pool.members.iter().enumerate() {
            let backend = &member.backend;
            let c = backend.counters();
            let report = backend.report();
            let admin = backend.admin_state().as_str();
            let state = backend.health_str();
            let class = if admin != "ready" { admin } else { state };
            let role = pool.role_of(i);
            let wsrep = report.wsrep_state();
            let since = backend.since();
            let status = report.wsrep.as_ref();
            let number = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
            // Why a usable node gets no new reader sessions: it lags (health.lag).
            let reason = if backend.is_lagging() {
                format!("{}; lagging: {}", report.reason, report.lag)
            } else {
                report.reason.clone()
            };
            let (checked, latency) = match report.checked_at {
                Some(at) => (
                    format!(
                        "<span title=\"{}\">{} ago</span>",
                        utc(at),
                        span(ago(now, at))
                    ),
                    format!("{:.1} ms", report.duration.as_secs_f64() * 1000.0),
                ),
                None => ("never".to_string(), "-".to_string()),
            };
            let _ = write!(
                html,
                "<tr class=\"{class} {role}\" data-backend=\"{addr}\" data-state=\"{state}\" data-name=\"{name}\" \
                 data-since=\"{since_unix}\">\
                 <td>{pool}</td><td>{addr}</td><td>{state}</td><td>{reason}</td><td>{role}</td>\
                 <td>{wsrep}</td><td>{name}</td><td title=\"since {since_utc}\">{state} for {for_}</td>\
                 <td>{size}</td><td>{conf}</td><td>{segment}</td><td>{queue}</td><td>{seqno_lag}</td><td>{checked}</td><td>{latency}</td>\
                 <td>{weight}</td><td>{admin}</td><td>{active}</td><td>{total}</td>\
                 <td>{sent}</td><td>{received}</td></tr>",
                pool = escape(&pool.name),
                addr = escape(&backend.address),
                name = escape(&backend.name()),
                since_unix = unix_seconds(since) as u64,
                since_utc = utc(since),
                for_ = span(ago(now, since)),
                reason = escape(&reason),
                wsrep = escape(wsrep),
                segment = number(backend.segment().map(u64::from)),
                queue = number(status.and_then(|w| w.recv_queue)),
                seqno_lag = number(report.seqno_lag),
                size = number(status.and_then(|w| w.cluster_size).map(u64::from)),
                conf = number(status.and_then(|w| w.conf_id)),
                weight = member.weight,
                active = c.active,
                total = c.total,
                sent = bytes(c.bytes_to_backend),
                received = bytes(c.bytes_to_client),
            );
        }
    }
    html.push_str(
        "</table><h2>Listeners</h2><table id=\"listeners\"><tr><th>listener</th><th>pool</th>\
         <th>policy</th><th>role</th><th>usable</th><th>writer</th><th>active</th><th>accepted</th>\
         <th>refused</th></tr>",
    );
    for listener in &per_listener {
        let route = listener.route;
        let state = listeners.iter().find(|l| l.name == route.listener);
        let load = |f: fn(&ListenerState) -> u64| state.map_or(0, |s| f(s));
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} of {}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&route.listener),
            escape(&route.pool.name),
            route.policy_kind.as_str(),
            route.role.as_str(),
            listener.usable,
            listener.backends,
            listener
                .writer
                .as_deref()
                .map_or("-".to_string(), |w| escape(w)),
            load(|s| s.active()),
            load(|s| s.accepted.load(std::sync::atomic::Ordering::Relaxed)),
            load(|s| s.refused.load(std::sync::atomic::Ordering::Relaxed)),
        );
    }
    html.push_str("</table></body></html>\n");
    html
}
