//! The PROXY protocol (`proxy_protocol: v1|v2` on backends and listeners, `accept_proxy` on
//! listeners, and health checks of nodes that expect headers).
//!
//! Fast tests run galera-lb in-process in front of small fake backends that read the header it
//! sends. The end-to-end tests (`cluster_*`) run the real binary in front of the real Galera
//! sandbox with `proxy_protocol_networks` set on the three nodes, and look at what MariaDB sees:
//! `information_schema.processlist.host`, `USER()`, and grants that follow the header's address.
//! They hold the sandbox's fault lock while the nodes' setting is changed and put it back even
//! when they fail.
#![allow(clippy::await_holding_lock)]

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use galera_lb::config::Config;
use galera_lb::core::proxy_protocol::{self, Addresses, Header, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// What a fake node saw on each connection: the PROXY header, or `None` when the first bytes
/// were not one.
type Seen = Arc<Mutex<Vec<Option<Header>>>>;

/// A fake node that expects a PROXY header on every connection: it records the header, greets
/// with `name` and a newline, then echoes. Counts connections.
async fn header_node(name: &'static str) -> (SocketAddr, Seen, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let (log, count) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            tokio::spawn(async move {
                let received =
                    proxy_protocol::read_header(&mut stream, Duration::from_secs(5)).await;
                let rest = match received {
                    Ok(received) => {
                        log.lock().unwrap().push(Some(received.header));
                        received.rest
                    }
                    Err(_) => {
                        log.lock().unwrap().push(None);
                        return Ok(());
                    }
                };
                stream.write_all(format!("{name}\n").as_bytes()).await?;
                stream.write_all(&rest).await?;
                let mut buf = [0u8; 1024];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    stream.write_all(&buf[..n]).await?;
                }
            });
        }
    });
    (address, seen, connections)
}

async fn start(yaml: &str) -> (galera_lb::Running, Vec<SocketAddr>) {
    let config = Config::from_yaml(yaml, "test.yaml").unwrap();
    let running = galera_lb::start(&config, "test.yaml").await.unwrap();
    let addresses = running.listeners.iter().map(|(_, a)| *a).collect();
    (running, addresses)
}

/// A connection from `source` (any address of 127.0.0.0/8).
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Waits until `seen` holds `n` entries (the fake node records them as connections arrive).
async fn wait_seen(seen: &Seen, n: usize) -> Vec<Option<Header>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = seen.lock().unwrap().clone();
        if now.len() >= n || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn proxied(source: SocketAddr, destination: SocketAddr) -> Option<Header> {
    Some(Header::Proxy(Addresses {
        source,
        destination,
    }))
}

#[tokio::test]
async fn v1_and_v2_carry_the_client_and_the_listener_address() {
    for version in ["v1", "v2"] {
        let (node, seen, _) = header_node("node").await;
        let yaml = format!(
            "listeners:\n  - name: pp_{version}\n    bind: 127.0.0.1:0\n    proxy_protocol: {version}\n\
             backends:\n  - address: {node}\nhealth:\n  check: none\n"
        );
        let (_running, lb) = start(&yaml).await;
        let mut client = connect_from("127.0.0.2", lb[0]).await;
        assert_eq!(lb::read_line(&mut client).await, "node");
        client.write_all(b"ping\n").await.unwrap();
        assert_eq!(
            lb::read_line(&mut client).await,
            "ping",
            "{version}: bytes flow after the header"
        );
        let seen = wait_seen(&seen, 1).await;
        assert_eq!(
            seen,
            [proxied(client.local_addr().unwrap(), lb[0])],
            "{version}"
        );
    }
}

