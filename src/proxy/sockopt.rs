//! The `tcp:` socket options on a session's two sockets: TCP_NODELAY and keepalive on the
//! client's socket once accepted, and on each backend socket before it connects; TCP_USER_TIMEOUT
//! (`tcp.user_timeout`) on the backend socket only.
//!
//! TCP_USER_TIMEOUT bounds how long data written to a node may stay unacknowledged (and, with
//! keepalive, how long keepalive probes may go unanswered) before the kernel drops the
//! connection: a session on a node that vanished without a reset ends within it rather than
//! after the kernel's ~15 minutes of retransmissions. On a node whose kernel still answers (a
//! stopped process) it also ends a session whose writes wait on the node's full receive window
//! (Linux counts zero-window probes against it), but not one that only waits for an answer: the
//! kernel acknowledged the query, nothing is outstanding. The client side keeps the kernel's
//! behaviour: a client on a slow or lossy network is not cut off by the proxy, and a client that
//! vanished costs one backend connection until the kernel gives up.
//!
//! Loading refuses every value the kernel would (keepalive: whole seconds, 1 to 32767, see
//! `crate::config`), so setting them is not expected to fail. If one does anyway (another
//! kernel, a socket already reset), the session goes on without that option: an option is a
//! tuning, never a reason to refuse a client or to count a backend's connect as failed. The first
//! failure of each option on each side is logged at `warn`, later ones at `debug`, so that a
//! failure on every connection cannot flood the log.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{SockRef, TcpKeepalive};
use tracing::{debug, warn};

use crate::config::TcpConfig;

/// Which socket of a session an option is set on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Backend,
}

/// The options set, each with a flag per side: whether its failure was logged at `warn` yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketOption {
    NoDelay,
    Keepalive,
    UserTimeout,
}

static WARNED: [AtomicBool; 6] = [
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
];

impl SocketOption {
    fn name(self) -> &'static str {
        match self {
            SocketOption::NoDelay => "TCP_NODELAY (tcp.nodelay)",
            SocketOption::Keepalive => "TCP keepalive (tcp.keepalive)",
            SocketOption::UserTimeout => "TCP_USER_TIMEOUT (tcp.user_timeout)",
        }
    }
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
        }
    }
}

/// Sets `tcp`'s options on `socket` (a client's `TcpStream`, or a backend's `TcpSocket` before
/// it connects). Never fails: an option the kernel refuses is logged and left unset.
pub(super) fn apply<S: AsFd>(socket: &S, tcp: &TcpConfig, side: Side) {
    let socket = SockRef::from(socket);
    if let Err(e) = socket.set_tcp_nodelay(tcp.nodelay) {
        report(side, SocketOption::NoDelay, &e);
    }
    if let Some(idle) = tcp.keepalive {
        if let Err(e) = socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle)) {
            report(side, SocketOption::Keepalive, &e);
        }
    }
    if side == Side::Backend && tcp.user_timeout.is_some() {
        if let Err(e) = socket.set_tcp_user_timeout(tcp.user_timeout) {
            report(side, SocketOption::UserTimeout, &e);
        }
    }
}

/// Logs a failed option: at `warn` the first time for this option and side, at `debug` after.
/// Returns whether this was the `warn`.
fn report(side: Side, option: SocketOption, error: &io::Error) -> bool {
    let index = (option as usize) * 2 + side as usize;
    let first = !WARNED[index].swap(true, Ordering::Relaxed);
    if first {
        warn!(side = side.name(), error = %error,
            "cannot set {} on a {} socket: the session goes on without it (logged once; \
             later failures at debug)", option.name(), side.name());
    } else {
        debug!(side = side.name(), error = %error, "cannot set {}", option.name());
    }
    first
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpSocket};

    use super::*;

    /// A keepalive idle time Linux refuses (36000 s > 32767 s) can only come from a `TcpConfig`
    /// built past validation; it used to fail every backend connect with EINVAL ("Invalid
    /// argument (os error 22)"), so every client got ERROR 1429.
    #[tokio::test]
    async fn options_the_kernel_refuses_leave_the_session_going() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpConfig {
            keepalive: Some(Duration::from_secs(36_000)),
            ..TcpConfig::default()
        };
        let socket = TcpSocket::new_v4().unwrap();
        apply(&socket, &tcp, Side::Backend);
        let stream = socket.connect(listener.local_addr().unwrap()).await;
        assert!(stream.is_ok(), "backend connect: {stream:?}");
        let (accepted, _) = listener.accept().await.unwrap();
        apply(&accepted, &tcp, Side::Client);
        // Both sides went on; the failure was reported once at warn for each, then at debug.
        let error = io::Error::from_raw_os_error(libc::EINVAL);
        assert!(!report(Side::Backend, SocketOption::Keepalive, &error));
        assert!(!report(Side::Client, SocketOption::Keepalive, &error));
        assert!(report(Side::Client, SocketOption::NoDelay, &error));
        assert!(!report(Side::Client, SocketOption::NoDelay, &error));
        // The options the kernel takes are set.
        let tcp = TcpConfig::default();
        apply(&accepted, &tcp, Side::Client);
        let sock = SockRef::from(&accepted);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
    }

    /// `tcp.user_timeout` reaches the backend socket (read back with getsockopt), before the
    /// connect and after it; the client socket keeps the kernel's default (none); `null` sets
    /// nothing.
    #[tokio::test]
    async fn the_user_timeout_is_set_on_the_backend_socket_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpConfig {
            user_timeout: Some(Duration::from_millis(2500)),
            ..TcpConfig::default()
        };
        let socket = TcpSocket::new_v4().unwrap();
        apply(&socket, &tcp, Side::Backend);
        assert_eq!(
            SockRef::from(&socket).tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(2500))
        );
        let backend = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(
            SockRef::from(&backend).tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(2500))
        );
        let (accepted, _) = listener.accept().await.unwrap();
        apply(&accepted, &tcp, Side::Client);
        assert_eq!(SockRef::from(&accepted).tcp_user_timeout().unwrap(), None);
        // The default is 30 s.
        let socket = TcpSocket::new_v4().unwrap();
        apply(&socket, &TcpConfig::default(), Side::Backend);
        assert_eq!(
            SockRef::from(&socket).tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(30))
        );
        // null: nothing set.
        let off = TcpConfig {
            user_timeout: None,
            ..TcpConfig::default()
        };
        let socket = TcpSocket::new_v4().unwrap();
        apply(&socket, &off, Side::Backend);
        assert_eq!(SockRef::from(&socket).tcp_user_timeout().unwrap(), None);
    }
}
