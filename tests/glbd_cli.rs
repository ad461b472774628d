//! galera-lb with glbd's command line, as a user runs it: `galera-lb glbd ARGS…` and a symlink
//! named `glbd`, in front of small in-process fake backends that greet each client with their
//! name. Checks are off in glbd mode without a watchdog, so the fakes need to speak no MySQL.
//!
//! Every process a test starts is killed when the test ends, pass or fail: foreground ones
//! through [`Glbd`]'s `Drop`, daemons through [`Daemon`]'s.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_galera-lb");

/// A fake backend: greets every client with "NAME\n", then keeps the connection until the
/// client closes it.
fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                stream.write_all(format!("{name}\n").as_bytes())?;
                let mut buf = [0u8; 256];
                while stream.read(&mut buf)? > 0 {}
                Ok::<_, std::io::Error>(())
            });
        }
    });
    address
}

/// A destination argument for `address`, `HOST:PORT[:WEIGHT]`.
fn dest(address: SocketAddr, weight: Option<&str>) -> String {
    match weight {
        Some(weight) => format!("{address}:{weight}"),
        None => address.to_string(),
    }
}

/// Connects to the listener and returns the greeting (the backend's name) and the connection.
fn client(port: u16) -> (String, TcpStream) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    (line.trim().to_string(), stream)
}

