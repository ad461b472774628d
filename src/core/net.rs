//! Listening sockets and the one accept loop that every port uses: the proxy's listeners, the
//! control port and the admin port.
//!
//! [`bind`] opens a socket with SO_REUSEADDR, optional SO_REUSEPORT and a backlog, and turns
//! "address in use" into a message that says who holds the port. [`accept_loop`] accepts until
//! stopped and backs off on resource errors (EMFILE and the like) instead of spinning, so every
//! port behaves the same when galera-lb runs out of descriptors.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Why a listening socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for listener '{listener}': {reason}")]
pub struct BindError {
    pub listener: String,
    pub address: SocketAddr,
    pub reason: String,
}

/// How a listening socket is opened.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// SO_REUSEPORT (several processes may share the port).
    pub reuse_port: bool,
    pub backlog: u32,
}

/// Opens a listening socket for `listener` (a name, for messages) on `address`.
pub(crate) fn bind(
    listener: &str,
    address: SocketAddr,
    options: ListenOptions,
) -> Result<TcpListener, BindError> {
    let open = || -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        if options.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if address.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(i32::try_from(options.backlog).unwrap_or(i32::MAX))?;
        Ok(socket.into())
    };
    let error = |reason: String| BindError {
        listener: listener.to_string(),
        address,
        reason,
    };
    let std_listener = open().map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            let holder = crate::core::port_owner::describe(address.port())
                .map(|who| format!(" by {who}"))
                .unwrap_or_default();
            error(format!(
                "the address is already in use{holder}. Stop that program (Debian's \
                 mariadb-server package starts a server on 3306: `systemctl stop mariadb`) or \
                 give this listener another `bind`"
            ))
        } else {
            error(e.to_string())
        }
    })?;
    TcpListener::from_std(std_listener).map_err(|e| error(e.to_string()))
}

/// First and longest pause after an accept error that means "out of resources".
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts on `listener` until `stop` is cancelled, handing each client to `admit`; the socket
/// is closed on return, so new clients are refused at once. `name` labels log lines and
/// `errors` counts failed accepts. On a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM) it
/// backs off, from 5 ms doubling to 1 s, and warns once per episode; any other error (a client
/// gone between SYN and accept) is counted and passed over.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    name: &str,
    errors: &AtomicU64,
    stop: &CancellationToken,
    mut admit: impl FnMut(TcpStream, SocketAddr),
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                admit(stream, peer);
            }
            Err(e) if is_resource_exhaustion(&e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                if backoff == ACCEPT_BACKOFF_MIN {
                    warn!(listener = %name, error = %e, "accept failed, out of resources; backing off");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                debug!(listener = %name, error = %e, "accept failed");
            }
        }
    }
    info!(listener = %name, "stopped accepting");
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
