//! A thousand control-port changes and a stream of reloads under continuous client load, against
//! the real three-node Galera sandbox (see `tests/support/sandbox.rs`): not one client connection
//! may fail or be dropped.
//!
//! The fourth address is a relay: a small TCP forwarder in this test, on a free loopback port,
//! in front of node 3. Unlike an unused port (which the wsrep check keeps down, so that no client
//! would ever be sent to it), it is a real, healthy Galera node under an address of its own, so
//! clients really are routed to it between its addition and its removal. Unlike `localhost:PORT`
//! for node 3 (which galera-lb rightly recognises as node 3 itself: the changes would reweight,
//! drain and remove node 3), it is a backend of its own. Each cycle adds it, reweights it, drains
//! it (by weight 0 or `drain`, alternately), waits until its client sessions have ended, as an
//! operator would, and removes it; the three nodes are reweighted meanwhile, and every few cycles
//! the configuration file is rewritten (two valid variants, which differ in weights and health
//! settings) and reloaded, by `reload` or by SIGHUP.
//!
//! Meanwhile eight tasks loop connect → `SELECT @@wsrep_node_name` → disconnect through
//! galera-lb, and three long-lived sessions (opened first, so they are on the three nodes) query
//! every 20 ms. Every failure is collected with its error; the test asserts there is none.
#![allow(clippy::await_holding_lock)]

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb::{LbProcess, free_port};
use mysql_async::Conn;
use mysql_async::prelude::*;
use support::load::app_opts;
use support::sandbox;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHANGES: usize = 1000;

/// A TCP relay on a free loopback port to `target`; counts the connections it has relayed.
async fn relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let relayed = Arc::new(AtomicU64::new(0));
    let count = relayed.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (address, relayed)
}

/// Sends `text` to the control port, half-closes, and returns the whole answer.
async fn ask(control: SocketAddr, text: &str) -> String {
    let mut stream = TcpStream::connect(control).await.unwrap();
    stream.write_all(text.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut reply))
        .await
        .expect("the control port answers within 10 s")
        .unwrap();
    reply
}

