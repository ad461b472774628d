//! `limits:` (connections, timeouts, parking) and `tcp:` (socket options), and their
//! validation. Durations are typed as the file is read (`humantime_serde`: `500ms`, `2s`, `1m`).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

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
    pub(crate) fn listen_options(&self) -> crate::core::net::ListenOptions {
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

impl LimitsConfig {
    pub(super) fn validate(&self, file: &str) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                file,
                "limits.max_connections",
                "must be at least 1",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::invalid(
                file,
                "limits.connect_timeout",
                "must be longer than 0 (e.g. 1s)",
            ));
        }
        for (field, value) in [
            ("limits.park_idle_after", self.park_idle_after),
            ("limits.client_idle_timeout", self.client_idle_timeout),
        ] {
            if value.is_some_and(|d| d < Duration::from_millis(10)) {
                return Err(ConfigError::invalid(
                    file,
                    field,
                    "must be at least 10ms, or null to turn it off",
                ));
            }
        }
        Ok(())
    }
}

impl TcpConfig {
    pub(super) fn validate(&self, file: &str) -> Result<(), ConfigError> {
        if self.backlog == 0 {
            return Err(ConfigError::invalid(
                file,
                "tcp.backlog",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
