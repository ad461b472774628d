//! The open listeners, kept by name so that a reload can open, close and re-bind some of them
//! while the others go on accepting.
//!
//! Each listener's accept loop runs on the set's task tracker with a stop token of its own (a
//! child of the token that stops them all at shutdown). Stopping a listener closes its socket;
//! sessions it accepted go on, tracked by the proxy's own tracker.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::{ListenerConfig, TcpConfig};
use crate::core::net::{self, BindError};
use crate::proxy::{self, ListenerState, ProxyContext};

/// One open listener.
#[derive(Debug)]
pub(crate) struct OpenListener {
    pub name: String,
    /// The address it is bound to (the real port when the configured one was 0).
    pub local: SocketAddr,
    pub state: Arc<ListenerState>,
    stop: CancellationToken,
}

/// Every open listener.
#[derive(Debug)]
pub(crate) struct ListenerSet {
    ctx: Arc<ProxyContext>,
    accept_loops: TaskTracker,
    stop_all: CancellationToken,
    open: Vec<OpenListener>,
    /// The open listeners' states, for readers elsewhere (metrics, status).
    states: Arc<Mutex<Vec<Arc<ListenerState>>>>,
}

/// Opens the listening socket for `listener`.
pub(crate) fn bind(
    listener: &ListenerConfig,
    tcp: &TcpConfig,
) -> Result<(TcpListener, SocketAddr), BindError> {
    let address = listener.bind;
    let socket = net::bind(
        net::Port::Listener(listener.name.clone()),
        address,
        tcp.listen_options(),
    )?;
    let local = socket.local_addr().unwrap_or(address);
    Ok((socket, local))
}

impl ListenerSet {
    pub(crate) fn new(ctx: Arc<ProxyContext>, stop_all: CancellationToken) -> Self {
        ListenerSet {
            ctx,
            accept_loops: TaskTracker::new(),
            stop_all,
            open: Vec::new(),
            states: Default::default(),
        }
    }

    /// The open listeners' states, kept current as listeners open and close.
    pub(crate) fn states(&self) -> Arc<Mutex<Vec<Arc<ListenerState>>>> {
        self.states.clone()
    }

    fn publish(&self) {
        *self.states.lock().unwrap_or_else(|e| e.into_inner()) =
            self.open.iter().map(|l| l.state.clone()).collect();
    }

    /// Starts accepting on `socket` for `listener`; a listener of that name keeps its counters.
    pub(crate) fn start(
        &mut self,
        listener: &ListenerConfig,
        socket: TcpListener,
        local: SocketAddr,
    ) {
        let state = self
            .open
            .iter()
            .find(|l| l.name == listener.name)
            .map(|l| l.state.clone())
            .unwrap_or_else(|| {
                Arc::new(ListenerState::new(
                    listener.name.clone(),
                    listener.max_connections,
                ))
            });
        state.set_max_connections(listener.max_connections);
        self.stop(&listener.name);
        let stop = self.stop_all.child_token();
        info!(
            listener = %listener.name,
            address = %local,
            policy = listener.policy.as_str(),
            role = listener.role.as_str(),
            pool = %listener.pool,
            "listening"
        );
        self.accept_loops.spawn(proxy::serve(
            socket,
            state.clone(),
            self.ctx.clone(),
            stop.clone(),
        ));
        self.open.push(OpenListener {
            name: listener.name.clone(),
            local,
            state,
            stop,
        });
        self.publish();
    }

    /// Stops accepting on the listener `name` (its open sessions go on).
    pub(crate) fn stop(&mut self, name: &str) {
        self.open.retain(|l| {
            if l.name == name {
                l.stop.cancel();
            }
            l.name != name
        });
        self.publish();
    }

    /// Applies a listener's new limit without touching its socket.
    pub(crate) fn update(&self, listener: &ListenerConfig) {
        if let Some(open) = self.open.iter().find(|l| l.name == listener.name) {
            open.state.set_max_connections(listener.max_connections);
        }
    }

    pub(crate) fn open(&self) -> &[OpenListener] {
        &self.open
    }

    /// The accept loops, so that shutdown can wait until every socket is closed.
    pub(crate) fn accept_loops(&self) -> TaskTracker {
        self.accept_loops.clone()
    }
}
