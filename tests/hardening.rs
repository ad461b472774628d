//! Hardening against careless operators and hostile clients, with the real binary in front of the
//! real Galera sandbox (`scripts/sandbox`; without one these tests fail, they are never skipped):
//!
//! - a configuration path that blocks or never ends (a FIFO, `/dev/zero`, a huge file) is
//!   refused at start-up, by `check` and at a reload, and a reload of one never stalls the
//!   sessions, `/live` or the control port, even with a single worker thread;
//! - SIGHUP and SIGUSR2 during start-up neither kill galera-lb nor get lost;
//! - the admin port holds at most `admin.max_clients` connections, evicting the idlest, so that
//!   a fresh request is always answered;
//! - with too few descriptors for `limits.max_connections`, galera-lb says so at start, raises
//!   its soft limit, and answers the clients that do not fit with ERR 1040 instead of leaving
//!   them hanging.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use lb::{LbProcess, binary, free_port, http_get, run_bounded};
use support::sandbox;

/// A configuration in front of the sandbox's three nodes, with real wsrep checks.
fn sandbox_config(port: u16, extra: &str) -> String {
    let cluster = sandbox::cluster();
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n    policy: round_robin\nbackends:\n"
    );
    for n in 1..=3 {
        yaml.push_str(&format!("  - address: {}\n", cluster.node_address(n)));
    }
    yaml.push_str("health:\n  user: monitor\n  password: monitor\n  interval: 500ms\n");
    yaml.push_str(extra);
    yaml
}

