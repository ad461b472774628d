//! Support code shared by integration tests: `mod support;` in a test file, then
//! `support::sandbox::cluster()` (the real three-node Galera cluster, see `sandbox.rs`).

pub mod load;
pub mod sandbox;
pub mod transactions;
