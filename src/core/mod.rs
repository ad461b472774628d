//! The bottom layer: what every other layer may use, and which uses nothing of theirs.
//!
//! - [`backend`]: a backend's identity (its address) and live state (health, counters: atomics).
//! - [`limit`]: lock-free connection counts with limits, released by guards.
//! - [`log_limit`]: at most one log line a second per call site about single clients.
//! - [`counters`]: the process-wide event counters, a leaf anyone may bump (rendering them is
//!   `crate::admin::metrics`).
//! - [`wsrep`]: the wsrep status of a node and the rules that make it usable.
//! - [`proxy_protocol`]: the PROXY protocol header (v1, v2), written and read.
//! - [`mysql_follow`]: following a session's packets to know when it sits between transactions.
//! - [`mysql_packet`]: the ERR packet galera-lb sends to clients it cannot serve.
//! - [`access`]: address allowlists and tokens for the control and admin ports.
//! - [`bounded_read`]: reading configuration and secret files: regular files only, bounded in
//!   size, off the runtime with a timeout.
//! - [`client_slots`]: bounded connection slots for the admin and control ports, evicting the idlest.
//! - [`fd_budget`]: the open-files limit, raised at start, and the sessions it leaves room for.
//! - [`secret`]: a string that never shows in logs or `Debug` output.
//! - [`seqno`]: asking a node for its `wsrep_last_committed` now (the causal floor at connect).
//! - [`net`]: listening sockets with galera-lb's options, and the one accept loop.
//! - [`port_owner`]: who holds a port, for a helpful "address in use" message.
//! - [`notify`]: READY/RELOADING/STOPPING for systemd's `Type=notify` (`NOTIFY_SOCKET`).

pub(crate) mod access;
pub mod backend;
pub(crate) mod bounded_read;
pub(crate) mod client_slots;
pub mod counters;
pub(crate) mod fd_budget;
pub(crate) mod limit;
pub(crate) mod log_limit;
pub mod mysql_follow;
pub mod mysql_packet;
pub(crate) mod net;
pub(crate) mod notify;
pub(crate) mod port_owner;
pub mod proxy_protocol;
pub(crate) mod secret;
pub(crate) mod seqno;
pub mod wsrep;
