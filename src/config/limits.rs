//! `limits:` (connections, timeouts, parking) and `tcp:` (socket options), and their
//! validation. Durations are typed as the file is read (`humantime_serde`: `500ms`, `2s`, `1m`);
//! every count and duration has a range (in its doc comment), and the socket options one the
//! kernel takes, so that no connection ever fails on an option `check` could have refused.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, range};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Client connections across all listeners, from 1 to 1,000,000.
    pub max_connections: u32,
    /// How long to wait for a backend's TCP connect before moving on to the next candidate,
    /// from 10ms to 1h.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// On SIGTERM/SIGINT: how long the listeners keep accepting while the admin port's `/ready`
    /// already answers 503 `draining`, so that keepalived, Kubernetes or an outer load balancer
    /// moves new clients elsewhere before any is refused; from 0s (the default: stop accepting at
    /// once) to 10m. `shutdown_grace` starts when it is over.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// On SIGTERM/SIGINT, once `shutdown_delay` is over and the listeners are closed: how long
    /// open connections may take to finish before they are closed, from 0s to 24h.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A session that has moved no bytes for this long (10ms to 24h) is parked: it gives up its
    /// task and its sockets' runtime registrations and waits in one shared epoll set until either
    /// side sends again. `null` keeps every session in a task.
    #[serde(with = "humantime_serde")]
    pub park_idle_after: Option<Duration>,
    /// A session that has moved no bytes for this long (10ms to 30d) is closed. `null` (the
    /// default) never closes an idle session; connection pools expect that.
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Option<Duration>,
    /// Clients held at once, across all listeners, while their listener has no usable backend
    /// (a listener's `failover_hold`), from 1 to 100,000; past it a client gets the ERR packet
    /// at once, as without a hold.
    pub max_held_clients: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(1),
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            park_idle_after: Some(Duration::from_secs(2)),
            client_idle_timeout: None,
            max_held_clients: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// TCP_NODELAY on both the client and the backend socket.
    pub nodelay: bool,
    /// TCP keepalive idle time on both sockets (TCP_KEEPIDLE): whole seconds from 1s to 32767s,
    /// the range Linux takes; `null` turns keepalive off.
    #[serde(with = "humantime_serde")]
    pub keepalive: Option<Duration>,
    /// TCP_USER_TIMEOUT on each session's backend socket and on the health checks' own sockets:
    /// how long data sent to a node may stay unacknowledged (and, with keepalive, how long its
    /// probes may go unanswered) before the kernel drops the connection, so that a session on a
    /// node that vanished without a reset (power loss, a cut cable) ends instead of hanging for
    /// the kernel's ~15 minutes (`net.ipv4.tcp_retries2`). Whole milliseconds from 1s to 1h;
    /// default 30s (longer than Galera's own `evs.inactive_timeout`, 15 s, after which such a
    /// node is out of the cluster anyway); `null` leaves the kernel's behaviour. Not set on
    /// client sockets (see docs/src/operations.md).
    #[serde(with = "humantime_serde")]
    pub user_timeout: Option<Duration>,
    /// SO_REUSEPORT on listening sockets (several processes may share a port).
    pub reuse_port: bool,
    /// The listen backlog, from 1 to 65535 (the kernel caps it at `net.core.somaxconn`).
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
            user_timeout: Some(DEFAULT_USER_TIMEOUT),
            reuse_port: false,
            backlog: 1024,
        }
    }
}

/// `tcp.user_timeout`'s default.
pub(crate) const DEFAULT_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The most connections `limits.max_connections` and a listener's or backend's
/// `max_connections` may allow (each takes two file descriptors).
pub(super) const MAX_CONNECTIONS: u32 = 1_000_000;

impl LimitsConfig {
    /// `limits.*`: every count and duration within its range (see the fields).
    pub(super) fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let ms = Duration::from_millis;
        let hours = |h: u64| Duration::from_secs(h * 3600);
        range::count(
            file,
            "limits.max_connections",
            self.max_connections,
            1..=MAX_CONNECTIONS,
            "",
        )?;
        range::count(
            file,
            "limits.max_held_clients",
            self.max_held_clients,
            1..=100_000,
            "",
        )?;
        range::duration(
            file,
            "limits.connect_timeout",
            self.connect_timeout,
            ms(10)..=hours(1),
            " (e.g. 1s)",
        )?;
        range::duration(
            file,
            "limits.shutdown_delay",
            self.shutdown_delay,
            Duration::ZERO..=Duration::from_secs(600),
            " (e.g. 5s; 0s stops accepting at once)",
        )?;
        range::duration(
            file,
            "limits.shutdown_grace",
            self.shutdown_grace,
            Duration::ZERO..=hours(24),
            " (e.g. 30s)",
        )?;
        if let Some(after) = self.park_idle_after {
            range::duration(
                file,
                "limits.park_idle_after",
                after,
                ms(10)..=hours(24),
                ", or null to turn parking off",
            )?;
        }
        if let Some(timeout) = self.client_idle_timeout {
            range::duration(
                file,
                "limits.client_idle_timeout",
                timeout,
                ms(10)..=hours(30 * 24),
                ", or null to never close an idle session",
            )?;
        }
        Ok(())
    }
}

impl TcpConfig {
    /// `tcp.*`: a keepalive idle time the kernel takes, a user timeout and a backlog within
    /// their ranges.
    pub(super) fn validate(&self, file: &str) -> Result<(), ConfigError> {
        if let Some(idle) = self.keepalive {
            range::keepalive(file, "tcp.keepalive", idle)?;
        }
        if let Some(timeout) = self.user_timeout {
            range::user_timeout(file, "tcp.user_timeout", timeout)?;
        }
        range::count(file, "tcp.backlog", self.backlog, 1..=65_535, "")
    }
}
