//! galera-lb: a Galera-aware TCP load balancer for MariaDB Galera Cluster and Percona XtraDB
//! Cluster.
//!
//! Clients connect to a listener; each connection is proxied to one backend node chosen by the
//! listener's policy, and bytes are copied both ways until both sides are done. Routing state is an
//! immutable snapshot behind one `ArcSwap`, written only by the updater task; the hot path takes
//! no lock. `ARCHITECTURE.md` has the picture.
//!
//! # Layers
//!
//! The modules are folders by layer; each imports only from the layers above it in this list,
//! never from its own rank's other folders or from below (`scripts/check-layers`, run by CI,
//! keeps it so):
//!
//! 1. [`core`]: addresses, backend identity and live state, wire formats, access rules, limits,
//!    event counters.
//! 2. [`config`]: the configuration, parsed and validated once; its front doors (YAML, HAProxy)
//!    and the reload diff.
//! 3. [`state`]: the change type, the routing snapshot, the writer roles, the policies, the
//!    updater task.
//! 4. [`proxy`] (accept, session, copy, park) and [`sources`] (control port, health checks,
//!    discovery, signals): they read snapshots and send changes; neither imports the other.
//! 5. [`admin`]: the admin HTTP port, metrics rendering, the status page (read only).
//! 6. `app`: wiring: start, drain, run (private; its entry points are re-exported here).
//! 7. [`cli`]: the command line (clap, glbd's argv, daemon mode).
//!
//! # Public surface
//!
//! Everything is `pub(crate)` unless the binary, an integration test, a bench or a fuzz check
//! needs it (the compiler's privacy errors decided, not taste). What is public:
//!
//! - running galera-lb: [`start`], [`start_from`], [`run`], [`run_from`], [`Running`] (its
//!   addresses, router, `drain`, `reload`) and [`RunError`]; [`cli::main`] for the binary;
//! - the configuration: [`config::Config`] and its section types, [`config::ConfigError`],
//!   [`config::diff`], [`config::haproxy::translate()`], and
//!   [`cli::glbd::parse_with_resolver`] (glbd's command line);
//! - the wire formats and parsers, for the fuzz checks and benches: [`core::mysql_packet`],
//!   [`core::proxy_protocol`], [`core::wsrep`], [`sources::control::parse`] and
//!   [`sources::health::view::Views`];
//! - what tests read or set to observe state: [`core::counters::metrics`],
//!   [`core::backend::BackendState`], and the routing snapshot ([`state::snapshot`]) with the
//!   types it hands out (its pools' writer role, the change type `Running` sends).
//!
//! Struct fields stay as they were.

pub mod admin;
mod app;
pub mod cli;
pub mod config;
pub mod core;
pub mod proxy;
pub mod sources;
pub mod state;

pub use app::{Prepared, RunError, Running, prepare, run, run_from, start, start_from};
