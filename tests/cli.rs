//! The `galera-lb` binary as a user runs it: `check`, exit codes, messages, signals, and what it
//! does when it runs out of file descriptors. Backends here are small in-process fakes; the real
//! cluster tests are in `tests/cluster.rs`.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use lb::{
    LbProcess, NO_CHECKS, binary, echo_backend, free_port, simple_config, with_descriptor_limit,
};

fn read_greeting(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 6];
    stream.read_exact(&mut buf).unwrap();
    buf.to_vec()
}

/// Runs galera-lb with `yaml`, expecting it to refuse to start; returns its exit code and stderr.
fn run_refused(yaml: &str) -> (Option<i32>, String) {
    let config = write_config(yaml);
    let out = binary()
        .arg("--config")
        .arg(config.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(yaml: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    file
}

#[test]
fn check_accepts_the_examples_and_refuses_bad_files_with_64() {
    for example in [
        "config/galera-lb.yaml",
        "config/sandbox.yaml",
        "config/docker.yaml",
    ] {
        // `check` reads the secrets as start-up does: the examples name this variable.
        let out = binary()
            .args(["check", "--config", example])
            .env("GALERA_LB_MONITOR_PASSWORD", "monitor")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad = write_config(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:3306\nbackends:\n  - address: db1\n",
    );
    let out = binary()
        .arg("check")
        .arg("--config")
        .arg(bad.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&bad.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("backends[0].address"), "{stderr}");
    assert!(stderr.contains("not HOST:PORT"), "{stderr}");

    let out = binary()
        .args(["check", "--config", "/nonexistent/galera-lb.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/galera-lb.yaml"));
}

/// A value `check` used to accept and start-up then crashed on: `health.timeout` of 584 billion
/// years passed `check` (exit 0), and galera-lb panicked (exit 101) adding 500 ms to it. Both
/// refuse it now, with exit 64, the file, the field and the range.
#[test]
fn out_of_range_values_exit_64_at_check_and_at_start() {
    // Port 0 and a backend nobody listens on: nothing here may get as far as serving.
    let yaml = "listeners:\n  - name: rw\n    bind: 127.0.0.1:0\nbackends:\n  - address: \
                127.0.0.1:5499\nhealth:\n  check: none\n  timeout: 18446744073709551615s 999ms\n";
    let config = write_config(yaml);
    let out = binary()
        .arg("check")
        .arg("--config")
        .arg(config.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "check: {stderr}");
    let expected = format!(
        "{}: health.timeout: must be from 10ms to 1h",
        config.path().display()
    );
    assert!(stderr.contains(&expected), "check: {stderr}");
    let (code, stderr) = run_refused(yaml);
    assert_eq!(code, Some(64), "start: {stderr}");
    assert!(
        stderr.contains("health.timeout: must be from 10ms to 1h"),
        "start: {stderr}"
    );
}

#[test]
fn help_and_version() {
    let out = binary().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("galera-lb {}", env!("CARGO_PKG_VERSION"))
    );
    let out = binary().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config") && help.contains("check"),
        "{help}"
    );
}

/// Runs `galera-lb check` with the file as an argument after `check` (the form without `-c`).
fn check_file(yaml: &str) -> (Option<i32>, String, tempfile::NamedTempFile) {
    let config = write_config(yaml);
    let out = binary()
        .arg("check")
        .arg(config.path())
        .env_remove("GALERA_LB_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, config)
}

/// `check` is start-up without the sockets: a health password that cannot be read stops both,
/// with exit 64 and the same message (`check` used to say "configuration is valid").
#[test]
fn a_secret_that_cannot_be_read_fails_check_as_it_fails_the_start() {
    for (health, expected) in [
        (
            "  password_env: GALERA_LB_TEST_SURELY_UNSET\n",
            "health.password: environment variable GALERA_LB_TEST_SURELY_UNSET is not set",
        ),
        (
            "  password_file: /nonexistent/galera-lb-test.password\n",
            "health.password: cannot read /nonexistent/galera-lb-test.password",
        ),
    ] {
        let yaml = simple_config(
            free_port(),
            "round_robin",
            &[echo_backend("hello")],
            &format!("health:\n  check: none\n{health}"),
        );
        let (code, stderr) = run_refused(&yaml);
        assert_eq!(code, Some(64), "start: {stderr}");
        assert!(stderr.contains(expected), "start: {stderr}");
        let (code, check_stderr, config) = check_file(&yaml);
        assert_eq!(code, Some(64), "check: {check_stderr}");
        assert!(
            check_stderr.contains(&format!("{}: {expected}", config.path().display())),
            "check: {check_stderr}"
        );
    }
}

/// `galera-lb check FILE` works like `galera-lb check -c FILE` (it used to be clap's exit 2).
#[test]
fn check_takes_the_file_as_its_argument() {
    let yaml = simple_config(
        free_port(),
        "round_robin",
        &[echo_backend("hello")],
        NO_CHECKS,
    );
    let (code, stderr, config) = check_file(&yaml);
    assert_eq!(code, Some(0), "{stderr}");
    let out = binary().arg("check").arg(config.path()).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}: configuration is valid", config.path().display())
    );
    let (code, stderr, config) = check_file("listeners: []\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains(&config.path().display().to_string()),
        "{stderr}"
    );
}

