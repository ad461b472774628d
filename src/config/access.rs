//! `control:` and `admin:`: the glbd-compatible control port and the admin HTTP port, the
//! access rules they share (a token from the file, `token_env` or `token_file`; an allowlist),
//! and their validation. Loading checks what the file says about a token; [`AccessFields::resolve`]
//! reads it, at start (see the `config` module doc for why not while loading).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ConfigError, range};
use crate::core::access::{Access, AllowList};
use crate::core::bounded_read::MAX_SECRET_BYTES;
use crate::core::secret::Secret;

/// The admin HTTP port (see `crate::admin`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `IP:PORT`; loopback by default.
    pub bind: SocketAddr,
    /// Admin connections open at once (1–10000); when all are taken, a new connection takes
    /// the slot of the one idle longest, so a fresh request is always answered.
    pub max_clients: u32,
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
            max_clients: 64,
            token: None,
            token_env: None,
            token_file: None,
            allow: AllowList::default(),
        }
    }
}

impl AdminConfig {
    pub(crate) fn access_fields(&self) -> AccessFields<'_> {
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
    /// Control connections open at once, from 1 to 10000; more are closed at once.
    pub max_clients: u32,
    /// The longest request line, in bytes, from 16 to 65536; a longer one gets `Error` and the
    /// connection closes.
    pub max_line: usize,
    /// How long an interactive connection may stay silent before it is closed, from 100ms to
    /// 24h.
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
    pub(crate) fn access_fields(&self) -> AccessFields<'_> {
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
pub(crate) struct AccessFields<'a> {
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
    pub(crate) fn resolve(&self, file: &str) -> Result<Access, ConfigError> {
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
pub(super) fn resolve_secret(
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
        let bytes = crate::core::bounded_read::read_regular(path, MAX_SECRET_BYTES)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("cannot read {}: it is not UTF-8 text", path.display()))?;
        return Ok(Some(Secret::new(
            text.lines().next().unwrap_or("").to_string(),
        )));
    }
    Ok(None)
}

impl ControlConfig {
    /// `control.*`: an address no listener binds (`binds`), limits and an idle timeout within
    /// their ranges (see the fields), the access fields.
    pub(super) fn validate(&self, binds: &[SocketAddr], file: &str) -> Result<(), ConfigError> {
        let bind = self.bind;
        if bind.port() != 0 && binds.contains(&bind) {
            return Err(ConfigError::invalid(
                file,
                "control.bind",
                format!("{bind} is bound by a listener"),
            ));
        }
        range::count(
            file,
            "control.max_clients",
            self.max_clients,
            1..=10_000,
            "",
        )?;
        range::count(file, "control.max_line", self.max_line, 16..=65_536, "")?;
        range::duration(
            file,
            "control.idle_timeout",
            self.idle_timeout,
            Duration::from_millis(100)..=Duration::from_secs(24 * 3600),
            " (e.g. 5m)",
        )?;
        self.access_fields().validate(file)
    }
}

impl AdminConfig {
    /// `admin.*`: an address neither a listener (`binds`) nor the control port (`control`)
    /// binds, the access fields.
    pub(super) fn validate(
        &self,
        binds: &[SocketAddr],
        control: Option<SocketAddr>,
        file: &str,
    ) -> Result<(), ConfigError> {
        let bind = self.bind;
        if bind.port() != 0 && (binds.contains(&bind) || control == Some(bind)) {
            return Err(ConfigError::invalid(
                file,
                "admin.bind",
                format!("{bind} is bound by a listener or the control port"),
            ));
        }
        range::count(file, "admin.max_clients", self.max_clients, 1..=10_000, "")?;
        self.access_fields().validate(file)
    }
}
