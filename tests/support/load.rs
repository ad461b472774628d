//! A continuous client load through galera-lb, and the record of every attempt it made.
//!
//! [`Load::start`] runs `tasks` concurrent clients on a runtime of its own (a background thread),
//! so the test that drives it can stay synchronous and block on cluster faults freely. Each client
//! loops: connect (app/app over TCP), run the workload's statements, disconnect; it records one
//! [`Attempt`] per loop — when it started and ended, the node that answered (`@@wsrep_node_name`)
//! and the error, if any — then pauses briefly. Every attempt is bounded by a timeout (a paused
//! node accepts TCP but never answers), and the whole load stops by itself after `max_duration`
//! or `max_attempts_per_task`, whichever comes first, or when [`Load::finish`] asks it to.
//!
//! The helpers at the bottom ([`errors_after`], [`sessions_on`], ...) answer the questions the
//! tests ask of the record, and [`describe`] prints attempts for failure messages.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};

/// What each client does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `SELECT @@wsrep_node_name, COUNT(*) FROM lbtest.t`: a table read, which a node that is
    /// non-Primary, not ready or rejecting queries refuses (1047), where `SELECT 1` would not.
    Read,
    /// The read, then `INSERT INTO lbtest.w (node) VALUES (@@wsrep_node_name)`: refused (1290)
    /// by a `read_only` node for `app`, which lacks READ_ONLY ADMIN.
    Write,
}

/// The tables the workloads use; create them (as root, on a Synced node) with
/// `cluster().sql(n, SCHEMA)` before starting a load.
pub const SCHEMA: &str = "CREATE DATABASE IF NOT EXISTS lbtest; \
    CREATE TABLE IF NOT EXISTS lbtest.t (id INT PRIMARY KEY); \
    INSERT IGNORE INTO lbtest.t VALUES (1); \
    CREATE TABLE IF NOT EXISTS lbtest.w (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
    node VARCHAR(64) NOT NULL)";

/// How to run a load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// A label for messages (e.g. the listener's name).
    pub label: String,
    /// galera-lb's listener port on 127.0.0.1.
    pub port: u16,
    pub workload: Workload,
    /// Concurrent clients.
    pub tasks: usize,
    /// Pause between two attempts of one client (keeps connection churn, and TIME_WAIT, modest).
    pub pause: Duration,
    /// The longest one attempt (connect + statements + disconnect) may take before it counts as
    /// failed.
    pub attempt_timeout: Duration,
    /// The load stops by itself after this long...
    pub max_duration: Duration,
    /// ...or after this many attempts per client.
    pub max_attempts_per_task: usize,
}

impl LoadSpec {
    /// Six readers, 20 ms apart each (about 250 attempts a second in all), stopping by
    /// themselves after 90 s. An attempt takes a few milliseconds; one that takes 1 s has met a
    /// node that does not answer (frozen), and fails then, so that its client is free again by
    /// the time galera-lb has stopped sending clients there.
    pub fn reads(label: &str, port: u16) -> LoadSpec {
        LoadSpec {
            label: label.to_string(),
            port,
            workload: Workload::Read,
            tasks: 6,
            pause: Duration::from_millis(20),
            attempt_timeout: Duration::from_secs(1),
            max_duration: Duration::from_secs(90),
            max_attempts_per_task: 10_000,
        }
    }

    pub fn writes(label: &str, port: u16) -> LoadSpec {
        LoadSpec {
            workload: Workload::Write,
            ..LoadSpec::reads(label, port)
        }
    }
}

/// One connect-query-disconnect of one client.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Which client (0..tasks).
    pub task: usize,
    pub start: Instant,
    pub end: Instant,
    /// The node that answered the read, when it got that far.
    pub node: Option<String>,
    /// Why the attempt failed; `None` when every statement succeeded.
    pub error: Option<String>,
}

