//! A bounded fault soak on the real three-node sandbox: continuous mixed load through the real
//! galera-lb binary while node faults and control-port changes cycle, for
//! `GALERA_LB_SOAK_SECS` seconds (default 150 here; the full run is 600:
//! `GALERA_LB_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`).
//!
//! The load: six readers on a round-robin listener and two writers on a `role: writer`
//! listener (`support::load`, connect → statements → disconnect, every attempt recorded), plus
//! six long-lived sessions held open on the round-robin listener the whole time.
//!
//! The cycle, one step at a time, rotating over the nodes: kill -9 and restart, isolate
//! (`gmcast.isolate`) and rejoin, desync and back, pause (SIGSTOP) and resume, and control-port
//! changes (drain and ready, reweight and back). The soak then demands:
//! - no read error in an attempt that started outside a detection window (a window opens one
//!   attempt before a fault is injected and lasts as long as the checks may take to see it, see
//!   `down_window`); no write error outside a failure step (while Galera evicts or readmits a
//!   member it holds every commit for seconds, directly as through any proxy; see `Record`);
//!   desync and control-port steps have no window at all;
//! - long-lived sessions are lost only on the node that failed: after every step, each held
//!   session on another node still answers;
//! - galera-lb never panics, keeps running, and its memory stays flat (RSS after the last step
//!   within 8 MiB of RSS after the first).
//!
//! Errors while no node at all is Primary and ready (a whole-cluster outage, which the soak
//! watches for by asking each node directly every 100 ms) are excused too, and reported: no
//! proxy can serve a query then. On this small, shared VM a stalled node can make all three
//! suspect each other for a few seconds (BENCHMARKS.md, "Anything that looked off").
//!
//! It prints a report: steps, attempts, errors inside and outside the windows, outages, RSS.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use lb::{LbProcess, free_port, rss_kb};
use mysql_async::prelude::*;
use support::load::{self, Attempt, Load, LoadSpec, describe, secs};
use support::sandbox::{self, Cluster};

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(300);
const FALL: u32 = 2;
const RISE: u32 = 2;
/// The load's bound on one attempt (`LoadSpec::reads`).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// As in tests/health.rs: how long after a fault is in effect clients may still be sent to the
/// node, TIMEOUT + FALL × (1.1 × INTERVAL + TIMEOUT), plus 1 s of slack for a busy machine;
/// plus the attempt timeout, since an attempt that started just inside the window may end after
/// it on a node that answers nothing.
fn down_window() -> Duration {
    TIMEOUT + (INTERVAL.mul_f64(1.1) + TIMEOUT) * FALL + Duration::from_secs(1)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    KillRestart,
    IsolateRejoin,
    Desync,
    PauseResume,
    Control,
}

impl Step {
    const CYCLE: [Step; 5] = [
        Step::KillRestart,
        Step::Desync,
        Step::IsolateRejoin,
        Step::Control,
        Step::PauseResume,
    ];

    /// Whether the step takes the node out of service, so that clients may fail for a window.
    fn is_failure(self) -> bool {
        matches!(
            self,
            Step::KillRestart | Step::IsolateRejoin | Step::PauseResume
        )
    }
}

struct Record {
    step: Step,
    node: usize,
    /// Failure steps: reads may fail from the injection (less one attempt, which may have been
    /// under way when the fault struck) to the end of the detection window.
    read_window: Option<(Instant, Instant)>,
    /// Failure steps: writes may fail from the injection until the cluster is Synced again.
    /// While Galera evicts an unresponsive member, or a member rejoins, every node holds its
    /// commits (evs.suspect_timeout is 5 s): no proxy can hide that, and direct clients see it
    /// too. Outside these windows (desync, control steps, quiet times) writes must not fail.
    write_window: Option<(Instant, Instant)>,
    rss_kb: u64,
}

