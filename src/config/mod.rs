//! The YAML configuration: serde structures, defaults, and validation.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere) so a typo is an error, not a silently
//! ignored setting. [`Config::from_yaml`] parses and then runs [`Config::validate`], which checks
//! everything serde cannot (addresses parse, weights are positive, names are unique, limits are
//! sane). Every error is a [`ConfigError`] that names the file, the field and the reason; `main`
//! turns it into exit status 64.
//!
//! Secrets (the health-check password, the control and admin tokens) are held in
//! [`Secret`](crate::core::secret::Secret), whose `Debug` output is masked, and may come from the
//! file, an environment variable (`*_env`) or a file of their own (`*_file`). Loading checks what
//! the file says about them (at most one source, a token a client can send, a variable name that
//! is not empty) but reads no environment variable and no other file: [`Config::resolve_secrets`]
//! does that when galera-lb starts, and [`HealthConfig::resolve_password`] again on every reload
//! (so a changed password file is picked up), each failure a [`ConfigError`] naming the file, the
//! field and the reason (exit 64 at start; a refused reload keeps the running configuration).
//! They stay out of loading on purpose: `galera-lb check` runs the same [`Config::load`] as
//! start-up and reload, so a file is refused by all three with the same message, and it can do
//! that where the service's secrets are not: the Debian package's file passes `check` as
//! installed, before its `password_file` exists, and CI checks the examples without their
//! variables. Loading stays a pure function of the text, which the config fuzzer relies on.
//!
//! The documented example with every field lives in `config/galera-lb.yaml`; the built-in default
//! (the local sandbox, see `scripts/sandbox`) is [`DEFAULT_CONFIG_YAML`].
//!
//! Besides the YAML file, two more front doors produce a `Config`: [`haproxy`] (an HAProxy
//! configuration) and the glbd command line (`crate::cli::glbd`). [`source`] says where a running
//! galera-lb re-reads its configuration from, and [`diff`] what a reload changes.

pub mod diff;
mod file;
pub mod haproxy;
pub mod source;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::access::{Access, AllowList};
use crate::core::secret::Secret;

/// The configuration used when no `--config` is given: galera-lb on 127.0.0.1:3306 in front of the
/// three-node sandbox that `scripts/sandbox start` runs on 3316/3326/3336.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/sandbox.yaml");

/// A configuration problem, naming where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {field}: {reason}")]
    Invalid {
        file: String,
        field: String,
        reason: String,
    },
}

impl ConfigError {
    fn invalid(file: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The whole configuration file, every value typed. Deserializing one goes through
/// `file::ConfigFile` (the addresses as text), as [`Config::from_yaml`] does.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "file::ConfigFile")]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub tcp: TcpConfig,
    pub listeners: Vec<ListenerConfig>,
    /// The backends of the pool named `default`.
    pub backends: Vec<BackendConfig>,
    /// Whether the pool `default` adds the nodes its members report (see [`Discover`]).
    pub discover: Discover,
    /// How many discovery rounds in a row a discovered node may be missing before it is retired.
    pub discover_retire_after: u32,
    /// Further named pools of backends (a listener picks one with `pool:`).
    pub pools: Vec<PoolConfig>,
    pub health: HealthConfig,
    /// The glbd-compatible control port; off unless the section is present.
    pub control: Option<ControlConfig>,
    /// The admin HTTP port (metrics, status, readiness); off unless the section is present.
    pub admin: Option<AdminConfig>,
}

/// The admin HTTP port (see `crate::admin`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `IP:PORT`; loopback by default.
    pub bind: SocketAddr,
    /// A token every endpoint but `/live` and `/ready` asks for (`Authorization: Bearer TOKEN`),
    /// written in the file (prefer `token_env` or `token_file`).
    pub token: Option<Secret>,
    /// The name of an environment variable that holds the token.
    pub token_env: Option<String>,
    /// A file whose first line is the token.
    pub token_file: Option<PathBuf>,
    /// Client addresses or blocks (`10.0.0.0/8`, `::1`) that may connect; empty: everyone who
    /// can reach `bind`.
    pub allow: AllowList,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 9104)),
            token: None,
            token_env: None,
            token_file: None,
            allow: AllowList::default(),
        }
    }
}

impl AdminConfig {
    pub fn access_fields(&self) -> AccessFields<'_> {
        AccessFields {
            section: "admin",
            token: self.token.as_ref(),
            token_env: self.token_env.as_deref(),
            token_file: self.token_file.as_deref(),
            allow: &self.allow,
        }
    }
}

/// The glbd-compatible text control port (see `crate::sources::control`).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    /// `IP:PORT`; loopback by default: whoever reaches it can change the routing.
    pub bind: SocketAddr,
    /// Control connections open at once; more are closed at once.
    pub max_clients: u32,
    /// The longest request line, in bytes; a longer one gets `Error` and the connection closes.
    pub max_line: usize,
    /// How long an interactive connection may stay silent before it is closed.
    pub idle_timeout: Duration,
    /// A token that state-changing requests need (the connection sends `auth TOKEN` first),
    /// written in the file (prefer `token_env` or `token_file`).
    pub token: Option<Secret>,
    /// The name of an environment variable that holds the token.
    pub token_env: Option<String>,
    /// A file whose first line is the token.
    pub token_file: Option<PathBuf>,
    /// Client addresses or blocks (`10.0.0.0/8`, `::1`) that may connect; empty: everyone who
    /// can reach `bind`.
    pub allow: AllowList,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8011)),
            max_clients: 32,
            max_line: 1024,
            idle_timeout: Duration::from_secs(300),
            token: None,
            token_env: None,
            token_file: None,
            allow: AllowList::default(),
        }
    }
}

impl ControlConfig {
    pub fn access_fields(&self) -> AccessFields<'_> {
        AccessFields {
            section: "control",
            token: self.token.as_ref(),
            token_env: self.token_env.as_deref(),
            token_file: self.token_file.as_deref(),
            allow: &self.allow,
        }
    }
}

/// The access fields the control and admin sections share (see `crate::core::access`).
#[derive(Debug, Clone, Copy)]
pub struct AccessFields<'a> {
    /// `control` or `admin`, for messages.
    pub section: &'static str,
    pub token: Option<&'a Secret>,
    pub token_env: Option<&'a str>,
    pub token_file: Option<&'a Path>,
    pub allow: &'a AllowList,
}

