//! The `http` health check: one HTTP/1.0 request to the backend's check port, and the status of
//! the answer.
//!
//! This is what HAProxy's `option httpchk` does against Percona's `clustercheck` (port 9200,
//! 200 when the node is Synced, 503 otherwise). One request per check, `Connection: close`, and
//! only the status line is read (at most [`MAX_STATUS_LINE`] bytes), so a hand-written request
//! over a `TcpStream` is all it takes: no HTTP client library, no body handling. The caller
//! bounds the whole exchange with the check timeout.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::socket::CheckSockets;
use crate::config::HttpCheckConfig;

/// The longest status line read; an answer without a line end by then is not HTTP.
pub(crate) const MAX_STATUS_LINE: usize = 1024;

/// Sends the request and returns the answer's status code; the socket gets `sockets`'
/// TCP_USER_TIMEOUT.
pub(crate) async fn check(
    address: SocketAddr,
    http: &HttpCheckConfig,
    sockets: CheckSockets,
) -> io::Result<u16> {
    let mut stream = TcpStream::connect(address).await?;
    sockets.bound(&stream);
    let request = format!(
        "{} {} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: galera-lb\r\nConnection: close\r\n\r\n",
        http.method, http.path
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buffer = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            return parse_status_line(&buffer[..end]);
        }
        if buffer.len() >= MAX_STATUS_LINE {
            return Err(not_http("no status line in the first 1024 bytes"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buffer.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed without an answer",
                ));
            }
            return parse_status_line(&buffer);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.x NNN reason` → `NNN`.
pub(crate) fn parse_status_line(line: &[u8]) -> io::Result<u16> {
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let version = words.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(not_http("the answer does not start with HTTP/"));
    }
    words
        .next()
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| not_http("the status line has no 3-digit status"))
}

fn not_http(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r").unwrap(), 200);
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable").unwrap(),
            503
        );
        for bad in [
            &b""[..],
            b"SSH-2.0",
            b"HTTP/1.1",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 abc",
        ] {
            assert!(parse_status_line(bad).is_err(), "{bad:?}");
        }
    }

    /// A one-shot server that records the request and answers `reply`.
    async fn server(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            socket.write_all(reply).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (address, task)
    }

    #[tokio::test]
    async fn sends_the_configured_request_and_reads_the_status() {
        let (address, task) =
            server(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        let http = HttpCheckConfig {
            method: "GET".into(),
            path: "/health?x=1".into(),
            expect_status: 200,
        };
        assert_eq!(
            check(address, &http, CheckSockets::default())
                .await
                .unwrap(),
            503
        );
        let request = task.await.unwrap();
        assert!(
            request.starts_with("GET /health?x=1 HTTP/1.0\r\n"),
            "{request}"
        );
        let (address, _task) =
            server(b"HTTP/1.0 200 OK\r\n\r\nPercona XtraDB Cluster Node is synced.").await;
        assert_eq!(
            check(
                address,
                &HttpCheckConfig::default(),
                CheckSockets::default()
            )
            .await
            .unwrap(),
            200
        );
        let (address, _task) = server(b"").await;
        assert!(
            check(
                address,
                &HttpCheckConfig::default(),
                CheckSockets::default()
            )
            .await
            .is_err()
        );
    }
}
