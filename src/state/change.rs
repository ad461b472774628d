//! The one change type: what discovery, DNS following, the control port and reload signals ask
//! of the routing. It is a leaf of the state layer: producers (`crate::sources`) build it, the
//! updater task (`crate::state::updater`) consumes it, and neither needs the other's types.

use std::net::SocketAddr;

use tokio::sync::oneshot;

use crate::core::backend::AdminState;

/// A change for the updater task.
#[derive(Debug)]
pub enum Change {
    /// The complete list of addresses discovered for a pool, beyond its configured members.
    Discovered {
        pool: String,
        addresses: Vec<String>,
    },
    /// The addresses a `resolve_every` host name resolves to now.
    Resolved {
        name: String,
        addresses: Vec<SocketAddr>,
    },
    /// A request from the control port.
    Control(ControlRequest),
    /// Re-read the configuration file (SIGHUP), with where to say how it went, if anywhere.
    Reload(Option<oneshot::Sender<Result<(), String>>>),
}

/// What the updater is asked to do for a control request.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlChange {
    Destination { address: String, weight: f64 },
    Admin { state: AdminState, address: String },
    Reload,
}

/// A control request for the updater, with where to send the outcome.
#[derive(Debug)]
pub struct ControlRequest {
    pub change: ControlChange,
    pub reply: oneshot::Sender<Result<(), String>>,
}
