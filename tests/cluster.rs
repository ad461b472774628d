//! End-to-end tests of galera-lb (the real binary) in front of the real three-node Galera sandbox
//! (`scripts/sandbox`). Without a cluster these tests fail with a message that says how to get
//! one; they are never skipped.
//!
//! Tests that only read take the sandbox's shared lock; a test that stops a node takes the fault
//! lock and brings the node back before it releases it. Each test has its own runtime, so
//! holding those (blocking) locks across `.await` is what serialises the tests, on purpose.
#![allow(clippy::await_holding_lock)]

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use lb::{LbProcess, NO_CHECKS, free_port, simple_config};
use mysql_async::Conn;
use mysql_async::prelude::*;
use support::load::app_opts;
use support::sandbox;

async fn connect(port: u16) -> Conn {
    Conn::new(app_opts(port))
        .await
        .expect("connect through galera-lb")
}

async fn node_name(conn: &mut Conn) -> String {
    conn.query_first::<String, _>("SELECT @@wsrep_node_name")
        .await
        .unwrap()
        .unwrap()
}

/// Starts galera-lb on a free port in front of the sandbox with `policy` and the given weights.
fn lb_in_front(policy: &str, weights: &[f64], extra: &str) -> (LbProcess, u16) {
    let nodes = &sandbox::cluster().addresses;
    let port = free_port();
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n    policy: {policy}\nbackends:\n"
    );
    for (node, weight) in nodes.iter().zip(weights) {
        yaml.push_str(&format!("  - address: {node}\n    weight: {weight}\n"));
    }
    yaml.push_str("health:\n  user: monitor\n  password: monitor\n  interval: 300ms\n");
    yaml.push_str(extra);
    (LbProcess::start(&yaml), port)
}

/// Opens `clients` connections at once, asks each for its node's name, and counts the names.
/// The connections stay open until every client has answered.
async fn spread(port: u16, clients: usize) -> BTreeMap<String, usize> {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = connect(port).await;
                let name = node_name(&mut conn).await;
                (name, conn)
            })
        })
        .collect();
    let mut counts = BTreeMap::new();
    let mut held = Vec::new();
    for task in tasks {
        let (name, conn) = task.await.unwrap();
        *counts.entry(name).or_insert(0) += 1;
        held.push(conn);
    }
    for conn in held {
        conn.disconnect().await.unwrap();
    }
    counts
}