/// Bad access settings for the control and admin ports: exit 64, naming the file, the field and
/// the reason, and never printing a token, at start and at `check` alike: `check` reads the
/// environment variables and token files as start-up does (it used to pass them, exit 0).
#[test]
fn bad_access_settings_exit_64_naming_the_field_and_never_the_token() {
    let token_file = write_config("two words\n");
    let base = simple_config(
        free_port(),
        "round_robin",
        &[echo_backend("hello")],
        NO_CHECKS,
    );
    let cases: &[(String, &str, &str)] = &[
        (
            "control:\n  allow: [127.0.0.1, 10.0.0.0/33]\n".to_string(),
            "control.allow[1]",
            "prefix length must be 0 to 32",
        ),
        (
            "admin:\n  allow: [localhost]\n".to_string(),
            "admin.allow[0]",
            "not an IPv4 or IPv6 address",
        ),
        (
            "admin:\n  allow: ['::1', '10.1.2.3/8']\n".to_string(),
            "admin.allow[1]",
            "write 10.0.0.0/8 for the block",
        ),
        (
            "control:\n  token: hunter2x\n  token_env: X\n".to_string(),
            "control.token",
            "set only one of token, token_env and token_file",
        ),
        (
            "admin:\n  token: 'hunter2 x'\n".to_string(),
            "admin.token",
            "printable ASCII without spaces",
        ),
        (
            "control:\n  token_env: GALERA_LB_TEST_SURELY_UNSET_TOKEN\n".to_string(),
            "control.token_env",
            "GALERA_LB_TEST_SURELY_UNSET_TOKEN is not set",
        ),
        (
            "admin:\n  token_file: /nonexistent/galera-lb.token\n".to_string(),
            "admin.token_file",
            "cannot read /nonexistent/galera-lb.token",
        ),
        (
            format!("control:\n  token_file: {}\n", token_file.path().display()),
            "control.token_file",
            "the token must be printable ASCII without spaces",
        ),
    ];
    for (section, field, reason) in cases {
        let yaml = format!("{base}{section}");
        let (code, stderr) = run_refused(&yaml);
        assert_eq!(code, Some(64), "{section}: {stderr}");
        assert!(
            stderr.contains(".yaml: ") && stderr.contains(&format!("{field}: ")),
            "{section}: no file or {field} in: {stderr}"
        );
        assert!(
            stderr.contains(reason),
            "{section}: no {reason:?} in: {stderr}"
        );
        for secret in ["hunter2", "two words"] {
            assert!(
                !stderr.contains(secret),
                "{section}: the token in: {stderr}"
            );
        }
        let config = write_config(&yaml);
        let out = binary()
            .arg("check")
            .arg("--config")
            .arg(config.path())
            .output()
            .unwrap();
        let check_stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(64),
            "check: {section}: {check_stderr}"
        );
        assert!(
            check_stderr.contains(&format!("{}: {field}: ", config.path().display()))
                && check_stderr.contains(reason),
            "check: {section}: not the file, {field} and {reason:?} in: {check_stderr}"
        );
    }
}