impl Attempt {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// A running load; [`Load::finish`] stops it and returns every attempt.
pub struct Load {
    pub spec: LoadSpec,
    /// When the load started: the origin of the times [`describe`] prints.
    pub epoch: Instant,
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Starts the clients and returns at once.
    pub fn start(spec: LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let epoch = Instant::now();
        let thread = {
            let (spec, stop, attempts) = (spec.clone(), stop.clone(), attempts.clone());
            std::thread::Builder::new()
                .name(format!("load-{}", spec.label))
                .spawn(move || run(spec, epoch, stop, attempts))
                .expect("a thread for the client load")
        };
        Load {
            spec,
            epoch,
            stop,
            attempts,
            thread: Some(thread),
        }
    }

    /// The attempts finished so far (the load keeps running).
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// Waits, up to `timeout`, until an attempt that started at or after `after` satisfies
    /// `predicate`; returns it.
    pub fn wait_for(
        &self,
        after: Instant,
        timeout: Duration,
        predicate: impl Fn(&Attempt) -> bool,
    ) -> Option<Attempt> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .attempts
                .lock()
                .unwrap()
                .iter()
                .find(|a| a.start >= after && predicate(a))
                .cloned();
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients (each finishes its current attempt, bounded by the attempt timeout)
    /// and returns every attempt, in order of start.
    pub fn finish(mut self) -> Vec<Attempt> {
        self.stop_and_join();
        let mut all = std::mem::take(&mut *self.attempts.lock().unwrap());
        all.sort_by_key(|a| a.start);
        all
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the load thread does not panic");
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(spec: LoadSpec, epoch: Instant, stop: Arc<AtomicBool>, attempts: Arc<Mutex<Vec<Attempt>>>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the load");
    runtime.block_on(async move {
        let deadline = epoch + spec.max_duration;
        let clients: Vec<_> = (0..spec.tasks)
            .map(|task| {
                let (spec, stop, attempts) = (spec.clone(), stop.clone(), attempts.clone());
                tokio::spawn(async move {
                    for _ in 0..spec.max_attempts_per_task {
                        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                            break;
                        }
                        let start = Instant::now();
                        let outcome =
                            tokio::time::timeout(spec.attempt_timeout, attempt(&spec)).await;
                        let (node, error) = match outcome {
                            Ok(Ok(node)) => (Some(node), None),
                            Ok(Err((node, error))) => (node, Some(error)),
                            Err(_) => (
                                None,
                                Some(format!("no answer within {:?}", spec.attempt_timeout)),
                            ),
                        };
                        attempts.lock().unwrap().push(Attempt {
                            task,
                            start,
                            end: Instant::now(),
                            node,
                            error,
                        });
                        tokio::time::sleep(spec.pause).await;
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("a load client does not panic");
        }
    });
}

/// Options for the sandbox's `app` user through `127.0.0.1:port` (galera-lb or a node), over TCP.
pub fn app_opts(port: u16) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app"))
        // mysql_async would otherwise switch to the node's unix socket, bypassing galera-lb.
        .prefer_socket(false)
}

/// One attempt: the node's name, or the node (if known) and the error. The session ends with
/// COM_QUIT whenever it can, also after a failed statement, so that the load leaves no aborted
/// connections behind on the servers.
async fn attempt(spec: &LoadSpec) -> Result<String, (Option<String>, String)> {
    let mut conn = Conn::new(app_opts(spec.port))
        .await
        .map_err(|e| (None, format!("connect: {e}")))?;
    match statements(&mut conn, spec.workload).await {
        Ok(node) => match conn.disconnect().await {
            Ok(()) => Ok(node),
            Err(e) => Err((Some(node), format!("disconnect: {e}"))),
        },
        Err(failure) => {
            let _ = conn.disconnect().await;
            Err(failure)
        }
    }
}

async fn statements(
    conn: &mut Conn,
    workload: Workload,
) -> Result<String, (Option<String>, String)> {
    let row: Option<(String, i64)> = conn
        .query_first("SELECT @@wsrep_node_name, COUNT(*) FROM lbtest.t")
        .await
        .map_err(|e| (None, format!("read: {e}")))?;
    let Some((node, _)) = row else {
        return Err((None, "read: no row".to_string()));
    };
    if workload == Workload::Write {
        conn.query_drop("INSERT INTO lbtest.w (node) VALUES (@@wsrep_node_name)")
            .await
            .map_err(|e| (Some(node.clone()), format!("write: {e}")))?;
    }
    Ok(node)
}

// ---------------------------------------------------------------------------------------------
// Questions asked of the record

/// Failed attempts that started at or after `t`.
pub fn errors_after(attempts: &[Attempt], t: Instant) -> Vec<&Attempt> {
    attempts
        .iter()
        .filter(|a| a.start >= t && a.error.is_some())
        .collect()
}

/// Failed attempts that started in `[from, to)`.
pub fn errors_between(attempts: &[Attempt], from: Instant, to: Instant) -> Vec<&Attempt> {
    attempts
        .iter()
        .filter(|a| a.start >= from && a.start < to && a.error.is_some())
        .collect()
}

/// Attempts that started at or after `after` and were answered by `node`.
pub fn sessions_on<'a>(attempts: &'a [Attempt], node: &str, after: Instant) -> Vec<&'a Attempt> {
    sessions_on_between(attempts, node, after, far_future())
}

/// Attempts that started in `[from, to)` and were answered by `node`.
pub fn sessions_on_between<'a>(
    attempts: &'a [Attempt],
    node: &str,
    from: Instant,
    to: Instant,
) -> Vec<&'a Attempt> {
    attempts
        .iter()
        .filter(|a| a.start >= from && a.start < to && a.node.as_deref() == Some(node))
        .collect()
}

/// Attempts that started in `[from, to)`.
pub fn started_between(attempts: &[Attempt], from: Instant, to: Instant) -> Vec<&Attempt> {
    attempts
        .iter()
        .filter(|a| a.start >= from && a.start < to)
        .collect()
}

/// How many successful attempts each node answered among those that started in `[from, to)`.
pub fn spread_between(attempts: &[Attempt], from: Instant, to: Instant) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in attempts {
        if a.start >= from && a.start < to && a.ok() {
            if let Some(node) = &a.node {
                *counts.entry(node.clone()).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// The last attempt answered by `node`, if any: when galera-lb last sent a client there.
pub fn last_session_on<'a>(attempts: &'a [Attempt], node: &str) -> Option<&'a Attempt> {
    attempts
        .iter()
        .filter(|a| a.node.as_deref() == Some(node))
        .max_by_key(|a| a.start)
}

/// Well past any test's end (an upper bound for the `_between` helpers).
pub fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(24 * 3600)
}

/// Attempts as lines for a failure message, times relative to `epoch`; at most `limit` of them
/// (the first ones), with a count of the rest.
pub fn describe(attempts: &[&Attempt], epoch: Instant, limit: usize) -> String {
    let mut out = String::new();
    for a in attempts.iter().take(limit) {
        out.push_str(&format!("  {}\n", Shown(a, epoch)));
    }
    if attempts.len() > limit {
        out.push_str(&format!("  ... and {} more\n", attempts.len() - limit));
    }
    if attempts.is_empty() {
        out.push_str("  (none)\n");
    }
    out
}

/// Seconds from `epoch` to `t` (negative before it), for messages.
pub fn secs(epoch: Instant, t: Instant) -> f64 {
    if t >= epoch {
        (t - epoch).as_secs_f64()
    } else {
        -(epoch - t).as_secs_f64()
    }
}

struct Shown<'a>(&'a Attempt, Instant);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, epoch) = (self.0, self.1);
        write!(
            f,
            "client {} at {:+.3}s..{:+.3}s node={} {}",
            a.task,
            secs(epoch, a.start),
            secs(epoch, a.end),
            a.node.as_deref().unwrap_or("?"),
            match &a.error {
                None => "ok".to_string(),
                Some(e) => format!("ERROR {e}"),
            }
        )
    }
}