impl AccessFields<'_> {
    /// What `validate` can check without the environment or other files.
    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let section = self.section;
        let sources = [
            self.token.is_some(),
            self.token_env.is_some(),
            self.token_file.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() > 1 {
            return Err(ConfigError::invalid(
                file,
                format!("{section}.token"),
                "set only one of token, token_env and token_file",
            ));
        }
        if let Some(token) = self.token {
            check_token(token)
                .map_err(|reason| ConfigError::invalid(file, format!("{section}.token"), reason))?;
        }
        if self.token_env.is_some_and(str::is_empty) {
            return Err(ConfigError::invalid(
                file,
                format!("{section}.token_env"),
                "must name an environment variable",
            ));
        }
        Ok(())
    }

    /// The token from whichever source is set, and the allowlist. The error names the file and
    /// the field (`FILE: control.token_file: cannot read ...`) and never contains the token.
    pub fn resolve(&self, file: &str) -> Result<Access, ConfigError> {
        let section = self.section;
        let field = if self.token_env.is_some() {
            "token_env"
        } else if self.token_file.is_some() {
            "token_file"
        } else {
            "token"
        };
        let field = format!("{section}.{field}");
        let token = resolve_secret(self.token, self.token_env, self.token_file)
            .map_err(|reason| ConfigError::invalid(file, &field, reason))?;
        if let Some(token) = &token {
            check_token(token).map_err(|reason| {
                ConfigError::invalid(file, &field, format!("the token {reason}"))
            })?;
        }
        Ok(Access {
            token,
            allow: self.allow.clone(),
        })
    }
}

/// A token must be something a client can send as one word of a control request and in an
/// HTTP header: visible ASCII, no spaces. The reason never quotes it.
fn check_token(token: &Secret) -> Result<(), String> {
    let text = token.expose();
    if text.is_empty() {
        return Err("is empty: leave the token out, or give one".to_string());
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "must be printable ASCII without spaces (e.g. the output of `openssl rand -hex 32`)"
                .to_string(),
        );
    }
    Ok(())
}

/// A secret from whichever of its three sources is set (at most one is, see `validate`): the
/// value written in the file, an environment variable, or the first line of a file; `None` when
/// none is set. The reason never contains the secret.
fn resolve_secret(
    value: Option<&Secret>,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, String> {
    if let Some(secret) = value {
        return Ok(Some(secret.clone()));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(|v| Some(Secret::new(v)))
            .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)"));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return Ok(Some(Secret::new(
            text.lines().next().unwrap_or("").to_string(),
        )));
    }
    Ok(None)
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Tokio worker threads; default: the number of CPU cores.
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `galera_lb=debug`; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Client connections across all listeners.
    pub max_connections: u32,
    /// How long to wait for a backend's TCP connect before moving on to the next candidate.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// On SIGTERM/SIGINT: how long open connections may take to finish before they are closed.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A session that has moved no bytes for this long is parked: it gives up its task and its
    /// sockets' runtime registrations and waits in one shared epoll set until either side sends
    /// again. `null` keeps every session in a task.
    #[serde(with = "humantime_serde")]
    pub park_idle_after: Option<Duration>,
    /// A session that has moved no bytes for this long is closed. `null` (the default) never
    /// closes an idle session; connection pools expect that.
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Option<Duration>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            park_idle_after: Some(Duration::from_secs(2)),
            client_idle_timeout: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// TCP_NODELAY on both the client and the backend socket.
    pub nodelay: bool,
    /// TCP keepalive idle time on both sockets; `null` turns keepalive off.
    #[serde(with = "humantime_serde")]
    pub keepalive: Option<Duration>,
    /// SO_REUSEPORT on listening sockets (several processes may share a port).
    pub reuse_port: bool,
    /// The listen backlog.
    pub backlog: u32,
}

impl TcpConfig {
    /// How listening sockets are opened.
    pub fn listen_options(&self) -> crate::core::net::ListenOptions {
        crate::core::net::ListenOptions {
            reuse_port: self.reuse_port,
            backlog: self.backlog,
        }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
            reuse_port: false,
            backlog: 1024,
        }
    }
}

/// How a listener chooses a backend for each new client.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Equal turns.
    #[default]
    RoundRobin,
    /// Smooth, interleaved turns in proportion to the weights.
    Weighted,
    /// The backend with the fewest active connections per unit of weight.
    LeastConn,
    /// Random, in proportion to the weights.
    Random,
    /// A hash of the client IP: the same client goes to the same backend while the set is unchanged.
    Source,
    /// Every client to one backend: the highest weight, then the first configured.
    Single,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::RoundRobin => "round_robin",
            PolicyKind::Weighted => "weighted",
            PolicyKind::LeastConn => "least_conn",
            PolicyKind::Random => "random",
            PolicyKind::Source => "source",
            PolicyKind::Single => "single",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    /// `IP:PORT`; IPv6 as `[::1]:3306`.
    pub bind: SocketAddr,
    pub policy: PolicyKind,
    /// The pool of backends this listener serves; default `default` (the top-level `backends:`).
    pub pool: String,
    /// Client connections on this listener; default: only the global limit applies.
    pub max_connections: Option<u32>,
    /// Which nodes of the pool this listener uses: every usable node, only the writer, or the
    /// readers.
    pub role: Role,
    /// For `role: reader`: leave the current writer out, unless it is the only usable node.
    pub exclude_writer: bool,
    /// The PROXY header this listener's connections send to every backend that does not set
    /// its own `proxy_protocol` (a backend's own setting wins).
    pub proxy_protocol: ProxyProtocol,
    /// Read a PROXY header (v1 or v2) from an upstream load balancer on every new connection,
    /// and take the client address from it. A connection without a valid header is closed.
    pub accept_proxy: bool,
    /// When no non-backup backend is usable: send clients to every usable `backup: true`
    /// backend (by the policy), rather than only to the first usable one in configuration order
    /// (HAProxy's `option allbackups`).
    pub all_backups: bool,
}

