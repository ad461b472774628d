//! Galera-aware reads on the real sandbox: a reader that falls behind while it stays Synced
//! gets no new reader sessions until it catches up (`health.lag`); a causal floor at connect
//! (`causal_reads: connect`) makes a read through the reader listener see the write made just
//! before through the writer listener (1000 pairs, the misses counted with and without it);
//! readers prefer the local Galera segment
//! (`locality.segment`), and instances with the same setting agree on the writer.
//!
//! The lag is real: `scripts/sandbox lag 3 on` gives node3 a write load it applies slowly, with
//! its flow control raised so that the cluster does not wait for it; each test first shows that
//! node3's `wsrep_local_recv_queue` grows while it stays Synced. The segment test runs a
//! sandbox of its own whose nodes are in two segments (`gmcast.segment` is not dynamic).
//! Every test is bounded; the figures it prints are the ones docs/src/reads.md quotes.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::time::{Duration, Instant};

use lb::{LbProcess, free_port};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use support::load::{
    self, Attempt, Load, LoadSpec, describe, errors_after, sessions_on, spread_between,
};
use support::sandbox::{Cluster, FaultSession, OwnCluster};

/// `health.interval` and `health.timeout` of these tests.
const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(1000);
/// `health.lag.max_recv_queue`; the resume limit is the default, a quarter (12).
const MAX_RECV_QUEUE: u64 = 50;
const LAG_FALL: u32 = 2;
const LAG_RISE: u32 = 3;
/// Slack for scheduling on a small, busy machine.
const MARGIN: Duration = Duration::from_secs(1);

/// How long `n` checks in a row can take from a change: the check under way may still see the
/// old figures, then each of the `n` starts at most 1.1 × INTERVAL after the previous one ended.
fn checks_window(n: u32) -> Duration {
    TIMEOUT + (INTERVAL.mul_f64(1.1) + TIMEOUT) * n
}

/// One node's figures, read over its own socket (not through galera-lb).
#[derive(Debug, Clone, Copy)]
struct NodeFigures {
    local_state: u32,
    recv_queue: u64,
    last_committed: u64,
}

fn figures(cluster: &Cluster, n: usize) -> NodeFigures {
    let text = cluster.sql(
        n,
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', \
         'wsrep_local_recv_queue', 'wsrep_last_committed')",
    );
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    NodeFigures {
        local_state: value("wsrep_local_state\t") as u32,
        recv_queue: value("wsrep_local_recv_queue\t"),
        last_committed: value("wsrep_last_committed\t"),
    }
}

