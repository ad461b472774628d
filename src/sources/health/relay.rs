//! Health checks of nodes that expect a PROXY header: a one-connection loopback relay that puts
//! the header in front of a mysql_async login.
//!
//! mysql_async opens its own TCP connection and has no way to take one already connected (0.37:
//! `Conn::new` takes only `Opts`), so it cannot write a PROXY header first. Instead the check
//! connects to the node itself, writes `PROXY UNKNOWN` (v1) or a v2 `LOCAL` header ("a
//! connection of the proxy's own, no client to relay": the node uses the socket's address), then
//! opens a listener on a free loopback port, points mysql_async at it and copies bytes between
//! the one connection it accepts and the node. The relay ends when either side closes, so a
//! `wsrep` check that keeps its connection keeps its relay, and dropping the connection ends it.
//!
//! Connecting to the node before mysql_async starts keeps the failure reasons right: a node that
//! refuses the connection fails the check with `refused`, as it does without a header.
//!
//! Alternatives weighed: a Unix socket relay (mysql_async's `socket` option) needs a file path
//! to create and clean up; sending no header at all relies on the server treating it as optional
//! (MariaDB does from `proxy_protocol_networks`; HAProxy-style strict receivers do not).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::socket::CheckSockets;
use crate::core::proxy_protocol::{self, Version};

/// How long the relay waits for mysql_async to connect to it.
const ACCEPT_WITHIN: Duration = Duration::from_secs(10);

/// Connects to `node`, sends a header without addresses of `version`, and returns the loopback
/// address of a relay to it, run on `tasks`, that accepts one connection and copies until
/// either side closes. The connection to the node gets `sockets`' TCP_USER_TIMEOUT: when a check
/// times out and drops its login, the relay passes the close on and then waits for the node's;
/// a node that vanished would otherwise keep it waiting for ever.
pub(crate) async fn open(
    node: SocketAddr,
    version: Version,
    sockets: CheckSockets,
    tasks: &TaskTracker,
) -> io::Result<SocketAddr> {
    let mut upstream = connect_with_header(node, version, sockets).await?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let address = listener.local_addr()?;
    tasks.spawn(async move {
        let Ok(Ok((mut client, from))) =
            tokio::time::timeout(ACCEPT_WITHIN, listener.accept()).await
        else {
            return;
        };
        drop(listener);
        if !from.ip().is_loopback() {
            return;
        }
        let _ = client.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    Ok(address)
}

/// A connection to `node` whose first bytes are a header without addresses (v1 `PROXY
/// UNKNOWN`, v2 `LOCAL`): for the `tcp` check and the relay; with `sockets`' TCP_USER_TIMEOUT.
pub(crate) async fn connect_with_header(
    node: SocketAddr,
    version: Version,
    sockets: CheckSockets,
) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(node).await?;
    stream.set_nodelay(true)?;
    sockets.bound(&stream);
    stream
        .write_all(&proxy_protocol::encode(version, None))
        .await?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proxy_protocol::{Header, read_header};
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_relay_sends_the_header_then_copies_both_ways() {
        for version in [Version::V1, Version::V2] {
            let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let node_address = node.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut stream, _) = node.accept().await.unwrap();
                let received = read_header(&mut stream, Duration::from_secs(2))
                    .await
                    .unwrap();
                assert_eq!(received.header, Header::Local);
                stream.write_all(b"greeting").await.unwrap();
                let mut reply = vec![0u8; 5];
                stream.read_exact(&mut reply).await.unwrap();
                assert_eq!(reply, b"login");
                // The relay passes the close on.
                assert_eq!(stream.read(&mut reply).await.unwrap(), 0);
            });
            let relay = open(
                node_address,
                version,
                CheckSockets::default(),
                &TaskTracker::new(),
            )
            .await
            .unwrap();
            assert!(relay.ip().is_loopback());
            let mut client = TcpStream::connect(relay).await.unwrap();
            let mut greeting = vec![0u8; 8];
            client.read_exact(&mut greeting).await.unwrap();
            assert_eq!(greeting, b"greeting");
            client.write_all(b"login").await.unwrap();
            drop(client);
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_refusing_node_fails_before_the_relay_opens() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        let error = open(
            address,
            Version::V1,
            CheckSockets::default(),
            &TaskTracker::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }
}