/// Whether, and in which version, galera-lb writes a PROXY protocol header to a node before any
/// client byte, so that the node sees the client's address (MariaDB: `proxy_protocol_networks`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// No header.
    #[default]
    Off,
    /// The text header: `PROXY TCP4 client galera-lb client_port galera-lb_port`.
    V1,
    /// The binary header.
    V2,
}

impl ProxyProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocol::Off => "off",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }

    /// The header version to write, `None` for `off`.
    pub fn version(self) -> Option<crate::core::proxy_protocol::Version> {
        match self {
            ProxyProtocol::Off => None,
            ProxyProtocol::V1 => Some(crate::core::proxy_protocol::Version::V1),
            ProxyProtocol::V2 => Some(crate::core::proxy_protocol::Version::V2),
        }
    }
}

/// Which usable nodes of a pool a listener sends clients to.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every usable node, chosen by the listener's policy.
    #[default]
    Any,
    /// Exactly one node, the pool's writer: chosen deterministically from cluster state, so that
    /// several galera-lb instances agree (the policy is not used).
    Writer,
    /// Usable nodes, chosen by the listener's policy (see `exclude_writer`).
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Any => "any",
            Role::Writer => "writer",
            Role::Reader => "reader",
        }
    }
}

fn default_pool_name() -> String {
    DEFAULT_POOL.to_string()
}

/// The tracing filter for `log.level` (or `RUST_LOG`): targets and levels, such as
/// `info,galera_lb=debug`. Span and field filters (`target[span{field=value}]=level`) are
/// refused: the config fuzzer found that their parsing can take seconds of CPU (field values are
/// compiled into automata) and trips an ordering invariant inside tracing-subscriber 0.3.23
/// (a debug assertion), and choosing log levels never needs them.
pub fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if let Some(c) = level
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_:,=-.[]{} \t".contains(*c)))
    {
        // tracing-subscriber 0.3.23 panics on some non-ASCII directives (it slices inside a
        // character); targets and levels are ASCII.
        return Err(format!(
            "{c:?} cannot appear in a filter: use targets and levels, such as \
             `info,galera_lb=debug`"
        ));
    }
    if level.contains(['[', ']', '{', '}']) {
        return Err(
            "span and field filters ([span{field=value}]) are not supported; use targets and \
             levels, such as `info,galera_lb=debug`"
                .to_string(),
        );
    }
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(level)
        .map_err(|e| e.to_string())
}

/// The name of the pool formed by the top-level `backends:` list.
pub const DEFAULT_POOL: &str = "default";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub discover: Discover,
    #[serde(default = "default_retire_after")]
    pub discover_retire_after: u32,
}

/// Where a pool learns of nodes beyond the configured ones.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Discover {
    /// Only the configured backends.
    #[default]
    None,
    /// Also the nodes in the members' `wsrep_incoming_addresses` (needs `health.check: wsrep`).
    /// Discovered nodes that stay missing for `discover_retire_after` rounds are retired;
    /// configured ones never are.
    Wsrep,
}

fn default_retire_after() -> u32 {
    5
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `HOST:PORT`; a host name is resolved at start and on reload.
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// 1 = normal; higher tiers are used only when no backend of a lower tier is usable
    /// (HAProxy's `backup` servers are tier 2).
    #[serde(default = "default_tier")]
    pub tier: u8,
    /// Client connections to this backend; default: unlimited.
    pub max_connections: Option<u32>,
    /// A backup (HAProxy's `backup` server): it gets clients only when no non-backup backend of
    /// the pool is usable, and then only the first usable backup in configuration order (every
    /// usable backup with the listener's `all_backups`). Last in the writer order.
    #[serde(default)]
    pub backup: bool,
    /// The port the health checks connect to instead of the backend's own (HAProxy's server
    /// `port`; 9200 for Percona's clustercheck with `health.check: http`).
    pub check_port: Option<u16>,
    /// Follow the host name's DNS records: re-resolve this often, and make every address it
    /// resolves to a backend of its own (Swarm `tasks.NAME`, Kubernetes headless services).
    /// Default: resolve once, at start and on reload, and use the first address.
    #[serde(default, with = "humantime_serde")]
    pub resolve_every: Option<Duration>,
    /// The PROXY header to send this backend; left out, each listener's `proxy_protocol`
    /// applies. Health checks of a backend that gets headers send `PROXY UNKNOWN` (v1) or a v2
    /// `LOCAL` header first.
    pub proxy_protocol: Option<ProxyProtocol>,
}

fn default_weight() -> f64 {
    1.0
}

fn default_tier() -> u8 {
    1
}

/// How galera-lb checks its backends.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// No checks: every backend counts as usable; only connect failover protects clients.
    None,
    /// A TCP connect. Cheap, but the server counts a connection closed before login as an aborted
    /// connect, and blocks the host after `max_connect_errors` of them: prefer `handshake`.
    Tcp,
    /// A MySQL login as the check user, ended with COM_QUIT (no aborted connects).
    Handshake,
    /// A login plus the node's wsrep status: usable only when Galera says it can serve queries.
    #[default]
    Wsrep,
    /// An HTTP request to the backend's `check_port` (see `health.http`): usable when the answer
    /// has the expected status, as with Percona's clustercheck on port 9200.
    Http,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::None => "none",
            CheckKind::Tcp => "tcp",
            CheckKind::Handshake => "handshake",
            CheckKind::Wsrep => "wsrep",
            CheckKind::Http => "http",
        }
    }
}

/// What a backend's health is before its first check.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InitialState {
    /// Down until its first passing check (the first result counts at once).
    #[default]
    Down,
    /// Up until its first failing check.
    Up,
}

/// What to do with a node's open sessions when it goes down (or stops being the writer).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionAction {
    /// Leave them open: clients find out for themselves.
    #[default]
    None,
    /// Close them, so clients reconnect through galera-lb to a usable node.
    ShutdownSessions,
}

