//! Tests of the test sandbox itself (`scripts/sandbox` and `tests/support/sandbox.rs`) against the
//! real three-node Galera cluster: the state it starts in, its users, replication, and every
//! fault helper with its way back. Tests that inject a fault hold the fault lock and undo the
//! fault before they finish; the others hold the shared lock.

// The sandbox locks are std guards held for the whole test on purpose, across awaits: each test
// has its own runtime and thread, so a blocked lock only ever waits for another whole test.
#![allow(clippy::await_holding_lock)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use support::sandbox;
use tokio::net::{TcpListener, TcpSocket};

const ER_DBACCESS_DENIED: u16 = 1044;
const ER_UNKNOWN_COM_ERROR: u16 = 1047; // "WSREP has not yet prepared node for application use"
const ER_TABLEACCESS_DENIED: u16 = 1142;
const ER_OPTION_PREVENTS_STATEMENT: u16 = 1290; // read_only

fn opts(address: SocketAddr, user: &str, password: &str) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(address.ip().to_string())
        .tcp_port(address.port())
        .user(Some(user))
        .pass(Some(password))
        // Otherwise mysql_async moves to the server's unix socket when it is on this host.
        .prefer_socket(false)
}

async fn try_connect(address: SocketAddr, user: &str, password: &str) -> mysql_async::Result<Conn> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        Conn::new(opts(address, user, password)),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => panic!("connecting to {address} as {user} took more than 10 s"),
    }
}

async fn connect(address: SocketAddr, user: &str, password: &str) -> Conn {
    try_connect(address, user, password)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot log in to {address}: {e}"))
}

/// `SHOW GLOBAL STATUS LIKE 'wsrep%'` of the node at `address`, read as the monitor user.
async fn wsrep_status(address: SocketAddr) -> HashMap<String, String> {
    let mut conn = connect(address, "monitor", "monitor").await;
    let rows: Vec<(String, String)> = conn
        .query("SHOW GLOBAL STATUS LIKE 'wsrep%'")
        .await
        .unwrap_or_else(|e| panic!("SHOW GLOBAL STATUS on {address}: {e}"));
    conn.disconnect().await.ok();
    rows.into_iter().collect()
}

fn value<'a>(status: &'a HashMap<String, String>, name: &str) -> &'a str {
    status.get(name).map(String::as_str).unwrap_or("<missing>")
}

fn assert_synced_primary(address: SocketAddr, status: &HashMap<String, String>, size: &str) {
    let seen = (
        value(status, "wsrep_local_state"),
        value(status, "wsrep_local_state_comment"),
        value(status, "wsrep_cluster_status"),
        value(status, "wsrep_cluster_size"),
        value(status, "wsrep_ready"),
    );
    assert_eq!(
        seen,
        ("4", "Synced", "Primary", size, "ON"),
        "node {address}"
    );
}

/// Polls `check` every 200 ms until it holds; panics after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn server_error_code(error: mysql_async::Error) -> u16 {
    match error {
        mysql_async::Error::Server(e) => e.code,
        other => panic!("expected an error from the server, got {other:?}"),
    }
}

/// A table of its own for each test, in the database `sandbox_test`, created through node1.
async fn fresh_table(purpose: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "sandbox_test.{purpose}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = connect(sandbox::cluster().node_address(1), "app", "app").await;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS sandbox_test")
        .await
        .unwrap();
    conn.query_drop(format!("DROP TABLE IF EXISTS {name}"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "CREATE TABLE {name} (id INT PRIMARY KEY, note VARCHAR(40))"
    ))
    .await
    .unwrap();
    conn.disconnect().await.ok();
    name
}

async fn drop_table(name: &str) {
    let mut conn = connect(sandbox::cluster().node_address(1), "app", "app").await;
    conn.query_drop(format!("DROP TABLE IF EXISTS {name}"))
        .await
        .unwrap();
    conn.disconnect().await.ok();
}

/// The notes in `table` as node `address` sees them after every write the cluster committed
/// before this read (wsrep_sync_wait).
async fn notes_on(address: SocketAddr, table: &str) -> Vec<String> {
    let mut conn = connect(address, "app", "app").await;
    conn.query_drop("SET SESSION wsrep_sync_wait = 1")
        .await
        .unwrap();
    let notes = conn
        .query(format!("SELECT note FROM {table} ORDER BY id"))
        .await
        .unwrap();
    conn.disconnect().await.ok();
    notes
}

