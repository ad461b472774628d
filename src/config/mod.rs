//! The YAML configuration: serde structures, defaults, and validation.
//!
//! Each section lives in a file of its own with its types, defaults and rules: `runtime`
//! (`runtime:`, `log:`), `limits` (`limits:`, `tcp:`), `listener` (`listeners:`), `pool`
//! (`backends:`, `pools:`), `health` (`health:`), `access` (`control:`, `admin:`); the types are
//! re-exported here. `file` is the file as serde reads it, with addresses still text; `range` the
//! range checks every count and duration goes through.
//!
//! Parse once: [`Config::from_yaml`] reads the text strictly (`deny_unknown_fields` everywhere, so
//! a typo is an error, not a silently ignored setting), types the listening addresses
//! (`SocketAddr`) and allowlists (`AllowList`) as it reads them (durations are typed by serde
//! already), and then runs [`Config::validate`], which calls each section's rules in turn (counts and durations in
//! range, unique names, pools that exist, ports not bound twice, backend `HOST:PORT` syntax).
//! Every count and duration has a range an operator would find sane (`range`: the checks and their
//! messages; the ranges themselves are beside each section's rules), so that no value `check`
//! accepts can crash galera-lb or make it useless later (a timeout that overflows, a keepalive the
//! kernel refuses on every connection, a thread count the system cannot give).
//! A `Config` that loaded holds typed values only: nothing parses them again. Backend addresses
//! stay `HOST:PORT` text because host names are resolved at run time. Every error is a
//! [`ConfigError`] that names the file, the field and the reason; `main` turns it into exit
//! status 64. serde's own messages are passed on without the value they quote (`without_values`):
//! a secret written where a section or another field belongs is never echoed.
//!
//! Secrets (the health-check password, the control and admin tokens) are held in
//! [`Secret`](crate::core::secret::Secret), whose `Debug` output is masked, and may come from the
//! file, an environment variable (`*_env`) or a file of their own (`*_file`). Loading checks what
//! the file says about them (at most one source, a token a client can send, a variable name that
//! is not empty) but reads no environment variable and no other file: [`Config::resolve_secrets`]
//! does that when galera-lb starts and when `galera-lb check` runs (both through
//! `crate::app::prepare`, so `check` fails where the start would), and
//! [`HealthConfig::resolve_password`] again on every reload (so a changed password file is picked
//! up), each failure a [`ConfigError`] naming the file, the field and the reason (exit 64 at
//! start and at `check`; a refused reload keeps the running configuration). They stay out of
//! loading on purpose: loading stays a pure function of the text, which the config fuzzer and
//! the tests that load the examples without their variables rely on.
//!
//! The documented example with every field lives in `config/galera-lb.yaml`; the built-in default
//! (the local sandbox, see `scripts/sandbox`) is [`DEFAULT_CONFIG_YAML`].
//!
//! Besides the YAML file, two more front doors produce a `Config`: [`haproxy`] (an HAProxy
//! configuration) and the glbd command line (`crate::cli::glbd`). [`source`] says where a running
//! galera-lb re-reads its configuration from, and [`diff`] what a reload changes.

mod access;
pub mod diff;
mod file;
pub mod haproxy;
mod health;
mod limits;
mod listener;
mod locality;
mod pool;
mod range;
mod runtime;
pub(crate) mod source;

use std::path::Path;

use serde::Deserialize;

use crate::core::access::Access;
use crate::core::bounded_read::{MAX_CONFIG_BYTES, read_regular};
use crate::core::secret::Secret;

pub use access::{AdminConfig, ControlConfig};
pub use health::{
    CheckKind, HealthConfig, HttpCheckConfig, InitialState, LagConfig, SessionAction,
    WriterAgreement,
};
pub use limits::{LimitsConfig, TcpConfig};
pub use listener::{CausalReads, ListenerConfig, PolicyKind, ProxyProtocol, Role};
pub use locality::LocalityConfig;
pub use pool::{BackendConfig, DEFAULT_POOL, Discover, PoolConfig, PoolView, split_host_port};
pub(crate) use runtime::{LogConfig, LogFormat, RuntimeConfig, log_filter};

