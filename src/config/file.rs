//! The configuration as serde reads it: the file's own shape, with the listening addresses
//! (`bind`) and allowlists (`allow`) still text. [`ConfigFile::typed`] turns that text into
//! `SocketAddr`s and [`AllowList`]s, once, with the same file, field and reason messages as the
//! rest of validation; the [`Config`] it returns holds only typed values, so nothing parses them
//! again.
//!
//! Only the sections that hold such text have a twin here (the whole file, a listener, the
//! control and the admin port); every other section is read straight into its typed struct
//! (durations through `humantime_serde`, secrets into [`Secret`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::listener::default_pool_name;
use super::pool::default_retire_after;
use super::{
    AdminConfig, BackendConfig, CausalReads, Config, ConfigError, ControlConfig, Discover,
    HealthConfig, LimitsConfig, ListenerConfig, LocalityConfig, LogConfig, PolicyKind, PoolConfig,
    ProxyProtocol, Role, RuntimeConfig, TcpConfig,
};
use crate::core::access::{AllowList, Cidr};
use crate::core::secret::Secret;

/// The whole file (see [`Config`] for what each section means).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    runtime: RuntimeConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    tcp: TcpConfig,
    listeners: Vec<ListenerFile>,
    #[serde(default)]
    backends: Vec<BackendConfig>,
    #[serde(default)]
    discover: Discover,
    #[serde(default = "default_retire_after")]
    discover_retire_after: u32,
    #[serde(default)]
    pools: Vec<PoolConfig>,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    locality: LocalityConfig,
    control: Option<ControlFile>,
    admin: Option<AdminFile>,
}

/// A listener as written (see [`ListenerConfig`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    name: String,
    bind: String,
    #[serde(default)]
    policy: PolicyKind,
    #[serde(default = "default_pool_name")]
    pool: String,
    max_connections: Option<u32>,
    #[serde(default)]
    role: Role,
    #[serde(default)]
    exclude_writer: bool,
    #[serde(default)]
    proxy_protocol: ProxyProtocol,
    #[serde(default)]
    accept_proxy: bool,
    #[serde(default)]
    all_backups: bool,
    #[serde(default)]
    causal_reads: CausalReads,
    #[serde(default, with = "humantime_serde")]
    failover_hold: Option<Duration>,
}

/// The control section as written (see [`ControlConfig`]); its defaults are `ControlConfig`'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ControlFile {
    bind: String,
    max_clients: u32,
    max_line: usize,
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(deserialize_with = "token_not_empty")]
    token: Option<Secret>,
    #[serde(deserialize_with = "token_env_not_empty")]
    token_env: Option<String>,
    #[serde(deserialize_with = "token_file_not_empty")]
    token_file: Option<PathBuf>,
    allow: Vec<String>,
}

impl Default for ControlFile {
    fn default() -> Self {
        let c = ControlConfig::default();
        ControlFile {
            bind: c.bind.to_string(),
            max_clients: c.max_clients,
            max_line: c.max_line,
            idle_timeout: c.idle_timeout,
            token: c.token,
            token_env: c.token_env,
            token_file: c.token_file,
            allow: Vec::new(),
        }
    }
}

/// The admin section as written (see [`AdminConfig`]); its defaults are `AdminConfig`'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AdminFile {
    bind: String,
    max_clients: u32,
    #[serde(deserialize_with = "token_not_empty")]
    token: Option<Secret>,
    #[serde(deserialize_with = "token_env_not_empty")]
    token_env: Option<String>,
    #[serde(deserialize_with = "token_file_not_empty")]
    token_file: Option<PathBuf>,
    allow: Vec<String>,
}

impl Default for AdminFile {
    fn default() -> Self {
        let a = AdminConfig::default();
        AdminFile {
            bind: a.bind.to_string(),
            max_clients: a.max_clients,
            token: a.token,
            token_env: a.token_env,
            token_file: a.token_file,
            allow: Vec::new(),
        }
    }
}

