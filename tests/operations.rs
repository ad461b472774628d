//! Running galera-lb as a service, as an operator sees it, with the real binary in front of the
//! real Galera sandbox (`scripts/sandbox`; without one these tests fail, they are never skipped):
//!
//! - pools that no writer listener uses elect no writer: nothing about writers is logged or
//!   counted for a round-robin configuration (an HAProxy import, say);
//! - the log reads as an operator expects: no Rust `Some(...)`, no `old="down" new="down"`, a
//!   `ready` line that says how many backends are usable, and refused clients logged at most
//!   once a second with a count of the others.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use lb::{LbProcess, closed_address, free_port};
use support::sandbox;

/// A round-robin listener in front of the sandbox's three nodes and `extra_backend`.
fn round_robin_config(
    port: u16,
    admin_port: u16,
    extra_backend: SocketAddr,
    listener: &str,
) -> String {
    let cluster = sandbox::cluster();
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n    policy: round_robin\n{listener}backends:\n"
    );
    for n in 1..=3 {
        yaml.push_str(&format!("  - address: {}\n", cluster.node_address(n)));
    }
    yaml.push_str(&format!("  - address: {extra_backend}\n"));
    yaml.push_str(&format!(
        "health:\n  user: monitor\n  password: monitor\n  interval: 300ms\n  fall: 1\n  rise: 1\n\
         admin:\n  bind: 127.0.0.1:{admin_port}\ncontrol:\n  bind: 127.0.0.1:{}\n",
        free_port()
    ));
    yaml
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
    let (port, admin_port) = (free_port(), free_port());
    let lb = LbProcess::start(&round_robin_config(port, admin_port, closed_address(), ""));
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
    let (port, admin_port) = (free_port(), free_port());
    // One backend that is down from the first check; the listener takes one client.
    let yaml = round_robin_config(
        port,
        admin_port,
        closed_address(),
        "    max_connections: 1\n",
    );
    let lb = LbProcess::start(&yaml);
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