#[tokio::test]
async fn a_backend_setting_wins_over_the_listener() {
    let (plain, plain_seen, _) = header_node("plain").await;
    let (two, two_seen, _) = header_node("two").await;
    let (inherits, inherits_seen, _) = header_node("inherits").await;
    let yaml = format!(
        "listeners:\n  - name: wins\n    bind: 127.0.0.1:0\n    policy: round_robin\n    proxy_protocol: v1\n\
         backends:\n  - address: {plain}\n    proxy_protocol: off\n  - address: {two}\n    proxy_protocol: v2\n\
         \x20 - address: {inherits}\nhealth:\n  check: none\n"
    );
    let (_running, lb) = start(&yaml).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = TcpStream::connect(lb[0]).await.unwrap();
        // The node that gets no header takes the client's first bytes for one: send a line
        // so that it can decide.
        client.write_all(b"hello\r\n").await.unwrap();
        clients.push(client);
    }
    // `off` on the backend: its first bytes are the client's, no header. The others get one
    // (which version is on the wire: `the_version_on_the_wire_is_the_backends_own`).
    assert_eq!(wait_seen(&plain_seen, 1).await, [None]);
    let two = wait_seen(&two_seen, 1).await;
    let inherits = wait_seen(&inherits_seen, 1).await;
    assert!(matches!(two[..], [Some(Header::Proxy(_))]), "{two:?}");
    assert!(
        matches!(inherits[..], [Some(Header::Proxy(_))]),
        "{inherits:?}"
    );
}

/// A fake node that records the raw first bytes of each connection.
async fn raw_node() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256];
                let mut got = Vec::new();
                // Everything the connection sends within a moment, or up to its close.
                let _ = tokio::time::timeout(Duration::from_millis(300), async {
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                })
                .await;
                log.lock().unwrap().push(got);
            });
        }
    });
    (address, seen)
}