/// Why a [`ConfigFile`] is not a [`Config`]: the field and the reason (the file is added by
/// whoever knows it).
#[derive(Debug)]
pub(crate) struct Untyped {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Untyped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl Untyped {
    pub(crate) fn in_file(self, file: &str) -> ConfigError {
        ConfigError::invalid(file, self.field, self.reason)
    }
}

/// `IP:PORT` (IPv6 as `[::1]:3306`); `example` shows the section's usual address.
fn bind_address(text: &str, field: String, example: &str) -> Result<SocketAddr, Untyped> {
    text.parse().map_err(|_| Untyped {
        field,
        reason: format!("'{text}' is not IP:PORT (e.g. {example})"),
    })
}

/// `section.allow`: addresses or blocks (`10.0.0.0/8`, `::1`).
fn allow_list(entries: &[String], section: &str) -> Result<AllowList, Untyped> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            entry.parse::<Cidr>().map_err(|reason| Untyped {
                field: format!("{section}.allow[{i}]"),
                reason,
            })
        })
        .collect::<Result<_, _>>()
        .map(AllowList::new)
}

impl ConfigFile {
    /// The same configuration with its listening addresses typed; an address that does not
    /// parse is refused naming its field. The rest of validation is [`Config::validate`]'s.
    pub(crate) fn typed(self) -> Result<Config, Untyped> {
        let listeners = self
            .listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(ListenerConfig {
                    bind: bind_address(
                        &l.bind,
                        format!("listeners[{i}].bind"),
                        "127.0.0.1:3306 or [::1]:3306",
                    )?,
                    name: l.name,
                    policy: l.policy,
                    pool: l.pool,
                    max_connections: l.max_connections,
                    role: l.role,
                    exclude_writer: l.exclude_writer,
                    proxy_protocol: l.proxy_protocol,
                    accept_proxy: l.accept_proxy,
                    all_backups: l.all_backups,
                    causal_reads: l.causal_reads,
                    failover_hold: l.failover_hold,
                })
            })
            .collect::<Result<_, Untyped>>()?;
        let control = self
            .control
            .map(|c| {
                Ok::<_, Untyped>(ControlConfig {
                    bind: bind_address(&c.bind, "control.bind".into(), "127.0.0.1:8011")?,
                    max_clients: c.max_clients,
                    max_line: c.max_line,
                    idle_timeout: c.idle_timeout,
                    token: c.token,
                    token_env: c.token_env,
                    token_file: c.token_file,
                    allow: allow_list(&c.allow, "control")?,
                })
            })
            .transpose()?;
        let admin = self
            .admin
            .map(|a| {
                Ok::<_, Untyped>(AdminConfig {
                    bind: bind_address(&a.bind, "admin.bind".into(), "127.0.0.1:9104")?,
                    max_clients: a.max_clients,
                    token: a.token,
                    token_env: a.token_env,
                    token_file: a.token_file,
                    allow: allow_list(&a.allow, "admin")?,
                })
            })
            .transpose()?;
        Ok(Config {
            runtime: self.runtime,
            log: self.log,
            limits: self.limits,
            tcp: self.tcp,
            listeners,
            backends: self.backends,
            discover: self.discover,
            discover_retire_after: self.discover_retire_after,
            pools: self.pools,
            health: self.health,
            locality: self.locality,
            control,
            admin,
        })
    }
}

impl TryFrom<ConfigFile> for Config {
    type Error = Untyped;

    fn try_from(file: ConfigFile) -> Result<Config, Untyped> {
        file.typed()
    }
}

/// For optional fields where a key without a value (`token:`) is a mistake rather than "not
/// set": refused, so that a token that did not make it into the file never leaves a port open
/// silently. A field left out is `None` as usual. (serde_yaml's message names the section; the
/// field is named here.)
fn not_empty<'de, D, T>(deserializer: D, field: &str) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(deserializer)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom(format!(
            "{field} has no value: give one, or leave the field out"
        ))),
    }
}

fn token_not_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    not_empty(d, "token")
}

fn token_env_not_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    not_empty(d, "token_env")
}

fn token_file_not_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<PathBuf>, D::Error> {
    not_empty(d, "token_file")
}
