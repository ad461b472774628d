//! Fast tests of the proxy against small in-process fake backends: logic and edge cases
//! (spread, failover, limits, ERR packets, half-close, bulk, back-pressure, drain). The real
//! cluster tests are in `tests/cluster.rs`.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use galera_lb::config::Config;
use galera_lb::core::mysql_packet::parse_err_packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fake backend: greets each client with its name and a newline, then echoes what it gets;
/// on the client's end of stream it writes "bye\n" and closes.
async fn echo_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                stream.write_all(format!("{name}\n").as_bytes()).await?;
                let mut buf = [0u8; 4096];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        stream.write_all(b"bye\n").await?;
                        return stream.shutdown().await;
                    }
                    stream.write_all(&buf[..n]).await?;
                }
            });
        }
    });
    address
}

/// A fake backend that sends `size` bytes of a fixed pattern and closes.
async fn bulk_backend(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let data = pattern(size);
                stream.write_all(&data).await?;
                stream.shutdown().await
            });
        }
    });
    address
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

fn config(policy: &str, backends: &[SocketAddr], extra: &str) -> Config {
    let mut yaml = format!(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\n    policy: {policy}\nbackends:\n"
    );
    for b in backends {
        yaml.push_str(&format!("  - address: {b}\n"));
    }
    // Fake backends speak no MySQL: no health checks, only connect failover.
    yaml.push_str("health:\n  check: none\n");
    yaml.push_str(extra);
    Config::from_yaml(&yaml, "test.yaml").unwrap()
}

async fn start(config: &Config) -> (galera_lb::Running, SocketAddr) {
    let running = galera_lb::start(config, "test.yaml").await.unwrap();
    let address = running.listeners[0].1;
    (running, address)
}

/// Connects through the proxy and reads the first line (the backend's greeting).
async fn greeting(proxy: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&line).into_owned())
}

/// Connects through the proxy and reads everything until the proxy closes.
async fn read_all(proxy: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut data = Vec::new();
    stream.read_to_end(&mut data).await.unwrap();
    data
}

#[tokio::test]
async fn round_robin_spreads_clients_evenly() {
    let backends = [
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    ];
    let (_running, proxy) = start(&config("round_robin", &backends, "")).await;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..30 {
        let (_stream, name) = greeting(proxy).await;
        *seen.entry(name).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 10), "{seen:?}");
}

#[tokio::test]
async fn a_refused_connect_fails_over_and_the_client_notices_nothing() {
    let backends = [
        lb::closed_address(),
        echo_backend("b").await,
        lb::closed_address(),
    ];
    let (running, proxy) = start(&config("round_robin", &backends, "")).await;
    for _ in 0..9 {
        let (_stream, name) = greeting(proxy).await;
        assert_eq!(name, "b");
    }
    let snapshot = running.router.load_full();
    let members = &snapshot.pools[0].members;
    assert!(members[0].backend.counters().connect_errors >= 3);
    assert_eq!(members[1].backend.counters().total, 9);
}

#[tokio::test]
async fn a_timed_out_connect_fails_over_within_connect_timeout() {
    // A listener that never accepts, with its backlog filled: further SYNs are dropped, so a
    // connect to it hangs until the timeout.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let black_hole: SocketAddr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(black_hole)).await
        {
            fillers.push(s);
        }
    }
    let backends = [black_hole, echo_backend("b").await];
    let limits = "limits:\n  connect_timeout: 300ms\n";
    let (_running, proxy) = start(&config("single", &backends, limits)).await;
    let started = Instant::now();
    let (_stream, name) = greeting(proxy).await;
    assert_eq!(name, "b");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[tokio::test]
async fn no_reachable_backend_gets_an_err_packet_naming_galera_lb() {
    let backends = [lb::closed_address(), lb::closed_address()];
    let (_running, proxy) = start(&config("round_robin", &backends, "")).await;
    let reply = read_all(proxy).await;
    let error = parse_err_packet(&reply).expect("an ERR packet");
    assert_eq!(error.code, 1429);
    assert!(
        error
            .message
            .starts_with("galera-lb: cannot connect to any backend"),
        "{error:?}"
    );
    assert!(
        error.message.contains(&backends[0].to_string()),
        "{error:?}"
    );
    assert_eq!(reply[3], 0, "sequence id 0");
}