/// The configuration used when no `--config` is given: galera-lb on 127.0.0.1:3306 in front of the
/// three-node sandbox that `scripts/sandbox start` runs on 3316/3326/3336.
pub(crate) const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/sandbox.yaml");

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
    /// How many discovery rounds in a row a discovered node may be missing before it is retired,
    /// from 1 to 1000.
    pub discover_retire_after: u32,
    /// Further named pools of backends (a listener picks one with `pool:`).
    pub pools: Vec<PoolConfig>,
    pub health: HealthConfig,
    /// This instance's Galera segment, which readers (and, if asked, the writer) prefer.
    pub locality: LocalityConfig,
    /// The glbd-compatible control port; off unless the section is present.
    pub control: Option<ControlConfig>,
    /// The admin HTTP port (metrics, status, readiness); off unless the section is present.
    pub admin: Option<AdminConfig>,
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
        let bytes = read_regular(path, MAX_CONFIG_BYTES).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Read {
            file: file.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"),
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

    /// Checks what serde cannot, section by section (each section's rules are beside its types,
    /// in this folder): counts and durations in range, unique names, pools that exist, ports
    /// not bound twice, backend addresses that are `HOST:PORT`. The first problem is the error,
    /// naming the file, the field and the reason.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        self.runtime.validate(file)?;
        self.log.validate(file)?;
        self.limits.validate(file)?;
        self.tcp.validate(file)?;
        listener::validate_some(&self.listeners, file)?;
        let pool_names = pool::validate_pools(&self.backends, &self.pools, file)?;
        let binds = listener::validate_listeners(
            &self.listeners,
            &pool_names,
            !self.backends.is_empty(),
            file,
        )?;
        let pools = self.pools();
        pool::validate_discovery(&pools, self.health.check, file)?;
        if let Some(control) = &self.control {
            control.validate(&binds, file)?;
        }
        if let Some(admin) = &self.admin {
            admin.validate(&binds, self.control.as_ref().map(|c| c.bind), file)?;
        }
        self.health.validate(file)?;
        self.locality.validate(self.health.check, file)?;
        listener::validate_causal_reads(&self.listeners, self.health.check, file)?;
        listener::validate_holds(&self.listeners, file)?;
        pool::validate_check_ports(&pools, file)?;
        pool::validate_names(&pools, file)
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

/// serde_yaml's message already carries the path (`listeners[0]: unknown field ...`) and position;
/// make the position read as `line L column C`, and take out the value serde quotes (see
/// [`without_values`]).
fn describe_yaml_error(e: &serde_yaml::Error) -> String {
    let message = without_values(&e.to_string());
    match e.location() {
        Some(loc) if !message.contains("line") => {
            format!("{message} (line {} column {})", loc.line(), loc.column())
        }
        _ => message,
    }
}

/// serde's messages quote the value they could not use: `invalid type: string "hunter2",
/// expected struct HealthConfig` when a password lands where the `health:` section belongs, on
/// stderr at start and `check` and in the reload log line. Each value is replaced by its kind
/// (`a string`, `an integer`, `a number`, `a boolean`, `a character`), an unknown variant loses
/// its name, and `expected struct NAME` (a type name of ours) reads `expected a mapping`; the field
/// path, the expected type and the position stay, and they are what a fix needs. Field names
/// (`unknown field `colour``) are kept: they are keys, not values.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let next = ["invalid type: ", "invalid value: ", "unknown variant `"]
            .iter()
            .filter_map(|marker| rest.find(marker).map(|at| (at, *marker)))
            .min_by_key(|(at, _)| *at);
        let Some((at, marker)) = next else {
            out.push_str(rest);
            break;
        };
        let after = &rest[at + marker.len()..];
        if marker == "unknown variant `" {
            out.push_str(&rest[..at]);
            out.push_str("unknown variant");
            // The variant is written as is, backticks and all; the list of expected ones
            // that follows never holds "`, expected", so the last one ends the variant.
            match after
                .rfind("`, expected")
                .or_else(|| after.rfind("`, there are no"))
            {
                Some(end) => rest = &after[end + 1..],
                None => break,
            }
            continue;
        }
        out.push_str(&rest[..at + marker.len()]);
        match unexpected_value(after) {
            Some((kind, len)) => {
                out.push_str(kind);
                rest = &after[len..];
            }
            None => rest = after,
        }
    }
    replace_struct_names(&out)
}

/// The kind and the length of the value serde's `Unexpected` shows at the start of `text`
/// (`string "…"` with Rust escapes, `integer `5``, serde_yaml's `integer `5` as u128`,
/// `floating point `1.5``, `boolean `true``, `character `c``); `None` for the kinds that show
/// no value (`sequence`, `map`, `unit value`, ...).
fn unexpected_value(text: &str) -> Option<(&'static str, usize)> {
    if let Some(quoted) = text.strip_prefix("string \"") {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return Some(("a string", "string \"".len() + i + 1)),
                _ => {}
            }
        }
        // No closing quote: drop the rest rather than show part of the value.
        return Some(("a string", text.len()));
    }
    for (prefix, kind) in [
        ("integer `", "an integer"),
        ("floating point `", "a number"),
        ("boolean `", "a boolean"),
        ("character `", "a character"),
    ] {
        let Some(value) = text.strip_prefix(prefix) else {
            continue;
        };
        // A character may itself be a backtick: skip one character before looking for the end.
        let skip = value.chars().next().map_or(0, char::len_utf8);
        let mut len = match value[skip..].find('`') {
            Some(end) => prefix.len() + skip + end + 1,
            None => text.len(),
        };
        for suffix in [" as u128", " as i128"] {
            if text[len..].starts_with(suffix) {
                len += suffix.len();
            }
        }
        return Some((kind, len));
    }
    None
}

/// `expected struct HealthConfig` (serde's name for our type) as `expected a mapping`.
fn replace_struct_names(message: &str) -> String {
    const STRUCT: &str = "expected struct ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(STRUCT) {
        out.push_str(&rest[..at]);
        out.push_str("expected a mapping");
        let name = &rest[at + STRUCT.len()..];
        let end = name
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(name.len());
        rest = &name[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