/// Health checks: how, how often, and what to do on a change.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub check: CheckKind,
    /// Time between checks of one backend (a little jitter is added).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long one check may take; longer counts as a failure.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passing checks that bring a down backend up.
    pub rise: u32,
    /// Consecutive failing checks that take an up backend down.
    pub fall: u32,
    pub initial: InitialState,
    /// A Donor node serves clients if it does not reject queries (`wsrep_sst_donor_rejects_queries`).
    pub available_when_donor: bool,
    /// `wsrep` checks: a node still in an older Primary view than another node of its cluster has
    /// reported for this long is stale (it was evicted while frozen and does not know yet) and is
    /// left out. `null` turns the comparison off.
    #[serde(with = "humantime_serde")]
    pub stale_view_after: Option<Duration>,
    /// When a backend goes down: close its client sessions, or leave them.
    pub on_down: SessionAction,
    /// When the writer changes: close the sessions that writer listeners have on the old writer.
    pub on_writer_change: SessionAction,
    /// Give the writer role back to the preferred node when it is usable again (default: the
    /// writer stays where it is while it is usable).
    pub failback: bool,
    /// The user the checks log in as.
    pub user: String,
    /// The password, written in the file (prefer `password_env` or `password_file`).
    pub password: Option<Secret>,
    /// The name of an environment variable that holds the password.
    pub password_env: Option<String>,
    /// A file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// The request of `check: http`.
    pub http: HttpCheckConfig,
}

/// The request `health.check: http` sends (HTTP/1.0, one per check) and the answer it wants.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpCheckConfig {
    /// The request method; HAProxy's `option httpchk` sends OPTIONS by default.
    pub method: String,
    /// The request path (it starts with `/`).
    pub path: String,
    /// The status that means usable; any other (or no answer) is a failed check.
    pub expect_status: u16,
}

impl Default for HttpCheckConfig {
    fn default() -> Self {
        HttpCheckConfig {
            method: "OPTIONS".to_string(),
            path: "/".to_string(),
            expect_status: 200,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check: CheckKind::Wsrep,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
            initial: InitialState::Down,
            available_when_donor: false,
            stale_view_after: Some(Duration::from_secs(1)),
            on_down: SessionAction::None,
            on_writer_change: SessionAction::None,
            failback: false,
            user: "monitor".to_string(),
            password: None,
            password_env: None,
            password_file: None,
            http: HttpCheckConfig::default(),
        }
    }
}

impl HealthConfig {
    /// The check password from whichever source is set (at most one is, see `validate`); empty
    /// when none is. The error names the file and `health.password`, never the password.
    pub fn resolve_password(&self, file: &str) -> Result<Secret, ConfigError> {
        resolve_secret(
            self.password.as_ref(),
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )
        .map(Option::unwrap_or_default)
        .map_err(|reason| ConfigError::invalid(file, "health.password", reason))
    }
}