/// How many of `n` clients, connected one after another and all kept open, each backend got.
fn spread(port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut open = Vec::new();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let (name, stream) = client(port);
        *counts.entry(name).or_insert(0) += 1;
        open.push(stream);
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A glbd-mode galera-lb in the foreground, its stderr collected; killed when dropped.
struct Glbd {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Glbd {
    /// Runs `program args…` and waits until it logs that it is ready.
    fn start(program: &Path, args: &[String]) -> Glbd {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let log = lb::collect_stderr(&mut child);
        let glbd = Glbd { child, log };
        glbd.wait_for_log("ready", Duration::from_secs(20));
        glbd
    }

    /// `galera-lb glbd args…`.
    fn subcommand(args: &[String]) -> Glbd {
        let mut all = vec!["glbd".to_string()];
        all.extend_from_slice(args);
        Glbd::start(Path::new(BINARY), &all)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            if Instant::now() > deadline {
                panic!("no {text:?} within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Glbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory with a `glbd` symlink to the galera-lb binary.
fn glbd_symlink() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("glbd");
    std::os::unix::fs::symlink(BINARY, &link).unwrap();
    (dir, link)
}

/// Runs a command to completion within `timeout` (killing it otherwise); returns its status,
/// stdout and stderr.
fn run_bounded(command: &mut Command, timeout: Duration) -> (ExitStatus, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

/// Whether process `pid` is running (a zombie waiting for its reaper counts as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next();
            state != Some('Z')
        }
        Err(_) => false,
    }
}

/// A daemon started by a test: SIGKILLed when dropped if it is still running.
struct Daemon {
    pid: Option<i32>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.filter(|pid| alive(*pid)) {
            // SAFETY: kill(2) on a pid this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn subcommand_round_robin_spreads_clients_evenly() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let (port, control_port) = (lb::free_port(), lb::free_port());
    let _glbd = Glbd::subcommand(&[
        "--round".into(),
        "--control".into(),
        format!("127.0.0.1:{control_port}"),
        format!("127.0.0.1:{port}"),
        dest(a, None),
        dest(b, None),
        dest(c, None),
    ]);
    assert_eq!(spread(port, 6), counts(&[("a", 2), ("b", 2), ("c", 2)]));
    let control: std::net::SocketAddr = format!("127.0.0.1:{control_port}").parse().unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&lb::control(control, "getinfo json\n")).unwrap();
    assert_eq!(info["listeners"][0]["policy"], "round_robin", "{info}");
}

#[test]
fn default_policy_is_least_connected() {
    let (a, b) = (backend("a"), backend("b"));
    let port = lb::free_port();
    let _glbd = Glbd::subcommand(&[format!("127.0.0.1:{port}"), dest(a, None), dest(b, None)]);
    // Each client stays connected, so the next one goes to the other backend.
    assert_eq!(spread(port, 4), counts(&[("a", 2), ("b", 2)]));
}

#[test]
fn symlink_single_sends_everyone_to_the_top_weight() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let (_dir, glbd_link) = glbd_symlink();
    let port = lb::free_port();
    let _glbd = Glbd::start(
        &glbd_link,
        &[
            "-S".into(),
            format!("127.0.0.1:{port}"),
            dest(a, Some("1")),
            dest(b, Some("3")),
            dest(c, Some("2")),
        ],
    );
    assert_eq!(spread(port, 5), counts(&[("b", 5)]));
}

#[test]
fn symlink_top_balances_the_top_weight_and_falls_back_to_the_next() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let (_dir, glbd_link) = glbd_symlink();
    let port = lb::free_port();
    let _glbd = Glbd::start(
        &glbd_link,
        &[
            "-T".into(),
            "-b".into(),
            format!("127.0.0.1:{port}"),
            dest(a, Some("1")),
            dest(b, Some("2")),
            dest(c, Some("2")),
        ],
    );
    assert_eq!(spread(port, 4), counts(&[("b", 2), ("c", 2)]));

    // The top weight refuses connections: the next weight down serves.
    let dead: SocketAddr = format!("127.0.0.1:{}", lb::free_port()).parse().unwrap();
    let port = lb::free_port();
    let _glbd = Glbd::start(
        &glbd_link,
        &[
            "--top".into(),
            format!("127.0.0.1:{port}"),
            dest(dead, Some("5")),
            dest(a, Some("1")),
        ],
    );
    assert_eq!(spread(port, 2), counts(&[("a", 2)]));
}

#[test]
fn source_keeps_a_client_on_one_backend_and_random_uses_all() {
    let (a, b, c) = (backend("a"), backend("b"), backend("c"));
    let port = lb::free_port();
    let _source = Glbd::subcommand(&[
        "-s".into(),
        format!("127.0.0.1:{port}"),
        dest(a, None),
        dest(b, None),
        dest(c, None),
    ]);
    let spread_by_source = spread(port, 6);
    assert_eq!(spread_by_source.len(), 1, "{spread_by_source:?}");

    let port = lb::free_port();
    let _random = Glbd::subcommand(&[
        "--random".into(),
        format!("127.0.0.1:{port}"),
        dest(a, None),
        dest(b, None),
    ]);
    // Two equal backends: all 40 on one would happen once in 2^39 runs.
    let spread_at_random = spread(port, 40);
    assert_eq!(spread_at_random.len(), 2, "{spread_at_random:?}");
}

#[test]
fn default_port_is_the_listen_port_and_unsupported_options_warn() {
    // The destination names no port: it is the listen port, so the fake backend listens on it
    // on another loopback address (127.0.0.2).
    let backend_listener = match TcpListener::bind("127.0.0.2:0") {
        Ok(listener) => listener,
        Err(_) => return, // no 127.0.0.0/8 beyond 127.0.0.1 here
    };
    let port = backend_listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in backend_listener.incoming().map_while(Result::ok) {
            let _ = stream.write_all(b"same-port\n");
        }
    });
    let glbd = Glbd::subcommand(&[
        "-l".into(),
        "--defer-accept".into(),
        "-L".into(),
        "3".into(),
        format!("127.0.0.1:{port}"),
        "127.0.0.2".into(),
    ]);
    assert_eq!(client(port).0, "same-port");
    let log = glbd.log();
    assert!(log.contains("glbd: warning: -l/--linger"), "{log}");
    assert!(log.contains("glbd: warning: -a/--defer-accept"), "{log}");
    assert!(log.contains("glbd: warning: -L/--latency 3"), "{log}");
}

