//! Running galera-lb as a service, as an operator sees it, with the real binary in front of the
//! real Galera sandbox (`scripts/sandbox`; without one these tests fail, they are never skipped):
//!
//! - pools that no writer listener uses elect no writer: nothing about writers is logged or
//!   counted for a round-robin configuration (an HAProxy import, say);
//! - the log reads as an operator expects: no Rust `Some(...)`, no `old="down" new="down"`, a
//!   `ready` line that says how many backends are usable, and refused clients logged at most
//!   once a second with a count of the others;
//! - `galera-lb ctl` drives the control ports of several instances at once, with a token, and
//!   its exit status says whether every one of them did what it was asked.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use lb::{LbProcess, closed_address, free_port};
use support::sandbox;

/// A round-robin listener on `port` in front of the sandbox's three nodes and `extra_backend`,
/// with an admin port and a control port (`control_extra` added to its section).
struct Setup<'a> {
    port: u16,
    admin_port: u16,
    control_port: u16,
    extra_backend: SocketAddr,
    listener_extra: &'a str,
    control_extra: &'a str,
}

impl Setup<'_> {
    fn new() -> Setup<'static> {
        Setup {
            port: free_port(),
            admin_port: free_port(),
            control_port: free_port(),
            extra_backend: closed_address(),
            listener_extra: "",
            control_extra: "",
        }
    }

    fn yaml(&self) -> String {
        let cluster = sandbox::cluster();
        let mut yaml = format!(
            "listeners:\n  - name: rw\n    bind: 127.0.0.1:{}\n    policy: round_robin\n{}backends:\n",
            self.port, self.listener_extra
        );
        for n in 1..=3 {
            yaml.push_str(&format!("  - address: {}\n", cluster.node_address(n)));
        }
        yaml.push_str(&format!("  - address: {}\n", self.extra_backend));
        yaml.push_str(&format!(
            "health:\n  user: monitor\n  password: monitor\n  interval: 300ms\n  fall: 1\n  rise: 1\n\
             admin:\n  bind: 127.0.0.1:{}\ncontrol:\n  bind: 127.0.0.1:{}\n{}",
            self.admin_port, self.control_port, self.control_extra
        ));
        yaml
    }
}

/// Reads the first packet's first five bytes: a greeting (protocol 10) or an ERR packet (0xFF).
fn first_byte_of_first_packet(port: u16) -> u8 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).expect("a first packet");
    head[4]
}

#[test]
fn a_round_robin_pool_elects_no_writer_and_logs_nothing_about_writers() {
    let _shared = sandbox::shared_lock();
    let setup = Setup::new();
    let (port, admin_port) = (setup.port, setup.admin_port);
    let lb = LbProcess::start(&setup.yaml());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    for _ in 0..6 {
        assert_eq!(first_byte_of_first_packet(port), 10);
    }
    // A reload, which elects again where a writer is used.
    lb.signal(libc::SIGHUP);
    lb.wait_for_log("configuration reloaded", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(700));
    let log = lb.log();
    assert!(
        !log.contains("writer"),
        "a round-robin pool logged about writers:\n{log}"
    );
    let changes = lb::metric(
        admin,
        "galera_lb_writer_changes_total",
        &[("pool", "default")],
    );
    assert!(
        changes.is_none_or(|n| n == 0.0),
        "writer changes counted for a round-robin pool: {changes:?}"
    );
    let status = lb::status(admin);
    let roles: Vec<String> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["role"].to_string())
        .collect();
    assert!(roles.iter().all(|r| !r.contains("writer")), "{roles:?}");
}