#[tokio::test]
async fn an_unhealthy_pool_gets_an_err_packet() {
    let backends = [echo_backend("a").await];
    let (running, proxy) = start(&config("round_robin", &backends, "")).await;
    running.router.load_full().pools[0].members[0]
        .backend
        .set_healthy(false);
    let error = parse_err_packet(&read_all(proxy).await).expect("an ERR packet");
    assert_eq!(error.code, 1429);
    assert!(error.message.contains("no usable backend"), "{error:?}");
}

#[tokio::test]
async fn listener_and_global_limits_answer_1040() {
    let backends = [echo_backend("a").await];
    let yaml = config("round_robin", &backends, "").listeners[0].clone();
    let mut limited = config("round_robin", &backends, "");
    limited.listeners[0] = galera_lb::config::ListenerConfig {
        max_connections: Some(2),
        ..yaml
    };
    let (running, proxy) = start(&limited).await;
    let (_a, _) = greeting(proxy).await;
    let (_b, _) = greeting(proxy).await;
    let error = parse_err_packet(&read_all(proxy).await).expect("an ERR packet");
    assert_eq!((error.code, error.sql_state.as_str()), (1040, "08004"));
    assert!(error.message.contains("listener 'test'"), "{error:?}");
    assert_eq!(running.listener_states[0].active(), 2);
    drop(_a);

    let global = config("round_robin", &backends, "limits:\n  max_connections: 1\n");
    let (_running, proxy) = start(&global).await;
    let (_held, _) = greeting(proxy).await;
    let error = parse_err_packet(&read_all(proxy).await).expect("an ERR packet");
    assert_eq!(error.code, 1040);
    assert!(
        error.message.contains("global max_connections"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_full_backend_sends_clients_to_the_next_one() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let mut config = config("single", &[a, b], "");
    config.backends[0].max_connections = Some(2);
    let (_running, proxy) = start(&config).await;
    let mut names = Vec::new();
    let mut held = Vec::new();
    for _ in 0..4 {
        let (stream, name) = greeting(proxy).await;
        names.push(name);
        held.push(stream);
    }
    assert_eq!(names, ["a", "a", "b", "b"]);
}

#[tokio::test]
async fn when_every_backend_is_full_clients_get_1040() {
    let mut config = config("round_robin", &[echo_backend("a").await], "");
    config.backends[0].max_connections = Some(1);
    let (_running, proxy) = start(&config).await;
    let (_held, _) = greeting(proxy).await;
    let error = parse_err_packet(&read_all(proxy).await).expect("an ERR packet");
    assert_eq!(error.code, 1040);
    assert!(
        error.message.contains("at its max_connections"),
        "{error:?}"
    );
}

#[tokio::test]
async fn half_close_is_forwarded_both_ways() {
    let backends = [echo_backend("a").await];
    let (running, proxy) = start(&config("round_robin", &backends, "")).await;
    let (mut stream, _) = greeting(proxy).await;
    stream.write_all(b"ping").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"pingbye\n");
    let counters = running.router.load_full().pools[0].members[0]
        .backend
        .counters();
    assert_eq!(counters.bytes_to_backend, 4);
    assert_eq!(counters.bytes_to_client, 2 + 4 + 4);
}

#[tokio::test]
async fn a_bulk_transfer_arrives_intact() {
    let size = 8 * 1024 * 1024 + 17;
    let backends = [bulk_backend(size).await];
    let (running, proxy) = start(&config("round_robin", &backends, "")).await;
    let data = read_all(proxy).await;
    assert_eq!(data.len(), size);
    assert!(data == pattern(size), "the bytes differ");
    // The handler finishes right after the last byte; give it a moment to count it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let member = &running.router.load_full().pools[0].members[0];
    assert_eq!(member.backend.counters().bytes_to_client, size as u64);
    assert_eq!(member.backend.active(), 0);
}

#[tokio::test]
async fn a_slow_reader_gets_everything() {
    let size = 4 * 1024 * 1024;
    let backends = [bulk_backend(size).await];
    let (_running, proxy) = start(&config("round_robin", &backends, "")).await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Read slowly at first so the proxy has to stop reading from the backend.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = stream.read(&mut buf).await.unwrap();
        data.extend_from_slice(&buf[..n]);
    }
    stream.read_to_end(&mut data).await.unwrap();
    assert!(data == pattern(size), "the bytes differ");
}

#[tokio::test]
async fn drain_stops_accepting_at_once_and_lets_open_sessions_finish() {
    let backends = [echo_backend("a").await];
    let config = config("round_robin", &backends, "limits:\n  shutdown_grace: 5s\n");
    let (running, proxy) = start(&config).await;
    let (mut open, _) = greeting(proxy).await;
    let drained = tokio::spawn(running.drain());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(proxy).await.is_err(),
        "new clients are refused"
    );
    // The open session still works, and ends when the client ends it.
    open.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    assert!(!drained.is_finished());
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), drained)
        .await
        .expect("drain ends once the last session ends")
        .unwrap();
}