fn soak_duration() -> Duration {
    let secs = std::env::var("GALERA_LB_SOAK_SECS")
        .ok()
        .map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("GALERA_LB_SOAK_SECS={v:?} is not a number"))
        })
        .unwrap_or(150);
    assert!(
        (30..=600).contains(&secs),
        "GALERA_LB_SOAK_SECS must be 30..=600 (the soak is bounded), not {secs}"
    );
    Duration::from_secs(secs)
}

/// Long-lived sessions through the round-robin listener, each with the node it landed on.
struct Held {
    runtime: tokio::runtime::Runtime,
    port: u16,
    sessions: Vec<(mysql_async::Conn, String)>,
}

impl Held {
    fn open(port: u16, count: usize) -> Held {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut held = Held {
            runtime,
            port,
            sessions: Vec::new(),
        };
        for _ in 0..count {
            held.add();
        }
        held
    }

    fn add(&mut self) {
        let port = self.port;
        let session = self.runtime.block_on(async move {
            let mut conn = mysql_async::Conn::new(load::app_opts(port)).await?;
            let node: String = conn
                .query_first("SELECT @@wsrep_node_name")
                .await?
                .unwrap_or_default();
            Ok::<_, mysql_async::Error>((conn, node))
        });
        self.sessions
            .push(session.unwrap_or_else(|e| panic!("cannot open a long-lived session: {e}")));
    }

    /// Checks every held session not on `failed`; replaces those on `failed`. Returns the
    /// sessions that were lost although their node had not failed.
    fn check(&mut self, failed: Option<&str>) -> Vec<String> {
        let mut lost = Vec::new();
        let mut kept = Vec::new();
        for (mut conn, node) in std::mem::take(&mut self.sessions) {
            if Some(node.as_str()) == failed {
                let _ = self.runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await
                });
                continue;
            }
            let answer = self.runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    conn.query_first::<String, _>("SELECT @@wsrep_node_name"),
                )
                .await
            });
            match answer {
                Ok(Ok(Some(now))) if now == node => kept.push((conn, node)),
                other => lost.push(format!("session on {node}: {other:?}")),
            }
        }
        let missing = 6 - kept.len();
        self.sessions = kept;
        for _ in 0..missing {
            self.add();
        }
        lost
    }
}

/// Asks every node directly, every 100 ms, whether it accepts queries (reachable, in a Primary
/// component and `wsrep_ready`), and keeps the answers. From them come two kinds of excuse:
/// - whole-cluster outages, when no node accepted queries (on this small, shared VM a stalled
///   node can make all three suspect each other for a few seconds, see BENCHMARKS.md), when no
///   proxy can serve a query;
/// - refusals: a node that starts refusing queries may still get clients for the detection window
///   (`down_window`). The step's own window covers the fault as injected, but a node can also
///   start refusing later on its own: a paused node resumes still believing in its old Primary
///   view, passes checks, and only drops to non-Primary when it learns it was evicted, seconds
///   after the step.
struct ClusterWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, [bool; 3])>>,
}

/// What [`ClusterWatch::finish`] found, as windows in which errors are excused.
struct Watched {
    outages: Vec<(Instant, Instant)>,
    refusals: Vec<(Instant, Instant)>,
}

impl ClusterWatch {
    fn start(cluster: &'static Cluster) -> ClusterWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut samples = Vec::new();
            let mut conns: Vec<Option<mysql_async::Conn>> = vec![None, None, None];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let mut accepting = [false; 3];
                for (i, slot) in conns.iter_mut().enumerate() {
                    let address = cluster.addresses[i];
                    let ready = runtime.block_on(async {
                        tokio::time::timeout(Duration::from_millis(300), async {
                            if slot.is_none() {
                                let opts = mysql_async::OptsBuilder::default()
                                    .ip_or_hostname(address.ip().to_string())
                                    .tcp_port(address.port())
                                    .user(Some("monitor"))
                                    .pass(Some("monitor"))
                                    .prefer_socket(false);
                                *slot = Some(mysql_async::Conn::new(opts).await?);
                            }
                            let conn = slot.as_mut().unwrap();
                            let rows: Vec<(String, String)> = conn
                                .query(
                                    "SHOW GLOBAL STATUS WHERE Variable_name IN \
                                     ('wsrep_cluster_status', 'wsrep_ready')",
                                )
                                .await?;
                            Ok::<_, mysql_async::Error>(
                                rows.iter()
                                    .any(|(n, v)| n == "wsrep_cluster_status" && v == "Primary")
                                    && rows.iter().any(|(n, v)| n == "wsrep_ready" && v == "ON"),
                            )
                        })
                        .await
                    });
                    match ready {
                        Ok(Ok(ready)) => accepting[i] = ready,
                        _ => *slot = None,
                    }
                }
                samples.push((t, accepting));
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        ClusterWatch { stop, thread }
    }

