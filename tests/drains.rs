//! Drains that never cut a transaction, on the real sandbox: galera-lb follows each session's
//! MySQL packets and closes it at its next point between transactions.
//!
//! - A planned writer switchover (`drain` of the writer over the control port) under clients
//!   that run explicit transactions: with `on_writer_change: close_when_idle` no transaction
//!   fails and none begins on the old writer once the move is seen; with `shutdown_sessions`
//!   the transactions in flight are cut.
//! - `maint` of a reader: its sessions leave between transactions, a session that keeps a
//!   transaction open is closed at `health.drain_timeout`; `drain` leaves sessions alone.
//! - `wsrep_reject_queries` on a node: it is taken out at the first check that sees it (not
//!   after `fall` checks) and its idle sessions are closed.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb::{LbProcess, control, free_port};
use support::sandbox::{self, FaultSession};
use support::transactions::{self, Outcome, Txn, TxnLoad, committed_on_after, tally};

/// One galera-lb with a writer and a reader listener, its control and admin ports.
struct Instance {
    lb: LbProcess,
    writer_port: u16,
    reader_port: u16,
    control: SocketAddr,
    admin: SocketAddr,
}

fn instance(cluster: &sandbox::Cluster, health: &str) -> Instance {
    let (writer_port, reader_port) = (free_port(), free_port());
    let control: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut yaml = format!(
        "listeners:\n\
         \x20 - name: rw\n    bind: 127.0.0.1:{writer_port}\n    role: writer\n\
         \x20 - name: ro\n    bind: 127.0.0.1:{reader_port}\n    policy: round_robin\n\
         backends:\n"
    );
    for address in &cluster.addresses {
        yaml.push_str(&format!("  - address: {address}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  interval: 300ms\n  user: monitor\n  password: monitor\n{health}\
         control:\n  bind: {control}\nadmin:\n  bind: {admin}\n"
    ));
    Instance {
        lb: LbProcess::start(&yaml),
        writer_port,
        reader_port,
        control,
        admin,
    }
}

/// The node most transactions committed on before `t` (the writer, for a writer listener).
fn busiest_node(record: &[Txn], before: Instant) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for t in record {
        if t.begin < before && t.outcome == Outcome::Committed {
            *counts
                .entry(t.node.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(node, _)| node)
        .expect("transactions committed before the switch")
}

fn node_number(name: &str) -> usize {
    name.trim_start_matches("node")
        .parse()
        .unwrap_or_else(|_| panic!("a sandbox node name: {name}"))
}

fn drains(admin: SocketAddr, listener: &str, outcome: &str) -> f64 {
    lb::metric(
        admin,
        "galera_lb_session_drains_total",
        &[("listener", listener), ("outcome", outcome)],
    )
    .unwrap_or(-1.0)
}

const CLIENTS: usize = 8;
/// Each transaction pauses this long between its statements, so that most of the time some
/// transaction is open on every connection.
const INSIDE: Duration = Duration::from_millis(30);

#[test]
fn a_planned_writer_switchover_fails_no_transaction_with_close_when_idle() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    cluster.sql(1, &transactions::schema());
    let idle = instance(
        cluster,
        "  on_writer_change: close_when_idle\n  drain_timeout: 10s\n",
    );
    let cut = instance(cluster, "  on_writer_change: shutdown_sessions\n");
    let max = Duration::from_secs(60);
    let idle_load = TxnLoad::start(idle.writer_port, CLIENTS, 0, INSIDE, max);
    let cut_load = TxnLoad::start(cut.writer_port, CLIENTS, CLIENTS, INSIDE, max);
    let warm = Instant::now();
    assert!(idle_load.wait_for_commit(warm, Duration::from_secs(10)));
    assert!(cut_load.wait_for_commit(warm, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(1));

    let before = Instant::now();
    let old_writer = busiest_node(&idle_load.record(), before);
    assert_eq!(old_writer, busiest_node(&cut_load.record(), before));
    let old_address = cluster.node_address(node_number(&old_writer));
    // The switchover: the writer is drained on both instances at once (no new sessions; glbd's
    // drain leaves open ones alone), so each elects the next node.
    let switch = Instant::now();
    for instance in [&idle, &cut] {
        assert_eq!(
            control(instance.control, &format!("drain {old_address}\n")),
            "Ok\n"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let (idle_record, cut_record) = (idle_load.finish(), cut_load.finish());
    let (idle_tally, cut_tally) = (tally(&idle_record), tally(&cut_record));

    // Sessions seen on the old writer after the move close between transactions: nothing
    // new begins there once the move had time to be seen (a check interval is not needed:
    // the role moves at once on `drain`).
    let settled = switch + Duration::from_millis(200);
    let late_on_old = committed_on_after(&idle_record, &old_writer, settled);
    let new_writer_commits = idle_record
        .iter()
        .filter(|t| {
            t.begin >= settled
                && t.outcome == Outcome::Committed
                && t.node.as_deref() != Some(old_writer.as_str())
        })
        .count();
    let moved_between = drains(idle.admin, "rw", "between_transactions");
    let moved_at_deadline = drains(idle.admin, "rw", "deadline");
    println!(
        "planned writer switchover ({old_writer} drained), {CLIENTS} clients with transactions \
         of {INSIDE:?} each: close_when_idle: {idle_tally:?}, {moved_between} sessions closed \
         between transactions, {moved_at_deadline} at the deadline, {late_on_old} transactions \
         began on the old writer after the switch, {new_writer_commits} committed on the new \
         one; shutdown_sessions: {cut_tally:?}"
    );
    assert_eq!(
        idle_tally.failed,
        0,
        "close_when_idle: no transaction fails: {:?}\n{}",
        transactions::failures(&idle_record),
        idle.lb.log()
    );
    assert_eq!(
        late_on_old, 0,
        "nothing begins on the old writer after the switch"
    );
    assert!(
        new_writer_commits > 0,
        "the new writer takes the transactions"
    );
    assert!(
        moved_between >= CLIENTS as f64 && moved_at_deadline == 0.0,
        "every session left between transactions: {moved_between} / {moved_at_deadline}"
    );
    assert!(
        cut_tally.failed > 0,
        "shutdown_sessions cuts the transactions in flight: {cut_tally:?}"
    );
}

#[test]
fn maint_moves_a_nodes_sessions_between_transactions_and_drain_leaves_them() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    cluster.sql(1, &transactions::schema());
    let lb = instance(cluster, "  drain_timeout: 2s\n");
    let load = TxnLoad::start(
        lb.reader_port,
        6,
        2 * CLIENTS,
        INSIDE,
        Duration::from_secs(60),
    );
    assert!(load.wait_for_commit(Instant::now(), Duration::from_secs(10)));
    // A client that opens a transaction on node3 and then keeps it open: only the deadline
    // closes it.
    let node3 = cluster.node_address(3);
    let mut open = Blocking::on(lb.reader_port, "node3");
    open.query("BEGIN").unwrap();
    open.query("SELECT n FROM lbtest.acct WHERE id = 63 FOR UPDATE")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    assert_eq!(control(lb.control, &format!("drain {node3}\n")), "Ok\n");
    std::thread::sleep(Duration::from_secs(1));
    let drained_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let record = load.record();
    assert!(
        record
            .iter()
            .any(|t| t.node.as_deref() == Some("node3") && t.begin >= drained_at),
        "drain (glbd's meaning): sessions on node3 stay and go on"
    );

    let maint = Instant::now();
    assert_eq!(control(lb.control, &format!("maint {node3}\n")), "Ok\n");
    std::thread::sleep(Duration::from_millis(1000));
    let moved = drains(lb.admin, "ro", "between_transactions");
    assert_eq!(
        drains(lb.admin, "ro", "deadline"),
        0.0,
        "the open transaction still waits"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let open_closed = open.is_closed();
    let at_deadline = drains(lb.admin, "ro", "deadline");
    let record = load.finish();
    let t = tally(&record);
    let late = committed_on_after(&record, "node3", maint + Duration::from_millis(200));
    println!(
        "maint of node3 under 6 clients with transactions: {t:?}; {moved} sessions closed \
         between transactions within 1 s, {at_deadline} (the transaction held open) at \
         drain_timeout 2s; {late} transactions began on node3 after it"
    );
    assert_eq!(t.failed, 0, "{:?}", transactions::failures(&record));
    assert_eq!(late, 0, "no transaction begins on node3 after maint");
    assert!(
        moved >= 1.0,
        "sessions on node3 closed between transactions"
    );
    assert!(
        open_closed && at_deadline == 1.0,
        "the open transaction is closed at the deadline"
    );
}

/// A blocking connection through galera-lb (mysql_async on a runtime of its own).
struct Blocking {
    runtime: tokio::runtime::Runtime,
    conn: Option<mysql_async::Conn>,
}

impl Blocking {
    /// A connection through `port` that lands on `node` (reconnecting until one does).
    fn on(port: u16, node: &str) -> Blocking {
        use mysql_async::prelude::Queryable;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..30 {
            let found = runtime.block_on(async {
                let mut conn = mysql_async::Conn::new(support::load::app_opts(port))
                    .await
                    .expect("a connection through galera-lb");
                let name: Option<String> =
                    conn.query_first("SELECT @@wsrep_node_name").await.unwrap();
                if name.as_deref() == Some(node) {
                    return Some(conn);
                }
                let _ = conn.disconnect().await;
                None
            });
            if let Some(conn) = found {
                return Blocking {
                    runtime,
                    conn: Some(conn),
                };
            }
        }
        panic!("no connection landed on {node}");
    }

    fn query(&mut self, sql: &str) -> Result<(), String> {
        use mysql_async::prelude::Queryable;
        let conn = self.conn.as_mut().expect("open");
        self.runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(5), conn.query_drop(sql)).await
            })
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
    }

    /// Whether galera-lb closed the connection: a statement fails.
    fn is_closed(&mut self) -> bool {
        self.query("SELECT 1").is_err()
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await
            });
        }
    }
}