#[tokio::test]
async fn drain_closes_what_is_still_open_after_the_grace_period() {
    let backends = [echo_backend("a").await];
    let config = config(
        "round_robin",
        &backends,
        "limits:\n  shutdown_grace: 300ms\n",
    );
    let (running, proxy) = start(&config).await;
    let (mut open, _) = greeting(proxy).await;
    let started = Instant::now();
    running.drain().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(1), open.read_to_end(&mut rest))
        .await
        .expect("the session was closed");
    assert!(n.is_err() || rest.is_empty());
}

#[tokio::test]
async fn closing_a_backends_sessions_ends_them() {
    let backends = [echo_backend("a").await];
    let (running, proxy) = start(&config("round_robin", &backends, "")).await;
    let (mut open, _) = greeting(proxy).await;
    running.router.load_full().pools[0].members[0]
        .backend
        .close_sessions();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), open.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the session was closed");
    // New sessions are not affected.
    let (_again, name) = greeting(proxy).await;
    assert_eq!(name, "a");
}

#[tokio::test]
async fn writer_sessions_close_when_the_writer_moves_if_asked() {
    let backends = [echo_backend("a").await, echo_backend("b").await];
    let yaml = format!(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\n    role: writer\nbackends:\n  \
         - address: {}\n  - address: {}\nhealth:\n  check: none\n  on_writer_change: shutdown_sessions\n",
        backends[0], backends[1]
    );
    let config = Config::from_yaml(&yaml, "test.yaml").unwrap();
    let (running, proxy) = start(&config).await;
    let snapshot = running.router.load_full();
    let pool = &snapshot.pools[0];
    pool.elect_writer(false);
    let writer = pool.writer().unwrap();
    let (mut on_writer, first) = greeting(proxy).await;
    assert_eq!(first, ["a", "b"][writer]);
    // The writer turns read-only: the role moves and its writer sessions are closed.
    pool.members[writer].backend.set_writable(false);
    pool.elect_writer(false);
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(2), on_writer.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the session on the old writer was closed");
    let (_on_new, second) = greeting(proxy).await;
    assert_eq!(second, ["a", "b"][1 - writer]);
}

/// Parks sessions after 50 ms of silence.
const PARK_FAST: &str = "limits:\n  park_idle_after: 50ms\n";

/// A fake backend that greets with "late\n", and answers every line `wait MS` with `waited MS`
/// after that many milliseconds of its own silence; on the client's end of stream it waits
/// 400 ms, then writes "late bye\n" and closes.
async fn slow_talker() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                write.write_all(b"late\n").await?;
                let mut lines = tokio::io::BufReader::new(read);
                let mut line = String::new();
                loop {
                    line.clear();
                    if tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await? == 0 {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        write.write_all(b"late bye\n").await?;
                        return write.shutdown().await;
                    }
                    let ms: u64 = line.trim().trim_start_matches("wait ").parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    write.write_all(format!("waited {ms}\n").as_bytes()).await?;
                }
            });
        }
    });
    address
}

fn parked_now() -> i64 {
    galera_lb::core::counters::metrics().sessions_parked.get()
}

#[tokio::test]
async fn an_idle_session_is_parked_and_wakes_for_either_side_without_losing_a_byte() {
    let backends = [slow_talker().await, echo_backend("echo").await];
    let (_running, proxy) = start(&config("round_robin", &backends, PARK_FAST)).await;
    let (mut talker, name) = greeting(proxy).await;
    assert_eq!(name, "late");
    let (mut echo, name) = greeting(proxy).await;
    assert_eq!(name, "echo");

    // The backend speaks first after a silence long enough to park the session.
    talker.write_all(b"wait 300\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(parked_now() >= 1, "the quiet sessions are parked");
    assert_eq!(lb::read_line(&mut talker).await, "waited 300");

    // The client speaks first after a silence: 1 MiB goes through the resumed session intact.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = pattern(1 << 20);
    let (mut read, mut write) = echo.split();
    let (sent, echoed) = tokio::join!(write.write_all(&data), async {
        let mut back = vec![0u8; data.len()];
        read.read_exact(&mut back).await.map(|_| back)
    });
    sent.unwrap();
    assert!(echoed.unwrap() == data, "the echo came back byte for byte");

    // Parked again, then the end of stream wakes it and is passed on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo.shutdown().await.unwrap();
    let mut rest = Vec::new();
    echo.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"bye\n");
}