/// A TCP relay on 127.0.0.1 that connects on to `target` from the source address `source`, so
/// that the server sees a client from another loopback address.
async fn relay_from(source: Ipv4Addr, target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
            let mut server = socket.connect(target).await.unwrap();
            tokio::spawn(async move {
                tokio::io::copy_bidirectional(&mut client, &mut server)
                    .await
                    .ok();
            });
        }
    });
    address
}

// ------------------------------------------------------------------------------------------
// the cluster as started

#[tokio::test]
async fn all_three_nodes_are_synced_in_one_primary_component_of_three() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    assert_eq!(cluster.addresses.len(), 3);

    let mut cluster_uuids = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    for (i, &address) in cluster.addresses.iter().enumerate() {
        let status = wsrep_status(address).await;
        assert_synced_primary(address, &status, "3");
        assert_eq!(value(&status, "wsrep_connected"), "ON");
        cluster_uuids.insert(value(&status, "wsrep_cluster_state_uuid").to_string());
        indexes.insert(value(&status, "wsrep_local_index").to_string());

        let mut conn = connect(address, "monitor", "monitor").await;
        let name: Option<String> = conn.query_first("SELECT @@wsrep_node_name").await.unwrap();
        assert_eq!(name.as_deref(), Some(format!("node{}", i + 1).as_str()));
        conn.disconnect().await.ok();
    }
    assert_eq!(cluster_uuids.len(), 1, "one cluster: {cluster_uuids:?}");
    assert_eq!(
        indexes,
        BTreeSet::from(["0".into(), "1".into(), "2".into()])
    );

    let status = cluster.status();
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 3, "{status}");
    for (i, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields[0], format!("node{}", i + 1), "{line}");
        assert_eq!(fields[1], cluster.addresses[i].to_string(), "{line}");
        assert!(fields[2].parse::<u32>().is_ok(), "a pid: {line}");
        assert_eq!(fields[3..], ["Synced", "Primary", "3", "ON"], "{line}");
    }
}

#[tokio::test]
async fn wsrep_incoming_addresses_lists_exactly_the_three_client_addresses() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    let expected: BTreeSet<SocketAddr> = cluster.addresses.iter().copied().collect();
    for &address in &cluster.addresses {
        let status = wsrep_status(address).await;
        let listed: BTreeSet<SocketAddr> = value(&status, "wsrep_incoming_addresses")
            .split(',')
            .map(|a| {
                a.parse()
                    .unwrap_or_else(|e| panic!("{a:?} on {address}: {e}"))
            })
            .collect();
        assert_eq!(listed, expected, "on {address}");
    }
}

#[tokio::test]
async fn the_sql_helper_prints_rows_tab_separated_without_a_header() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    assert_eq!(
        cluster.sql(2, "SELECT 1, 'two' UNION ALL SELECT 3, 'four'"),
        "1\ttwo\n3\tfour"
    );
    assert_eq!(cluster.sql(3, "SELECT @@wsrep_node_name"), "node3");
}

#[tokio::test]
async fn users_root_app_and_monitor_log_in_with_their_rights() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    let node = cluster.node_address(2);

    let mut root = connect(node, "root", "").await;
    let root_user: Option<String> = root.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert!(root_user.unwrap().starts_with("root@"));
    root.disconnect().await.ok();

    let mut app = connect(node, "app", "app").await;
    let app_user: Option<String> = app.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(app_user.as_deref(), Some("app@%"));
    app.query_drop("CREATE TEMPORARY TABLE test.scratch (a INT)")
        .await
        .unwrap();
    app.disconnect().await.ok();

    let mut monitor = connect(node, "monitor", "monitor").await;
    let monitor_user: Option<String> = monitor.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(monitor_user.as_deref(), Some("monitor@%"));
    let read_only: Vec<(String, String)> = monitor
        .query("SHOW GLOBAL VARIABLES LIKE 'read_only'")
        .await
        .unwrap();
    assert_eq!(read_only, [("read_only".to_string(), "OFF".to_string())]);
    let denied = monitor
        .query_drop("CREATE TABLE test.monitor_was_here (a INT)")
        .await;
    assert_eq!(
        server_error_code(denied.unwrap_err()),
        ER_TABLEACCESS_DENIED
    );
    let denied = monitor.query_drop("CREATE DATABASE monitor_was_here").await;
    assert_eq!(server_error_code(denied.unwrap_err()), ER_DBACCESS_DENIED);
    monitor.disconnect().await.ok();

    let wrong = try_connect(node, "app", "not-the-password").await;
    assert_eq!(server_error_code(wrong.unwrap_err()), 1045);
}