/// The secrets a configuration names, read from wherever it says they are (see
/// [`Config::resolve_secrets`]).
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The health checks' password (empty when none is configured).
    pub health_password: Secret,
    /// The control port's token and allowlist, when the port is on.
    pub control: Option<Access>,
    /// The admin port's token and allowlist, when the port is on.
    pub admin: Option<Access>,
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_yaml(&text, &file)
    }

    /// Reads the secrets from the file, the environment or their own files, as start-up does
    /// (a reload reads the health password again the same way, see `crate::app::effects`). The
    /// first that cannot be read is an error naming the file, the field and the reason.
    pub fn resolve_secrets(&self, file: &str) -> Result<Secrets, ConfigError> {
        Ok(Secrets {
            health_password: self.health.resolve_password(file)?,
            control: self
                .control
                .as_ref()
                .map(|c| c.access_fields().resolve(file))
                .transpose()?,
            admin: self
                .admin
                .as_ref()
                .map(|a| a.access_fields().resolve(file))
                .transpose()?,
        })
    }

    /// The built-in default: galera-lb in front of the local sandbox.
    pub fn builtin_default() -> Config {
        Config::from_yaml(DEFAULT_CONFIG_YAML, "<built-in default>")
            .expect("the built-in default configuration is valid (tested)")
    }

    /// Parses and validates YAML text; `file` names the source in error messages.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let read: file::ConfigFile =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
                file: file.to_string(),
                message: describe_yaml_error(&e),
            })?;
        let config = read.typed().map_err(|untyped| untyped.in_file(file))?;
        config.validate(file)?;
        Ok(config)
    }

    /// Checks what serde cannot: addresses, weights, unique names, pools that exist, limits.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: String, reason: String| ConfigError::invalid(file, field, reason);

        if self.runtime.worker_threads == Some(0) {
            return Err(err(
                "runtime.worker_threads".into(),
                "must be at least 1 (or left out to use one per CPU core)".into(),
            ));
        }
        if let Err(e) = log_filter(&self.log.level) {
            return Err(err("log.level".into(), format!("not a valid filter: {e}")));
        }
        if self.limits.max_connections == 0 {
            return Err(err(
                "limits.max_connections".into(),
                "must be at least 1".into(),
            ));
        }
        if self.limits.connect_timeout.is_zero() {
            return Err(err(
                "limits.connect_timeout".into(),
                "must be longer than 0 (e.g. 1s)".into(),
            ));
        }
        for (field, value) in [
            ("limits.park_idle_after", self.limits.park_idle_after),
            (
                "limits.client_idle_timeout",
                self.limits.client_idle_timeout,
            ),
        ] {
            if value.is_some_and(|d| d < Duration::from_millis(10)) {
                return Err(err(
                    field.into(),
                    "must be at least 10ms, or null to turn it off".into(),
                ));
            }
        }
        if self.tcp.backlog == 0 {
            return Err(err("tcp.backlog".into(), "must be at least 1".into()));
        }
        if self.listeners.is_empty() {
            return Err(err(
                "listeners".into(),
                "at least one listener is needed".into(),
            ));
        }

        let mut pool_names = vec![DEFAULT_POOL.to_string()];
        validate_backends(&self.backends, "backends", file)?;
        for (i, pool) in self.pools.iter().enumerate() {
            let field = format!("pools[{i}]");
            if pool.name.trim().is_empty() {
                return Err(err(format!("{field}.name"), "must not be empty".into()));
            }
            if pool_names.contains(&pool.name) {
                return Err(err(
                    format!("{field}.name"),
                    format!("pool name '{}' is used twice", pool.name),
                ));
            }
            pool_names.push(pool.name.clone());
            if pool.backends.is_empty() {
                return Err(err(
                    format!("{field}.backends"),
                    "a pool needs at least one backend".into(),
                ));
            }
            validate_backends(&pool.backends, &format!("{field}.backends"), file)?;
        }

        let mut listener_names: Vec<&str> = Vec::new();
        let mut binds: Vec<SocketAddr> = Vec::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            let field = format!("listeners[{i}]");
            if listener.name.trim().is_empty() {
                return Err(err(format!("{field}.name"), "must not be empty".into()));
            }
            if listener_names.contains(&listener.name.as_str()) {
                return Err(err(
                    format!("{field}.name"),
                    format!("listener name '{}' is used twice", listener.name),
                ));
            }
            listener_names.push(&listener.name);
            let bind = listener.bind;
            // Port 0 asks the system for a free port: two of them never clash.
            if bind.port() != 0 && binds.contains(&bind) {
                return Err(err(
                    format!("{field}.bind"),
                    format!("{bind} is bound by another listener"),
                ));
            }
            binds.push(bind);
            if !pool_names.contains(&listener.pool) {
                return Err(err(
                    format!("{field}.pool"),
                    format!(
                        "no pool named '{}' (known: {})",
                        listener.pool,
                        pool_names.join(", ")
                    ),
                ));
            }
            if listener.pool == DEFAULT_POOL && self.backends.is_empty() {
                return Err(err(
                    "backends".into(),
                    format!(
                        "listener '{}' uses the default pool, which has no backends",
                        listener.name
                    ),
                ));
            }
            if listener.exclude_writer && listener.role != Role::Reader {
                return Err(err(
                    format!("{field}.exclude_writer"),
                    "only applies to listeners with role: reader".into(),
                ));
            }
            if listener.max_connections == Some(0) {
                return Err(err(
                    format!("{field}.max_connections"),
                    "must be at least 1 (or left out)".into(),
                ));
            }
        }

        for pool in self.pools() {
            if pool.discover == Discover::Wsrep && self.health.check != CheckKind::Wsrep {
                return Err(err(
                    pool.field
                        .replace(".backends", ".discover")
                        .replace("backends", "discover"),
                    "discover: wsrep needs health.check: wsrep".into(),
                ));
            }
            if pool.retire_after == 0 {
                return Err(err(
                    pool.field
                        .replace(".backends", ".discover_retire_after")
                        .replace("backends", "discover_retire_after"),
                    "must be at least 1".into(),
                ));
            }
        }
        if let Some(control) = &self.control {
            let bind = control.bind;
            if bind.port() != 0 && binds.contains(&bind) {
                return Err(err(
                    "control.bind".into(),
                    format!("{bind} is bound by a listener"),
                ));
            }
            if control.max_clients == 0 {
                return Err(err(
                    "control.max_clients".into(),
                    "must be at least 1".into(),
                ));
            }
            if control.max_line < 16 {
                return Err(err("control.max_line".into(), "must be at least 16".into()));
            }
            control.access_fields().validate(file)?;
        }
        if let Some(admin) = &self.admin {
            let bind = admin.bind;
            let control = self.control.as_ref().map(|c| c.bind);
            if bind.port() != 0 && (binds.contains(&bind) || control == Some(bind)) {
                return Err(err(
                    "admin.bind".into(),
                    format!("{bind} is bound by a listener or the control port"),
                ));
            }
            admin.access_fields().validate(file)?;
        }
        let health = &self.health;
        if health.interval.is_zero() {
            return Err(err(
                "health.interval".into(),
                "must be longer than 0 (e.g. 1s)".into(),
            ));
        }
        if health.timeout.is_zero() {
            return Err(err(
                "health.timeout".into(),
                "must be longer than 0 (e.g. 500ms)".into(),
            ));
        }
        if health.rise == 0 {
            return Err(err("health.rise".into(), "must be at least 1".into()));
        }
        if health.fall == 0 {
            return Err(err("health.fall".into(), "must be at least 1".into()));
        }
        let sources = [
            health.password.is_some(),
            health.password_env.is_some(),
            health.password_file.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() > 1 {
            return Err(err(
                "health.password".into(),
                "set only one of password, password_env and password_file".into(),
            ));
        }
        let http = &health.http;
        if http.method.is_empty() || !http.method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(err(
                "health.http.method".into(),
                format!(
                    "'{}' is not an HTTP method (e.g. OPTIONS, GET, HEAD)",
                    http.method
                ),
            ));
        }
        if !http.path.starts_with('/') || !http.path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(
                "health.http.path".into(),
                format!(
                    "'{}' must start with / and have no spaces or control characters",
                    http.path
                ),
            ));
        }
        if !(100..=599).contains(&http.expect_status) {
            return Err(err(
                "health.http.expect_status".into(),
                format!("{} is not an HTTP status (100 to 599)", http.expect_status),
            ));
        }
        // One backend (one address) has one health state, checked once, whatever pools it is in.
        let mut check_ports: Vec<(&str, Option<u16>, String)> = Vec::new();
        for pool in self.pools() {
            for (i, backend) in pool.backends.iter().enumerate() {
                let field = format!("{}[{i}].check_port", pool.field);
                match check_ports.iter().find(|(a, _, _)| *a == backend.address) {
                    Some((_, port, other)) if *port != backend.check_port => {
                        return Err(err(
                            field,
                            format!(
                                "{} is also in {other} with another check_port: one backend \
                                 has one health check, give it the same check_port everywhere",
                                backend.address
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => check_ports.push((&backend.address, backend.check_port, field)),
                }
            }
        }
        Ok(())
    }

    /// The pools, the top-level `backends:` being the pool `default`.
    pub fn pools(&self) -> Vec<PoolView<'_>> {
        let mut pools = vec![PoolView {
            name: DEFAULT_POOL,
            field: "backends".to_string(),
            backends: &self.backends,
            discover: self.discover,
            retire_after: self.discover_retire_after,
        }];
        pools.extend(self.pools.iter().enumerate().map(|(i, p)| PoolView {
            name: &p.name,
            field: format!("pools[{i}].backends"),
            backends: &p.backends,
            discover: p.discover,
            retire_after: p.discover_retire_after,
        }));
        pools
    }
}

/// One pool as configured, whichever way it was written.
#[derive(Debug, Clone)]
pub struct PoolView<'a> {
    pub name: &'a str,
    /// Where its backends are in the file, for messages (`backends`, `pools[0].backends`).
    pub field: String,
    pub backends: &'a [BackendConfig],
    pub discover: Discover,
    pub retire_after: u32,
}

