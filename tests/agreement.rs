//! `health.writer_agreement: cluster` on the real sandbox: three galera-lb instances keep one
//! writer between them, also when each is restarted in turn (a restarted instance follows the
//! writer agreed in the cluster's table rather than electing its own), move together when the
//! writer node is killed, and do not fail back when it returns. A local-mode instance started
//! beside them picks by itself, for contrast.
//!
//! Each instance's writer is read twice: from its `/status` (the writer's name and the agreed
//! epoch) and through its writer listener (`SELECT @@port` as the sandbox's `app` user).

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb::{LbProcess, control, free_port};
use support::load::app_opts;
use support::sandbox::{Cluster, FaultSession};

/// The schema the test's instances keep their table in (dropped before and after).
const SCHEMA: &str = "galera_lb_agreement_test";

/// One galera-lb instance: its ports and process.
struct Instance {
    name: &'static str,
    writer_port: u16,
    admin: SocketAddr,
    control: SocketAddr,
    yaml: String,
    process: Option<LbProcess>,
}

impl Instance {
    fn new(name: &'static str, cluster: &Cluster, agreement: &str) -> Instance {
        let (writer_port, admin_port, control_port) = (free_port(), free_port(), free_port());
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let control = SocketAddr::from(([127, 0, 0, 1], control_port));
        let mut yaml = format!(
            "listeners:\n  - name: rw\n    bind: 127.0.0.1:{writer_port}\n    role: writer\n\
             backends:\n"
        );
        for address in &cluster.addresses {
            yaml.push_str(&format!("  - address: {address}\n"));
        }
        yaml.push_str(&format!(
            "health:\n  interval: 300ms\n  timeout: 1s\n  fall: 2\n  rise: 2\n  \
             user: monitor\n  password: monitor\n  writer_agreement: {agreement}\n  \
             agreement_schema: {SCHEMA}\n\
             control:\n  bind: {control}\nadmin:\n  bind: {admin}\n"
        ));
        Instance {
            name,
            writer_port,
            admin,
            control,
            yaml,
            process: None,
        }
    }

    fn start(&mut self) {
        self.process = Some(LbProcess::start(&self.yaml));
    }

    /// SIGKILL, as a crash; the next start is a fresh process with the same file.
    fn kill(&mut self) {
        self.process = None;
    }

    fn log(&self) -> String {
        self.process.as_ref().map_or(String::new(), |p| p.log())
    }

    /// The writer its `/status` names and the agreed epoch.
    fn status_writer(&self) -> (Option<String>, u64) {
        let status = lb::status(self.admin);
        let listener = &status["listeners"][0];
        (
            listener["writer"].as_str().map(str::to_string),
            listener["writer_epoch"].as_u64().unwrap_or(0),
        )
    }

    /// The node its writer listener takes a client to: `127.0.0.1:@@port`.
    fn routed_writer(&self) -> Result<String, String> {
        let port = self.writer_port;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let ask = async {
                use mysql_async::prelude::Queryable;
                let mut conn = mysql_async::Conn::new(app_opts(port))
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let node: Option<u16> = conn
                    .query_first("SELECT @@port")
                    .await
                    .map_err(|e| format!("SELECT @@port: {e}"))?;
                let _ = conn.disconnect().await;
                node.map(|p| format!("127.0.0.1:{p}"))
                    .ok_or_else(|| "no row".to_string())
            };
            tokio::time::timeout(Duration::from_secs(3), ask)
                .await
                .map_err(|_| "no answer within 3s".to_string())?
        })
    }
}

/// Each running instance's writer by `/status`, its epoch, and where its listener routes.
fn writers(instances: &[&Instance]) -> Vec<(Option<String>, u64, Result<String, String>)> {
    instances
        .iter()
        .map(|i| {
            let (writer, epoch) = i.status_writer();
            (writer, epoch, i.routed_writer())
        })
        .collect()
}

