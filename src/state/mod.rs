//! The routing state: what a new client connection is routed by, and the one task that changes
//! it.
//!
//! - [`change`]: the one change type that every source of change sends (a leaf).
//! - [`snapshot`]: the immutable routing snapshot (pools, members, routes) behind one `ArcSwap`,
//!   and the [`snapshot::Updater`] that builds and swaps it.
//! - [`writer`]: each pool's writer role, outside the snapshot, shared across rebuilds.
//! - [`balance`]: the policies (round robin, weighted, least connections, random, source, single).
//! - [`saved`]: the state file (`runtime.state_file`): admin states and control-port weights
//!   kept across restarts.
//! - [`updater`]: the task that applies every change, and the [`updater::Effects`] it reports
//!   to.

pub(crate) mod balance;
pub(crate) mod change;
pub(crate) mod saved;
pub mod snapshot;
pub(crate) mod updater;
pub(crate) mod writer;
