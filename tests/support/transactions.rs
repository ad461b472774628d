//! Clients that keep one connection each and run explicit transactions on it, recording how
//! each ended: for the drains that must not cut a transaction.
//!
//! Each client connects through galera-lb, notes the node (`@@wsrep_node_name`), then loops:
//! `BEGIN`, an `UPDATE` of its own row, a pause *inside* the transaction, an `INSERT`, `COMMIT`.
//! A transaction fails when a statement after its `BEGIN` fails (the work is lost: what a cut
//! session costs); an error on the `BEGIN` itself means the connection was closed between
//! transactions, which loses nothing: the client reconnects and goes on. Both are recorded,
//! and the load stops by itself after `max_duration`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::*;

use super::load::app_opts;

/// The tables (create them as root with `cluster().sql(n, &schema())`): one row per client
/// (64 of them), so that clients never conflict with each other.
pub fn schema() -> String {
    let rows: Vec<String> = (0..64).map(|id| format!("({id}, 0)")).collect();
    format!(
        "CREATE DATABASE IF NOT EXISTS lbtest; \
         CREATE TABLE IF NOT EXISTS lbtest.acct (id INT PRIMARY KEY, n BIGINT NOT NULL); \
         INSERT IGNORE INTO lbtest.acct (id, n) VALUES {}; \
         CREATE TABLE IF NOT EXISTS lbtest.w (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
         node VARCHAR(64) NOT NULL)",
        rows.join(", ")
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    /// A statement after `BEGIN` failed (or `COMMIT` did): the transaction's work is lost.
    Failed(String),
    /// `BEGIN` failed: the connection had been closed between transactions.
    ClosedBetween(String),
    /// Connecting failed.
    ConnectFailed(String),
}

/// One transaction (or connect) of one client.
#[derive(Debug, Clone)]
pub struct Txn {
    pub client: usize,
    /// The node the connection was on (`None` for a failed connect).
    pub node: Option<String>,
    /// When `BEGIN` was sent.
    pub begin: Instant,
    pub end: Instant,
    pub outcome: Outcome,
}

pub struct TxnLoad {
    pub epoch: Instant,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Vec<Txn>>>,
    thread: Option<JoinHandle<()>>,
}

impl TxnLoad {
    /// `clients` clients through `127.0.0.1:port`, each pausing `inside` within every
    /// transaction, for at most `max_duration`. Client `i` updates row `first_row + i`.
    pub fn start(
        port: u16,
        clients: usize,
        first_row: usize,
        inside: Duration,
        max_duration: Duration,
    ) -> TxnLoad {
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (stop.clone(), record.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the transaction load");
            runtime.block_on(async move {
                let deadline = epoch + max_duration;
                let tasks: Vec<_> = (0..clients)
                    .map(|client| {
                        let (stop, record) = (s.clone(), r.clone());
                        let row = first_row + client;
                        tokio::spawn(async move {
                            client_loop(port, client, row, inside, deadline, stop, record).await
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("a transaction client does not panic");
                }
            });
        });
        TxnLoad {
            epoch,
            stop,
            record,
            thread: Some(thread),
        }
    }

    pub fn record(&self) -> Vec<Txn> {
        self.record.lock().unwrap().clone()
    }

    /// Waits until a transaction that began after `after` committed, for up to `timeout`.
    pub fn wait_for_commit(&self, after: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .record()
                .iter()
                .any(|t| t.begin >= after && t.outcome == Outcome::Committed)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn finish(mut self) -> Vec<Txn> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the transaction load does not panic");
        }
        self.record()
    }
}

impl Drop for TxnLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

async fn client_loop(
    port: u16,
    client: usize,
    row: usize,
    inside: Duration,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Vec<Txn>>>,
) {
    let mut conn: Option<(Conn, String)> = None;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let begin = Instant::now();
        let Some((c, node)) = conn.as_mut() else {
            let connected = tokio::time::timeout(STATEMENT_TIMEOUT, async {
                let mut c = Conn::new(app_opts(port)).await?;
                let node: Option<String> = c.query_first("SELECT @@wsrep_node_name").await?;
                Ok::<_, mysql_async::Error>((c, node.unwrap_or_default()))
            })
            .await;
            match connected {
                Ok(Ok(c)) => conn = Some(c),
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "connect timed out".to_string(),
                    };
                    record.lock().unwrap().push(Txn {
                        client,
                        node: None,
                        begin,
                        end: Instant::now(),
                        outcome: Outcome::ConnectFailed(error),
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        };
        let node = node.clone();
        let outcome = transaction(c, row, inside).await;
        let ended = outcome != Outcome::Committed;
        record.lock().unwrap().push(Txn {
            client,
            node: Some(node),
            begin,
            end: Instant::now(),
            outcome,
        });
        if ended {
            // Dropped, not disconnected: the connection is broken or mid-transaction.
            conn = None;
        }
    }
    if let Some((c, _)) = conn {
        let _ = c.disconnect().await;
    }
}

async fn transaction(conn: &mut Conn, row: usize, inside: Duration) -> Outcome {
    match tokio::time::timeout(STATEMENT_TIMEOUT, conn.query_drop("BEGIN")).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Outcome::ClosedBetween(e.to_string()),
        Err(_) => return Outcome::ClosedBetween("BEGIN timed out".into()),
    }
    let body = async {
        conn.query_drop(format!("UPDATE lbtest.acct SET n = n + 1 WHERE id = {row}"))
            .await?;
        tokio::time::sleep(inside).await;
        conn.query_drop("INSERT INTO lbtest.w (node) VALUES (@@wsrep_node_name)")
            .await?;
        conn.query_drop("COMMIT").await
    };
    match tokio::time::timeout(STATEMENT_TIMEOUT, body).await {
        Ok(Ok(())) => Outcome::Committed,
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(_) => Outcome::Failed("timed out".into()),
    }
}

/// How many transactions ended each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub committed: usize,
    pub failed: usize,
    pub closed_between: usize,
    pub connect_failed: usize,
}

pub fn tally(record: &[Txn]) -> Tally {
    let mut t = Tally::default();
    for txn in record {
        match txn.outcome {
            Outcome::Committed => t.committed += 1,
            Outcome::Failed(_) => t.failed += 1,
            Outcome::ClosedBetween(_) => t.closed_between += 1,
            Outcome::ConnectFailed(_) => t.connect_failed += 1,
        }
    }
    t
}

/// Transactions that began on `node` at or after `after` and committed there.
pub fn committed_on_after(record: &[Txn], node: &str, after: Instant) -> usize {
    record
        .iter()
        .filter(|t| {
            t.begin >= after && t.node.as_deref() == Some(node) && t.outcome == Outcome::Committed
        })
        .count()
}

pub fn failures(record: &[Txn]) -> Vec<String> {
    record
        .iter()
        .filter_map(|t| match &t.outcome {
            Outcome::Failed(e) => Some(format!(
                "client {} on {:?}: {e}",
                t.client,
                t.node.as_deref()
            )),
            _ => None,
        })
        .take(10)
        .collect()
}
