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
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let took = node_greeting(port, Duration::from_secs(1)).unwrap_or_else(|e| {
            panic!(
                "a session during a reload from a blocking file ({reason}): {e}\nlog:\n{}",
                lb.log()
            )
        });
        slowest = slowest.max(took);
        let live = http_get(admin, "/live");
        assert_eq!(live.status, 200, "/live during the reload");
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served >= 10, "only {served} sessions in 2 s");
    println!(
        "reload refused ({reason}): {served} sessions in the 2 s after SIGHUP, the slowest greeting {slowest:?}"
    );
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
    let mut slowest_live = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let status = fresh_live(admin).unwrap_or_else(|e| panic!("a fresh GET /live: {e}"));
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        slowest_live = slowest_live.max(started.elapsed());
    }
    // Database clients are served.
    let mut slowest_greeting = Duration::ZERO;
    for _ in 0..20 {
        let took = node_greeting(port, Duration::from_secs(2)).unwrap_or_else(|e| {
            panic!("a database client with 1100 admin clients holding connections: {e}")
        });
        slowest_greeting = slowest_greeting.max(took);
    }
    println!(
        "1100 admin clients held, nofile 1024: galera-lb holds {descriptors} descriptors and {} kB \
         RSS; the slowest of 20 fresh GET /live {slowest_live:?}, of 20 database greetings \
         {slowest_greeting:?}",
        lb::rss_kb(lb.pid())
    );
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

/// Runs the child with RLIMIT_NOFILE `soft` / `hard`.
fn with_file_limits(soft: u64, hard: u64) -> impl FnOnce(&mut std::process::Command) {
    move |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// The soft "Max open files" of process `pid`.
fn soft_file_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn the_soft_descriptor_limit_is_raised_toward_the_hard_one_as_far_as_the_limits_need() {
    let _shared = sandbox::shared_lock();
    let port = free_port();
    let yaml = sandbox_config(port, "limits:\n  max_connections: 2000\n");
    let lb = LbProcess::start_with(&yaml, with_file_limits(256, 8192));
    let soft = soft_file_limit(lb.pid());
    // 2000 sessions × 2, plus the reserve, the listener, and a check and a relay per backend.
    assert!(
        (4000..5000).contains(&soft),
        "soft limit {soft}, expected about 4070"
    );
    assert!(!lb.log().contains("open-files limit"), "{}", lb.log());

    // The hard limit is the ceiling: said at start, with what to do.
    let port = free_port();
    let yaml = sandbox_config(port, "limits:\n  max_connections: 20000\n");
    let lb = LbProcess::start_with(&yaml, with_file_limits(256, 8192));
    assert_eq!(soft_file_limit(lb.pid()), 8192);
    let log = lb.log();
    let warning = log
        .lines()
        .find(|l| l.contains("open-files limit leaves room for"))
        .unwrap_or_else(|| panic!("no warning about the descriptor budget:\n{log}"));
    assert!(warning.contains("LimitNOFILE"), "{warning}");
}

/// What a client got from galera-lb: a node's greeting, an ERR packet's code, or nothing in time.
#[derive(Debug, PartialEq)]
enum FirstPacket {
    Greeting,
    Error(u16),
}

fn first_packet(stream: &mut TcpStream) -> Result<FirstPacket, String> {
    let mut head = [0u8; 4];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("no packet: {e}"))?;
    let length = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("a short packet: {e}"))?;
    match body.first() {
        Some(10) => Ok(FirstPacket::Greeting),
        Some(0xFF) if body.len() >= 3 => {
            Ok(FirstPacket::Error(u16::from_le_bytes([body[1], body[2]])))
        }
        _ => Err(format!("an unexpected packet: {body:?}")),
    }
}

#[test]
fn clients_past_the_descriptor_budget_get_err_1040_instead_of_hanging() {
    let _shared = sandbox::shared_lock();
    let (port, admin_port) = (free_port(), free_port());
    let yaml = sandbox_config(port, &format!("admin:\n  bind: 127.0.0.1:{admin_port}\n"));
    // 256 descriptors, soft and hard, and the default max_connections (10000).
    let lb = LbProcess::start_with(&yaml, lb::with_descriptor_limit(256));
    assert!(
        lb.log().contains("open-files limit leaves room for"),
        "{}",
        lb.log()
    );
    let mut clients = Vec::new();
    let (mut greeted, mut refused) = (0, 0);
    let mut slowest = Duration::ZERO;
    for i in 0..150 {
        let started = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let packet = first_packet(&mut stream);
        slowest = slowest.max(started.elapsed());
        match packet {
            Ok(FirstPacket::Greeting) => greeted += 1,
            Ok(FirstPacket::Error(1040)) => refused += 1,
            other => panic!(
                "client {i} ({greeted} greeted, {refused} refused before it): {other:?}\nlog:\n{}",
                lb.log()
            ),
        }
        clients.push(stream);
    }
    println!(
        "nofile 256, 150 clients held: {greeted} served, {refused} got ERROR 1040, {} descriptors \
         open, the slowest first packet {slowest:?}",
        open_descriptors(lb.pid())
    );
    assert!(greeted >= 40, "only {greeted} of 150 clients were served");
    assert!(refused >= 40, "only {refused} of 150 clients were refused");
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    assert_eq!(http_get(admin, "/live").status, 200);
    drop(clients);
    // Room again: clients are served.
    std::thread::sleep(Duration::from_millis(300));
    node_greeting(port, Duration::from_secs(2)).unwrap();
}