#[tokio::test]
async fn the_version_on_the_wire_is_the_backends_own() {
    let (v2_node, v2_seen) = raw_node().await;
    let (v1_node, v1_seen) = raw_node().await;
    for (node, listener_version, seen, expect_v2) in [
        (v2_node, "v1", &v2_seen, true),
        (v1_node, "v2", &v1_seen, false),
    ] {
        let own = if expect_v2 { "v2" } else { "v1" };
        let yaml = format!(
            "listeners:\n  - name: own_{own}\n    bind: 127.0.0.1:0\n    proxy_protocol: {listener_version}\n\
             backends:\n  - address: {node}\n    proxy_protocol: {own}\nhealth:\n  check: none\n"
        );
        let (_running, lb) = start(&yaml).await;
        let client = TcpStream::connect(lb[0]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = seen.lock().unwrap()[0].clone();
        let expected = proxy_protocol::encode(
            if expect_v2 { Version::V2 } else { Version::V1 },
            Some(Addresses {
                source: client.local_addr().unwrap(),
                destination: lb[0],
            }),
        );
        assert_eq!(
            first, expected,
            "backend {own}, listener {listener_version}"
        );
    }
}

#[tokio::test]
async fn accept_proxy_takes_the_client_from_the_header_and_passes_it_on() {
    let (node, seen, _) = header_node("node").await;
    let yaml = format!(
        "listeners:\n  - name: chain\n    bind: 127.0.0.1:0\n    accept_proxy: true\n    proxy_protocol: v2\n\
         backends:\n  - address: {node}\nhealth:\n  check: none\n"
    );
    let (_running, lb) = start(&yaml).await;
    let named: SocketAddr = "127.0.0.9:40000".parse().unwrap();
    let frontend: SocketAddr = "127.0.0.8:3306".parse().unwrap();
    for (i, version) in [Version::V1, Version::V2].into_iter().enumerate() {
        let mut client = TcpStream::connect(lb[0]).await.unwrap();
        let mut first = proxy_protocol::encode(
            version,
            Some(Addresses {
                source: named,
                destination: frontend,
            }),
        );
        // The client's own first bytes in the same segment as the header: passed on after it.
        first.extend_from_slice(b"early\n");
        client.write_all(&first).await.unwrap();
        assert_eq!(lb::read_line(&mut client).await, "node");
        assert_eq!(lb::read_line(&mut client).await, "early", "{version:?}");
        let seen = wait_seen(&seen, i + 1).await;
        assert_eq!(seen[i], proxied(named, frontend), "{version:?}");
    }
    // UNKNOWN and LOCAL: the socket's own addresses.
    for (i, version) in [Version::V1, Version::V2].into_iter().enumerate() {
        let mut client = connect_from("127.0.0.3", lb[0]).await;
        client
            .write_all(&proxy_protocol::encode(version, None))
            .await
            .unwrap();
        assert_eq!(lb::read_line(&mut client).await, "node");
        let seen = wait_seen(&seen, i + 3).await;
        assert_eq!(
            seen[i + 2],
            proxied(client.local_addr().unwrap(), lb[0]),
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn accept_proxy_source_hashing_uses_the_header_address() {
    let mut yaml = "listeners:\n  - name: hash\n    bind: 127.0.0.1:0\n    policy: source\n    \
                    accept_proxy: true\nbackends:\n"
        .to_string();
    // Plain nodes (no header from galera-lb) that greet with their name.
    for name in ["a", "b", "c"] {
        yaml.push_str(&format!("  - address: {}\n", lb::echo_backend(name)));
    }
    yaml.push_str("health:\n  check: none\n");
    let (_running, lb) = start(&yaml).await;
    let listener = lb[0];
    let greet = |socket_source: &'static str, named: &'static str| async move {
        let mut client = connect_from(socket_source, listener).await;
        let header = proxy_protocol::encode(
            Version::V1,
            Some(Addresses {
                source: SocketAddr::new(named.parse().unwrap(), 1234),
                destination: listener,
            }),
        );
        client.write_all(&header).await.unwrap();
        lb::read_line(&mut client).await
    };
    // One client address in the headers, many socket addresses: always the same node.
    let sockets = [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
        "127.0.0.7",
    ];
    let mut chosen = Vec::new();
    for socket in sockets {
        chosen.push(greet(socket, "10.1.2.3").await);
    }
    assert!(chosen.iter().all(|n| *n == chosen[0]), "{chosen:?}");
    // And many header addresses from one socket address spread (so the hash does use them).
    let mut spread = std::collections::BTreeSet::new();
    for named in [
        "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
    ] {
        spread.insert(greet("127.0.0.2", named).await);
    }
    assert!(spread.len() > 1, "{spread:?}");
}

fn rejected(listener: &str, reason: &str) -> u64 {
    galera_lb::core::counters::metrics()
        .proxy_header_rejected
        .with_label_values(&[listener, reason])
        .get()
}

#[tokio::test]
async fn bad_headers_close_the_connection_are_counted_and_never_reach_a_node() {
    let (node, _, connections) = header_node("node").await;
    let yaml = format!(
        "listeners:\n  - name: strict\n    bind: 127.0.0.1:0\n    accept_proxy: true\n    proxy_protocol: v1\n\
         backends:\n  - address: {node}\nhealth:\n  check: none\n"
    );
    let (_running, lb) = start(&yaml).await;
    let mut v2_udp = proxy_protocol::V2_SIGNATURE.to_vec();
    v2_udp.extend_from_slice(&[0x21, 0x12, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
    let mut v2_huge = proxy_protocol::V2_SIGNATURE.to_vec();
    v2_huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let mut v2_short = proxy_protocol::V2_SIGNATURE.to_vec();
    v2_short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
    let long_line = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // A MySQL client that talks first, as an upstream without send-proxy would forward it.
        ("missing", b"\x20\0\0\x01\x85\xa6\xff\x01".to_vec(), false),
        ("missing", b"GET / HTTP/1.0\r\n\r\n".to_vec(), false),
        (
            "malformed",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
            false,
        ),
        (
            "malformed",
            b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n".to_vec(),
            false,
        ),
        (
            "malformed",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            false,
        ),
        (
            "malformed",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n".to_vec(),
            false,
        ),
        (
            "malformed",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
            false,
        ),
        ("malformed", v2_short, false),
        ("too_long", long_line, false),
        ("too_long", v2_huge, false),
        ("unsupported", v2_udp, false),
        // Half a header, then the client closes its side.
        ("closed", b"PROXY TCP4 1.2.".to_vec(), true),
    ];
    for (reason, bytes, close) in cases {
        let before = rejected("strict", reason);
        let mut client = TcpStream::connect(lb[0]).await.unwrap();
        client.write_all(&bytes).await.unwrap();
        if close {
            client.shutdown().await.unwrap();
        }
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .expect("galera-lb closes the connection");
        // Closed (possibly reset, when unread bytes were left behind), with nothing sent.
        assert!(
            read.is_err() || rest.is_empty(),
            "{reason}: {:?} got {rest:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(
            rejected("strict", reason),
            before + 1,
            "{reason}: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Nothing at all: closed after the header deadline.
    let before = rejected("strict", "timeout");
    let started = Instant::now();
    let mut client = TcpStream::connect(lb[0]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest))
        .await
        .expect("galera-lb closes a silent connection");
    let waited = started.elapsed();
    assert!(
        waited >= galera_lb::proxy::PROXY_HEADER_TIMEOUT
            && waited < galera_lb::proxy::PROXY_HEADER_TIMEOUT + Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(rejected("strict", "timeout"), before + 1);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no refused connection reached the node"
    );
}

#[tokio::test]
async fn health_checks_send_a_header_without_addresses() {
    for (check, version, expected) in [
        ("tcp", "v1", proxy_protocol::encode(Version::V1, None)),
        ("tcp", "v2", proxy_protocol::encode(Version::V2, None)),
        // A login check: the relay's header, then mysql_async waits for a greeting that never
        // comes (the fake node is no MySQL server); the header is what counts here.
        ("handshake", "v1", b"PROXY UNKNOWN\r\n".to_vec()),
        ("wsrep", "v2", proxy_protocol::encode(Version::V2, None)),
    ] {
        let (node, seen) = raw_node().await;
        // The backend sets nothing: the listener's setting decides what its checks send.
        let yaml = format!(
            "listeners:\n  - name: checks\n    bind: 127.0.0.1:0\n    proxy_protocol: {version}\n\
             backends:\n  - address: {node}\nhealth:\n  check: {check}\n  interval: 100ms\n  timeout: 200ms\n"
        );
        let config = Config::from_yaml(&yaml, "test.yaml").unwrap();
        let _running = galera_lb::start(&config, "test.yaml").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(first) = seen.lock().unwrap().first() {
                assert_eq!(first, &expected, "{check} {version}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{check} {version}: no check arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks send nothing first (a plain TCP connect) with `proxy_protocol: off` everywhere, and
/// when they go to a `check_port` of their own (as HAProxy does with a check `port`).
#[tokio::test]
async fn checks_of_backends_without_headers_send_none() {
    let (node, seen) = raw_node().await;
    let (checked, check_seen) = raw_node().await;
    let elsewhere = lb::closed_address();
    let cases = [
        (format!("  - address: {node}\n"), "", &seen),
        (
            format!(
                "  - address: {elsewhere}\n    check_port: {}\n    proxy_protocol: v1\n",
                checked.port()
            ),
            "    proxy_protocol: v2\n",
            &check_seen,
        ),
    ];
    for (i, (backends, listener, seen)) in cases.into_iter().enumerate() {
        let yaml = format!(
            "listeners:\n  - name: plain_checks_{i}\n    bind: 127.0.0.1:0\n{listener}\
             backends:\n{backends}health:\n  check: tcp\n  interval: 100ms\n"
        );
        let config = Config::from_yaml(&yaml, "test.yaml").unwrap();
        let _running = galera_lb::start(&config, "test.yaml").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "case {i}: no check arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.lock().unwrap()[0], b"", "case {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// End to end, on the real Galera sandbox.

mod cluster {
    use super::*;
    use lb::{LbProcess, free_port, http_get};
    use mysql_async::prelude::*;
    use mysql_async::{Conn, OptsBuilder};
    use support::sandbox::{self, Cluster};

    /// The user the test creates, granted only at 127.0.0.2.
    const USER: &str = "pp_user";
    const PASSWORD: &str = "pp_secret";

    /// A relay standing in for a test client at `source` (mysql_async cannot bind a local
    /// address): accepts on a loopback port and connects onward to `to` from `source`, writing
    /// `prefix` first (a PROXY header, as an upstream load balancer would).
    async fn client_relay(source: &'static str, to: SocketAddr, prefix: Vec<u8>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let prefix = prefix.clone();
                tokio::spawn(async move {
                    let mut onward = connect_from(source, to).await;
                    onward.write_all(&prefix).await?;
                    tokio::io::copy_bidirectional(&mut client, &mut onward).await
                });
            }
        });
        address
    }

    /// `USER()` and the processlist host of a new session at `address`.
    async fn whoami(
        address: SocketAddr,
        user: &str,
        password: &str,
    ) -> Result<(String, String), mysql_async::Error> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(address.ip().to_string())
            .tcp_port(address.port())
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false);
        let mut conn = Conn::new(opts).await?;
        let row: (String, String) = conn
            .query_first(
                "SELECT USER(), HOST FROM information_schema.PROCESSLIST \
                 WHERE ID = CONNECTION_ID()",
            )
            .await?
            .expect("one row");
        conn.disconnect().await?;
        Ok(row)
    }

    /// Sets `proxy_protocol_networks` on every node.
    fn set_networks(cluster: &Cluster, networks: &str) {
        for n in 1..=3 {
            cluster.sql(
                n,
                &format!("SET GLOBAL proxy_protocol_networks='{networks}'"),
            );
            assert_eq!(
                cluster.sql(n, "SELECT @@GLOBAL.proxy_protocol_networks"),
                networks,
                "node{n}"
            );
        }
    }

    /// Waits until the admin port reports every node up (their wsrep checks pass).
    fn wait_all_up(admin: SocketAddr, cluster: &Cluster, lb: &LbProcess) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let metrics = http_get(admin, "/metrics").body;
            let up = cluster
                .addresses
                .iter()
                .filter(|node| {
                    let backend = node.to_string();
                    lb::metric_in(&metrics, "galera_lb_backend_up", &[("backend", &backend)])
                        == Some(1.0)
                })
                .count();
            if up == 3 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{up} of 3 nodes up; metrics:\n{metrics}\nlog:\n{}",
                lb.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    async fn scenario(cluster: &'static Cluster) {
        for version in ["v1", "v2"] {
            let (plain, pp, chain, admin) = (free_port(), free_port(), free_port(), free_port());
            let mut yaml = format!(
                "listeners:\n\
                 \x20 - name: plain\n    bind: 127.0.0.1:{plain}\n\
                 \x20 - name: pp\n    bind: 127.0.0.1:{pp}\n    proxy_protocol: {version}\n\
                 \x20 - name: chain\n    bind: 127.0.0.1:{chain}\n    accept_proxy: true\n    proxy_protocol: {version}\n\
                 backends:\n"
            );
            // `plain` sends no header to nodes that set none: so set it on the listeners only,
            // and let the backends follow them.
            for node in &cluster.addresses {
                yaml.push_str(&format!("  - address: {node}\n"));
            }
            yaml.push_str(&format!(
                "health:\n  check: wsrep\n  user: monitor\n  password: monitor\n  interval: 300ms\n\
                 admin:\n  bind: 127.0.0.1:{admin}\n"
            ));
            let lb = LbProcess::start(&yaml);
            let admin = SocketAddr::from(([127, 0, 0, 1], admin));
            let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

            // The wsrep checks log in behind PROXY UNKNOWN (v1) / LOCAL (v2): MariaDB accepts
            // them from a proxy network and the nodes stay up.
            wait_all_up(admin, cluster, &lb);

            // Without a header the node sees galera-lb's address (the control).
            let from_2 = client_relay("127.0.0.2", at(plain), Vec::new()).await;
            let (_, host) = whoami(from_2, "app", "app").await.unwrap();
            assert!(
                host.starts_with("localhost:") || host.starts_with("127.0.0.1:"),
                "{version} plain: {host}"
            );

            // With the header: the client's own address, and grants follow it.
            let from_2 = client_relay("127.0.0.2", at(pp), Vec::new()).await;
            let (user, host) = whoami(from_2, "app", "app").await.unwrap();
            assert!(host.starts_with("127.0.0.2:"), "{version}: {user} {host}");
            let (user, host) = whoami(from_2, USER, PASSWORD)
                .await
                .unwrap_or_else(|e| panic!("{version}: {USER} from 127.0.0.2: {e}"));
            assert_eq!(user, format!("{USER}@127.0.0.2"), "{version}");
            assert!(host.starts_with("127.0.0.2:"), "{version}: {host}");
            let from_3 = client_relay("127.0.0.3", at(pp), Vec::new()).await;
            match whoami(from_3, USER, PASSWORD).await {
                Err(mysql_async::Error::Server(e)) => {
                    assert_eq!(e.code, 1045, "{version}: {e:?}");
                    assert!(e.message.contains("127.0.0.3"), "{version}: {e:?}");
                }
                other => panic!("{version}: {USER} from 127.0.0.3 must be refused: {other:?}"),
            }

            // accept_proxy: an upstream's v1 and v2 headers name 127.0.0.9; the node sees it.
            for (upstream, port) in [(Version::V1, 40_001), (Version::V2, 40_002)] {
                let header = proxy_protocol::encode(
                    upstream,
                    Some(Addresses {
                        source: SocketAddr::new("127.0.0.9".parse().unwrap(), port),
                        destination: at(chain),
                    }),
                );
                let upstream_lb = client_relay("127.0.0.1", at(chain), header).await;
                let (_, host) = whoami(upstream_lb, "app", "app").await.unwrap();
                assert_eq!(
                    host,
                    format!("127.0.0.9:{port}"),
                    "{version} <- {upstream:?}"
                );
            }

            // A malformed header closes the connection, is counted, and reaches no node.
            let mut bad = TcpStream::connect(at(chain)).await.unwrap();
            bad.write_all(b"PROXY TCP4 127.0.0.9 nonsense\r\n")
                .await
                .unwrap();
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut rest))
                .await
                .expect("galera-lb closes the connection");
            assert!(read.is_err() || rest.is_empty(), "{version}: got {rest:?}");
            let metrics = http_get(admin, "/metrics").body;
            assert!(
                metrics.contains(
                    "galera_lb_proxy_header_rejected_total{listener=\"chain\",reason=\"malformed\"} 1"
                ),
                "{version}: {metrics}"
            );
            // Kept on the log: the refused connection is logged for the operator, as the book
            // documents (docs/src/configuration.md; the count is the metric above).
            assert!(
                lb.log().contains("without a valid PROXY header"),
                "{version}: {}",
                lb.log()
            );
            // Still up after all that.
            wait_all_up(admin, cluster, &lb);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_see_the_client_address_through_v1_v2_and_accept_proxy() {
        let cluster = sandbox::cluster();
        let _fault = sandbox::fault_lock();
        cluster.sql(
            1,
            &format!(
                "DROP USER IF EXISTS '{USER}'@'127.0.0.2'; \
                 CREATE USER '{USER}'@'127.0.0.2' IDENTIFIED BY '{PASSWORD}'"
            ),
        );
        // galera-lb connects to the nodes from 127.0.0.1: only that address may send headers.
        set_networks(cluster, "127.0.0.1");
        let outcome = tokio::spawn(scenario(cluster)).await;
        // Put everything back, also after a failure, before the lock is released.
        let cleanup = std::panic::catch_unwind(|| {
            set_networks(cluster, "");
            cluster.sql(1, &format!("DROP USER IF EXISTS '{USER}'@'127.0.0.2'"));
        });
        if let Err(panic) = outcome {
            if cleanup.is_err() {
                let _ = std::panic::catch_unwind(|| cluster.restore());
            }
            std::panic::resume_unwind(panic.into_panic());
        }
        if let Err(panic) = cleanup {
            std::panic::resume_unwind(panic);
        }
        // The user is gone everywhere (replicated).
        for n in 1..=3 {
            assert_eq!(
                cluster.sql(
                    n,
                    &format!("SELECT COUNT(*) FROM mysql.user WHERE User = '{USER}'")
                ),
                "0",
                "node{n}"
            );
        }
    }
}