/// The relay's member in `getinfo json`, if it is there.
async fn relay_member(control: SocketAddr, relay: SocketAddr) -> Option<serde_json::Value> {
    let json: serde_json::Value =
        serde_json::from_str(&ask(control, "getinfo json\n").await).expect("getinfo json is JSON");
    json["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == relay.to_string())
        .cloned()
}

/// The configuration file, in one of two valid variants.
fn variant(
    which: usize,
    port: u16,
    control_port: u16,
    admin_port: u16,
    nodes: &[SocketAddr],
) -> String {
    let (weights, interval) = match which % 2 {
        0 => ([1, 1, 1], "300ms"),
        _ => ([2, 1, 3], "400ms"),
    };
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n    policy: round_robin\nbackends:\n"
    );
    for (node, weight) in nodes.iter().zip(weights) {
        yaml.push_str(&format!("  - address: {node}\n    weight: {weight}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  check: wsrep\n  user: monitor\n  password: monitor\n  interval: {interval}\n\
         control:\n  bind: 127.0.0.1:{control_port}\nadmin:\n  bind: 127.0.0.1:{admin_port}\n"
    ));
    yaml
}

#[derive(Default)]
struct Tally {
    sessions: BTreeMap<String, u64>,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_control_changes_and_reloads_under_load_drop_no_client() {
    let _shared = sandbox::shared_lock();
    let started = Instant::now();
    let nodes = sandbox::cluster().addresses.clone();
    let (relay_address, relayed) = relay(nodes[2]).await;
    let (port, control_port, admin_port) = (free_port(), free_port(), free_port());
    let control: SocketAddr = format!("127.0.0.1:{control_port}").parse().unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let reloads_counted = |result: &str| {
        lb::metric(admin, "galera_lb_reloads_total", &[("result", result)]).unwrap_or(0.0) as usize
    };
    let process = LbProcess::start(&variant(0, port, control_port, admin_port, &nodes));

    // Three long-lived sessions, one per node (round robin), before the relay ever exists.
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut long_lived = BTreeMap::new();
    for _ in 0..3 {
        let mut conn = Conn::new(app_opts(port))
            .await
            .expect("a long-lived session");
        let name: String = conn
            .query_first("SELECT @@wsrep_node_name")
            .await
            .unwrap()
            .unwrap();
        *long_lived.entry(name.clone()).or_insert(0) += 1;
        let (tally, stop) = (tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut queries = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match conn
                    .query_first::<String, _>("SELECT @@wsrep_node_name")
                    .await
                {
                    Ok(Some(n)) if n == name => queries += 1,
                    other => {
                        tally
                            .lock()
                            .unwrap()
                            .failures
                            .push(format!("long-lived session on {name}: {other:?}"));
                        return queries;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = conn.disconnect().await;
            queries
        }));
    }
    assert_eq!(
        long_lived.len(),
        3,
        "one long-lived session per node: {long_lived:?}"
    );

    // Eight tasks of connect → SELECT → disconnect.
    for _ in 0..8 {
        let (tally, stop) = (tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut sessions = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let outcome = async {
                    let mut conn = Conn::new(app_opts(port)).await?;
                    let name: Option<String> = conn.query_first("SELECT @@wsrep_node_name").await?;
                    conn.disconnect().await?;
                    Ok::<_, mysql_async::Error>(name.unwrap_or_default())
                }
                .await;
                let mut tally = tally.lock().unwrap();
                match outcome {
                    Ok(name) => *tally.sessions.entry(name).or_insert(0) += 1,
                    Err(e) => tally.failures.push(format!("short session: {e}")),
                }
                sessions += 1;
            }
            sessions
        }));
    }

    // The changes.
    let node = |i: usize| nodes[i].to_string();
    let relay = relay_address.to_string();
    let mut changes = 0usize;
    let mut reloads = 0usize;
    let mut relay_client_sessions = 0u64;
    let mut cycle = 0usize;
    let mut slowest_change = Duration::ZERO;
    let mut send = async |request: String, changes: &mut usize| {
        let begun = Instant::now();
        let reply = ask(control, &format!("{request}\n")).await;
        slowest_change = slowest_change.max(begun.elapsed());
        assert_eq!(reply, "Ok\n", "{request} (change {changes})");
        *changes += 1;
    };
    while changes < CHANGES {
        cycle += 1;
        send(format!("{relay}:1"), &mut changes).await;
        if cycle % 4 == 1 {
            // Now and then, let clients reach it before it goes (its first check passes first).
            let deadline = Instant::now() + Duration::from_secs(3);
            while relay_member(control, relay_address)
                .await
                .is_none_or(|m| m["total"].as_u64().unwrap_or(0) == 0)
            {
                assert!(Instant::now() < deadline, "no client reached the relay");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        send(format!("{relay}:3"), &mut changes).await;
        send(format!("{}:2", node(cycle % 3)), &mut changes).await;
        if cycle % 2 == 0 {
            send(format!("{relay}:0"), &mut changes).await;
        } else {
            send(format!("drain {relay}"), &mut changes).await;
        }
        // As an operator would: wait for its sessions to end, then remove it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let member = relay_member(control, relay_address)
                .await
                .expect("the relay is still a member");
            if member["active"] == 0 {
                relay_client_sessions += member["total"].as_u64().unwrap();
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the drained relay keeps sessions"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        send(format!("{relay}:-1"), &mut changes).await;
        send(format!("{}:1", node(cycle % 3)), &mut changes).await;
        if cycle % 5 == 0 && changes < CHANGES {
            reloads += 1;
            std::fs::write(
                process.config_path(),
                variant(reloads, port, control_port, admin_port, &nodes),
            )
            .unwrap();
            if reloads % 2 == 0 {
                process.signal(libc::SIGHUP);
                let deadline = Instant::now() + Duration::from_secs(5);
                while reloads_counted("ok") < reloads {
                    assert!(Instant::now() < deadline, "SIGHUP reload {reloads}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } else {
                send("reload".to_string(), &mut changes).await;
            }
        }
        // The counters stay sane all along (never negative: a u64 would wrap). A session is
        // counted until both of its sides have closed, so a little above the 11 clients is fine.
        let info = ask(control, "getinfo\n").await;
        let total: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("Destinations: 3, total connections: "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("three nodes and a count:\n{info}"))
            .parse()
            .unwrap();
        assert!(total <= 40, "{info}");
    }
    let changing = started.elapsed();

    // Let the load run a moment more, then stop it and count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut per_task = Vec::new();
    for task in tasks {
        per_task.push(task.await.unwrap());
    }
    let tally = tally.lock().unwrap();
    let short_sessions: u64 = tally.sessions.values().sum();
    eprintln!(
        "control soak: {changes} changes ({cycle} cycles, {reloads} reloads) in {changing:?}, \
         slowest change {slowest_change:?}; {short_sessions} short sessions {:?}, \
         {relay_client_sessions} of them through the relay ({} relayed connections with checks); \
         long-lived queries {:?}; failures {}",
        tally.sessions,
        relayed.load(Ordering::Relaxed),
        &per_task[..3],
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{} failed client connections, e.g.: {:#?}\nlog:\n{}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(10)],
        process.log()
    );
    assert!(changes >= CHANGES);
    assert!(reloads >= 10, "{reloads} reloads");
    assert!(
        relay_client_sessions > 0,
        "clients were routed to the fourth address"
    );
    for n in ["node1", "node2", "node3"] {
        assert!(
            tally.sessions.get(n).copied().unwrap_or(0) > 100,
            "{:?}",
            tally.sessions
        );
    }
    assert!(
        per_task[..3].iter().all(|&q| q > 50),
        "long-lived queries {per_task:?}"
    );
    // Every session is over, and counted off.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = ask(control, "getinfo\n").await;
    assert!(
        info.contains("Destinations: 3, total connections: 0 of"),
        "{info}"
    );
    let log = process.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        (reloads_counted("ok"), reloads_counted("error")),
        (reloads, 0)
    );
    assert!(
        started.elapsed() < Duration::from_secs(110),
        "{:?}",
        started.elapsed()
    );
}