    /// Outages, each widened by one attempt before it and half a second after it; refusals,
    /// from one attempt before a node was first seen refusing to `down_window` after.
    fn finish(self) -> Watched {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = self.thread.join().expect("the cluster watch thread");
        let previous = |i: usize| samples[..i].last().map_or(samples[i].0, |(p, _)| *p);
        let mut outages: Vec<(Instant, Instant)> = Vec::new();
        let mut refusals = Vec::new();
        for (i, (t, accepting)) in samples.iter().enumerate() {
            for (node, accepts) in accepting.iter().enumerate() {
                let refused_before = i > 0 && !samples[i - 1].1[node];
                if !accepts && !refused_before {
                    refusals.push((previous(i) - ATTEMPT_TIMEOUT, *t + down_window()));
                }
            }
            if accepting.iter().any(|a| *a) {
                continue;
            }
            let from = previous(i) - ATTEMPT_TIMEOUT;
            let to = samples.get(i + 1).map_or(*t, |(n, _)| *n) + Duration::from_millis(500);
            match outages.last_mut() {
                Some(last) if last.1 >= from => last.1 = to,
                _ => outages.push((from, to)),
            }
        }
        Watched { outages, refusals }
    }
}

#[test]
fn faults_and_control_changes_under_load_cost_no_errors_outside_the_windows() {
    let duration = soak_duration();
    let _lock = sandbox::fault_lock();
    let cluster: &'static Cluster = sandbox::cluster();
    cluster.sql(1, load::SCHEMA);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| soak(cluster, duration)));
    let restored = std::panic::catch_unwind(AssertUnwindSafe(|| cluster.restore()));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    restored.expect("the cluster is restored after the soak");
}