/// Waits until node `n`'s receive queue is above `limit` while it is Synced; returns when, and
/// the figures then.
fn wait_queue_over(cluster: &Cluster, n: usize, limit: u64) -> (Instant, NodeFigures) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = figures(cluster, n);
        assert_eq!(
            now.local_state, 4,
            "node{n} stays Synced while it lags: {now:?}"
        );
        if now.recv_queue > limit {
            return (Instant::now(), now);
        }
        assert!(
            Instant::now() < deadline,
            "node{n}'s receive queue never passed {limit} within 30 s: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// galera-lb in front of the shared sandbox: `listeners` (name, role, extra lines), round robin,
/// node1 first in the writer order (weight 2), wsrep checks every INTERVAL, `extra` appended.
fn lb_config(cluster: &Cluster, listeners: &[(&str, u16, &str, &str)], extra: &str) -> String {
    let mut yaml = String::from("listeners:\n");
    for (name, port, role, more) in listeners {
        yaml.push_str(&format!(
            "  - name: {name}\n    bind: 127.0.0.1:{port}\n    policy: round_robin\n    \
             role: {role}\n{more}"
        ));
    }
    yaml.push_str("backends:\n");
    for (i, address) in cluster.addresses.iter().enumerate() {
        let weight = if i == 0 { 2 } else { 1 };
        yaml.push_str(&format!(
            "  - address: {address}\n    name: node{}\n    weight: {weight}\n",
            i + 1
        ));
    }
    yaml.push_str(&format!(
        "health:\n  check: wsrep\n  interval: {}ms\n  timeout: {}ms\n  rise: 2\n  fall: 2\n  \
         user: monitor\n  password: monitor\n{extra}",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    ));
    yaml
}

/// Waits until galera-lb's status says every backend is usable.
fn wait_all_usable(admin: std::net::SocketAddr, lb: &LbProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = lb::status(admin);
        let backends = status["backends"].as_array().cloned().unwrap_or_default();
        if !backends.is_empty() && backends.iter().all(|b| b["usable"] == true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every backend usable within 20 s: {status}\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first moment galera-lb's log has `event` for `node`; waits up to `limit`.
fn wait_event(lb: &LbProcess, event: &str, node: &str, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if events(&lb.log(), event, node) > 0 {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no `{event}` for {node} within {limit:?}:\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many lines of `log` report `event` for the backend named `node`.
fn events(log: &str, event: &str, node: &str) -> usize {
    log.lines()
        .filter(|line| {
            line.contains(event)
                && line
                    .replace('"', "")
                    .split_whitespace()
                    .any(|w| w == format!("name={node}"))
        })
        .count()
}

fn backend<'a>(status: &'a serde_json::Value, node: &str) -> &'a serde_json::Value {
    status["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == node))
        .unwrap_or_else(|| panic!("no backend {node} in {status}"))
}

#[test]
fn a_lagging_reader_gets_no_new_sessions_until_it_catches_up_without_flapping_or_errors() {
    let session = FaultSession::begin();
    let cluster = session.cluster;
    let (rw, ro, admin_port) = (free_port(), free_port(), free_port());
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let yaml = lb_config(
        cluster,
        &[("rw", rw, "writer", ""), ("ro", ro, "reader", "")],
        &format!(
            "  lag:\n    max_recv_queue: {MAX_RECV_QUEUE}\n    fall: {LAG_FALL}\n    \
             rise: {LAG_RISE}\nadmin:\n  bind: {admin}\n"
        ),
    );
    let lb = LbProcess::start(&yaml);
    wait_all_usable(admin, &lb);
    let load = Load::start(LoadSpec::reads("ro", ro));
    let serving = load
        .wait_for(load.epoch, Duration::from_secs(10), |a| {
            a.ok() && a.node.as_deref() == Some("node3")
        })
        .expect("node3 serves readers before the lag");
    let _ = serving;

    // Watch node3's queue from before the lag starts: when it first passes the limit.
    let lag_on = Instant::now();
    let watcher = {
        let dir = cluster.dir.clone();
        std::thread::spawn(move || {
            let cluster = Cluster {
                dir,
                addresses: Vec::new(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let now = figures(&cluster, 3);
                if now.recv_queue > MAX_RECV_QUEUE || Instant::now() > deadline {
                    return (Instant::now(), now);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    cluster.lag(3, true);
    let (over, at_over) = watcher.join().unwrap();
    assert!(
        at_over.recv_queue > MAX_RECV_QUEUE,
        "no lag within 30 s: {at_over:?}"
    );
    assert_eq!(at_over.local_state, 4, "node3 stays Synced: {at_over:?}");
    let detected = wait_event(&lb, "backend lagging", "node3", Duration::from_secs(15));
    let detection = detected.saturating_duration_since(over);
    println!(
        "lag on: node3's queue passed {MAX_RECV_QUEUE} {:.2} s after `lag on` began \
         ({at_over:?}); galera-lb left it out {:.2} s after that",
        over.duration_since(lag_on).as_secs_f64(),
        detection.as_secs_f64()
    );
    assert!(
        detection <= checks_window(LAG_FALL) + MARGIN,
        "within two checks: {detection:?}\n{}",
        lb.log()
    );

    // While it lags: every check shows it Synced and behind; no new session goes there.
    let quiet_from = detected + Duration::from_millis(100);
    let watch_until = detected + Duration::from_secs(6);
    let (mut most, mut least) = (0u64, u64::MAX);
    let (mut most_gap, mut samples) = (0u64, 0);
    while Instant::now() < watch_until {
        let node3 = figures(cluster, 3);
        let node1 = figures(cluster, 1);
        assert_eq!(node3.local_state, 4, "node3 stays Synced: {node3:?}");
        most = most.max(node3.recv_queue);
        least = least.min(node3.recv_queue);
        most_gap = most_gap.max(node1.last_committed.saturating_sub(node3.last_committed));
        samples += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = lb::status(admin);
    let node3 = backend(&status, "node3");
    assert_eq!(node3["lagging"], true, "{node3}");
    assert_eq!(
        node3["usable"], true,
        "a lagging node stays usable: {node3}"
    );
    assert!(
        node3["lag_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("recv_queue ")),
        "{node3}"
    );
    let metrics = lb::http_get(admin, "/metrics").body;
    let series = |metric: &str, n: usize| {
        let address = cluster.node_address(n).to_string();
        let node = format!("node{n}");
        lb::metric_in(
            &metrics,
            metric,
            &[("backend", address.as_str()), ("name", node.as_str())],
        )
    };
    let lagging = |n| series("galera_lb_backend_lagging", n);
    assert_eq!(
        (lagging(1), lagging(2), lagging(3)),
        (Some(0.0), Some(0.0), Some(1.0)),
        "{metrics}"
    );
    assert!(
        series("galera_lb_backend_recv_queue", 3).is_some_and(|q| q > MAX_RECV_QUEUE as f64 / 4.0),
        "{metrics}"
    );
    let attempts = load.attempts();
    let on_lagging = sessions_on(&attempts, "node3", quiet_from)
        .into_iter()
        .filter(|a| a.start < watch_until)
        .count();
    let spread = spread_between(&attempts, quiet_from, watch_until);
    println!(
        "while lagging ({samples} samples over 6 s): node3's recv_queue {least}..{most}, \
         last_committed up to {most_gap} behind node1; reader sessions {spread:?}"
    );
    assert!(
        least > MAX_RECV_QUEUE / 4,
        "node3 lagged all along: {least}"
    );
    assert_eq!(on_lagging, 0, "no new reader session on node3: {spread:?}");
    assert!(
        spread.len() == 2 && spread.values().all(|&n| n > 50),
        "{spread:?}"
    );

    // Caught up: a reader again, once.
    cluster.lag(3, false);
    let lag_off = Instant::now();
    let deadline = lag_off + Duration::from_secs(60);
    let caught_up = loop {
        let node3 = figures(cluster, 3);
        if node3.recv_queue <= MAX_RECV_QUEUE / 4 {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "node3 never caught up: {node3:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let back = wait_event(&lb, "backend caught up", "node3", Duration::from_secs(20));
    let first_session = load
        .wait_for(back, Duration::from_secs(5), |a| {
            a.ok() && a.node.as_deref() == Some("node3")
        })
        .expect("node3 takes reader sessions again");
    println!(
        "lag off: node3 caught up {:.2} s after `lag off`; galera-lb took it back {:.2} s \
         later, its first new session {:.2} s after that",
        caught_up.duration_since(lag_off).as_secs_f64(),
        back.saturating_duration_since(caught_up).as_secs_f64(),
        first_session
            .start
            .saturating_duration_since(back)
            .as_secs_f64()
    );
    assert!(
        back.saturating_duration_since(caught_up) <= checks_window(LAG_RISE) + MARGIN,
        "within rise checks"
    );
    std::thread::sleep(Duration::from_secs(1));
    let attempts = load.finish();
    let errors = errors_after(&attempts, load_epoch(&attempts));
    assert!(
        errors.is_empty(),
        "0 client errors throughout, got {}:\n{}",
        errors.len(),
        describe(&errors, lag_on, 10)
    );
    let log = lb.log();
    assert_eq!(
        (
            events(&log, "backend lagging", "node3"),
            events(&log, "backend caught up", "node3")
        ),
        (1, 1),
        "left out once, back once: no flapping\n{log}"
    );
    for node in ["node1", "node2", "node3"] {
        assert_eq!(events(&log, "backend down", node), 0, "{log}");
    }
    println!("{} reader sessions, 0 errors", attempts.len());
}

/// The start of the earliest attempt (the origin for "throughout").
fn load_epoch(attempts: &[Attempt]) -> Instant {
    attempts
        .iter()
        .map(|a| a.start)
        .min()
        .unwrap_or_else(Instant::now)
}

fn app(port: u16) -> OptsBuilder {
    load::app_opts(port).db_name(Some("lbtest"))
}

/// One session through `port` that inserts `v`, and one through `read_port` that looks for it;
/// whether the read saw it, the node that answered, and how long the reading session took.
async fn write_then_read(write_port: u16, read_port: u16, v: u64) -> (bool, String, Duration) {
    let mut writer = Conn::new(app(write_port)).await.expect("a writer session");
    writer
        .exec_drop("INSERT INTO causal (v) VALUES (?)", (v,))
        .await
        .expect("the write");
    writer.disconnect().await.expect("the writer's COM_QUIT");
    let reading = Instant::now();
    let mut reader = Conn::new(app(read_port)).await.expect("a reader session");
    let row: Option<(String, u64)> = reader
        .exec_first(
            "SELECT @@wsrep_node_name, COUNT(*) FROM causal WHERE v = ?",
            (v,),
        )
        .await
        .expect("the read");
    reader.disconnect().await.expect("the reader's COM_QUIT");
    let took = reading.elapsed();
    let (node, seen) = row.expect("a row");
    (seen == 1, node, took)
}

#[test]
fn a_causal_floor_at_connect_reads_every_write_with_a_lagging_reader_present() {
    let session = FaultSession::begin();
    let cluster = session.cluster;
    cluster.sql(
        1,
        "CREATE TABLE IF NOT EXISTS lbtest.causal (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
         v BIGINT NOT NULL, KEY (v)); TRUNCATE lbtest.causal",
    );
    let (rw, plain, causal) = (free_port(), free_port(), free_port());
    let yaml = lb_config(
        cluster,
        &[
            ("rw", rw, "writer", ""),
            ("plain", plain, "reader", ""),
            ("causal", causal, "reader", "    causal_reads: connect\n"),
        ],
        "",
    );
    let lb = LbProcess::start(&yaml);
    std::thread::sleep(Duration::from_secs(1)); // first checks, the writer elected
    cluster.lag(3, true);
    let (_, at_over) = wait_queue_over(cluster, 3, MAX_RECV_QUEUE);
    std::thread::sleep(INTERVAL * 2); // checks that see it behind

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    const PAIRS: u64 = 1000;
    let started = Instant::now();
    let mut violations = [0u32; 2];
    let mut nodes: [std::collections::BTreeMap<String, u32>; 2] = Default::default();
    let mut missed_on: [std::collections::BTreeMap<String, u32>; 2] = Default::default();
    let mut reading = [Duration::ZERO; 2];
    runtime.block_on(async {
        for i in 0..PAIRS {
            // Interleaved, so both listeners meet the same lag.
            for (k, port) in [plain, causal].into_iter().enumerate() {
                let v = i * 2 + k as u64;
                let (seen, node, took) = write_then_read(rw, port, v).await;
                reading[k] += took;
                if !seen {
                    violations[k] += 1;
                    *missed_on[k].entry(node.clone()).or_insert(0) += 1;
                }
                *nodes[k].entry(node).or_insert(0u32) += 1;
            }
        }
    });
    let lagging_after = figures(cluster, 3);
    println!(
        "{PAIRS} write-then-read pairs per listener in {:.1} s, node3 lagging ({at_over:?} at \
         the start, {lagging_after:?} at the end): without causal_reads {} reads missed their \
         write (on {:?}; reads by node {:?}); with causal_reads: connect {} (on {:?}; reads by \
         node {:?}); a reading session (connect, query, quit) took {:.2} ms without the floor and \
         {:.2} ms with it, on average",
        started.elapsed().as_secs_f64(),
        violations[0],
        missed_on[0],
        nodes[0],
        violations[1],
        missed_on[1],
        nodes[1],
        reading[0].as_secs_f64() * 1000.0 / PAIRS as f64,
        reading[1].as_secs_f64() * 1000.0 / PAIRS as f64
    );
    assert!(
        lagging_after.recv_queue > 0,
        "node3 still lagged at the end: {lagging_after:?}"
    );
    assert_eq!(
        violations[1], 0,
        "causal_reads: connect: every write read back"
    );
    assert!(
        violations[0] > 100,
        "without the floor the lagging reader misses writes (else this test shows nothing)"
    );
    assert!(
        !nodes[1].contains_key("node3"),
        "the floor kept readers off the lagging node3: {:?}",
        nodes[1]
    );
    drop(lb);
}

#[test]
fn readers_stay_in_the_local_segment_and_instances_agree_on_the_writer() {
    // A sandbox of its own: node1 and node2 in segment 0, node3 in segment 1.
    let own = OwnCluster::start_segmented("segments", 4700, [0, 0, 1]);
    let cluster = &own.cluster;
    cluster.sql(1, load::SCHEMA);
    let start = |locality: &str| {
        let (rw, ro, admin_port) = (free_port(), free_port(), free_port());
        let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();
        let yaml = lb_config(
            cluster,
            &[("rw", rw, "writer", ""), ("ro", ro, "reader", "")],
            &format!("{locality}admin:\n  bind: {admin}\n"),
        );
        let lb = LbProcess::start(&yaml);
        wait_all_usable(admin, &lb);
        (lb, rw, ro, admin)
    };
    let local = "locality:\n  segment: 1\n  writer_prefers_segment: true\n";
    let (a, a_rw, a_ro, a_admin) = start(local);
    let (b, b_rw, _, b_admin) = start(local);
    let (plain, _, _, plain_admin) = start("");

    let status = lb::status(a_admin);
    let segments: Vec<_> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| backend(&status, n)["segment"].clone())
        .collect();
    assert_eq!(segments, [0, 0, 1], "read from gmcast.segment: {status}");
    let writer = |admin| {
        let status = lb::status(admin);
        status["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == "rw"))
            .map(|l| l["writer"].clone())
            .unwrap_or_else(|| panic!("no rw listener: {status}"))
    };
    let names = |admin| -> serde_json::Value {
        let w = writer(admin);
        let status = lb::status(admin);
        status["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["address"] == w))
            .map_or(w.clone(), |b| b["name"].clone())
    };
    assert_eq!(names(a_admin), "node3", "the writer prefers segment 1");
    assert_eq!(names(b_admin), "node3", "two instances agree");
    assert_eq!(
        names(plain_admin),
        "node1",
        "without writer_prefers_segment: the usual order (node1, weight 2)"
    );

    let load = Load::start(LoadSpec::reads("ro", a_ro));
    let epoch = load.epoch;
    std::thread::sleep(Duration::from_secs(3));
    let before = spread_between(&load.attempts(), load.epoch, Instant::now());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["node3"],
        "readers stay in segment 1: {before:?}"
    );
    // The local segment has no usable node: the others, without an error.
    cluster.desync(3, true);
    let out = Instant::now();
    std::thread::sleep(checks_window(2) + MARGIN + Duration::from_secs(2));
    let away = spread_between(
        &load.attempts(),
        out + checks_window(2) + MARGIN,
        Instant::now(),
    );
    assert_eq!(
        away.keys().collect::<Vec<_>>(),
        ["node1", "node2"],
        "segment 1 out: segment 0 serves: {away:?}"
    );
    let moved = (names(a_admin), names(b_admin));
    assert_eq!(moved.0, moved.1, "the instances still agree");
    cluster.desync(3, false);
    let back = Instant::now();
    std::thread::sleep(checks_window(2) + MARGIN + Duration::from_secs(2));
    let home = spread_between(
        &load.attempts(),
        back + checks_window(2) + MARGIN,
        Instant::now(),
    );
    let attempts = load.finish();
    assert_eq!(
        home.keys().collect::<Vec<_>>(),
        ["node3"],
        "back in segment 1: {home:?}"
    );
    let errors: Vec<&Attempt> = attempts.iter().filter(|a| !a.ok()).collect();
    assert!(
        errors.is_empty(),
        "0 client errors: {}",
        describe(&errors, epoch, 10)
    );
    println!(
        "segments 0,0,1, locality.segment 1: readers {before:?}; node3 desynced: {away:?}; \
         back: {home:?}; writers {moved:?} while node3 was out; {} sessions, 0 errors",
        attempts.len()
    );
    let _ = (a_rw, b_rw);
    drop((a, b, plain));
}