/// Waits (at most `limit`) until every instance names the same writer, at the same epoch, and
/// routes its writer listener to it; returns that writer, its epoch and how long it took.
fn agreed(instances: &[&Instance], step: &str, limit: Duration) -> (String, u64, Duration) {
    let start = Instant::now();
    loop {
        let seen = writers(instances);
        let (first, epoch, _) = &seen[0];
        if let Some(writer) = first
            && seen.iter().all(|(w, e, routed)| {
                w.as_ref() == Some(writer) && e == epoch && routed.as_ref() == Ok(writer)
            })
        {
            return (writer.clone(), *epoch, start.elapsed());
        }
        if start.elapsed() > limit {
            let logs: String = instances
                .iter()
                .map(|i| format!("--- {} ---\n{}\n", i.name, i.log()))
                .collect();
            panic!("{step}: the instances did not agree within {limit:?}: {seen:?}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The row the instances agreed on, read on node 1 as root.
fn table_row(cluster: &Cluster) -> String {
    cluster.sql(
        1,
        &format!("SET SESSION wsrep_sync_wait = 1; SELECT node, epoch FROM {SCHEMA}.writer"),
    )
}

fn refs(all: &[Instance]) -> Vec<&Instance> {
    all.iter().collect()
}

fn node_number(cluster: &Cluster, address: &str) -> usize {
    1 + cluster
        .addresses
        .iter()
        .position(|a| a.to_string() == address)
        .unwrap_or_else(|| panic!("{address} is no sandbox node"))
}

#[test]
fn three_instances_keep_one_writer_across_their_restarts_and_a_writer_crash() {
    let session = FaultSession::begin();
    let cluster = session.cluster;
    cluster.sql(
        1,
        &format!(
            "DROP DATABASE IF EXISTS {SCHEMA}; \
             GRANT SELECT, INSERT, UPDATE, CREATE ON {SCHEMA}.* TO 'monitor'@'%'"
        ),
    );
    let mut all = ["a", "b", "c"].map(|name| Instance::new(name, cluster, "cluster"));
    let limit = Duration::from_secs(15);

    // 1. Started one after the other: the first proposes, the others follow.
    for instance in &mut all {
        instance.start();
    }
    let (first, epoch, _) = agreed(&refs(&all), "start", limit);
    assert_eq!(epoch, 1, "one proposal made the row");
    assert_eq!(table_row(cluster), format!("{first}\t1"));
    println!("start: writer {first}, epoch {epoch}");

    // 2. The writer drained on instance a only: a proposes the next candidate, every instance
    //    follows; back in service it stays a reader (no failback). The agreed writer is now
    //    not the one a fresh local election would pick.
    assert_eq!(control(all[0].control, &format!("drain {first}\n")), "Ok\n");
    let (moved, epoch, took) = agreed(&refs(&all), "drain on a", limit);
    assert_ne!(moved, first);
    assert_eq!(epoch, 2);
    println!("drain of {first} on a: all on {moved}, epoch {epoch}, in {took:?}");
    assert_eq!(control(all[0].control, &format!("ready {first}\n")), "Ok\n");
    std::thread::sleep(Duration::from_secs(2));
    let (still, epoch, _) = agreed(&refs(&all), "ready on a", limit);
    assert_eq!((still.as_str(), epoch), (moved.as_str(), 2), "no failback");

    // Contrast: a local-mode instance started now elects by itself, the first choice.
    let mut local = Instance::new("local", cluster, "local");
    local.start();
    let (local_writer, _, _) = agreed(&[&local], "local instance", limit);
    assert_eq!(
        local_writer, first,
        "a local election picks the best by the writer order"
    );
    println!(
        "a local-mode instance started now picks {local_writer}; the agreeing ones stay on {moved}"
    );
    local.kill();

    // 3. Each instance restarted in turn, twice round: it follows the table, never its own
    //    election, and the others never move.
    for round in 1..=2 {
        for i in 0..all.len() {
            all[i].kill();
            all[i].start();
            let name = all[i].name;
            let (writer, epoch, _) = agreed(&refs(&all), "restart", limit);
            assert_eq!(
                (writer.as_str(), epoch),
                (moved.as_str(), 2),
                "after restarting {name} (round {round})"
            );
        }
    }
    println!("6 restarts (a, b, c twice): every instance on {moved}, epoch 2, throughout");

    // 4. The writer node killed: every instance moves to the same next writer.
    let killed = node_number(cluster, &moved);
    let killed_at = Instant::now();
    cluster.kill(killed);
    let (next, epoch, took) = agreed(&refs(&all), "writer killed", Duration::from_secs(30));
    assert_ne!(next, moved);
    assert_eq!(epoch, 3, "one proposal won");
    let proposals = |i: &Instance, outcome: &str| {
        lb::metric(
            i.admin,
            "galera_lb_writer_proposals_total",
            &[("pool", "default"), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    let count = |outcome: &str| -> f64 { all.iter().map(|i| proposals(i, outcome)).sum() };
    for instance in &all {
        let gauge = lb::metric(
            instance.admin,
            "galera_lb_writer_epoch",
            &[("pool", "default")],
        );
        assert_eq!(
            gauge,
            Some(3.0),
            "galera_lb_writer_epoch on {}",
            instance.name
        );
    }
    let (won, lost, failed) = (count("won"), count("lost"), count("failed"));
    println!(
        "node {killed} ({moved}) killed: all on {next}, epoch {epoch}, {:?} after the kill \
         ({took:?} of polling); proposals since the last restarts: won {won}, lost {lost}, \
         failed {failed}",
        killed_at.elapsed()
    );
    for instance in &all {
        for line in instance.log().lines().filter(|l| {
            l.contains("writer agreement")
                || l.contains("writer changed")
                || l.contains("backend down")
        }) {
            println!("  {}: {line}", instance.name);
        }
    }
    // A proposal cut off by health.timeout while the cluster evicted the dead node may have
    // committed anyway (counted as failed): at most one won or failed-but-committed, never two
    // different writers, which `agreed` checked.
    assert!(won <= 1.0, "at most one instance won the move: {won}");

    // 5. The killed node back, Synced: no failback.
    cluster.start_node(killed);
    let back = moved.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while all.iter().any(|i| {
        let status = lb::status(i.admin);
        !status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["address"] == back.as_str() && b["health"] == "up")
    }) {
        assert!(
            Instant::now() < deadline,
            "{back} is up again in every instance"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (after, epoch, _) = agreed(&refs(&all), "node back", limit);
    // No failback: the node that came back does not get the role again. (The writer may still
    // have moved on, once and for all instances alike: a node that rejoins takes a state
    // transfer, and when its donor was the writer, the donor was not usable for that time.)
    assert_ne!(after, back, "no failback to {back}");
    assert!(
        (after == next && epoch == 3) || (after != next && epoch > 3),
        "the row changes only with a new epoch: {after} epoch {epoch}"
    );
    assert_eq!(table_row(cluster), format!("{after}\t{epoch}"));
    println!("node {killed} back: every instance on {after}, epoch {epoch} (not the node back)");
    if after != next {
        for instance in &all {
            for line in instance.log().lines().filter(|l| {
                l.contains("writer agreement")
                    || l.contains("writer changed")
                    || l.contains("backend down")
                    || l.contains("backend still down")
                    || l.contains("backend state")
            }) {
                println!("  {}: {line}", instance.name);
            }
        }
    }

    drop(all);
    cluster.sql(1, &format!("DROP DATABASE IF EXISTS {SCHEMA}"));
    drop(session);
}