/// A backend name that does not resolve is no reason not to start (DNS may not be up yet at
/// boot; a Swarm or Kubernetes service may not exist yet): galera-lb starts with it down and
/// `check` says so with a warning, exit 0. It used to be exit 64 for both.
#[test]
fn an_unresolvable_backend_name_is_a_warning_at_check_and_start() {
    let yaml = simple_config(
        free_port(),
        "round_robin",
        &[echo_backend("hello")],
        "  - address: no-such-node.invalid:3306\nhealth:\n  check: tcp\n",
    );
    let (code, stderr, _config) = check_file(&yaml);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr
                .contains("backends[1].address: no-such-node.invalid:3306 does not resolve now")
            && stderr.contains("it starts as down and is resolved again every 1s"),
        "{stderr}"
    );
    let lb = LbProcess::start(&yaml);
    assert!(
        lb.log()
            .contains("no-such-node.invalid:3306 does not resolve now"),
        "{}",
        lb.log()
    );
}

/// A line in /etc/hosts for the length of a test, taken out again when dropped (also when the
/// test panics).
struct HostsEntry {
    name: String,
}

impl HostsEntry {
    const HOSTS: &str = "/etc/hosts";

    /// Whether this process may write /etc/hosts (root, mostly).
    fn writable() -> bool {
        std::fs::OpenOptions::new()
            .append(true)
            .open(Self::HOSTS)
            .is_ok()
    }

    fn add(name: &str, ip: &str) -> HostsEntry {
        let entry = HostsEntry {
            name: name.to_string(),
        };
        let mut text = std::fs::read_to_string(Self::HOSTS).unwrap();
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("{ip} {name}\n"));
        std::fs::write(Self::HOSTS, text).unwrap();
        entry
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(Self::HOSTS) {
            let kept: String = text
                .lines()
                .filter(|line| line.split_whitespace().nth(1) != Some(self.name.as_str()))
                .map(|line| format!("{line}\n"))
                .collect();
            let _ = std::fs::write(Self::HOSTS, kept);
        }
    }
}

/// The greetings of `clients` new connections through `port`.
fn greetings(port: u16, clients: usize) -> Vec<String> {
    (0..clients)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            String::from_utf8_lossy(&read_greeting(&mut stream)).into_owned()
        })
        .collect()
}

