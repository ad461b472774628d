//! `discover: wsrep` on the real sandbox: galera-lb configured with one node finds the other two
//! in `wsrep_incoming_addresses`, retires a discovered node that leaves the cluster, and finds it
//! again when it comes back. Configured nodes are never retired.
#![allow(clippy::await_holding_lock)]

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lb::{LbProcess, free_port};
use mysql_async::Conn;
use mysql_async::prelude::*;
use support::sandbox;

async fn nodes_reached(port: u16, clients: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..clients {
        let opts = support::load::app_opts(port);
        let mut conn = Conn::new(opts).await.expect("connect through galera-lb");
        let name: String = conn
            .query_first("SELECT @@wsrep_node_name")
            .await
            .unwrap()
            .unwrap();
        seen.insert(name);
        conn.disconnect().await.unwrap();
    }
    seen
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The pool's members, as `/status` on the admin port lists them.
fn members(admin: std::net::SocketAddr) -> BTreeSet<String> {
    lb::status(admin)["backends"]
        .as_array()
        .expect("backends in /status")
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `probe` until it returns true, for at most `limit`.
async fn eventually(limit: Duration, mut probe: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_configured_node_leads_to_the_whole_cluster_and_leavers_retire() {
    let _fault = sandbox::fault_lock();
    let cluster = sandbox::cluster();
    let (port, admin_port) = (free_port(), free_port());
    let yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\nbackends:\n  - address: {}\n\
         discover: wsrep\ndiscover_retire_after: 3\n\
         health:\n  user: monitor\n  password: monitor\n  interval: 200ms\n\
         admin:\n  bind: 127.0.0.1:{admin_port}\n",
        cluster.node_address(1)
    );
    let lb = LbProcess::start(&yaml);
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let addresses = |nodes: &[usize]| -> BTreeSet<String> {
        nodes
            .iter()
            .map(|&n| cluster.node_address(n).to_string())
            .collect()
    };

    let all = set(&["node1", "node2", "node3"]);
    assert!(
        eventually(Duration::from_secs(10), async || nodes_reached(port, 12)
            .await
            == all)
        .await,
        "round robin over the discovered pool reaches all three nodes; log:\n{}",
        lb.log()
    );
    // Discovery put the two other nodes in the pool, by their wsrep incoming addresses.
    assert_eq!(members(admin), addresses(&[1, 2, 3]));

    // A discovered node that leaves the cluster is retired after 3 rounds without it...
    cluster.stop_node(3);
    assert!(
        eventually(Duration::from_secs(15), async || members(admin)
            == addresses(&[1, 2]))
        .await,
        "node3 is retired: {:?}; log:\n{}",
        members(admin),
        lb.log()
    );
    assert_eq!(nodes_reached(port, 9).await, set(&["node1", "node2"]));

    // ...and found again when it is back.
    cluster.start_node(3);
    assert!(
        eventually(Duration::from_secs(15), async || nodes_reached(port, 12)
            .await
            == all)
        .await,
        "node3 is discovered again; log:\n{}",
        lb.log()
    );

    // The configured node is never retired, even while it is down.
    cluster.stop_node(1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_node(1);
    assert!(
        eventually(Duration::from_secs(15), async || nodes_reached(port, 12)
            .await
            == all)
        .await,
        "node1 serves again; log:\n{}",
        lb.log()
    );
}