/// Opens `clients` connections one after another (each closed before the next), counting names.
async fn sequential_spread(port: u16, clients: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..clients {
        let mut conn = connect(port).await;
        *counts.entry(node_name(&mut conn).await).or_insert(0) += 1;
        conn.disconnect().await.unwrap();
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_spreads_concurrent_clients_as_it_should() {
    let _shared = sandbox::shared_lock();

    let (_lb, port) = lb_in_front("round_robin", &[1.0, 1.0, 1.0], "");
    assert_eq!(
        spread(port, 60).await,
        counts(&[("node1", 20), ("node2", 20), ("node3", 20)])
    );

    let (_lb, port) = lb_in_front("weighted", &[1.0, 2.0, 3.0], "");
    assert_eq!(
        spread(port, 60).await,
        counts(&[("node1", 10), ("node2", 20), ("node3", 30)])
    );

    // Every client holds its connection, so least_conn fills the nodes by weight.
    let (_lb, port) = lb_in_front("least_conn", &[1.0, 1.0, 2.0], "");
    let seen = spread(port, 40).await;
    assert_eq!(seen.values().sum::<usize>(), 40);
    for (node, expected) in [("node1", 10), ("node2", 10), ("node3", 20)] {
        let got = seen.get(node).copied().unwrap_or(0);
        assert!(got.abs_diff(expected) <= 2, "least_conn: {seen:?}");
    }

    let (_lb, port) = lb_in_front("random", &[1.0, 1.0, 4.0], "");
    let seen = sequential_spread(port, 120).await;
    assert_eq!(seen.len(), 3, "random reaches every node: {seen:?}");
    assert!(
        seen["node3"] > seen["node1"] && seen["node3"] > seen["node2"],
        "random: {seen:?}"
    );

    // One client address: source hashing sends it to one node every time.
    let (_lb, port) = lb_in_front("source", &[1.0, 1.0, 1.0], "");
    let seen = spread(port, 30).await;
    assert_eq!(seen.len(), 1, "source: {seen:?}");

    let (_lb, port) = lb_in_front("single", &[1.0, 3.0, 2.0], "");
    assert_eq!(spread(port, 30).await, counts(&[("node2", 30)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_megabytes_each_way_arrive_intact() {
    let _shared = sandbox::shared_lock();
    let (_lb, port) = lb_in_front("round_robin", &[1.0, 1.0, 1.0], "");
    let mut conn = connect(port).await;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS lbtest")
        .await
        .unwrap();
    conn.query_drop("DROP TABLE IF EXISTS lbtest.bulk")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE lbtest.bulk (id INT PRIMARY KEY, data LONGBLOB)")
        .await
        .unwrap();

    // Upload 8 MiB of pseudo-random bytes in one statement through galera-lb...
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let data: Vec<u8> = (0..8 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    conn.exec_drop("INSERT INTO lbtest.bulk VALUES (1, ?)", (data.clone(),))
        .await
        .unwrap();
    // ...the server's checksum of what it received matches ours...
    let expected = sha256_hex(&data);
    let server_sum: String = conn
        .query_first("SELECT SHA2(data, 256) FROM lbtest.bulk WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server_sum, expected, "the upload arrived changed");
    // ...and the download through galera-lb is byte for byte what we sent.
    let back: Vec<u8> = conn
        .query_first("SELECT data FROM lbtest.bulk WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the download arrived changed");
    conn.query_drop("DROP TABLE lbtest.bulk").await.unwrap();
    conn.disconnect().await.unwrap();
}

/// SHA-256 as MySQL's SHA2(x, 256) prints it, by asking `sha256sum` (no extra crate for a test).
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_test_fails_its_sessions_and_new_clients_go_elsewhere() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    // No health checks: this is about connect failover alone.
    let (port, admin_port) = (free_port(), free_port());
    let _lb = LbProcess::start(&simple_config(
        port,
        "round_robin",
        &cluster.addresses,
        &format!("{NO_CHECKS}admin:\n  bind: 127.0.0.1:{admin_port}\n"),
    ));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));

    let mut sessions = Vec::new();
    for _ in 0..9 {
        let mut conn = connect(port).await;
        let name = node_name(&mut conn).await;
        sessions.push((name, conn));
    }
    cluster.kill(3);

    let mut failed_on_node3 = 0;
    for (name, mut conn) in sessions {
        let result = conn.query_first::<i64, _>("SELECT 1").await;
        if name == "node3" {
            assert!(result.is_err(), "a session on the killed node cannot go on");
            failed_on_node3 += 1;
        } else {
            assert_eq!(result.unwrap(), Some(1), "sessions on {name} are untouched");
        }
    }
    assert_eq!(failed_on_node3, 3);

    // Without health checks, a refused connect moves on to the next node: no client notices.
    let seen = sequential_spread(port, 30).await;
    assert_eq!(seen.values().sum::<usize>(), 30);
    assert!(!seen.contains_key("node3"), "{seen:?}");
    // ...because galera-lb met node3's closed port and moved on.
    let node3 = cluster.node_address(3).to_string();
    let refused = lb::metric(
        admin,
        "galera_lb_backend_connect_errors_total",
        &[("backend", &node3), ("reason", "refused")],
    );
    assert!(
        refused.is_some_and(|n| n >= 1.0),
        "refused connects to node3: {refused:?}"
    );

    cluster.start_node(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_backend_can_be_reached_clients_get_an_err_packet() {
    let port = free_port();
    let dead: Vec<SocketAddr> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    let _lb = LbProcess::start(&simple_config(port, "round_robin", &dead, NO_CHECKS));

    let error = Conn::new(app_opts(port))
        .await
        .expect_err("no backend to reach");
    match error {
        mysql_async::Error::Server(e) => {
            assert_eq!(e.code, 1429);
            // mysql_async leaves the "#SQLSTATE" marker in the message of an error that comes
            // before the greeting; libmariadb, Connector/J, Go and PyMySQL strip it.
            assert!(
                e.message
                    .contains("galera-lb: cannot connect to any backend"),
                "{e:?}"
            );
        }
        other => panic!("expected a server ERR packet, got {other:?}"),
    }

    let plain = mysql_cli(port, &["--skip-ssl"]);
    assert!(
        plain.contains("ERROR 1429 (HY000): galera-lb: cannot connect to any backend"),
        "{plain}"
    );
    // By default MariaDB's client asks for TLS and wraps an early error, but still prints it.
    let wrapped = mysql_cli(port, &[]);
    assert!(
        wrapped.contains("1429 - galera-lb: cannot connect to any backend"),
        "{wrapped}"
    );
}

/// Runs the mysql command-line client through galera-lb and returns what it printed on stderr,
/// which must be an ERROR line, never "Lost connection".
fn mysql_cli(port: u16, options: &[&str]) -> String {
    let port = format!("-P{port}");
    let out = Command::new("mysql")
        .args(options)
        .args(["-h127.0.0.1", &port, "-uapp", "-papp", "-e", "SELECT 1"])
        .output()
        .expect("the mysql client (Debian package mariadb-client)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(stderr.starts_with("ERROR "), "{stderr}");
    assert!(!stderr.contains("Lost connection"), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_the_mysql_client_prints_error_1040() {
    let _shared = sandbox::shared_lock();
    let limit = "limits:\n  max_connections: 2\n";
    let (_lb, port) = lb_in_front("round_robin", &[1.0, 1.0, 1.0], limit);
    let _a = connect(port).await;
    let _b = connect(port).await;
    let plain = mysql_cli(port, &["--skip-ssl"]);
    let expected = "ERROR 1040 (08004): Too many connections (galera-lb: the global \
                    max_connections (2) is reached)";
    assert!(plain.contains(expected), "{plain}");
    let wrapped = mysql_cli(port, &[]);
    assert!(
        wrapped.contains("1040 - Too many connections (galera-lb"),
        "{wrapped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_query_finish() {
    let _shared = sandbox::shared_lock();
    let (mut lb, port) = lb_in_front(
        "round_robin",
        &[1.0, 1.0, 1.0],
        "limits:\n  shutdown_grace: 20s\n",
    );
    let mut conn = connect(port).await;
    let started = Instant::now();
    let query = tokio::spawn(async move {
        let slept: Option<i64> = conn.query_first("SELECT SLEEP(2)").await.unwrap();
        conn.disconnect().await.unwrap();
        slept
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    lb.signal(libc::SIGTERM);
    // Draining shows to clients: the listening socket closes, so new clients are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(conn) = Conn::new(app_opts(port)).await {
        conn.disconnect().await.unwrap();
        assert!(
            Instant::now() < deadline,
            "new clients are still served 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        Conn::new(app_opts(port)).await.is_err(),
        "new clients are refused while draining"
    );
    assert_eq!(
        query.await.unwrap(),
        Some(0),
        "SELECT SLEEP(2) completed normally"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    let status = lb.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", lb.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_down_shutdown_sessions_closes_the_sessions_of_a_failed_node() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let health = "  timeout: 300ms\n  on_down: shutdown_sessions\n";
    let (port, admin_port) = (free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let mut yaml = format!("listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\nbackends:\n");
    for node in &cluster.addresses {
        yaml.push_str(&format!("  - address: {node}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  user: monitor\n  password: monitor\n  interval: 300ms\n{health}\
         admin:\n  bind: 127.0.0.1:{admin_port}\n"
    ));
    let lb = LbProcess::start(&yaml);

    let mut sessions = Vec::new();
    for _ in 0..6 {
        let mut conn = connect(port).await;
        let name = node_name(&mut conn).await;
        sessions.push((name, conn));
    }
    let node2 = cluster.node_address(2).to_string();
    let on_node2 = sessions.iter().filter(|(name, _)| name == "node2").count();
    assert!(on_node2 > 0, "round robin put a session on node2");
    assert_eq!(
        lb::metric(
            admin,
            "galera_lb_backend_connections_active",
            &[("backend", &node2)]
        ),
        Some(on_node2 as f64)
    );
    cluster.reject_queries(2, true);
    // node2 goes down, and galera-lb closes its sessions: none is left open.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = lb::http_get(admin, "/metrics").body;
        let of_node2 = |name| lb::metric_in(&metrics, name, &[("backend", &node2)]);
        if of_node2("galera_lb_backend_up") == Some(0.0)
            && of_node2("galera_lb_backend_connections_active") == Some(0.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node2 is not down with its sessions closed within 5 s:\n{metrics}\nlog:\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (name, mut conn) in sessions {
        let result = conn.query_first::<i64, _>("SELECT 1").await;
        if name == "node2" {
            assert!(
                result.is_err(),
                "the session on node2 was closed by galera-lb"
            );
        } else {
            assert_eq!(result.unwrap(), Some(1), "sessions on {name} are untouched");
        }
    }
    cluster.reject_queries(2, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_login_that_fails_reports_the_server_error_and_keeps_the_node_out() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    for check in ["handshake", "wsrep"] {
        let (port, admin_port) = (free_port(), free_port());
        let yaml = format!(
            "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\nbackends:\n  - address: {}\n\
             health:\n  check: {check}\n  user: monitor\n  password: wrong\n  interval: 300ms\n\
             admin:\n  bind: 127.0.0.1:{admin_port}\n",
            cluster.node_address(1)
        );
        let lb = LbProcess::start(&yaml);
        let error = Conn::new(app_opts(port))
            .await
            .expect_err("no usable backend");
        match error {
            mysql_async::Error::Server(e) => {
                assert_eq!(e.code, 1429);
                assert!(e.message.contains("no usable backend"), "{e:?}");
            }
            other => panic!("expected an ERR packet, got {other:?}"),
        }
        // The server's error is the node's state: down, for `error 1045`.
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let status = lb::status(admin);
            let node = &status["backends"][0];
            if node["health"] == "down" && node["reason"] == "error 1045" {
                break;
            }
            assert!(Instant::now() < deadline, "{check}: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Kept on the log: the operator reads the failed login there, and the password must
        // not be in it.
        lb.wait_for_log("reason=error 1045", Duration::from_secs(3));
        assert!(!lb.log().contains("hunter2") && !lb.log().contains("password=wrong"));
    }
}