/// A backend whose name resolves only after galera-lb started: it starts down, its reason
/// `unresolved`, while the other backend serves; once the name resolves (a line added to
/// /etc/hosts) it is resolved again within the back-off, checked, and gets clients. galera-lb
/// used to refuse to start (exit 64). Needs to write /etc/hosts (scripts/test runs as root):
/// fails, never skips, otherwise.
#[test]
fn a_backend_that_resolves_after_the_start_comes_up_and_gets_clients() {
    assert!(
        HostsEntry::writable(),
        "this test adds a line to /etc/hosts and cannot write it: run the tests as root \
         (scripts/test does)"
    );
    let name = format!("galera-lb-test-{}.invalid", std::process::id());
    let (port, admin_port) = (free_port(), free_port());
    let later = echo_backend("later");
    let yaml = simple_config(
        port,
        "round_robin",
        &[echo_backend("early")],
        &format!(
            "  - address: {name}:{}\nhealth:\n  check: tcp\n  interval: 200ms\n\
             admin:\n  bind: 127.0.0.1:{admin_port}\n",
            later.port()
        ),
    );
    let lb = LbProcess::start(&yaml);
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let backend = |status: &serde_json::Value| {
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"].as_str().unwrap().starts_with(&name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    let unresolved = backend(&lb::status(admin));
    assert_eq!(unresolved["health"], "down", "{unresolved}");
    assert!(
        unresolved["reason"]
            .as_str()
            .unwrap()
            .starts_with("unresolved"),
        "{unresolved}"
    );
    assert!(
        greetings(port, 4).iter().all(|g| g == "early\n"),
        "the other backend serves"
    );

    let _entry = HostsEntry::add(&name, "127.0.0.1");
    let deadline = Instant::now() + Duration::from_secs(45);
    while !greetings(port, 4).iter().any(|g| g == "later\n") {
        assert!(
            Instant::now() < deadline,
            "{name} resolves, but gets no clients: {}\nlog:\n{}",
            backend(&lb::status(admin)),
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let resolved = backend(&lb::status(admin));
    assert_eq!(resolved["health"], "up", "{resolved}");
    assert_eq!(
        resolved["socket_address"],
        format!("127.0.0.1:{}", later.port())
    );
}

#[test]
fn a_port_in_use_is_reported_with_its_holder() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let yaml = simple_config(port, "round_robin", &[echo_backend("hello")], NO_CHECKS);
    let (code, stderr) = run_refused(&yaml);
    assert_eq!(code, Some(1));
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
}

/// The admin and control ports in use are reported as those ports, with advice for them (it
/// used to read "listener 'admin'" and advise stopping mariadb).
#[test]
fn an_admin_or_control_port_in_use_is_reported_as_that_port() {
    for section in ["admin", "control"] {
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap();
        let yaml = simple_config(
            free_port(),
            "round_robin",
            &[echo_backend("hello")],
            &format!("{NO_CHECKS}{section}:\n  bind: {taken}\n"),
        );
        let (code, stderr) = run_refused(&yaml);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot listen on {taken} for the {section} port ({section}.bind): the address is already in use"
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("give {section}.bind another port")),
            "{stderr}"
        );
        assert!(
            !stderr.contains("listener") && !stderr.contains("mariadb"),
            "{stderr}"
        );
    }
}

/// A port below 1024 refused for want of privilege says how to allow it. Runs galera-lb as
/// `nobody` (through setpriv); skipped where that cannot be done.
#[test]
fn a_privileged_port_refused_says_how_to_allow_it() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and setpriv to run galera-lb as nobody");
        return;
    }
    let config = write_config(&simple_config(
        1023,
        "round_robin",
        &[echo_backend("hello")],
        NO_CHECKS,
    ));
    let mut permissions = std::fs::metadata(config.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
    std::fs::set_permissions(config.path(), permissions).unwrap();
    let out = std::process::Command::new("/usr/bin/setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_galera-lb"))
        .arg("--config")
        .arg(config.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Permission denied") && stderr.contains("galera-lb: cannot read") {
        eprintln!("skipped: nobody cannot run the test binary here: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot listen on 127.0.0.1:1023 for listener 'rw'")
            && stderr.contains("permission denied"),
        "{stderr}"
    );
    for advice in [
        "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "setcap cap_net_bind_service=+ep",
    ] {
        assert!(stderr.contains(advice), "no {advice:?} in: {stderr}");
    }
}

/// `--help` and the man page point at files an installed galera-lb has, not at the repository.
#[test]
fn help_and_man_page_point_at_installed_files() {
    let help = String::from_utf8(binary().arg("--help").output().unwrap().stdout).unwrap();
    let man = String::from_utf8(binary().args(["generate", "man"]).output().unwrap().stdout)
        .unwrap()
        .replace("\\-", "-");
    for (what, text) in [("--help", &help), ("the man page", &man)] {
        for repository_path in ["config/galera-lb.yaml", "scripts/sandbox"] {
            assert!(
                !text
                    .replace("/usr/share/doc/galera-lb/examples/galera-lb.yaml", "")
                    .contains(repository_path),
                "{what} names {repository_path}:\n{text}"
            );
        }
        assert!(
            text.contains("/usr/share/doc/galera-lb/examples/galera-lb.yaml"),
            "{what}:\n{text}"
        );
    }
}

#[test]
fn json_logs_on_request() {
    let port = free_port();
    let yaml = simple_config(
        port,
        "round_robin",
        &[echo_backend("hello")],
        &format!("{NO_CHECKS}log:\n  format: json\n"),
    );
    let lb = LbProcess::start(&yaml);
    let log = lb.log();
    let line = log.lines().find(|l| l.contains("ready")).unwrap();
    assert!(
        line.starts_with('{') && line.contains("\"level\":\"INFO\""),
        "{line}"
    );
}