#[tokio::test]
async fn a_half_closed_session_is_not_parked_and_gets_the_late_answer() {
    let backends = [slow_talker().await];
    let (_running, proxy) = start(&config("round_robin", &backends, PARK_FAST)).await;
    let (mut client, _) = greeting(proxy).await;
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut rest))
        .await
        .expect("the backend's late answer and close come through")
        .unwrap();
    assert_eq!(rest, b"late bye\n");
}

#[tokio::test]
async fn parked_sessions_close_when_their_backend_goes_down_or_the_writer_moves() {
    let backends = [echo_backend("a").await, echo_backend("b").await];
    let yaml = format!(
        "listeners:\n  - name: test\n    bind: 127.0.0.1:0\n    role: writer\n  \
         - name: any\n    bind: 127.0.0.1:0\nbackends:\n  - address: {}\n  - address: {}\n\
         health:\n  check: none\n  on_writer_change: shutdown_sessions\n{PARK_FAST}",
        backends[0], backends[1]
    );
    let config = Config::from_yaml(&yaml, "test.yaml").unwrap();
    let running = galera_lb::start(&config, "test.yaml").await.unwrap();
    let (writer_port, any_port) = (running.listeners[0].1, running.listeners[1].1);
    let snapshot = running.router.load_full();
    let pool = &snapshot.pools[0];
    pool.elect_writer(false);
    let writer = pool.writer().unwrap();
    let writer_name = ["a", "b"][writer];
    let (mut on_writer, _) = greeting(writer_port).await;
    // Round robin over two backends: one `any` session on each.
    let (first, first_name) = greeting(any_port).await;
    let (second, _) = greeting(any_port).await;
    let (mut any_on_writer, mut any_on_other) = if first_name == writer_name {
        (first, second)
    } else {
        (second, first)
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(parked_now() >= 3, "the quiet sessions are parked");

    // The writer moves: the parked writer-listener session is closed; the `any` session on the
    // same backend is not (it does not follow the writer).
    pool.members[writer].backend.set_writable(false);
    pool.elect_writer(false);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), on_writer.read_to_end(&mut rest))
        .await
        .expect("the parked session on the old writer was closed")
        .ok();
    any_on_writer.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    any_on_writer.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still");

    // The other backend's sessions are closed: its parked session ends.
    pool.members[1 - writer].backend.close_sessions();
    tokio::time::timeout(Duration::from_secs(2), any_on_other.read_to_end(&mut rest))
        .await
        .expect("the parked session on the closed backend was closed")
        .ok();
}

#[tokio::test]
async fn drain_waits_for_parked_sessions_and_closes_them_after_the_grace_period() {
    let backends = [echo_backend("a").await];
    let extra = "limits:\n  park_idle_after: 50ms\n  shutdown_grace: 1s\n";
    let (running, proxy) = start(&config("round_robin", &backends, extra)).await;
    let (mut open, _) = greeting(proxy).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    running.drain().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "the drain waited for the parked session until the grace period ended: {took:?}"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(1), open.read_to_end(&mut rest))
        .await
        .expect("the parked session was closed");
    assert!(n.is_err() || rest.is_empty());
}

#[tokio::test]
async fn client_idle_timeout_closes_a_quiet_session_and_spares_a_busy_one() {
    let backends = [echo_backend("a").await];
    let extra = "limits:\n  park_idle_after: 100ms\n  client_idle_timeout: 700ms\n";
    let (_running, proxy) = start(&config("round_robin", &backends, extra)).await;
    let (mut quiet, _) = greeting(proxy).await;
    let (mut busy, _) = greeting(proxy).await;
    let started = Instant::now();
    let chatter = async {
        for _ in 0..15 {
            busy.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            busy.read_exact(&mut byte).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let closed = async {
        let mut rest = Vec::new();
        let _ = quiet.read_to_end(&mut rest).await;
        started.elapsed()
    };
    let ((), closed_after) = tokio::join!(chatter, closed);
    assert!(
        closed_after >= Duration::from_millis(650) && closed_after < Duration::from_millis(1500),
        "the quiet session was closed after {closed_after:?}"
    );
    busy.write_all(b"y").await.unwrap();
    let mut byte = [0u8; 1];
    busy.read_exact(&mut byte).await.unwrap();
    assert_eq!(&byte, b"y", "the busy session is still open after 1.5 s");
}
