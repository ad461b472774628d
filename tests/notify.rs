//! systemd's readiness protocol without systemd: the test binds a unix datagram socket of its own,
//! passes it to galera-lb as `NOTIFY_SOCKET`, and checks what galera-lb says and when, against
//! the real Galera sandbox (see `support/sandbox.rs`):
//!
//! - `READY=1` only once every listener accepts and the first health round has run (a backend
//!   that never answers makes that round last `health.timeout`);
//! - `RELOADING=1` with `MONOTONIC_USEC`, then `READY=1` once a SIGHUP reload is applied (or
//!   refused);
//! - `STOPPING=1` on SIGTERM, then a clean exit.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use lb::{LbProcess, free_port, http_get};

/// The test's end of `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next message, or None when none arrives within `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }

    fn expect(&self, lb: &LbProcess, what: &str, timeout: Duration) -> String {
        match self.next(timeout) {
            Some(message) => message,
            None => panic!(
                "galera-lb sent nothing within {timeout:?} (expected {what}); its log:\n{}",
                lb.log()
            ),
        }
    }
}

/// A backend that accepts TCP connections and never says a word: its health check can only
/// time out, which makes the first health round last `health.timeout`.
fn silent_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    address
}

fn config(listen: u16, admin: u16, backends: &[SocketAddr], weight: u32) -> String {
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{listen}\nbackends:\n  - address: {}\n    \
         weight: {weight}\n",
        backends[0]
    );
    for backend in &backends[1..] {
        yaml.push_str(&format!("  - address: {backend}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  user: monitor\n  password: monitor\n  timeout: {TIMEOUT_MS}ms\n\
         admin:\n  bind: 127.0.0.1:{admin}\n"
    ));
    yaml
}

const TIMEOUT_MS: u64 = 1500;

/// CLOCK_MONOTONIC now, in microseconds (what `MONOTONIC_USEC` must carry).
fn monotonic_usec() -> u128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) },
        0
    );
    now.tv_sec as u128 * 1_000_000 + now.tv_nsec as u128 / 1_000
}

fn status(admin: SocketAddr) -> serde_json::Value {
    let reply = http_get(admin, "/status");
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

#[test]
fn ready_after_listeners_and_first_health_round_reloading_around_sighup_stopping_on_sigterm() {
    let cluster = support::sandbox::cluster();
    let _shared = support::sandbox::shared_lock();
    let silent = silent_backend();
    let mut backends = cluster.addresses.clone();
    backends.push(silent);
    let (listen, admin_port) = (free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let notify = NotifySocket::bind();

    let started = Instant::now();
    let mut lb = LbProcess::spawn(&config(listen, admin_port, &backends, 1), |command| {
        command.env("NOTIFY_SOCKET", &notify.path);
    });

    // READY=1, and nothing before it.
    let message = notify.expect(&lb, "READY=1", Duration::from_secs(20));
    let waited = started.elapsed();
    assert_eq!(message.trim(), "READY=1", "the first message");
    assert!(
        waited >= Duration::from_millis(TIMEOUT_MS),
        "READY=1 after {waited:?}: before the silent backend's check could time out \
         ({TIMEOUT_MS} ms), so before the first health round was over"
    );
    // At that moment: every backend has been checked, the listener serves MySQL, /ready is 200.
    let at_ready = status(admin);
    let reported = at_ready["backends"].as_array().unwrap();
    assert_eq!(reported.len(), backends.len(), "{at_ready}");
    for backend in reported {
        assert!(
            !backend["last_check"].is_null(),
            "READY=1 came before {} was checked: {at_ready}",
            backend["address"]
        );
        let expected = if backend["address"] == silent.to_string() {
            "timeout"
        } else {
            "synced"
        };
        assert_eq!(backend["reason"], expected, "{at_ready}");
    }
    assert_eq!(http_get(admin, "/ready").status, 200);
    let mut client = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut greeting = [0u8; 5];
    client.read_exact(&mut greeting).unwrap();
    assert_eq!(greeting[3], 0, "sequence id of a server greeting");
    assert_eq!(
        greeting[4], 10,
        "protocol version 10: a MySQL server greeting"
    );
    drop(client);

    // A reload that changes a weight: RELOADING=1 with a fresh MONOTONIC_USEC, then READY=1 once
    // the new weight is in place.
    std::fs::write(lb.config_path(), config(listen, admin_port, &backends, 7)).unwrap();
    let before = monotonic_usec();
    lb.signal(libc::SIGHUP);
    let message = notify.expect(&lb, "RELOADING=1", Duration::from_secs(10));
    let after = monotonic_usec();
    let mut lines = message.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{message:?}");
    let usec: u128 = lines
        .next()
        .and_then(|line| line.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {message:?}"))
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC={usec} is not between {before} and {after} (CLOCK_MONOTONIC around it)"
    );
    let message = notify.expect(&lb, "READY=1 after the reload", Duration::from_secs(20));
    assert_eq!(message.trim(), "READY=1");
    let first = &status(admin)["backends"][0];
    assert_eq!(
        first["weight"], 7.0,
        "READY=1 came before the reload was applied: {first}"
    );
    // Counted by the time READY=1 is sent: the outcome is known then.
    let reloads =
        |result: &str| lb::metric(admin, "galera_lb_reloads_total", &[("result", result)]);
    assert_eq!((reloads("ok"), reloads("error")), (Some(1.0), Some(0.0)));

    // A reload that is refused still ends with READY=1: the running configuration stays.
    std::fs::write(lb.config_path(), "listeners: [oops\n").unwrap();
    lb.signal(libc::SIGHUP);
    let message = notify.expect(&lb, "RELOADING=1", Duration::from_secs(10));
    assert!(message.starts_with("RELOADING=1\n"), "{message:?}");
    let message = notify.expect(
        &lb,
        "READY=1 after the refused reload",
        Duration::from_secs(20),
    );
    assert_eq!(message.trim(), "READY=1");
    assert_eq!((reloads("ok"), reloads("error")), (Some(1.0), Some(1.0)));

    // SIGTERM: STOPPING=1, then a clean exit, and nothing more.
    lb.signal(libc::SIGTERM);
    let message = notify.expect(&lb, "STOPPING=1", Duration::from_secs(10));
    assert_eq!(message.trim(), "STOPPING=1");
    let status = lb.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "{status:?}; log:\n{}", lb.log());
    assert_eq!(notify.next(Duration::from_millis(200)), None);
}

#[test]
fn without_notify_socket_galera_lb_runs_as_before() {
    // No NOTIFY_SOCKET (the test's own environment may have one, from a systemd unit): galera-lb
    // starts, serves and stops as usual.
    let cluster = support::sandbox::cluster();
    let _shared = support::sandbox::shared_lock();
    let (listen, admin_port) = (free_port(), free_port());
    let mut lb = LbProcess::start_with(
        &config(listen, admin_port, &cluster.addresses, 1),
        |command| {
            command.env_remove("NOTIFY_SOCKET");
        },
    );
    assert_eq!(
        http_get(SocketAddr::from(([127, 0, 0, 1], admin_port)), "/ready").status,
        200
    );
    lb.signal(libc::SIGTERM);
    assert!(lb.wait_exit(Duration::from_secs(40)).success());
}