fn soak(cluster: &'static Cluster, duration: Duration) {
    let (rr_port, writer_port, control_port) = (free_port(), free_port(), free_port());
    let mut yaml = format!(
        "listeners:\n  - name: rr\n    bind: 127.0.0.1:{rr_port}\n    policy: round_robin\n  \
         - name: writer\n    bind: 127.0.0.1:{writer_port}\n    role: writer\nbackends:\n"
    );
    for address in &cluster.addresses {
        yaml.push_str(&format!("  - address: {address}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  check: wsrep\n  interval: {}ms\n  timeout: {}ms\n  rise: {RISE}\n  \
         fall: {FALL}\n  user: monitor\n  password: monitor\n\
         control:\n  bind: 127.0.0.1:{control_port}\n",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    ));
    let lb = LbProcess::start(&yaml);
    let control: std::net::SocketAddr = ([127, 0, 0, 1], control_port).into();
    let names: Vec<String> = (1..=3).map(|n| format!("node{n}")).collect();

    let long = duration + Duration::from_secs(120);
    let reads = Load::start(LoadSpec {
        max_duration: long,
        max_attempts_per_task: 1_000_000,
        ..LoadSpec::reads("rr", rr_port)
    });
    let writes = Load::start(LoadSpec {
        tasks: 2,
        max_duration: long,
        max_attempts_per_task: 1_000_000,
        ..LoadSpec::writes("writer", writer_port)
    });
    let mut held = Held::open(rr_port, 6);
    let watch = ClusterWatch::start(cluster);
    std::thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    let started_wall = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    let mut records: Vec<Record> = Vec::new();
    let mut lost_sessions = Vec::new();
    let mut index = 0;
    while started.elapsed() < duration {
        let step = Step::CYCLE[index % Step::CYCLE.len()];
        let node = index % 3 + 1;
        index += 1;
        let address = cluster.node_address(node).to_string();
        eprintln!(
            "soak [{:6.1}s] {step:?} on node{node}",
            started.elapsed().as_secs_f64()
        );
        let mut read_window = None;
        let injected = Instant::now();
        let in_flight = injected - ATTEMPT_TIMEOUT;
        match step {
            Step::KillRestart => {
                cluster.kill(node);
                read_window = Some((in_flight, Instant::now() + down_window()));
                std::thread::sleep(down_window() + Duration::from_secs(2));
                cluster.start_node(node);
            }
            Step::IsolateRejoin => {
                cluster.isolate(node);
                read_window = Some((in_flight, Instant::now() + down_window()));
                std::thread::sleep(down_window() + Duration::from_secs(2));
                cluster.rejoin(node);
            }
            Step::PauseResume => {
                cluster.pause(node);
                read_window = Some((in_flight, Instant::now() + down_window()));
                std::thread::sleep(down_window() + Duration::from_secs(2));
                cluster.resume(node);
            }
            Step::Desync => {
                cluster.desync(node, true);
                std::thread::sleep(Duration::from_secs(3));
                cluster.desync(node, false);
            }
            Step::Control => {
                for (request, pause) in [
                    (format!("drain {address}\n"), 2),
                    (format!("ready {address}\n"), 1),
                    (format!("{address}:3\n"), 2),
                    (format!("{address}:1\n"), 1),
                ] {
                    let reply = lb::control(control, &request);
                    assert!(
                        reply.trim_start().starts_with("Ok"),
                        "control request {request:?} got {reply:?}"
                    );
                    std::thread::sleep(Duration::from_secs(pause));
                }
            }
        }
        cluster.wait_synced();
        let write_window =
            read_window.map(|_| (in_flight, Instant::now() + Duration::from_secs(1)));
        // Back in rotation: the rise window, then the held sessions are checked.
        std::thread::sleep(Duration::from_secs(3));
        let failed = step.is_failure().then(|| names[node - 1].as_str());
        for lost in held.check(failed) {
            lost_sessions.push(format!("after {step:?} on node{node}: {lost}"));
        }
        records.push(Record {
            step,
            node,
            read_window,
            write_window,
            rss_kb: rss_kb(lb.pid()),
        });
    }
    let elapsed = started.elapsed();
    let Watched { outages, refusals } = watch.finish();
    let reads = reads.finish();
    let writes = writes.finish();
    let log = lb.log();

    // The report.
    let split = |attempts: &[Attempt], windows: Vec<(Instant, Instant)>| {
        let in_window = |a: &Attempt| {
            windows
                .iter()
                .any(|(from, to)| a.start >= *from && a.start < *to)
        };
        let (inside, outside): (Vec<&Attempt>, Vec<&Attempt>) = attempts
            .iter()
            .filter(|a| a.start >= started && !a.ok())
            .partition(|a| in_window(a));
        (
            inside.len(),
            outside.into_iter().cloned().collect::<Vec<Attempt>>(),
        )
    };
    let with_outages = |windows: Vec<(Instant, Instant)>| {
        windows.into_iter().chain(outages.iter().copied()).collect()
    };
    let (reads_excused, reads_unexcused) = split(
        &reads,
        with_outages(
            records
                .iter()
                .filter_map(|r| r.read_window)
                .chain(refusals.iter().copied())
                .collect(),
        ),
    );
    let (writes_excused, writes_unexcused) = split(
        &writes,
        with_outages(records.iter().filter_map(|r| r.write_window).collect()),
    );
    let outage_secs: f64 = outages.iter().map(|(a, b)| (*b - *a).as_secs_f64()).sum();
    eprintln!(
        "whole-cluster outages (no node Primary and ready; errors then are excused): {} \
         ({outage_secs:.1} s with margins){}",
        outages.len(),
        outages
            .iter()
            .map(|(a, b)| format!(" {:.1}–{:.1} s", secs(started, *a), secs(started, *b)))
            .collect::<String>()
    );
    let late: Vec<String> = refusals
        .iter()
        .filter(|(_, to)| {
            let first_seen = *to - down_window();
            !records
                .iter()
                .filter_map(|r| r.read_window)
                .any(|(a, b)| first_seen >= a && first_seen < b)
        })
        .map(|(a, b)| format!(" {:.1}–{:.1} s", secs(started, *a), secs(started, *b)))
        .collect();
    eprintln!(
        "nodes that started refusing queries outside a step's window (a resumed node learning \
         it was evicted, say; read errors then are excused): {}{}",
        late.len(),
        late.concat()
    );
    let total = reads
        .iter()
        .chain(writes.iter())
        .filter(|a| a.start >= started)
        .count();
    eprintln!(
        "soak report: {} steps in {:.0} s; {total} attempts ({} reads, {} writes); read errors: \
         {reads_excused} inside detection windows, {} outside; write errors: {writes_excused} \
         while the cluster reconfigured, {} outside; long-lived sessions lost on healthy nodes: \
         {}",
        records.len(),
        elapsed.as_secs_f64(),
        reads.len(),
        writes.len(),
        reads_unexcused.len(),
        writes_unexcused.len(),
        lost_sessions.len()
    );
    for r in &records {
        eprintln!(
            "  {:?} on node{}: RSS {} kB{}",
            r.step,
            r.node,
            r.rss_kb,
            r.read_window
                .zip(r.write_window)
                .map(|((from, to), (_, writes_to))| format!(
                    ", reads may fail {:.1}–{:.1} s, writes until {:.1} s",
                    secs(started, from),
                    secs(started, to),
                    secs(started, writes_to)
                ))
                .unwrap_or_default()
        );
    }

    assert!(
        records.len() >= Step::CYCLE.len(),
        "only {} steps ran in {duration:?}; the soak needs every kind of step",
        records.len()
    );
    assert!(!log.contains("panicked"), "galera-lb panicked:\n{log}");
    let mut unexcused_errors = String::new();
    for (what, unexcused) in [("read", &reads_unexcused), ("write", &writes_unexcused)] {
        let unexcused: Vec<&Attempt> = unexcused.iter().collect();
        if !unexcused.is_empty() {
            unexcused_errors.push_str(&format!(
                "{} {what} errors outside their windows:\n{}",
                unexcused.len(),
                describe(&unexcused, started, 30)
            ));
        }
    }
    if !unexcused_errors.is_empty() {
        // What galera-lb said about backends and refused clients, to tell a proxy fault from a
        // node's: state changes and warnings, less the per-client connect retries during faults.
        let said: Vec<&str> = log
            .lines()
            .filter(|line| {
                (line.contains("WARN") || line.contains("backend up") || line.contains("ERROR"))
                    && !line.contains("trying the next one")
            })
            .collect();
        let shown = said.len().saturating_sub(150);
        panic!(
            "{unexcused_errors}\nthe soak started at {started_wall} (RFC 3339, UTC); galera-lb's \
             state changes and warnings (last {}):\n{}",
            said.len() - shown,
            said[shown..].join("\n")
        );
    }
    assert!(
        lost_sessions.is_empty(),
        "long-lived sessions were lost on nodes that had not failed:\n{}",
        lost_sessions.join("\n")
    );
    let first = records[0].rss_kb;
    let last = records.last().unwrap().rss_kb;
    assert!(
        last <= first + 8192,
        "galera-lb's memory grew over the soak: {first} kB after the first step, {last} kB after \
         the last"
    );
    assert!(
        total as f64 >= elapsed.as_secs_f64() * 50.0,
        "the load made only {total} attempts in {elapsed:?}"
    );
}
