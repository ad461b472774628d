//! `listeners:`: where galera-lb accepts clients, and how each listener picks a backend of its
//! pool; and their validation. `bind` is a `SocketAddr` by the time a [`ListenerConfig`] exists
//! (see `file.rs`).

use std::net::SocketAddr;

use serde::Deserialize;

use super::limits::MAX_CONNECTIONS;
use super::{CheckKind, ConfigError, DEFAULT_POOL, range};

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
    /// HAProxy's `balance source` (its default map-based hash): the same backend HAProxy picks
    /// for a client address. A change of the usable set remaps most clients, as in HAProxy;
    /// `source` moves only the clients of a backend that left.
    SourceMap,
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
            PolicyKind::SourceMap => "source_map",
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
    /// Client connections on this listener, from 1 to 1,000,000; default: only the global limit
    /// applies.
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
    /// `connect`: a new session sees every write the writer had acknowledged (see
    /// [`CausalReads`]).
    pub causal_reads: CausalReads,
    /// A client accepted while this listener has no usable backend (the writer being elected
    /// again, every node drained, the cluster re-forming) waits up to this long (10ms to 1m)
    /// for one and is then served; only after it does it get the ERR packet. At most
    /// `limits.max_held_clients` wait at once. `null` (the default): the ERR packet at once.
    pub failover_hold: Option<std::time::Duration>,
}

/// What a listener promises about reading what was written before a session started.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CausalReads {
    /// Any usable node (Galera applies write-sets on each node asynchronously).
    #[default]
    None,
    /// A floor at connect: the node the listener picks (among nodes whose checked
    /// `wsrep_last_committed` is at least the writer's checked one) gets the session only if
    /// its `wsrep_last_committed`, asked at connect, is at least the writer's, asked just
    /// before; else the writer does. Per statement, `wsrep_sync_wait` is the tool.
    Connect,
}

impl CausalReads {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CausalReads::None => "none",
            CausalReads::Connect => "connect",
        }
    }
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
    /// The header version to write, `None` for `off`.
    pub(crate) fn version(self) -> Option<crate::core::proxy_protocol::Version> {
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Any => "any",
            Role::Writer => "writer",
            Role::Reader => "reader",
        }
    }
}

pub(super) fn default_pool_name() -> String {
    DEFAULT_POOL.to_string()
}

/// `listeners:` has at least one entry.
pub(super) fn validate_some(listeners: &[ListenerConfig], file: &str) -> Result<(), ConfigError> {
    if listeners.is_empty() {
        return Err(ConfigError::invalid(
            file,
            "listeners",
            "at least one listener is needed",
        ));
    }
    Ok(())
}

/// Each listener (`listeners[i]`): a name of its own, an address no other listener binds, a pool
/// among `pool_names` (the default one only when `default_has_backends`), `exclude_writer` only
/// for readers, a limit from 1 to 1,000,000. Gives the addresses they bind, which the control and admin
/// ports must not share.
pub(super) fn validate_listeners(
    listeners: &[ListenerConfig],
    pool_names: &[String],
    default_has_backends: bool,
    file: &str,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let err = |field: String, reason: String| ConfigError::invalid(file, field, reason);
    let mut listener_names: Vec<&str> = Vec::new();
    let mut binds: Vec<SocketAddr> = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
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
        if listener.pool == DEFAULT_POOL && !default_has_backends {
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
        if let Some(max) = listener.max_connections {
            range::count(
                file,
                &format!("{field}.max_connections"),
                max,
                1..=MAX_CONNECTIONS,
                " (or left out)",
            )?;
        }
    }
    Ok(binds)
}

/// `causal_reads: connect` only on a listener that reads (`role: reader` or `any`), with the
/// `wsrep` check that reads each node's `wsrep_last_committed`.
pub(super) fn validate_causal_reads(
    listeners: &[ListenerConfig],
    check: CheckKind,
    file: &str,
) -> Result<(), ConfigError> {
    for (i, listener) in listeners.iter().enumerate() {
        if listener.causal_reads == CausalReads::None {
            continue;
        }
        let field = format!("listeners[{i}].causal_reads");
        if listener.role == Role::Writer {
            return Err(ConfigError::invalid(
                file,
                &field,
                "a writer listener always reads from the writer: set it on a reader listener",
            ));
        }
        if check != CheckKind::Wsrep {
            return Err(ConfigError::invalid(
                file,
                &field,
                format!(
                    "needs health.check: wsrep (it compares the nodes' wsrep_last_committed), \
                     not {}",
                    check.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// `failover_hold`: from 10ms to 1m.
pub(super) fn validate_holds(listeners: &[ListenerConfig], file: &str) -> Result<(), ConfigError> {
    for (i, listener) in listeners.iter().enumerate() {
        if let Some(hold) = listener.failover_hold {
            range::duration(
                file,
                &format!("listeners[{i}].failover_hold"),
                hold,
                std::time::Duration::from_millis(10)..=std::time::Duration::from_secs(60),
                " (e.g. 3s), or null for the ERR packet at once",
            )?;
        }
    }
    Ok(())
}