/// Opens a session through galera-lb and reads a node's MySQL greeting (protocol 10) within
/// `within`: proof that the proxy serves.
fn node_greeting(port: u16, within: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut head = [0u8; 5];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("no greeting within {within:?}: {e}"))?;
    if head[4] != 10 {
        return Err(format!("not a MySQL greeting: {head:?}"));
    }
    Ok(started.elapsed())
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// While galera-lb re-reads its configuration from `path` (already replaced by something that
/// blocks or never ends), sessions, `/live` and the control port keep answering at once, and
/// the reload is refused with `reason` in the log.
fn reload_must_not_stall(lb: &LbProcess, port: u16, admin: SocketAddr, reason: &str) {
    let refusals = lb.log().matches("reload refused").count();
    lb.signal(libc::SIGHUP);
    let until = Instant::now() + Duration::from_secs(2);
    let mut served = 0;
    while Instant::now() < until {
        node_greeting(port, Duration::from_secs(1)).unwrap_or_else(|e| {
            panic!(
                "a session during a reload from a blocking file ({reason}): {e}\nlog:\n{}",
                lb.log()
            )
        });
        let live = http_get(admin, "/live");
        assert_eq!(live.status, 200, "/live during the reload");
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served >= 10, "only {served} sessions in 2 s");
    let deadline = Instant::now() + Duration::from_secs(15);
    while lb.log().matches("reload refused").count() == refusals {
        assert!(
            Instant::now() < deadline,
            "the reload was not refused in 15 s:\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = lb.log();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("reload refused"))
        .unwrap();
    assert!(last.contains(reason), "expected {reason:?} in {last}");
}

#[test]
fn a_reload_from_a_fifo_or_an_endless_file_never_stalls_the_proxy() {
    let _shared = sandbox::shared_lock();
    let (port, admin_port) = (free_port(), free_port());
    let yaml = sandbox_config(
        port,
        &format!("runtime:\n  worker_threads: 1\nadmin:\n  bind: 127.0.0.1:{admin_port}\n"),
    );
    let lb = LbProcess::start(&yaml);
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let path = lb.config_path().to_path_buf();
    node_greeting(port, Duration::from_secs(2)).unwrap();

    // A FIFO: opening it for reading waits for a writer, forever.
    std::fs::remove_file(&path).unwrap();
    mkfifo(&path);
    reload_must_not_stall(&lb, port, admin, "it is a FIFO, not a regular file");

    // /dev/zero: never ends.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    reload_must_not_stall(&lb, port, admin, "it is a device, not a regular file");

    // A regular file of 1 GiB (sparse): refused by size, not read whole.
    std::fs::remove_file(&path).unwrap();
    let huge = std::fs::File::create(&path).unwrap();
    huge.set_len(1 << 30).unwrap();
    drop(huge);
    reload_must_not_stall(&lb, port, admin, "larger than 16384 KiB");

    // The file back: the next reload applies it.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &yaml).unwrap();
    lb.signal(libc::SIGHUP);
    lb.wait_for_log("configuration reloaded", Duration::from_secs(10));
}

#[test]
fn start_up_and_check_refuse_a_fifo_or_a_device_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("galera-lb.yaml");
    mkfifo(&fifo);
    for path in [fifo.as_path(), Path::new("/dev/zero")] {
        for args in [&["check", "-c"][..], &["--config"][..]] {
            let mut command = binary();
            command.args(args).arg(path);
            let started = Instant::now();
            let run = run_bounded(
                &mut command,
                std::process::Stdio::null(),
                Duration::from_secs(15),
            );
            let elapsed = started.elapsed();
            assert_eq!(
                run.status.code(),
                Some(64),
                "{args:?} {}: {}",
                path.display(),
                run.stderr
            );
            assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
            assert!(
                elapsed < Duration::from_secs(5),
                "{args:?} took {elapsed:?}"
            );
        }
    }
}

#[test]
fn reload_signals_during_start_up_neither_kill_nor_get_lost() {
    let _shared = sandbox::shared_lock();
    // A backend that accepts and never answers makes the first health round last its timeout
    // (2 s): signals sent meanwhile arrive before galera-lb is ready.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_address = silent.local_addr().unwrap();
    for signal in [libc::SIGHUP, libc::SIGUSR2] {
        let port = free_port();
        let mut yaml = sandbox_config(port, "");
        yaml = yaml.replace(
            "backends:\n",
            &format!("backends:\n  - address: {silent_address}\n"),
        );
        yaml = yaml.replace("interval: 500ms\n", "interval: 500ms\n  timeout: 2s\n");
        let mut lb = LbProcess::spawn(&yaml, |_| {});
        // At 50, 100, 300 and 600 ms.
        for delay_ms in [50u64, 50, 200, 300] {
            std::thread::sleep(Duration::from_millis(delay_ms));
            lb.signal(signal);
        }
        lb.wait_for_log("ready", Duration::from_secs(15));
        // The signals received while starting became one reload, once started.
        lb.wait_for_log("configuration reloaded", Duration::from_secs(10));
        node_greeting(port, Duration::from_secs(2)).unwrap();
        lb.signal(libc::SIGTERM);
        let status = lb.wait_exit(Duration::from_secs(15));
        assert_eq!(status.code(), Some(0), "signal {signal}:\n{}", lb.log());
    }
    drop(silent);
}
/// Sends `GET /live` on a new admin connection and reads the status line.
fn fresh_live(admin: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect(admin).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream
        .write_all(b"GET /live HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    reply
        .lines()
        .next()
        .map(str::to_string)
        .ok_or_else(|| "closed without an answer".to_string())
}

/// Raises this process's soft descriptor limit to `want` (the test holds many connections).
fn raise_own_descriptor_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= want,
            "this test needs {want} descriptors; the hard limit is {} (ulimit -Hn)",
            limit.rlim_max
        );
        if limit.rlim_cur < want {
            limit.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// The descriptors process `pid` has open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn clients_holding_admin_connections_cannot_keep_out_a_probe_or_take_the_proxys_descriptors() {
    let _shared = sandbox::shared_lock();
    raise_own_descriptor_limit(4096);
    let (port, admin_port) = (free_port(), free_port());
    let yaml = sandbox_config(port, &format!("admin:\n  bind: 127.0.0.1:{admin_port}\n"));
    // 1024 descriptors, as the issue found it: 1100 admin clients took them all.
    let lb = LbProcess::start_with(&yaml, lb::with_descriptor_limit(1024));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let mut held = Vec::new();
    for i in 0..1100 {
        let Ok(mut stream) = TcpStream::connect(admin) else {
            continue;
        };
        // Half send a request and keep the connection (keep-alive), half send nothing.
        if i % 2 == 0 {
            let _ = stream.write_all(b"GET /live HTTP/1.1\r\nHost: lb\r\n\r\n");
        }
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let descriptors = open_descriptors(lb.pid());
    assert!(
        descriptors < 300,
        "galera-lb holds {descriptors} descriptors with 1100 admin clients (admin.max_clients is 64)"
    );
    // A probe and an operator get through, again and again.
    for _ in 0..20 {
        let status = fresh_live(admin).unwrap_or_else(|e| panic!("a fresh GET /live: {e}"));
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    }
    // Database clients are served.
    for _ in 0..20 {
        node_greeting(port, Duration::from_secs(2)).unwrap_or_else(|e| {
            panic!("a database client with 1100 admin clients holding connections: {e}")
        });
    }
    let evicted = lb::metric(
        admin,
        "galera_lb_port_clients_evicted_total",
        &[("port", "admin")],
    )
    .expect("the evictions counter");
    assert!(
        evicted >= 1000.0,
        "only {evicted} admin connections evicted"
    );
    drop(held);
}
