//! The `tcp:` options of the health checks' own connections.
//!
//! Where galera-lb opens the socket itself (the `tcp` and `http` checks, and the connection to
//! the node of a PROXY header [`super::relay`]) it sets TCP_USER_TIMEOUT (`tcp.user_timeout`),
//! as on a session's backend socket. mysql_async opens the sockets of the `handshake` and `wsrep`
//! logins and of the pooled `causal_reads` questions ([`super::seqno`]) itself and takes no such
//! option (0.37: keepalive and nodelay only), so those get `tcp.keepalive`, and what bounds them
//! is `health.timeout`: every check and every question is cut off after it, and a check that
//! timed out drops its connection. What the options add there is that a connection dropped
//! after a timeout (mysql_async finishes it in a task of its own, reading what the node still
//! owes) does not stay open for ever on a node that vanished. A refused option is logged at
//! debug: a check never fails on it.

use std::os::fd::AsFd;
use std::time::Duration;

use socket2::SockRef;

use crate::config::TcpConfig;

/// The options the checks' connections get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CheckSockets {
    /// TCP_USER_TIMEOUT, on the sockets galera-lb opens.
    pub user_timeout: Option<Duration>,
    /// The keepalive idle time, on mysql_async's sockets.
    pub keepalive: Option<Duration>,
}

impl CheckSockets {
    pub(crate) fn of(tcp: &TcpConfig) -> CheckSockets {
        CheckSockets {
            user_timeout: tcp.user_timeout,
            keepalive: tcp.keepalive,
        }
    }

    /// Sets TCP_USER_TIMEOUT on `socket`, when one is configured.
    pub(crate) fn bound<S: AsFd>(&self, socket: &S) {
        if self.user_timeout.is_none() {
            return;
        }
        if let Err(e) = SockRef::from(socket).set_tcp_user_timeout(self.user_timeout) {
            tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT on a check's socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn the_user_timeout_is_set_when_configured() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        CheckSockets::default().bound(&stream);
        assert_eq!(SockRef::from(&stream).tcp_user_timeout().unwrap(), None);
        let sockets = CheckSockets::of(&TcpConfig::default());
        assert_eq!(sockets.user_timeout, Some(Duration::from_secs(30)));
        sockets.bound(&stream);
        assert_eq!(
            SockRef::from(&stream).tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(30))
        );
    }
}
