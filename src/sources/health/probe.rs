//! One health check of one backend, of the configured kind: a TCP connect, a MySQL login that
//! ends with COM_QUIT, a login plus the node's wsrep status, or an HTTP request (see
//! [`super::http`]).
//!
//! MySQL logins go through mysql_async, which speaks every usual authentication plugin
//! (mysql_native_password, caching_sha2_password, ed25519), so the check works whatever the
//! server's default plugin is. Its settings are given up front so that logging in runs no query
//! of its own. The `wsrep` check keeps its connection between checks and replaces it when it
//! breaks or a check times out.
//!
//! For a backend that gets PROXY headers, every check sends one without addresses first (v1
//! `PROXY UNKNOWN`, v2 `LOCAL`): the `tcp` check writes it itself, the logins go through a
//! [`super::relay`].

use std::net::SocketAddr;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use tokio_util::task::TaskTracker;

use super::relay;
use super::socket::CheckSockets;
use crate::config::{CheckKind, HealthConfig, HttpCheckConfig, ProxyProtocol};
use crate::core::proxy_protocol::Version;
use crate::core::secret::Secret;
use crate::core::wsrep::{self, WsrepStatus};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub passed: bool,
    /// Passed and may hold the writer role (for `wsrep`: not read_only).
    pub writable: bool,
    /// A short reason: "synced", "non-Primary", "login_ok", "error 1045", "refused", ...
    pub reason: String,
    /// The longer story, for logs and status pages (a server's error message, say).
    pub detail: String,
    pub error_code: Option<u16>,
    pub wsrep: Option<WsrepStatus>,
}

impl Outcome {
    pub(crate) fn passed(reason: &str) -> Outcome {
        Outcome {
            passed: true,
            writable: true,
            reason: reason.to_string(),
            detail: String::new(),
            error_code: None,
            wsrep: None,
        }
    }

    pub(crate) fn failed(reason: &str, detail: String) -> Outcome {
        Outcome {
            passed: false,
            writable: false,
            reason: reason.to_string(),
            detail,
            error_code: None,
            wsrep: None,
        }
    }

    fn from_mysql_error(error: mysql_async::Error) -> Outcome {
        match error {
            mysql_async::Error::Server(e) => Outcome {
                error_code: Some(e.code),
                ..Outcome::failed(&format!("error {}", e.code), e.message)
            },
            mysql_async::Error::Io(e) => Outcome::failed(&io_reason(&e.to_string()), e.to_string()),
            other => Outcome::failed("error", other.to_string()),
        }
    }
}

fn io_reason(message: &str) -> String {
    if message.contains("refused") {
        "refused".to_string()
    } else if message.contains("reset") || message.contains("broken pipe") {
        "connection_lost".to_string()
    } else {
        "io_error".to_string()
    }
}

/// Checks one backend; holds the `wsrep` check's connection between checks.
pub(crate) struct Probe {
    kind: CheckKind,
    address: SocketAddr,
    opts: Opts,
    available_when_donor: bool,
    http: HttpCheckConfig,
    /// The PROXY header version each check sends first, `None` for none.
    proxy_header: Option<Version>,
    conn: Option<Conn>,
    /// The `tcp:` options of the sockets the checks open.
    sockets: CheckSockets,
    /// Where the PROXY header relays run, so that shutdown waits for them too.
    relays: TaskTracker,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("kind", &self.kind)
            .field("address", &self.address)
            .field("proxy_header", &self.proxy_header)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe of the kind `config` asks for, connecting to `address`, sending a PROXY header
    /// without addresses first when `proxy_header` is on (not for `http` checks), through
    /// relays that run on `relays`.
    pub(crate) fn new(
        config: &HealthConfig,
        address: SocketAddr,
        password: &Secret,
        sockets: CheckSockets,
        proxy_header: ProxyProtocol,
        relays: TaskTracker,
    ) -> Probe {
        let opts = login_opts(&config.user, password, address, sockets).into();
        Probe {
            kind: config.check,
            address,
            opts,
            available_when_donor: config.available_when_donor,
            http: config.http.clone(),
            proxy_header: proxy_header.version(),
            conn: None,
            sockets,
            relays,
        }
    }

