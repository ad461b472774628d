//! Hot reload, end to end: the real binary with a configuration file that each test rewrites,
//! then SIGHUP or the control port's `reload`. Backends are small fakes on threads (a greeting
//! line naming the backend, then echo); `health: check: none` unless a test changes it.
//!
//! What is checked: backends added, removed (their sessions closed) and reweighted; listeners
//! added (the new port accepts), removed (the port stops accepting, its open sessions stay) and
//! re-bound; health settings changed; sessions to kept backends untouched across every reload; an
//! invalid file refused with the reason in the log while the old configuration keeps running;
//! control-port changes discarded by a reload (as `src/state/updater.rs` documents) while admin states
//! stay.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use lb::{LbProcess, control, echo_backend, free_port};

/// A client session through galera-lb.
struct Session {
    stream: TcpStream,
    backend: String,
}

impl Session {
    fn open(port: u16) -> Session {
        Self::try_open(port).unwrap_or_else(|e| panic!("a session through port {port}: {e}"))
    }

    fn try_open(port: u16) -> std::io::Result<Session> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte)? {
                0 => return Err(std::io::Error::other("closed before the greeting")),
                _ if byte[0] == b'\n' => break,
                _ => line.push(byte[0]),
            }
        }
        Ok(Session {
            stream,
            backend: String::from_utf8_lossy(&line).into_owned(),
        })
    }

    /// A session that reached `name` (other sessions opened on the way are closed).
    fn open_to(port: u16, name: &str) -> Session {
        for _ in 0..50 {
            let session = Self::open(port);
            if session.backend == name {
                return session;
            }
        }
        panic!("no session through port {port} reached {name}");
    }

    /// Sends a line and reads it back: whether the session still works.
    fn works(&mut self) -> bool {
        let data = b"still here\n";
        if self.stream.write_all(data).is_err() {
            return false;
        }
        let mut back = [0u8; 11];
        self.stream.read_exact(&mut back).is_ok() && &back == data
    }

    /// Whether galera-lb closes this session within `within`.
    fn closed_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 16];
        matches!(self.stream.read(&mut buf), Ok(0))
            || matches!(self.stream.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// The backends `n` fresh sessions through `port` reach.
fn reached(port: u16, n: usize) -> Vec<String> {
    (0..n).map(|_| Session::open(port).backend).collect()
}

/// A configuration: `listeners` as (name, port), `backends` as (address, weight), then `extra`
/// (which sets `health:` or gets `check: none`), the control port, and the admin port on the
/// control port's partner (see [`admin_of`]).
fn config(
    listeners: &[(&str, u16)],
    backends: &[(SocketAddr, f64)],
    health: &str,
    control_port: u16,
) -> String {
    let mut yaml = String::from("listeners:\n");
    for (name, port) in listeners {
        yaml.push_str(&format!(
            "  - name: {name}\n    bind: 127.0.0.1:{port}\n    policy: round_robin\n"
        ));
    }
    yaml.push_str("backends:\n");
    for (address, weight) in backends {
        yaml.push_str(&format!("  - address: {address}\n    weight: {weight}\n"));
    }
    yaml.push_str(health);
    yaml.push_str(&format!(
        "control:\n  bind: 127.0.0.1:{control_port}\nadmin:\n  bind: {}\n\
         limits:\n  shutdown_grace: 1s\n",
        admin_of(control_port)
    ));
    yaml
}

/// The admin port that goes with a control port: one free port handed out per control port, the
/// same for every configuration a test writes (the admin port is not re-bound by a reload).
fn admin_of(control_port: u16) -> SocketAddr {
    static PARTNERS: std::sync::Mutex<Vec<(u16, u16)>> = std::sync::Mutex::new(Vec::new());
    let mut partners = PARTNERS.lock().unwrap();
    let admin = match partners.iter().find(|(c, _)| *c == control_port) {
        Some((_, admin)) => *admin,
        None => {
            let admin = free_port();
            partners.push((control_port, admin));
            admin
        }
    };
    SocketAddr::from(([127, 0, 0, 1], admin))
}

const NO_CHECKS: &str = "health:\n  check: none\n";

/// galera-lb and the address of its control port.
fn start(yaml: &str, control_port: u16) -> (LbProcess, SocketAddr) {
    let process = LbProcess::start(yaml);
    let address = format!("127.0.0.1:{control_port}").parse().unwrap();
    (process, address)
}

fn rewrite(process: &LbProcess, yaml: &str) {
    std::fs::write(process.config_path(), yaml).unwrap();
}

/// Reloads with `result` (`ok`, `error`) counted so far, read from the admin port that goes with
/// `control_port`.
fn reloads(control_port: u16, result: &str) -> u64 {
    lb::metric(
        admin_of(control_port),
        "galera_lb_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0) as u64
}

/// Waits until `count` reloads with `result` have been counted.
fn wait_for_reloads(control_port: u16, result: &str, count: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while reloads(control_port, result) < count {
        assert!(
            Instant::now() < deadline,
            "not {count} reloads with result {result} within {timeout:?}: {}",
            reloads(control_port, result)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        reloads(control_port, result),
        count,
        "reloads with result {result}"
    );
}

/// Waits until `text` has appeared `count` times in the log.
fn wait_for_count(process: &LbProcess, text: &str, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while process.log().matches(text).count() < count {
        assert!(
            Instant::now() < deadline,
            "{text:?} not logged {count} times within {timeout:?}; log:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `getinfo` rows as (address, weight, conns).
fn rows(getinfo: &str) -> Vec<(String, String, u64)> {
    getinfo
        .lines()
        .filter(|l| l.contains(" : ") && !l.contains("Address"))
        .map(|l| {
            let (address, rest) = l.split_once(" : ").unwrap();
            let f: Vec<&str> = rest.split_whitespace().collect();
            (
                address.trim().to_string(),
                f[0].to_string(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn row(address: SocketAddr, weight: &str, conns: u64) -> (String, String, u64) {
    (address.to_string(), weight.to_string(), conns)
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn accepting(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Waits up to 3 s for `accepting(port)` to become `expected`.
fn wait_accepting(port: u16, expected: bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while accepting(port) != expected {
        assert!(
            Instant::now() < deadline,
            "port {port} accepting should be {expected}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The seconds between consecutive health checks of `backend`, from `/status`'s `last_check`:
/// four gaps, after skipping the first two checks seen (which may still be the old settings'),
/// within `timeout`.
fn check_gaps(admin: SocketAddr, backend: SocketAddr, timeout: Duration) -> Vec<f64> {
    let deadline = Instant::now() + timeout;
    let mut checks: Vec<f64> = Vec::new();
    while checks.len() < 7 {
        assert!(
            Instant::now() < deadline,
            "fewer than 7 checks of {backend} within {timeout:?}: {checks:?}"
        );
        let status = lb::status(admin);
        let last = status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == backend.to_string())
            .unwrap_or_else(|| panic!("{backend} in {status}"))["last_check"]
            .as_f64();
        if let Some(last) = last
            && checks.last() != Some(&last)
        {
            checks.push(last);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    checks[2..].windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn sighup_and_reload_add_remove_and_reweight_backends_and_keep_sessions_to_kept_ones() {
    let (a, b, c) = (echo_backend("a"), echo_backend("b"), echo_backend("c"));
    let (port, control_port) = (free_port(), free_port());
    let listeners = [("rw", port)];
    let (mut process, ctl) = start(
        &config(&listeners, &[(a, 1.0), (b, 1.0)], NO_CHECKS, control_port),
        control_port,
    );
    let mut on_a = Session::open_to(port, "a");
    let mut on_b = Session::open_to(port, "b");

    // SIGHUP: a reweighted, b removed, c added.
    rewrite(
        &process,
        &config(&listeners, &[(a, 3.0), (c, 1.0)], NO_CHECKS, control_port),
    );
    process.signal(libc::SIGHUP);
    wait_for_reloads(control_port, "ok", 1, Duration::from_secs(5));
    // What the reload changed (a reweighted, b removed, c added) is the routing itself.
    let info = control(ctl, "getinfo\n");
    assert_eq!(
        rows(&info),
        [row(a, "3.000", 1), row(c, "1.000", 0)],
        "{info}"
    );
    assert!(on_a.works(), "the session to a kept backend survives");
    assert!(
        on_b.closed_within(Duration::from_secs(2)),
        "b's session is closed"
    );
    let names = reached(port, 4);
    assert_eq!(names, ["a", "c", "a", "c"], "round robin over a and c");

    // `reload` over the control port: b is back.
    rewrite(
        &process,
        &config(
            &listeners,
            &[(a, 3.0), (b, 2.0), (c, 1.0)],
            NO_CHECKS,
            control_port,
        ),
    );
    assert_eq!(control(ctl, "reload\n"), "Ok\n");
    let info = control(ctl, "getinfo\n");
    assert_eq!(
        rows(&info),
        [row(a, "3.000", 1), row(b, "2.000", 0), row(c, "1.000", 0)],
        "{info}"
    );
    assert!(on_a.works());

    // More SIGHUPs with an unchanged file change nothing and drop nothing. (Each is waited for:
    // signals sent in a burst may coalesce into fewer reloads, as signals do.)
    for n in 3..8 {
        process.signal(libc::SIGHUP);
        wait_for_reloads(control_port, "ok", n, Duration::from_secs(5));
    }
    assert_eq!(control(ctl, "getinfo\n"), info);
    assert!(on_a.works());
    assert_eq!(Session::open(port).backend.len(), 1);

    process.signal(libc::SIGTERM);
    assert!(process.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn listeners_are_added_removed_and_rebound_and_their_open_sessions_stay() {
    let a = echo_backend("a");
    let control_port = free_port();
    let (p1, p2, p3, p4) = (free_port(), free_port(), free_port(), free_port());
    let (mut process, ctl) = start(
        &config(
            &[("rw", p1), ("ro", p2)],
            &[(a, 1.0)],
            NO_CHECKS,
            control_port,
        ),
        control_port,
    );
    let mut via_p1 = Session::open(p1);
    let mut via_p2 = Session::open(p2);
    assert!(!accepting(p3) && !accepting(p4));

    // rw moves from p1 to p4, ro goes away, extra comes on p3.
    rewrite(
        &process,
        &config(
            &[("rw", p4), ("extra", p3)],
            &[(a, 1.0)],
            NO_CHECKS,
            control_port,
        ),
    );
    assert_eq!(control(ctl, "reload\n"), "Ok\n");
    // extra added, ro removed, rw re-bound: the routing lists rw and extra, and the ports below
    // show where each accepts.
    let json: serde_json::Value = serde_json::from_str(&control(ctl, "getinfo json\n")).unwrap();
    let mut names: Vec<&str> = json["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["listener"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["extra", "rw"], "{json}");
    wait_accepting(p1, false);
    wait_accepting(p2, false);
    assert_eq!(Session::open(p3).backend, "a", "the new listener accepts");
    assert_eq!(
        Session::open(p4).backend,
        "a",
        "the re-bound listener accepts"
    );
    assert!(via_p1.works(), "a session through the old bind stays");
    assert!(via_p2.works(), "a session through a removed listener stays");

    // ro comes back on its old port; extra goes.
    rewrite(
        &process,
        &config(
            &[("rw", p4), ("ro", p2)],
            &[(a, 1.0)],
            NO_CHECKS,
            control_port,
        ),
    );
    process.signal(libc::SIGHUP);
    wait_for_reloads(control_port, "ok", 2, Duration::from_secs(5));
    wait_accepting(p3, false);
    assert_eq!(Session::open(p2).backend, "a");
    assert!(via_p1.works() && via_p2.works());
    // The sessions through closed listeners are still counted (once the proxy has seen the
    // session just opened on p2 close), and end normally.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let info = control(ctl, "getinfo\n");
        if info.contains("total connections: 2 of") {
            break;
        }
        assert!(Instant::now() < deadline, "{info}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((via_p1, via_p2));

    process.signal(libc::SIGTERM);
    assert!(process.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn health_settings_change_with_a_reload() {
    let a = echo_backend("a");
    let dead = lb::closed_address();
    let (port, control_port) = (free_port(), free_port());
    let listeners = [("rw", port)];
    let backends = [(a, 1.0), (dead, 1.0)];
    let (process, ctl) = start(
        &config(&listeners, &backends, NO_CHECKS, control_port),
        control_port,
    );
    let mut on_a = Session::open_to(port, "a");
    let health_of = |address: SocketAddr| {
        let health = control(ctl, "health\n");
        health
            .lines()
            .find(|l| l.contains(&format!(" {address} ")))
            .unwrap_or_else(|| panic!("{address} in {health}"))
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_string()
    };
    let wait_health = |address: SocketAddr, expected: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while health_of(address) != expected {
            assert!(
                Instant::now() < deadline,
                "{address} not {expected} in 5 s: {}",
                control(ctl, "health\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Without checks every backend counts as up.
    assert_eq!(health_of(dead), "up");

    let tcp_checks =
        "health:\n  check: tcp\n  interval: 200ms\n  timeout: 200ms\n  rise: 1\n  fall: 1\n";
    rewrite(
        &process,
        &config(&listeners, &backends, tcp_checks, control_port),
    );
    assert_eq!(control(ctl, "reload\n"), "Ok\n");
    // The new checks run: `dead` goes down.
    wait_health(dead, "down");
    assert_eq!(health_of(a), "up");
    let json: serde_json::Value = serde_json::from_str(&control(ctl, "getinfo json\n")).unwrap();
    assert_eq!(json["pools"][0]["backends"][1]["healthy"], false);
    assert!(reached(port, 6).iter().all(|n| n == "a"));
    assert!(on_a.works());

    // Other check settings (a slower interval, fall 2): the checks restart, health is kept.
    let slower =
        "health:\n  check: tcp\n  interval: 400ms\n  timeout: 200ms\n  rise: 1\n  fall: 2\n";
    rewrite(
        &process,
        &config(&listeners, &backends, slower, control_port),
    );
    assert_eq!(control(ctl, "reload\n"), "Ok\n");
    // The checks restarted with the new settings: `a` is checked every 400 ms now, not 200.
    let gaps = check_gaps(admin_of(control_port), a, Duration::from_secs(5));
    assert!(
        gaps.iter().all(|gap| *gap >= 0.4),
        "seconds between checks of a, after the reload to a 400 ms interval: {gaps:?}"
    );
    for _ in 0..10 {
        assert_eq!(
            (health_of(a).as_str(), health_of(dead).as_str()),
            ("up", "down")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(reached(port, 4).iter().all(|n| n == "a"));
    assert!(on_a.works());
}

/// Switching checks off by a reload should make every backend usable again, as `check: none`
/// means at start ("every backend counts as usable").
#[test]
fn a_reload_to_check_none_makes_every_backend_usable() {
    let a = echo_backend("a");
    let dead = lb::closed_address();
    let (port, control_port) = (free_port(), free_port());
    let listeners = [("rw", port)];
    let tcp_checks =
        "health:\n  check: tcp\n  interval: 200ms\n  timeout: 200ms\n  rise: 1\n  fall: 1\n";
    let (process, ctl) = start(
        &config(
            &listeners,
            &[(a, 1.0), (dead, 1.0)],
            tcp_checks,
            control_port,
        ),
        control_port,
    );
    assert!(control(ctl, "health\n").contains(&format!("{dead} down")));
    // Checks off: `dead` counts as usable again (connect failover protects clients from it).
    rewrite(
        &process,
        &config(
            &listeners,
            &[(a, 1.0), (dead, 1.0)],
            NO_CHECKS,
            control_port,
        ),
    );
    assert_eq!(control(ctl, "reload\n"), "Ok\n");
    std::thread::sleep(Duration::from_secs(2));
    let health = control(ctl, "health\n");
    assert!(
        health.contains(&format!("{dead} up")),
        "still down 2 s after checks were turned off:\n{health}"
    );
}

#[test]
fn an_invalid_file_is_refused_with_the_reason_and_the_old_configuration_keeps_running() {
    let (a, b) = (echo_backend("a"), echo_backend("b"));
    let (port, control_port) = (free_port(), free_port());
    let listeners = [("rw", port)];
    let good = config(&listeners, &[(a, 1.0), (b, 2.0)], NO_CHECKS, control_port);
    let (mut process, ctl) = start(&good, control_port);
    let mut on_a = Session::open_to(port, "a");
    let info = control(ctl, "getinfo\n");

    // A port another process holds, for a listener that cannot be bound.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let taken_address = format!("127.0.0.1:{taken}");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad YAML",
            "listeners: [\n  - name: rw\n".to_string(),
            "reload refused",
        ),
        (
            "an unknown field",
            good.replace("    weight: 1\n", "    weight: 1\n    colour: red\n"),
            "unknown field `colour`",
        ),
        (
            "a bad weight",
            good.replace("    weight: 2\n", "    weight: -2\n"),
            "backends[1].weight: must be a number greater than 0, not -2",
        ),
        (
            "a weight that is not a number",
            good.replace("    weight: 2\n", "    weight: heavy\n"),
            "backends[1].weight",
        ),
        ("an empty file", String::new(), "reload refused"),
        (
            "a listener on a port in use",
            config(
                &[("rw", port), ("extra", taken)],
                &[(a, 1.0), (b, 2.0)],
                NO_CHECKS,
                control_port,
            ),
            &taken_address,
        ),
    ];
    for (i, (what, yaml, reason)) in cases.iter().enumerate() {
        rewrite(&process, yaml);
        let reply = control(ctl, "reload\n");
        // The reply says why (the log has the whole reason; "reload refused" is the log's).
        assert!(
            reply.starts_with("Error: ") && (*reason == "reload refused" || reply.contains(reason)),
            "{what}: {reply}"
        );
        wait_for_count(
            &process,
            "reload refused",
            2 * i + 1,
            Duration::from_secs(5),
        );
        // And in the log, with the same reason.
        let log = process.log();
        let refusal = log.lines().rfind(|l| l.contains("reload refused")).unwrap();
        assert!(refusal.contains(reason), "{what}: {refusal}");
        assert_eq!(reloads(control_port, "error"), 2 * i as u64 + 1, "{what}");
        // SIGHUP with the same file: refused too, galera-lb carries on.
        process.signal(libc::SIGHUP);
        wait_for_reloads(
            control_port,
            "error",
            2 * i as u64 + 2,
            Duration::from_secs(5),
        );
        assert_eq!(
            control(ctl, "getinfo\n"),
            info,
            "{what}: the routing is unchanged"
        );
        assert!(on_a.works(), "{what}: the open session is untouched");
        let names = reached(port, 2);
        assert!(
            names.contains(&"a".into()) && names.contains(&"b".into()),
            "{what}"
        );
    }
    assert_eq!(
        reloads(control_port, "ok"),
        0,
        "a refused reload counts as refused only"
    );

    // Fixed: accepted again.
    rewrite(
        &process,
        &good.replace("    weight: 2\n", "    weight: 5\n"),
    );
    assert_eq!(control(ctl, "reload\n"), "Ok\n");
    assert!(control(ctl, "getinfo\n").contains(" :    5.000 "));
    assert!(on_a.works());
    process.signal(libc::SIGTERM);
    assert!(process.wait_exit(Duration::from_secs(10)).success());
}

/// A reload that brings a backend whose name does not resolve is applied, as a start would be
/// (it used to be refused): that backend is down, reason `unresolved`, the log says so, and the
/// others serve.
#[test]
fn a_reload_with_a_name_that_does_not_resolve_is_applied_with_that_backend_down() {
    let (a, b) = (echo_backend("a"), echo_backend("b"));
    let (port, control_port) = (free_port(), free_port());
    let good = config(
        &[("rw", port)],
        &[(a, 1.0), (b, 1.0)],
        NO_CHECKS,
        control_port,
    );
    let (process, ctl) = start(&good, control_port);
    rewrite(
        &process,
        &good.replace(&b.to_string(), "no-such-host.invalid:3306"),
    );
    assert_eq!(control(ctl, "reload\n"), "Ok\n", "{}", process.log());
    // The log line is written before the reply, but it reaches us through a pipe reader thread.
    process.wait_for_log(
        &format!(
            "reload: {}: backends[1].address: no-such-host.invalid:3306 does not resolve now",
            process.config_path().display()
        ),
        Duration::from_secs(5),
    );
    let health = control(ctl, "health\n");
    assert!(
        health.contains(
            "default no-such-host.invalid:3306 down admin=ready role=reader reason=unresolved: "
        ),
        "{health}"
    );
    assert!(reached(port, 4).iter().all(|name| name == "a"));
}

#[test]
fn a_reload_discards_runtime_control_changes_and_keeps_admin_states() {
    let (a, b, c) = (echo_backend("a"), echo_backend("b"), echo_backend("c"));
    let (port, control_port) = (free_port(), free_port());
    let yaml = config(
        &[("rw", port)],
        &[(a, 1.0), (b, 1.0)],
        NO_CHECKS,
        control_port,
    );
    let (process, ctl) = start(&yaml, control_port);

    assert_eq!(
        control(ctl, &format!("{c}:2\n{a}:5\n{b}:-1\n")),
        "Ok\nOk\nOk\n"
    );
    let info = control(ctl, "getinfo\n");
    assert_eq!(
        rows(&info),
        [row(a, "5.000", 0), row(c, "2.000", 0)],
        "{info}"
    );
    let mut on_c = Session::open_to(port, "c");
    let mut on_a = Session::open_to(port, "a");
    assert_eq!(control(ctl, &format!("drain {a}\n")), "Ok\n");

    // The file is the truth again: a back to 1, b back, c gone (and its session closed).
    assert_eq!(control(ctl, "reload\n"), "Ok\n");
    let info = control(ctl, "getinfo\n");
    assert_eq!(
        rows(&info),
        [row(a, "1.000", 1), row(b, "1.000", 0)],
        "{info}"
    );
    // Kept on the log: how many runtime changes a reload discarded is told only there (docs/src/operations.md:
    // "the log counts them"); the routing above shows that they were.
    process.wait_for_log("runtime_changes_discarded=3", Duration::from_secs(5));
    assert!(on_c.closed_within(Duration::from_secs(2)));
    // The admin state is the backend's own: a stays drained, its session stays open.
    let json: serde_json::Value = serde_json::from_str(&control(ctl, "getinfo json\n")).unwrap();
    assert_eq!(json["pools"][0]["backends"][0]["admin"], "drain");
    assert!(reached(port, 4).iter().all(|n| n == "b"));
    assert!(on_a.works());
    assert_eq!(control(ctl, &format!("ready {a}\n")), "Ok\n");
    assert!(reached(port, 4).contains(&"a".to_string()));
}
