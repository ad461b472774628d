//! `backends:` and `pools:`: the pools of backends listeners send clients to (the top-level
//! `backends:` is the pool `default`), with discovery; and their validation. A backend's
//! `HOST:PORT` stays text, since a host name is resolved at run time (at start, on reload, and
//! every `resolve_every`); its syntax is checked once here, with [`split_host_port`].

use std::time::Duration;

use serde::Deserialize;

use super::limits::MAX_CONNECTIONS;
use super::{CheckKind, ConfigError, ProxyProtocol, range};

/// The name of the pool formed by the top-level `backends:` list.
pub const DEFAULT_POOL: &str = "default";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub discover: Discover,
    /// Discovery rounds a discovered node may be missing before it is retired, from 1 to 1000.
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

pub(super) fn default_retire_after() -> u32 {
    5
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `HOST:PORT`; a host name is resolved at start and on reload.
    pub address: String,
    /// What displays, metrics (the `name` label) and logs call the backend besides its address
    /// (HAProxy's `server NAME`); unique in its pool, the same wherever the address is listed.
    /// Default: the address.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// 1 = normal; higher tiers are used only when no backend of a lower tier is usable
    /// (HAProxy's `backup` servers are tier 2).
    #[serde(default = "default_tier")]
    pub tier: u8,
    /// Client connections to this backend, from 1 to 1,000,000; default: unlimited.
    pub max_connections: Option<u32>,
    /// A backup (HAProxy's `backup` server): it gets clients only when no non-backup backend of
    /// the pool is usable, and then only the first usable backup in configuration order (every
    /// usable backup with the listener's `all_backups`). Last in the writer order.
    #[serde(default)]
    pub backup: bool,
    /// The port the health checks connect to instead of the backend's own (HAProxy's server
    /// `port`; 9200 for Percona's clustercheck with `health.check: http`).
    pub check_port: Option<u16>,
    /// Follow the host name's DNS records: re-resolve this often (1s to 24h), and make every address it
    /// resolves to a backend of its own (Swarm `tasks.NAME`, Kubernetes headless services).
    /// Default: resolve once, at start and on reload, and use the first address.
    #[serde(default, with = "humantime_serde")]
    pub resolve_every: Option<Duration>,
    /// The PROXY header to send this backend; left out, each listener's `proxy_protocol`
    /// applies. Health checks of a backend that gets headers send `PROXY UNKNOWN` (v1) or a v2
    /// `LOCAL` header first.
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// The longest backend name.
pub const MAX_NAME_LEN: usize = 100;

impl BackendConfig {
    /// The backend's name: `name`, else the address.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.address)
    }
}

/// What is wrong with a backend `name`, if anything: it must be 1 to [`MAX_NAME_LEN`]
/// characters, none of them a space or a control character (it is a word in logs, the control
/// port's replies and metrics labels).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty (leave it out to name the backend by its address)".into())
    } else if name.chars().count() > MAX_NAME_LEN {
        Some(format!("is longer than {MAX_NAME_LEN} characters"))
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(format!(
            "'{}' has a space or a control character: a name is one word (e.g. db1)",
            name.escape_debug()
        ))
    } else {
        None
    }
}

fn default_weight() -> f64 {
    1.0
}