#[test]
fn the_control_port_answers_getinfo() {
    let (a, b) = (backend("a"), backend("b"));
    let (port, control) = (lb::free_port(), lb::free_port());
    let _glbd = Glbd::subcommand(&[
        "-c".into(),
        control.to_string(),
        format!("127.0.0.1:{port}"),
        dest(a, Some("1")),
        dest(b, Some("2")),
    ]);
    let mut stream = TcpStream::connect(("127.0.0.1", control)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"getinfo\n").unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.contains(&a.to_string()), "{reply}");
    assert!(reply.contains(&b.to_string()), "{reply}");
}

#[test]
fn bad_command_lines_exit_64_naming_the_option() {
    let (_dir, glbd_link) = glbd_symlink();
    for (args, expected) in [
        (vec!["--frobnicate", "3306", "db1"], "--frobnicate"),
        (vec!["-t", "many", "3306", "db1"], "-t/--threads"),
        (
            vec!["3306", "db1:3306:heavy"],
            "destination 'db1:3306:heavy'",
        ),
        (vec!["-t", "2"], "listen address"),
    ] {
        for program in [Path::new(BINARY), glbd_link.as_path()] {
            let mut command = Command::new(program);
            if program == Path::new(BINARY) {
                command.arg("glbd");
            }
            let (status, _, stderr) = run_bounded(command.args(&args), Duration::from_secs(10));
            assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
            assert!(stderr.contains(expected), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn version_and_help() {
    let (_dir, glbd_link) = glbd_symlink();
    let (status, stdout, _) =
        run_bounded(Command::new(&glbd_link).arg("-V"), Duration::from_secs(10));
    assert!(status.success());
    assert_eq!(
        stdout.trim(),
        format!(
            "galera-lb v{} (glbd-compatible, tokio)",
            env!("CARGO_PKG_VERSION")
        )
    );
    let (status, stdout, _) = run_bounded(
        Command::new(BINARY).args(["glbd", "--help"]),
        Duration::from_secs(10),
    );
    assert!(status.success());
    assert!(
        stdout.contains("--round-robin") && stdout.contains("--pid-file"),
        "{stdout}"
    );
    let (status, stdout, _) =
        run_bounded(Command::new(BINARY).arg("--help"), Duration::from_secs(10));
    assert!(status.success());
    assert!(stdout.contains("glbd"), "{stdout}");
}

#[test]
fn daemon_returns_once_listening_writes_the_pid_file_and_stops_on_sigterm() {
    let (a, b) = (backend("a"), backend("b"));
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("glbd.pid");
    let log_file = dir.path().join("glbd.log");
    let port = lb::free_port();
    let mut daemon = Daemon { pid: None };
    let started = Instant::now();
    let (status, _, stderr) = run_bounded(
        Command::new(BINARY)
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .args(["glbd", "--daemon", "--pid-file", "glbd.pid", "--log-file"])
            .arg(&log_file)
            .args(["-b", &format!("127.0.0.1:{port}")])
            .args([dest(a, None), dest(b, None)]),
        Duration::from_secs(30),
    );
    // Connect before anything else: the daemon must be listening when `--daemon` returns.
    let (first, _first_stream) = client(port);
    assert!(status.success(), "{stderr}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    daemon.pid = Some(pid);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(first == "a" || first == "b", "{first}");
    let (second, _second_stream) = client(port);
    assert_ne!(first, second, "round robin");
    assert!(alive(pid));
    // Detached: in a session of its own, which it does not lead (the double fork), so it can
    // never get a controlling terminal back.
    // SAFETY: getsid(2) only reads a process's session id.
    let (session, ours) = unsafe { (libc::getsid(pid), libc::getsid(0)) };
    assert_ne!(session, ours);
    assert_ne!(session, pid);
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("ready"), "{log}");

    drop((_first_stream, _second_stream));
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pid_file.exists(),
        "the pid file is removed on a clean exit"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_daemon_that_cannot_start_fails_the_command_with_its_reason() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let (_dir, glbd_link) = glbd_symlink();
    let (status, _, stderr) = run_bounded(
        Command::new(&glbd_link).args([
            "--daemon".to_string(),
            format!("127.0.0.1:{port}"),
            dest(backend("a"), None),
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
}