#[test]
fn sigterm_stops_accepting_and_lets_open_sessions_finish() {
    let port = free_port();
    let yaml = simple_config(
        port,
        "round_robin",
        &[echo_backend("hello")],
        &format!("{NO_CHECKS}limits:\n  shutdown_grace: 10s\n"),
    );
    let mut lb = LbProcess::start(&yaml);
    let mut open = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(read_greeting(&mut open), b"hello\n");
    lb.signal(libc::SIGTERM);
    // Draining shows to clients: the listening socket closes, so new connects are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "new clients are still accepted 5 s after SIGTERM; log:\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "new clients are refused"
    );
    open.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    drop(open);
    let status = lb.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", lb.log());
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after "pid (comm)".
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// An admin connection opened (and served once) while descriptors were still free: galera-lb
/// cannot accept a new one once they run out, but answers on this one (HTTP/1.1 keep-alive).
struct KeptAdminConnection(TcpStream);

impl KeptAdminConnection {
    fn open(port: u16) -> KeptAdminConnection {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut kept = KeptAdminConnection(stream);
        kept.metrics();
        kept
    }

    /// `GET /metrics` on the kept connection: the body.
    fn metrics(&mut self) -> String {
        self.0
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.0
                .read_exact(&mut byte)
                .expect("an answer on the kept connection");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no Content-Length in {head}"));
        let mut body = vec![0u8; length];
        self.0.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }
}

#[test]
fn a_full_descriptor_budget_refuses_at_once_without_spinning_and_recovers() {
    let (port, admin_port) = (free_port(), free_port());
    let yaml = simple_config(
        port,
        "round_robin",
        &[echo_backend("hello")],
        &format!("{NO_CHECKS}admin:\n  bind: 127.0.0.1:{admin_port}\n  max_clients: 4\n"),
    );
    // 160 descriptors: 64 in reserve, 1 listener, 4 admin clients and 2 for the backend leave
    // room for (160 - 71) / 2 = 44 sessions.
    let lb = LbProcess::start_with(&yaml, with_descriptor_limit(160));
    assert!(
        lb.log().contains("leaves room for 44 client sessions"),
        "{}",
        lb.log()
    );
    let mut admin = KeptAdminConnection::open(admin_port);
    let refused = |metrics: &str| {
        lb::metric_in(
            metrics,
            "galera_lb_client_errors_total",
            &[("listener", "rw"), ("reason", "too_many_connections")],
        )
        .unwrap_or(0.0)
    };
    // Each proxied client costs two descriptors: more clients than fit.
    let mut clients = Vec::new();
    let (mut greeted, mut told) = (0, 0);
    for i in 0..60 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut buf = [0u8; 6];
        stream
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("client {i} got no answer: {e}\nlog:\n{}", lb.log()));
        if &buf == b"hello\n" {
            greeted += 1;
        } else {
            assert_eq!(
                buf[4], 0xFF,
                "client {i}: neither the greeting nor an ERR packet"
            );
            assert_eq!(u16::from_le_bytes([buf[5], 0]), 0x10, "ERROR 1040 (0x410)");
            told += 1;
        }
        clients.push(stream);
    }
    assert_eq!((greeted, told), (44, 16));
    let metrics = admin.metrics();
    assert_eq!(refused(&metrics), 16.0);
    let accept_errors = lb::metric_in(
        &metrics,
        "galera_lb_accept_errors_total",
        &[("listener", "rw")],
    );
    assert_eq!(accept_errors, Some(0.0), "no accept ran out of descriptors");
    let before = cpu_seconds(lb.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(lb.pid()) - before;
    assert!(
        used < 0.3,
        "galera-lb used {used:.2} s of CPU in 2 s with its descriptor budget full"
    );
    drop(clients);

    // Descriptors are free again: service resumes by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 6];
        match stream.read_exact(&mut buf) {
            Ok(()) if &buf == b"hello\n" => break,
            // Still an ERR packet, or nothing yet: try again.
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "service did not resume; log:\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
