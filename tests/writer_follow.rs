//! `on_writer_change: shutdown_sessions` on the real sandbox: a session on a `role: writer`
//! listener is closed when the writer moves to another node, also when the routing was rebuilt
//! between the session's start and the move (by the control port, a SIGHUP reload or
//! discovery). Before the writer role left the routing snapshot, a rebuild left such a session
//! open on the old writer: two writers in use.
//!
//! Each case opens a session, optionally rebuilds the routing (and checks through the control
//! port that it did), desyncs the node that holds the writer role, waits until new clients go
//! to another node, and then demands that the old session is closed.
#![allow(clippy::await_holding_lock)]

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb::{LbProcess, closed_address, control, free_port};
use mysql_async::Conn;
use mysql_async::prelude::*;
use support::load::app_opts;
use support::sandbox;

/// How the routing is rebuilt between the session's start and the writer's move.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rebuild {
    None,
    ControlPort,
    SighupReload,
    Discovery,
}

/// Undoes the desync even when an assertion fails.
struct Desynced(usize);

impl Drop for Desynced {
    fn drop(&mut self) {
        sandbox::cluster().desync(self.0, false);
    }
}

async fn node_of(conn: &mut Conn) -> Result<String, mysql_async::Error> {
    conn.query_first::<String, _>("SELECT @@wsrep_node_name")
        .await
        .map(|name| name.expect("a node name"))
}

/// The number of destinations `getinfo` lists.
fn destinations(control_port: SocketAddr) -> usize {
    let info = control(control_port, "getinfo\n");
    info.lines()
        .find_map(|l| l.strip_prefix("Destinations: "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("getinfo lists its destinations: {info}"))
}

fn config(
    port: u16,
    control_port: u16,
    rebuild: Rebuild,
    extra_backend: Option<SocketAddr>,
) -> String {
    let cluster = sandbox::cluster();
    let mut yaml = format!(
        "listeners:\n  - name: writer\n    bind: 127.0.0.1:{port}\n    role: writer\n\
         control:\n  bind: 127.0.0.1:{control_port}\nbackends:\n"
    );
    let configured: &[SocketAddr] = if rebuild == Rebuild::Discovery {
        &cluster.addresses[..1]
    } else {
        &cluster.addresses
    };
    for node in configured.iter().chain(extra_backend.as_ref()) {
        yaml.push_str(&format!("  - address: {node}\n"));
    }
    // Discovery runs once per health interval, the first time one interval after the start:
    // long enough for the session to be opened on the routing before discovery changes it.
    let interval = if rebuild == Rebuild::Discovery {
        "1500ms"
    } else {
        "300ms"
    };
    if rebuild == Rebuild::Discovery {
        yaml.push_str("discover: wsrep\n");
    }
    yaml.push_str(&format!(
        "health:\n  user: monitor\n  password: monitor\n  interval: {interval}\n  timeout: 500ms\n\
         \x20 on_writer_change: shutdown_sessions\n"
    ));
    yaml
}

async fn the_old_writers_session_is_closed_when_the_writer_moves(rebuild: Rebuild) {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let (port, control_port) = (free_port(), free_port());
    let control_address: SocketAddr = format!("127.0.0.1:{control_port}").parse().unwrap();
    let lb = LbProcess::start(&config(port, control_port, rebuild, None));

    let mut session = Conn::new(app_opts(port)).await.expect("a writer session");
    let writer = node_of(&mut session).await.unwrap();
    let before = destinations(control_address);

    match rebuild {
        Rebuild::None => {}
        Rebuild::ControlPort => {
            let reply = control(control_address, &format!("{}:1\n", closed_address()));
            assert_eq!(reply.trim(), "Ok", "{}", lb.log());
            assert_eq!(destinations(control_address), before + 1);
        }
        Rebuild::SighupReload => {
            let yaml = config(port, control_port, rebuild, Some(closed_address()));
            std::fs::write(lb.config_path(), yaml).unwrap();
            lb.signal(libc::SIGHUP);
            let deadline = Instant::now() + Duration::from_secs(10);
            while destinations(control_address) != before + 1 {
                assert!(
                    Instant::now() < deadline,
                    "the reload took effect: {}",
                    lb.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Rebuild::Discovery => {
            assert_eq!(
                before,
                1,
                "the session was opened before discovery changed the pool: {}",
                lb.log()
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while destinations(control_address) != 3 {
                assert!(
                    Instant::now() < deadline,
                    "discovery found the other nodes: {}",
                    lb.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(
        session.query_first::<i64, _>("SELECT 1").await.unwrap(),
        Some(1),
        "a rebuild alone leaves the session alone"
    );

    let n: usize = writer.trim_start_matches("node").parse().unwrap();
    cluster.desync(n, true);
    let _undo = Desynced(n);
    let deadline = Instant::now() + Duration::from_secs(15);
    let new_writer = loop {
        assert!(
            Instant::now() < deadline,
            "new clients of the writer listener still go to {writer} after it was desynced: {}",
            lb.log()
        );
        if let Ok(mut probe) = Conn::new(app_opts(port)).await {
            if let Ok(node) = node_of(&mut probe).await {
                let _ = probe.disconnect().await;
                if node != writer {
                    break node;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The role moved to `new_writer`; the session on the old writer must be closed (at once, as
    // the role moves; the loop only allows for the close to reach the client).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match node_of(&mut session).await {
            Err(_) => break,
            Ok(node) => {
                assert!(
                    Instant::now() < deadline,
                    "two writers: the old session still runs on {node} while new clients go to \
                     {new_writer} (rebuild: {rebuild:?}); log:\n{}",
                    lb.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_moves_close_the_old_writers_sessions() {
    the_old_writers_session_is_closed_when_the_writer_moves(Rebuild::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_moves_close_sessions_opened_before_a_control_port_change() {
    the_old_writers_session_is_closed_when_the_writer_moves(Rebuild::ControlPort).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_moves_close_sessions_opened_before_a_sighup_reload() {
    the_old_writers_session_is_closed_when_the_writer_moves(Rebuild::SighupReload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_moves_close_sessions_opened_before_discovery_changed_the_pool() {
    the_old_writers_session_is_closed_when_the_writer_moves(Rebuild::Discovery).await;
}