fn validate_backends(
    backends: &[BackendConfig],
    field: &str,
    file: &str,
) -> Result<(), ConfigError> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, backend) in backends.iter().enumerate() {
        let field = format!("{field}[{i}]");
        if let Err(reason) = split_host_port(&backend.address) {
            return Err(ConfigError::invalid(
                file,
                format!("{field}.address"),
                reason,
            ));
        }
        if seen.contains(&backend.address.as_str()) {
            return Err(ConfigError::invalid(
                file,
                format!("{field}.address"),
                format!("{} is listed twice in this pool", backend.address),
            ));
        }
        seen.push(&backend.address);
        if !(backend.weight.is_finite() && backend.weight > 0.0) {
            return Err(ConfigError::invalid(
                file,
                format!("{field}.weight"),
                format!("must be a number greater than 0, not {}", backend.weight),
            ));
        }
        if backend.tier == 0 {
            return Err(ConfigError::invalid(
                file,
                format!("{field}.tier"),
                "tiers start at 1".to_string(),
            ));
        }
        if backend.max_connections == Some(0) {
            return Err(ConfigError::invalid(
                file,
                format!("{field}.max_connections"),
                "must be at least 1 (or left out)".to_string(),
            ));
        }
        if backend.check_port == Some(0) {
            return Err(ConfigError::invalid(
                file,
                format!("{field}.check_port"),
                "port 0 is not a port to check (leave it out to check the backend's port)"
                    .to_string(),
            ));
        }
        if backend.resolve_every.is_some_and(|every| every.is_zero()) {
            return Err(ConfigError::invalid(
                file,
                format!("{field}.resolve_every"),
                "must be longer than 0 (e.g. 5s)".to_string(),
            ));
        }
    }
    Ok(())
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6) into its parts, with a reason when it cannot.
pub fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let bad =
        || format!("'{address}' is not HOST:PORT (e.g. 10.0.0.1:3306, db1:3306 or [::1]:3306)");
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        (host, port)
    } else {
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        if host.contains(':') {
            return Err(bad());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(format!("'{address}': port 0 is not a port to connect to"));
    }
    Ok((host, port))
}