    /// Runs one check. The caller bounds it with the check timeout, and calls [`Probe::reset`]
    /// when it times out.
    pub(crate) async fn check(&mut self) -> Outcome {
        match self.kind {
            CheckKind::None => Outcome::passed("unchecked"),
            CheckKind::Tcp => {
                let connected = match self.proxy_header {
                    None => tokio::net::TcpStream::connect(self.address)
                        .await
                        .inspect(|stream| self.sockets.bound(stream)),
                    Some(version) => {
                        relay::connect_with_header(self.address, version, self.sockets).await
                    }
                };
                match connected {
                    Ok(_) => Outcome::passed("tcp_ok"),
                    Err(e) => Outcome::failed(&io_reason(&e.to_string()), e.to_string()),
                }
            }
            CheckKind::Handshake => match self.login().await {
                Ok(conn) => match conn.disconnect().await {
                    Ok(()) => Outcome::passed("login_ok"),
                    Err(e) => Outcome::from_mysql_error(e),
                },
                Err(e) => e,
            },
            CheckKind::Wsrep => self.check_wsrep().await,
            CheckKind::Http => {
                match super::http::check(self.address, &self.http, self.sockets).await {
                    Ok(status) if status == self.http.expect_status => {
                        Outcome::passed(&format!("http {status}"))
                    }
                    Ok(status) => Outcome::failed(
                        &format!("http {status}"),
                        format!("expected status {}", self.http.expect_status),
                    ),
                    Err(e) => Outcome::failed(&io_reason(&e.to_string()), e.to_string()),
                }
            }
        }
    }

    /// Forgets a connection left in an unknown state (after a timeout).
    pub(crate) fn reset(&mut self) {
        self.conn = None;
    }

    /// Logs in as the check user: straight to the node, or through a relay that sends the
    /// PROXY header first.
    async fn login(&self) -> Result<Conn, Outcome> {
        let opts = match self.proxy_header {
            None => self.opts.clone(),
            Some(version) => {
                let relay = relay::open(self.address, version, self.sockets, &self.relays)
                    .await
                    .map_err(|e| Outcome::failed(&io_reason(&e.to_string()), e.to_string()))?;
                OptsBuilder::from_opts(self.opts.clone())
                    .ip_or_hostname(relay.ip().to_string())
                    .tcp_port(relay.port())
                    .into()
            }
        };
        Conn::new(opts).await.map_err(Outcome::from_mysql_error)
    }

    async fn check_wsrep(&mut self) -> Outcome {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => match self.login().await {
                Ok(conn) => conn,
                Err(outcome) => return outcome,
            },
        };
        match read_status(&mut conn).await {
            Ok(status) => {
                self.conn = Some(conn);
                let verdict = status.verdict(self.available_when_donor);
                Outcome {
                    passed: verdict.usable,
                    writable: verdict.writable,
                    reason: verdict.reason,
                    detail: String::new(),
                    error_code: None,
                    wsrep: Some(status),
                }
            }
            Err(e) => Outcome::from_mysql_error(e),
        }
    }
}

/// A pool of at most `max` connections to one node with `opts` (from [`login_opts`]); a
/// connection idle for a minute is closed. For the questions asked between checks (the causal
/// floor's seqnos, the writer agreement's table).
pub(crate) fn node_pool(opts: OptsBuilder, max: usize) -> Pool {
    let constraints = PoolConstraints::new(0, max).expect("0 <= max");
    Pool::new(
        opts.pool_opts(
            PoolOpts::default()
                .with_constraints(constraints)
                .with_inactive_connection_ttl(Duration::from_secs(60))
                .with_ttl_check_interval(Duration::from_secs(30)),
        ),
    )
}

/// How the check user logs in to `address`: over TCP, with the settings that would otherwise
/// cost a query at login (`SELECT @@max_allowed_packet, @@wait_timeout`) given up front, and
/// `tcp.keepalive` (mysql_async takes no TCP_USER_TIMEOUT: see [`super::socket`]).
pub(crate) fn login_opts(
    user: &str,
    password: &Secret,
    address: SocketAddr,
    sockets: CheckSockets,
) -> OptsBuilder {
    OptsBuilder::default()
        .tcp_keepalive(sockets.keepalive)
        .ip_or_hostname(address.ip().to_string())
        .tcp_port(address.port())
        .user(Some(user))
        .pass(Some(password.expose()))
        .prefer_socket(false)
        .max_allowed_packet(Some(4 * 1024 * 1024))
        .wait_timeout(Some(28_800))
        .stmt_cache_size(0)
}

/// Sends the two SHOW statements in one round trip and reads both result sets.
async fn read_status(conn: &mut Conn) -> Result<WsrepStatus, mysql_async::Error> {
    let mut result = conn.query_iter(wsrep::QUERY).await?;
    let mut rows = Vec::new();
    while !result.is_empty() {
        let set: Vec<(String, String)> = result
            .try_collect::<(String, String)>()
            .await?
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        rows.extend(set);
    }
    tracing::trace!(?rows, "wsrep status");
    Ok(WsrepStatus::from_rows(rows))
}