#[tokio::test]
async fn users_log_in_from_other_loopback_addresses() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    let relay = relay_from(Ipv4Addr::new(127, 0, 0, 2), cluster.node_address(1)).await;
    for (user, password) in [("app", "app"), ("monitor", "monitor"), ("root", "")] {
        let mut conn = connect(relay, user, password).await;
        let host: Option<String> = conn
            .query_first(
                "SELECT host FROM information_schema.processlist WHERE id = CONNECTION_ID()",
            )
            .await
            .unwrap();
        let host = host.unwrap();
        assert!(
            host.starts_with("127.0.0.2:"),
            "{user} connected from {host}"
        );
        conn.disconnect().await.ok();
    }
}

#[tokio::test]
async fn a_write_on_node1_is_visible_on_node3() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    let table = fresh_table("replication").await;

    let mut node1 = connect(cluster.node_address(1), "app", "app").await;
    node1
        .query_drop(format!(
            "INSERT INTO {table} VALUES (1, 'written on node1')"
        ))
        .await
        .unwrap();
    node1.disconnect().await.ok();

    assert_eq!(
        notes_on(cluster.node_address(3), &table).await,
        ["written on node1"]
    );
    assert_eq!(
        cluster.sql(2, &format!("SELECT COUNT(*) FROM {table}")),
        "1"
    );
    drop_table(&table).await;
}

// ------------------------------------------------------------------------------------------
// faults, each undone before the test ends

#[tokio::test]
async fn a_killed_node_restarts_and_catches_up_on_what_it_missed() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let table = fresh_table("ist").await;

    cluster.kill(2);
    let refused = try_connect(cluster.node_address(2), "app", "app").await;
    assert!(refused.is_err(), "node2 is down");
    let node1 = cluster.node_address(1);
    eventually(
        "node1 sees a cluster of 2",
        Duration::from_secs(30),
        || async move { value(&wsrep_status(node1).await, "wsrep_cluster_size") == "2" },
    )
    .await;
    let mut conn = connect(node1, "app", "app").await;
    conn.query_drop(format!(
        "INSERT INTO {table} VALUES (1, 'while node2 was down')"
    ))
    .await
    .unwrap();
    conn.disconnect().await.ok();

    cluster.start_node(2);
    let node2 = cluster.node_address(2);
    assert_synced_primary(node2, &wsrep_status(node2).await, "3");
    assert_eq!(notes_on(node2, &table).await, ["while node2 was down"]);
    cluster.wait_synced();
    drop_table(&table).await;
}

#[tokio::test]
async fn a_wiped_node_rejoins_by_full_state_transfer() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let table = fresh_table("sst").await;
    let mut conn = connect(cluster.node_address(1), "app", "app").await;
    conn.query_drop(format!("INSERT INTO {table} VALUES (1, 'before the wipe')"))
        .await
        .unwrap();
    conn.disconnect().await.ok();

    cluster.stop_node(3);
    cluster.start_node_with_sst(3);
    let node3 = cluster.node_address(3);
    assert_synced_primary(node3, &wsrep_status(node3).await, "3");
    assert_eq!(notes_on(node3, &table).await, ["before the wipe"]);
    // the users came over with the data
    connect(node3, "monitor", "monitor")
        .await
        .disconnect()
        .await
        .ok();
    cluster.wait_synced();
    drop_table(&table).await;
}

#[tokio::test]
async fn a_paused_node_leaves_the_component_and_returns_after_resume() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let node2 = cluster.node_address(2);

    cluster.pause(2);
    let hung = tokio::time::timeout(Duration::from_secs(2), Conn::new(opts(node2, "app", "app")));
    assert!(hung.await.is_err(), "a paused node does not answer");
    let node1 = cluster.node_address(1);
    eventually(
        "the others drop the paused node",
        Duration::from_secs(60),
        || async move { value(&wsrep_status(node1).await, "wsrep_cluster_size") == "2" },
    )
    .await;
    assert!(
        cluster
            .status()
            .lines()
            .nth(1)
            .unwrap()
            .contains("\tpaused\t")
    );

    cluster.resume(2);
    cluster.wait_synced();
    assert_synced_primary(node2, &wsrep_status(node2).await, "3");
}