/// serde_yaml's message already carries the path (`listeners[0]: unknown field ...`) and position;
/// make the position read as `line L column C`.
fn describe_yaml_error(e: &serde_yaml::Error) -> String {
    let message = e.to_string();
    match e.location() {
        Some(loc) if !message.contains("line") => {
            format!("{message} (line {} column {})", loc.line(), loc.column())
        }
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
listeners:
  - name: rw
    bind: 127.0.0.1:3306
    policy: round_robin
backends:
  - address: 127.0.0.1:3316
    weight: 1
";

    fn invalid(yaml: &str) -> String {
        Config::from_yaml(yaml, "test.yaml")
            .expect_err("config should be refused")
            .to_string()
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let config = Config::from_yaml(MINIMAL, "test.yaml").unwrap();
        assert_eq!(config.listeners[0].policy, PolicyKind::RoundRobin);
        assert_eq!(config.listeners[0].pool, DEFAULT_POOL);
        assert_eq!(config.limits.connect_timeout, Duration::from_secs(1));
        assert_eq!(config.limits.shutdown_grace, Duration::from_secs(30));
        assert!(config.tcp.nodelay);
        assert_eq!(config.backends[0].weight, 1.0);
        assert_eq!(config.backends[0].tier, 1);
    }

    #[test]
    fn log_level_takes_targets_and_levels_but_no_span_or_field_filters() {
        let with = |level: &str| format!("{MINIMAL}log:\n  level: '{level}'\n");
        assert!(Config::from_yaml(&with("info,galera_lb=debug,mysql_async=warn"), "t").is_ok());
        assert!(invalid(&with("inf\u{e9}=debug")).contains("cannot appear in a filter"));
        for level in ["info,x[span]=debug", "info,x[{field=1}]=trace", "warn,{"] {
            let error = invalid(&with(level));
            assert!(
                error.contains("log.level") && error.contains("span and field filters"),
                "{level}: {error}"
            );
        }
    }

    #[test]
    fn builtin_default_is_valid() {
        let config = Config::builtin_default();
        assert_eq!(config.listeners[0].bind.to_string(), "127.0.0.1:3306");
        assert_eq!(config.backends.len(), 3);
    }

    #[test]
    fn example_config_is_valid_and_sets_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/galera-lb.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        // The example's password comes from an environment variable that need not be set here.
        let config = Config::from_yaml(&text, "config/galera-lb.yaml").unwrap();
        assert_ne!(config.runtime, RuntimeConfig::default());
        assert_ne!(config.limits, LimitsConfig::default());
        assert!(!config.pools.is_empty());
        assert!(config.listeners.len() >= 2);
    }

    #[test]
    fn proxy_protocol_defaults_off_and_backends_inherit() {
        let config = Config::from_yaml(MINIMAL, "t").unwrap();
        assert_eq!(config.listeners[0].proxy_protocol, ProxyProtocol::Off);
        assert!(!config.listeners[0].accept_proxy);
        assert_eq!(config.backends[0].proxy_protocol, None);
        let yaml = MINIMAL
            .replace(
                "policy: round_robin",
                "proxy_protocol: v2\n    accept_proxy: true",
            )
            .replace("weight: 1", "proxy_protocol: off");
        let config = Config::from_yaml(&yaml, "t").unwrap();
        assert_eq!(config.listeners[0].proxy_protocol, ProxyProtocol::V2);
        assert!(config.listeners[0].accept_proxy);
        assert_eq!(config.backends[0].proxy_protocol, Some(ProxyProtocol::Off));
        assert_eq!(ProxyProtocol::Off.version(), None);
        assert_eq!(
            ProxyProtocol::V1.version(),
            Some(crate::core::proxy_protocol::Version::V1)
        );
    }

    #[test]
    fn durations_parse() {
        let yaml = format!("{MINIMAL}limits:\n  connect_timeout: 500ms\n  shutdown_grace: 2s\n");
        let config = Config::from_yaml(&yaml, "t").unwrap();
        assert_eq!(config.limits.connect_timeout, Duration::from_millis(500));
        assert_eq!(config.limits.shutdown_grace, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_reason() {
        let cases: &[(&str, &str, &str)] = &[
            ("listeners:\n  - name: rw\n    bind: [", "test.yaml", "line"),
            (
                &MINIMAL.replace("weight: 1", "weight: 1\n    colour: red"),
                "backends[0]",
                "unknown field `colour`",
            ),
            (
                &MINIMAL.replace("127.0.0.1:3316", "127.0.0.1"),
                "backends[0].address",
                "not HOST:PORT",
            ),
            (
                &MINIMAL.replace("127.0.0.1:3306", "localhost:3306"),
                "listeners[0].bind",
                "not IP:PORT",
            ),
            (
                &MINIMAL.replace("weight: 1", "weight: 0"),
                "backends[0].weight",
                "greater than 0",
            ),
            (
                &MINIMAL.replace("weight: 1", "weight: -2"),
                "backends[0].weight",
                "greater than 0",
            ),
            (
                &MINIMAL.replace("round_robin", "fastest"),
                "listeners[0].policy",
                "unknown variant `fastest`",
            ),
            (
                &format!("{MINIMAL}limits:\n  connect_timeout: soon\n"),
                "limits.connect_timeout",
                "",
            ),
            (
                &format!("{MINIMAL}limits:\n  park_idle_after: 1ms\n"),
                "limits.park_idle_after",
                "at least 10ms",
            ),
            (
                &format!("{MINIMAL}limits:\n  client_idle_timeout: 0s\n"),
                "limits.client_idle_timeout",
                "or null",
            ),
            (
                &MINIMAL.replace(
                    "    policy: round_robin",
                    "    policy: round_robin\n  - name: rw\n    bind: 127.0.0.1:3307",
                ),
                "listeners[1].name",
                "used twice",
            ),
            (
                &MINIMAL.replace("    policy: round_robin", "    pool: writers"),
                "listeners[0].pool",
                "no pool named 'writers'",
            ),
            (
                &format!("{MINIMAL}health:\n  password: a\n  password_env: B\n"),
                "health.password",
                "only one",
            ),
            ("backends: []\n", "test.yaml", "listeners"),
            (
                &format!("{MINIMAL}control:\n  token: a\n  token_file: /t\n"),
                "control.token",
                "only one of token, token_env and token_file",
            ),
            (
                &format!("{MINIMAL}admin:\n  token_env: A\n  token_file: /t\n"),
                "admin.token",
                "only one",
            ),
            (
                &format!("{MINIMAL}control:\n  allow: [127.0.0.0/8, 10.0.0.0/33]\n"),
                "control.allow[1]",
                "prefix length must be 0 to 32",
            ),
            (
                &format!("{MINIMAL}admin:\n  allow:\n    - localhost\n"),
                "admin.allow[0]",
                "not an IPv4 or IPv6 address",
            ),
            (
                &format!("{MINIMAL}admin:\n  allow: [10.1.2.3/8]\n"),
                "admin.allow[0]",
                "write 10.0.0.0/8",
            ),
            (
                &format!("{MINIMAL}control:\n  token: ''\n"),
                "control.token",
                "empty",
            ),
            (
                &format!("{MINIMAL}admin:\n  token: 'two words'\n"),
                "admin.token",
                "printable ASCII without spaces",
            ),
            (
                &format!("{MINIMAL}control:\n  token_env: ''\n"),
                "control.token_env",
                "must name an environment variable",
            ),
            (
                &format!("{MINIMAL}control:\n  token:\n"),
                "control",
                "token has no value",
            ),
            (
                &format!("{MINIMAL}admin:\n  token_file: ~\n"),
                "admin",
                "token_file has no value",
            ),
            (
                &format!("{MINIMAL}health:\n  check: http\n  http:\n    path: health\n"),
                "health.http.path",
                "must start with /",
            ),
            (
                &format!("{MINIMAL}health:\n  http:\n    method: 'GET /'\n"),
                "health.http.method",
                "not an HTTP method",
            ),
            (
                &format!("{MINIMAL}health:\n  http:\n    expect_status: 20\n"),
                "health.http.expect_status",
                "100 to 599",
            ),
            (
                &MINIMAL.replace("weight: 1", "weight: 1\n    check_port: 0"),
                "backends[0].check_port",
                "port 0",
            ),
            (
                &format!(
                    "{MINIMAL}pools:\n  - name: p\n    backends:\n      - address: 127.0.0.1:3316\n        check_port: 9200\n"
                ),
                "pools[0].backends[0].check_port",
                "same check_port",
            ),
            (
                &format!("{MINIMAL}control:\n  tokn: x\n"),
                "control",
                "unknown field `tokn`",
            ),
            (
                &MINIMAL.replace("weight: 1", "weight: 1\n    proxy_protocol: v3"),
                "backends[0].proxy_protocol",
                "unknown variant `v3`, expected one of `off`, `v1`, `v2`",
            ),
            (
                &MINIMAL.replace("weight: 1", "weight: 1\n    proxy_protocol: true"),
                "backends[0].proxy_protocol",
                "",
            ),
            (
                &MINIMAL.replace("policy: round_robin", "proxy_protocol: V2"),
                "listeners[0].proxy_protocol",
                "unknown variant `V2`",
            ),
            (
                &MINIMAL.replace("policy: round_robin", "accept_proxy: v1"),
                "listeners[0].accept_proxy",
                "",
            ),
            (
                &MINIMAL.replace("policy: round_robin", "send_proxy: v1"),
                "listeners[0]",
                "unknown field `send_proxy`",
            ),
        ];
        for (yaml, field, reason) in cases {
            let message = invalid(yaml);
            assert!(message.starts_with("test.yaml: "), "{message}");
            assert!(message.contains(field), "expected {field} in: {message}");
            assert!(message.contains(reason), "expected {reason} in: {message}");
        }
    }

    #[test]
    fn passwords_are_masked_in_debug_output() {
        let yaml = format!("{MINIMAL}health:\n  user: monitor\n  password: hunter2\n");
        let config = Config::from_yaml(&yaml, "t").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("****"));
        assert_eq!(
            config.health.resolve_password("t").unwrap().expose(),
            "hunter2"
        );
    }

    #[test]
    fn password_may_come_from_the_environment() {
        // SAFETY: this test is the only user of this variable.
        unsafe { std::env::set_var("GALERA_LB_TEST_CHECK_PASSWORD", "s3cret") };
        let yaml = format!("{MINIMAL}health:\n  password_env: GALERA_LB_TEST_CHECK_PASSWORD\n");
        let config = Config::from_yaml(&yaml, "t").unwrap();
        assert_eq!(
            config.health.resolve_password("t").unwrap().expose(),
            "s3cret"
        );
        assert!(!format!("{config:?}").contains("s3cret"));
        let unset = format!("{MINIMAL}health:\n  password_env: GALERA_LB_TEST_UNSET_VARIABLE\n");
        let config = Config::from_yaml(&unset, "t").unwrap();
        let error = config.health.resolve_password("t").unwrap_err().to_string();
        assert!(
            error.starts_with("t: health.password: ") && error.contains("not set"),
            "{error}"
        );
    }

    #[test]
    fn access_defaults_to_no_token_and_no_allowlist() {
        let yaml = format!("{MINIMAL}control: {{}}\nadmin: {{}}\n");
        let config = Config::from_yaml(&yaml, "t").unwrap();
        for fields in [
            config.control.as_ref().unwrap().access_fields(),
            config.admin.as_ref().unwrap().access_fields(),
        ] {
            let access = fields.resolve("t").unwrap();
            assert!(access.token.is_none(), "{}", fields.section);
            assert!(access.allow.is_empty(), "{}", fields.section);
        }
        assert_eq!(config.control.unwrap().bind.to_string(), "127.0.0.1:8011");
        assert_eq!(config.admin.unwrap().bind.to_string(), "127.0.0.1:9104");
    }

    #[test]
    fn tokens_come_from_the_file_the_environment_or_a_file_and_are_masked() {
        // Written in the file; a YAML number is a string here.
        let yaml = format!(
            "{MINIMAL}control:\n  token: hunter2-control\n  allow: [127.0.0.1, '::1/128']\n\
             admin:\n  token: 12345678\n"
        );
        let config = Config::from_yaml(&yaml, "t").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2-control"), "{debug}");
        assert!(!debug.contains("12345678"), "{debug}");
        let control = config
            .control
            .as_ref()
            .unwrap()
            .access_fields()
            .resolve("t")
            .unwrap();
        assert_eq!(control.token.as_ref().unwrap().expose(), "hunter2-control");
        assert!(!format!("{control:?}").contains("hunter2"));
        assert!(control.allow.allows("127.0.0.1".parse().unwrap()));
        assert!(control.allow.allows("::1".parse().unwrap()));
        assert!(!control.allow.allows("127.0.0.2".parse().unwrap()));
        let admin = config
            .admin
            .as_ref()
            .unwrap()
            .access_fields()
            .resolve("t")
            .unwrap();
        assert_eq!(admin.token.as_ref().unwrap().expose(), "12345678");

        // IPv6 in a block list needs no quotes.
        let yaml = format!("{MINIMAL}admin:\n  allow:\n    - ::1\n    - fd00::/8\n");
        let config = Config::from_yaml(&yaml, "t").unwrap();
        let admin = config.admin.unwrap().access_fields().resolve("t").unwrap();
        assert!(admin.allow.allows("fd00::5".parse().unwrap()));
        assert!(!admin.allow.allows("127.0.0.1".parse().unwrap()));

        // From the environment.
        // SAFETY: this test is the only user of these variables.
        unsafe {
            std::env::set_var("GALERA_LB_TEST_CONTROL_TOKEN", "from-the-env");
            std::env::set_var("GALERA_LB_TEST_EMPTY_TOKEN", "");
            std::env::set_var("GALERA_LB_TEST_SPACED_TOKEN", "not one word");
        }
        let with = |section: &str, field: &str, value: &str| {
            let yaml = format!("{MINIMAL}{section}:\n  {field}: {value}\n");
            let config = Config::from_yaml(&yaml, "t").unwrap();
            match section {
                "control" => config.control.unwrap().access_fields().resolve("t"),
                _ => config.admin.unwrap().access_fields().resolve("t"),
            }
            .map_err(|e| e.to_string())
        };
        let access = with("control", "token_env", "GALERA_LB_TEST_CONTROL_TOKEN").unwrap();
        assert_eq!(access.token.unwrap().expose(), "from-the-env");
        let unset = with("admin", "token_env", "GALERA_LB_TEST_UNSET_TOKEN").unwrap_err();
        assert!(unset.starts_with("t: admin.token_env: "), "{unset}");
        assert!(
            unset.contains("GALERA_LB_TEST_UNSET_TOKEN is not set"),
            "{unset}"
        );
        let empty = with("control", "token_env", "GALERA_LB_TEST_EMPTY_TOKEN").unwrap_err();
        assert!(
            empty.contains("control.token_env: the token is empty"),
            "{empty}"
        );
        let spaced = with("control", "token_env", "GALERA_LB_TEST_SPACED_TOKEN").unwrap_err();
        assert!(spaced.contains("without spaces"), "{spaced}");
        assert!(
            !spaced.contains("not one word"),
            "the reason never quotes the token: {spaced}"
        );

        // From a file: its first line.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-a-file\nsecond line\n").unwrap();
        let access = with("admin", "token_file", &path.display().to_string()).unwrap();
        assert_eq!(access.token.unwrap().expose(), "from-a-file");
        let missing = dir.path().join("missing");
        let error = with("control", "token_file", &missing.display().to_string()).unwrap_err();
        assert!(
            error.starts_with("t: control.token_file: cannot read "),
            "{error}"
        );
        std::fs::write(&path, "\n").unwrap();
        let error = with("control", "token_file", &path.display().to_string()).unwrap_err();
        assert!(
            error.contains("control.token_file: the token is empty"),
            "{error}"
        );
    }

    #[test]
    fn host_port_splitting() {
        assert_eq!(split_host_port("db1:3306"), Ok(("db1", 3306)));
        assert_eq!(split_host_port("[::1]:3306"), Ok(("::1", 3306)));
        assert!(split_host_port("::1:3306").is_err());
        assert!(split_host_port("db1").is_err());
        assert!(split_host_port("db1:0").is_err());
        assert!(split_host_port(":3306").is_err());
        assert!(split_host_port("db1:99999").is_err());
    }
}
