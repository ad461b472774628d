//! Sources of change: they watch the world and send [`crate::state::change::Change`]s, or
//! write a backend's live state; they never touch the proxy.
//!
//! - [`control`]: the glbd-compatible control port.
//! - [`health`]: health checks (tcp, handshake, wsrep, http), rise/fall, and the writer
//!   election.
//! - [`discovery`]: nodes from `wsrep_incoming_addresses` and from DNS records.
//! - [`signals`]: SIGTERM/SIGINT as one shutdown future, SIGHUP/SIGUSR2 as reload requests.

pub mod control;
pub(crate) mod discovery;
pub mod health;
pub(crate) mod signals;