#[tokio::test]
async fn an_isolated_node_is_non_primary_and_refuses_queries_until_it_rejoins() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let node3 = cluster.node_address(3);

    cluster.isolate(3);
    let status = wsrep_status(node3).await; // logins still work
    assert_eq!(value(&status, "wsrep_cluster_status"), "non-Primary");
    assert_eq!(value(&status, "wsrep_ready"), "OFF");
    let mut conn = connect(node3, "app", "app").await;
    let refused = conn.query_drop("SELECT COUNT(*) FROM mysql.db").await;
    assert_eq!(
        server_error_code(refused.unwrap_err()),
        ER_UNKNOWN_COM_ERROR
    );
    conn.disconnect().await.ok();
    let node1 = cluster.node_address(1);
    eventually(
        "the others form a component of 2",
        Duration::from_secs(30),
        || async move { value(&wsrep_status(node1).await, "wsrep_cluster_size") == "2" },
    )
    .await;

    cluster.rejoin(3);
    assert_synced_primary(node3, &wsrep_status(node3).await, "3");
    let mut conn = connect(node3, "app", "app").await;
    conn.query_drop("SELECT COUNT(*) FROM mysql.db")
        .await
        .unwrap();
    conn.disconnect().await.ok();
}

#[tokio::test]
async fn desync_moves_a_node_to_state_2_and_back_to_4() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let node1 = cluster.node_address(1);

    cluster.desync(1, true);
    let status = wsrep_status(node1).await;
    assert_eq!(value(&status, "wsrep_local_state"), "2");
    assert_eq!(
        value(&status, "wsrep_local_state_comment"),
        "Donor/Desynced"
    );
    assert_eq!(value(&status, "wsrep_cluster_status"), "Primary");

    cluster.desync(1, false);
    assert_synced_primary(node1, &wsrep_status(node1).await, "3");
}

#[tokio::test]
async fn reject_queries_all_refuses_queries_and_none_serves_them_again() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let node2 = cluster.node_address(2);

    cluster.reject_queries(2, true);
    let mut conn = connect(node2, "app", "app").await; // logins still work
    let refused = conn.query_drop("SELECT COUNT(*) FROM mysql.db").await;
    assert_eq!(
        server_error_code(refused.unwrap_err()),
        ER_UNKNOWN_COM_ERROR
    );
    conn.disconnect().await.ok();
    assert_eq!(cluster.sql(2, "SELECT @@wsrep_reject_queries"), "ALL");

    cluster.reject_queries(2, false);
    let mut conn = connect(node2, "app", "app").await;
    conn.query_drop("SELECT COUNT(*) FROM mysql.db")
        .await
        .unwrap();
    conn.disconnect().await.ok();
    assert_eq!(cluster.sql(2, "SELECT @@wsrep_reject_queries"), "NONE");
}

#[tokio::test]
async fn read_only_refuses_app_writes_until_turned_off() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let table = fresh_table("read_only").await;
    let node3 = cluster.node_address(3);

    cluster.read_only(3, true);
    let mut monitor = connect(node3, "monitor", "monitor").await;
    let read_only: Option<i64> = monitor
        .query_first("SELECT @@global.read_only")
        .await
        .unwrap();
    assert_eq!(read_only, Some(1));
    monitor.disconnect().await.ok();
    let mut conn = connect(node3, "app", "app").await;
    let refused = conn
        .query_drop(format!("INSERT INTO {table} VALUES (1, 'refused')"))
        .await;
    assert_eq!(
        server_error_code(refused.unwrap_err()),
        ER_OPTION_PREVENTS_STATEMENT
    );
    conn.disconnect().await.ok();

    cluster.read_only(3, false);
    let mut conn = connect(node3, "app", "app").await;
    conn.query_drop(format!("INSERT INTO {table} VALUES (1, 'accepted')"))
        .await
        .unwrap();
    conn.disconnect().await.ok();
    assert_eq!(
        notes_on(cluster.node_address(1), &table).await,
        ["accepted"]
    );
    drop_table(&table).await;
}

#[test]
fn a_fault_test_that_panics_midway_leaves_the_cluster_restored_for_the_next_test() {
    let failing_test = std::thread::spawn(|| {
        let _fault = sandbox::fault_lock();
        sandbox::cluster().desync(1, true);
        panic!("a fault test failing before it undid its fault (expected in this test)");
    });
    assert!(failing_test.join().is_err());

    // The next holder of the lock finds the cluster restored, whoever takes the lock first.
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    assert_eq!(cluster.sql(1, "SELECT @@global.wsrep_desync"), "0");
    for line in cluster.status().lines() {
        assert!(line.ends_with("Synced\tPrimary\t3\tON"), "{line}");
    }
}