#[test]
fn the_log_reads_as_an_operator_expects() {
    let _shared = sandbox::shared_lock();
    // One backend that is down from the first check; the listener takes one client.
    let setup = Setup {
        listener_extra: "    max_connections: 1\n",
        ..Setup::new()
    };
    let port = setup.port;
    let lb = LbProcess::start(&setup.yaml());
    let log = lb.log();
    assert!(log.contains("ready: 3 of 4 backends usable"), "{log}");

    // One client holds the listener's only slot; 50 more are refused within a second or two.
    let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut greeting = [0u8; 5];
    held.read_exact(&mut greeting).unwrap();
    for _ in 0..50 {
        assert_eq!(first_byte_of_first_packet(port), 0xFF);
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(first_byte_of_first_packet(port), 0xFF);
    std::thread::sleep(Duration::from_millis(200));
    let log = lb.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refusing client"))
        .collect();
    assert!(
        (2..=4).contains(&refusals.len()),
        "51 refused clients gave {} log lines:\n{}",
        refusals.len(),
        refusals.join("\n")
    );
    let suppressed: u64 = refusals
        .iter()
        .filter_map(|l| {
            l.split("suppressed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(
        suppressed as usize + refusals.len(),
        51,
        "{}",
        refusals.join("\n")
    );

    assert!(!log.contains("Some("), "Rust's Option in the log:\n{log}");
    for line in log.lines() {
        let field = |name: &str| {
            line.split(&format!(" {name}="))
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
        };
        if let (Some(old), Some(new)) = (field("old"), field("new")) {
            assert_ne!(old, new, "a change to the same state: {line}");
        }
    }
    drop(held);
}

/// Runs `galera-lb ctl ARGS` and returns its exit code, stdout and stderr.
fn ctl(args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = lb::binary();
    command
        .arg("ctl")
        .args(args)
        .env_remove("GALERA_LB_CONFIG")
        .env_remove("GALERA_LB_CONTROL");
    let run = lb::run_bounded(
        &mut command,
        std::process::Stdio::null(),
        Duration::from_secs(30),
    );
    (run.status.code(), run.stdout, run.stderr)
}

/// The admin state of `backend` in `getinfo json` from `control`.
fn admin_state(control: SocketAddr, backend: SocketAddr) -> String {
    let reply = lb::control(control, "getinfo json");
    let info: serde_json::Value = serde_json::from_str(&reply).unwrap();
    info["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == backend.to_string())
        .map(|b| b["admin"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{backend} not in {reply}"))
}

#[test]
fn ctl_drains_a_node_on_every_instance_and_says_when_one_fails() {
    let _shared = sandbox::shared_lock();
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "s3cret-token\n").unwrap();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let setup = Setup {
            control_extra: "  token: s3cret-token\n",
            ..Setup::new()
        };
        let lb = LbProcess::start(&setup.yaml());
        instances.push((lb, SocketAddr::from(([127, 0, 0, 1], setup.control_port))));
    }
    let node = sandbox::cluster().node_address(2);
    let (a, b) = (instances[0].1, instances[1].1);
    let (a_text, b_text) = (a.to_string(), b.to_string());
    let token = token_file.path().to_str().unwrap();
    let node_text = node.to_string();

    let (code, out, err) = ctl(&[
        "--control",
        &a_text,
        "--control",
        &b_text,
        "--token-file",
        token,
        "drain",
        &node_text,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, format!("{a}: Ok\n{b}: Ok\n"));
    assert_eq!(admin_state(a, node), "drain");
    assert_eq!(admin_state(b, node), "drain");

    // Without the token the change is refused, and the exit status says so.
    let (code, out, _) = ctl(&["--control", &a_text, "ready", &node_text]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("Error"), "{out}");
    assert_eq!(admin_state(a, node), "drain");

    // One instance unreachable: the other is still changed, and the status is 1.
    let closed = closed_address().to_string();
    let (code, out, err) = ctl(&[
        "--control",
        &a_text,
        "--control",
        &closed,
        "--token-file",
        token,
        "ready",
        &node_text,
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains(&format!("{closed}: cannot connect")), "{err}");
    assert_eq!(admin_state(a, node), "ready");

    // --json: one object per instance; getinfo's reply is its JSON.
    let (code, out, err) = ctl(&[
        "--control",
        &a_text,
        "--control",
        &b_text,
        "--json",
        "getinfo",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["control"], a_text.as_str());
    assert_eq!(objects[1]["ok"], true);
    assert!(objects[1]["reply"]["pools"].is_array(), "{out}");

    // The rest of the requests, on one instance.
    let (code, out, _) = ctl(&[
        "--control",
        &b_text,
        "--token-file",
        token,
        "ready",
        &node_text,
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "Ok\n"));
    let (code, out, _) = ctl(&["--control", &b_text, "health"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&node_text) && out.contains("admin=ready"),
        "{out}"
    );
    let (code, out, _) = ctl(&["--control", &b_text, "stats"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("in: "), "{out}");
    let (code, out, _) = ctl(&[
        "--control",
        &b_text,
        "--token-file",
        token,
        "weight",
        &node_text,
        "3",
    ]);
    assert_eq!((code, out.as_str()), (Some(0), "Ok\n"));
    let (code, out, _) = ctl(&["--control", &b_text, "--token-file", token, "reload"]);
    assert_eq!((code, out.as_str()), (Some(0), "Ok\n"));
}

#[test]
fn the_control_port_refuses_galera_lbs_own_ports_as_backends_and_says_why() {
    let _shared = sandbox::shared_lock();
    let setup = Setup::new();
    let lb = LbProcess::start(&setup.yaml());
    let control = SocketAddr::from(([127, 0, 0, 1], setup.control_port));
    // `localhost` alone is localhost:PORT of the first listener: galera-lb itself.
    let reply = lb::control(control, "localhost\n");
    assert_eq!(
        reply,
        format!(
            "Error: localhost:{} is galera-lb's own listener 'rw' (127.0.0.1:{}): its clients \
             would loop through galera-lb; give a database node's HOST:PORT\n",
            setup.port, setup.port
        )
    );
    let reply = lb::control(control, &format!("127.0.0.1:{}:1\n", setup.admin_port));
    assert!(
        reply.starts_with("Error: ") && reply.contains("own admin port"),
        "{reply}"
    );
    let reply = lb::control(
        control,
        &format!("[::ffff:127.0.0.1]:{}:2\n", setup.control_port),
    );
    assert!(
        reply.starts_with("Error: ") && reply.contains("own control port"),
        "{reply}"
    );
    // Nothing was added; a real node still can be.
    let info = lb::control(control, "getinfo json\n");
    assert_eq!(info.matches("\"address\"").count(), 4, "{info}");
    let node = sandbox::cluster().node_address(1);
    assert_eq!(lb::control(control, &format!("{node}:2\n")), "Ok\n");
    // Errors say why, with `Error` first (glbd's scripts compare the reply with `Ok`).
    assert_eq!(
        lb::control(control, "drain 127.0.0.1:9\n"),
        "Error: no backend 127.0.0.1:9\n"
    );
    drop(lb);
}

/// `getinfo json`'s view of `backend`: (admin state, weight).
fn admin_and_weight(control: SocketAddr, backend: SocketAddr) -> (String, f64) {
    let reply = lb::control(control, "getinfo json\n");
    let info: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let entry = info["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == backend.to_string())
        .unwrap_or_else(|| panic!("{backend} not in {reply}"))
        .clone();
    (
        entry["admin"].as_str().unwrap().to_string(),
        entry["weight"].as_f64().unwrap(),
    )
}

#[test]
fn admin_states_and_weights_survive_a_restart_through_the_state_file() {
    let _shared = sandbox::shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    let setup = Setup::new();
    let with_state =
        |yaml: String| format!("{yaml}runtime:\n  state_file: {}\n", state_file.display());
    let yaml = with_state(setup.yaml());
    let control = SocketAddr::from(([127, 0, 0, 1], setup.control_port));
    let cluster = sandbox::cluster();
    let (n1, n2) = (cluster.node_address(1), cluster.node_address(2));

    let mut lb = LbProcess::start(&yaml);
    assert_eq!(lb::control(control, &format!("drain {n1}\n")), "Ok\n");
    assert_eq!(lb::control(control, &format!("{n2}:3\n")), "Ok\n");
    // A backend added over the control port is not kept across a restart.
    assert_eq!(lb::control(control, "127.0.0.1:9:1\n"), "Ok\n");
    let saved = std::fs::read_to_string(&state_file).expect("the state file is written at once");
    assert!(
        saved.contains("\"drain\"") && saved.contains("\"weight\": 3.0"),
        "{saved}"
    );
    lb.signal(libc::SIGTERM);
    lb.wait_exit(Duration::from_secs(15));

    // The same configuration: the drain and the weight are back, the added backend is not.
    let mut lb = LbProcess::start(&yaml);
    assert_eq!(admin_and_weight(control, n1), ("drain".to_string(), 1.0));
    assert_eq!(admin_and_weight(control, n2), ("ready".to_string(), 3.0));
    let log = lb.log();
    assert!(
        log.contains("dropped the saved state of 127.0.0.1:9: the configuration does not list it"),
        "{log}"
    );
    let info = lb::control(control, "getinfo json\n");
    assert!(!info.contains("127.0.0.1:9\""), "{info}");
    lb.signal(libc::SIGTERM);
    lb.wait_exit(Duration::from_secs(15));

    // The file's weight for n2 changed: the file wins; n1 left the file: its drain is dropped.
    let edited = with_state(setup.yaml())
        .replace(
            &format!("  - address: {n2}\n"),
            &format!("  - address: {n2}\n    weight: 2\n"),
        )
        .replace(&format!("  - address: {n1}\n"), "");
    let lb = LbProcess::start(&edited);
    assert_eq!(admin_and_weight(control, n2), ("ready".to_string(), 2.0));
    let log = lb.log();
    assert!(
        log.contains(&format!("dropped the saved weight 3 of {n2}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("dropped the saved state of {n1}")),
        "{log}"
    );
}