fn default_tier() -> u8 {
    1
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

/// Each backend of one pool (`field[i]`, `field` being `backends` or `pools[N].backends`):
/// `HOST:PORT` (host names stay text: they are resolved at start, on reload and with
/// `resolve_every`), listed once, a name that is one word and unique in the pool, a positive weight, a tier from 1, limits, ports and
/// re-resolution intervals within their ranges.
fn validate_backends(
    backends: &[BackendConfig],
    field: &str,
    file: &str,
) -> Result<(), ConfigError> {
    let mut seen: Vec<&str> = Vec::new();
    let base = field;
    for (i, backend) in backends.iter().enumerate() {
        let field = format!("{base}[{i}]");
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
        if let Some(name) = &backend.name {
            if let Some(reason) = name_problem(name) {
                return Err(ConfigError::invalid(file, format!("{field}.name"), reason));
            }
            if backend.resolve_every.is_some() {
                return Err(ConfigError::invalid(
                    file,
                    format!("{field}.name"),
                    "a resolve_every backend becomes one backend per address it resolves to, \
                     each named by its address: leave name out"
                        .to_string(),
                ));
            }
        }
        if let Some(j) = backends[..i]
            .iter()
            .position(|b| b.name() == backend.name())
        {
            return Err(ConfigError::invalid(
                file,
                format!("{field}.name"),
                format!(
                    "'{}' is already the name of {base}[{j}] ({}): names are unique in a pool",
                    backend.name(),
                    backends[j].address,
                ),
            ));
        }
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
        if let Some(max) = backend.max_connections {
            range::count(
                file,
                &format!("{field}.max_connections"),
                max,
                1..=MAX_CONNECTIONS,
                " (or left out)",
            )?;
        }
        if backend.check_port == Some(0) {
            return Err(ConfigError::invalid(
                file,
                format!("{field}.check_port"),
                "port 0 is not a port to check (leave it out to check the backend's port)"
                    .to_string(),
            ));
        }
        if let Some(every) = backend.resolve_every {
            range::duration(
                file,
                &format!("{field}.resolve_every"),
                every,
                Duration::from_secs(1)..=Duration::from_secs(24 * 3600),
                " (e.g. 5s), or left out to resolve once",
            )?;
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

/// The default pool's backends, then each of `pools:` (`pools[i]`): a name of its own, at least one
/// backend, each valid. Gives the pool names, `default` first.
pub(super) fn validate_pools(
    backends: &[BackendConfig],
    pools: &[PoolConfig],
    file: &str,
) -> Result<Vec<String>, ConfigError> {
    let err = |field: String, reason: String| ConfigError::invalid(file, field, reason);
    let mut pool_names = vec![DEFAULT_POOL.to_string()];
    validate_backends(backends, "backends", file)?;
    for (i, pool) in pools.iter().enumerate() {
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
    Ok(pool_names)
}

/// `discover` and `discover_retire_after` of each pool: `wsrep` discovery needs the wsrep check
/// (`check` is `health.check`), and a node is retired after 1 to 1000 rounds.
pub(super) fn validate_discovery(
    pools: &[PoolView<'_>],
    check: CheckKind,
    file: &str,
) -> Result<(), ConfigError> {
    for pool in pools {
        if pool.discover == Discover::Wsrep && check != CheckKind::Wsrep {
            return Err(ConfigError::invalid(
                file,
                pool.field
                    .replace(".backends", ".discover")
                    .replace("backends", "discover"),
                "discover: wsrep needs health.check: wsrep",
            ));
        }
        range::count(
            file,
            &pool
                .field
                .replace(".backends", ".discover_retire_after")
                .replace("backends", "discover_retire_after"),
            pool.retire_after,
            1..=1000,
            "",
        )?;
    }
    Ok(())
}

/// One backend (one address) has one name wherever it is listed: metrics and displays name a
/// backend, not a pool member.
pub(super) fn validate_names(pools: &[PoolView<'_>], file: &str) -> Result<(), ConfigError> {
    let mut names: Vec<(&str, &str, String)> = Vec::new();
    for pool in pools {
        for (i, backend) in pool.backends.iter().enumerate() {
            let field = format!("{}[{i}]", pool.field);
            match names.iter().find(|(a, _, _)| *a == backend.address) {
                Some((_, name, other)) if *name != backend.name() => {
                    return Err(ConfigError::invalid(
                        file,
                        format!("{field}.name"),
                        format!(
                            "{} is also in {other} named '{name}': one backend has one name, \
                             give it the same name everywhere",
                            backend.address
                        ),
                    ));
                }
                Some(_) => {}
                None => names.push((&backend.address, backend.name(), field)),
            }
        }
    }
    Ok(())
}

/// One backend (one address) has one health state, checked once, whatever pools it is in: the
/// same `check_port` everywhere it is listed.
pub(super) fn validate_check_ports(pools: &[PoolView<'_>], file: &str) -> Result<(), ConfigError> {
    let mut check_ports: Vec<(&str, Option<u16>, String)> = Vec::new();
    for pool in pools {
        for (i, backend) in pool.backends.iter().enumerate() {
            let field = format!("{}[{i}].check_port", pool.field);
            match check_ports.iter().find(|(a, _, _)| *a == backend.address) {
                Some((_, port, other)) if *port != backend.check_port => {
                    return Err(ConfigError::invalid(
                        file,
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
