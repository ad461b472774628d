//! Asking a node for its `wsrep_last_committed` at this moment, for the causal floor at connect
//! (`causal_reads: connect`): the proxy asks the writer first, then the reader it would pick,
//! and sends the session to that reader only if it has committed at least what the writer had.
//!
//! The proxy holds a [`SeqnoProbe`] as a trait object: the MySQL client behind it lives with
//! the health checks (`crate::sources::health::seqno`), which the proxy layer may not use.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// What [`SeqnoProbe::last_committed`] returns.
pub(crate) type SeqnoFuture<'a> = Pin<Box<dyn Future<Output = Option<u64>> + Send + 'a>>;

/// Asks nodes for their `wsrep_last_committed`.
pub(crate) trait SeqnoProbe: Send + Sync + std::fmt::Debug {
    /// The node's `wsrep_last_committed` now; `None` when it cannot be had in time (the caller
    /// then sends the session to the writer).
    fn last_committed(&self, node: SocketAddr) -> SeqnoFuture<'_>;
}