#[test]
fn a_node_that_rejects_queries_is_taken_out_at_the_first_check_and_its_idle_sessions_close() {
    let session = FaultSession::begin();
    let cluster = session.cluster;
    cluster.sql(1, &transactions::schema());
    // fall 10 × 300 ms would take 3 s; rejecting queries is an operator's decision and is
    // acted on at once.
    let lb = instance(cluster, "  fall: 10\n  drain_timeout: 5s\n");
    let idle_on_node2 = Blocking::on(lb.reader_port, "node2");
    cluster.reject_queries(2, true);
    let rejected = Instant::now();
    let address = cluster.node_address(2).to_string();
    let down = loop {
        if lb
            .lb
            .log()
            .lines()
            .any(|l| l.contains("backend down") && l.contains(&address))
        {
            break rejected.elapsed();
        }
        assert!(
            rejected.elapsed() < Duration::from_secs(3),
            "{}",
            lb.lb.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(300));
    let closed = drains(lb.admin, "ro", "between_transactions");
    println!(
        "wsrep_reject_queries=ALL on node2 (health.fall 10, interval 300ms): taken out after \
         {:.0} ms; its idle session closed: {closed}",
        down.as_secs_f64() * 1000.0
    );
    assert!(
        down < Duration::from_millis(1000),
        "taken out at the first check: {down:?}"
    );
    assert_eq!(closed, 1.0, "the idle session on node2 is closed");
    drop(idle_on_node2);
}
