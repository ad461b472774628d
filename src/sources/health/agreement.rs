//! `health.writer_agreement: cluster`: each pool's writer kept in a table on the cluster itself,
//! so that every galera-lb instance routes writes to the same node, also after one of them
//! restarts.
//!
//! The table, `SCHEMA.writer` (`health.agreement_schema`, `galera_lb` by default), has one row
//! per pool: `pool`, `node` (the backend's address as configured), `epoch` (bumped on every
//! change) and `updated_at`. It is created when missing. Rows change only by a compare-and-set,
//! `UPDATE ... SET node = ?, epoch = epoch + 1 WHERE pool = ? AND epoch = ?` (or an `INSERT
//! IGNORE` of epoch 1 when the pool has no row): of two instances proposing at once on different
//! nodes, Galera's certification lets one commit and fails the other with a deadlock error
//! (1213); on the same node the second finds the epoch changed and updates 0 rows. Either way the
//! loser reads again and follows the winner.
//!
//! Reads set `wsrep_sync_wait = 1`: the node answers only after it has applied every write-set
//! the cluster had committed when the read arrived, so a read after a won proposal (on any node)
//! sees it. A node outside the Primary component refuses both (1047): no agreement, no change.
//!
//! Node identity is the backend's address as configured (`backends[].address`): the one name all
//! instances with the same file share, and one that stays the same when the node restarts
//! (`wsrep_gcomm_uuid` changes on every restart; `wsrep_node_name` may be unset or repeated;
//! `wsrep_local_index` changes with every view).
//!
//! [`AgreementStore`] is the seam: [`MysqlAgreement`] speaks to the cluster as the check user
//! over a small pool of connections per node; the coordinator's tests use a fake.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use mysql_async::Pool;
use mysql_async::prelude::Queryable;

use super::probe::{login_opts, node_pool};
use super::socket::CheckSockets;
use crate::config::HealthConfig;
use crate::core::secret::Secret;

/// A pool's agreed writer, as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The backend's address as configured.
    pub node: String,
    pub epoch: u64,
}

/// How a proposal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Proposal {
    /// This instance's write committed: the new epoch.
    Won(u64),
    /// Another instance changed the row first (0 rows, or a certification conflict).
    Lost,
    /// No node answered, or one answered with an error (no Primary component, no privilege).
    Failed(String),
}

pub(crate) type AgreementFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the agreed writers live: the cluster's table ([`MysqlAgreement`]), or a fake in tests.
pub(crate) trait AgreementStore: Send + Sync {
    /// The agreed writer of `pool` (`None`: no row yet), read on the first of `nodes` that
    /// answers, with `wsrep_sync_wait`. An error when none does.
    fn read<'a>(
        &'a self,
        nodes: &'a [SocketAddr],
        pool: &'a str,
    ) -> AgreementFuture<'a, Result<Option<Agreed>, String>>;

    /// Compare-and-set: `pool`'s writer becomes `node` if its epoch is still `expected` (`None`:
    /// if the pool has no row yet), on the first of `nodes` that answers.
    fn propose<'a>(
        &'a self,
        nodes: &'a [SocketAddr],
        pool: &'a str,
        node: &'a str,
        expected: Option<u64>,
    ) -> AgreementFuture<'a, Proposal>;
}

/// Connections kept per node at most (the coordinator asks one question at a time).
const CONNECTIONS_PER_NODE: usize = 2;

/// MySQL's and MariaDB's error codes this module tells apart.
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_BAD_DB_ERROR: u16 = 1049;
const ER_NO_SUCH_TABLE: u16 = 1146;

/// The table on the cluster, reached as the check user.
#[derive(Debug)]
pub(crate) struct MysqlAgreement {
    user: String,
    password: Secret,
    timeout: Duration,
    schema: String,
    sockets: CheckSockets,
    pools: Mutex<HashMap<SocketAddr, Pool>>,
}

/// One answer from one node, or why that node gave none.
enum Asked<T> {
    Answer(T),
    /// A certification conflict (deadlock, 1213): another write to the row committed first.
    Conflict,
    Error(String),
}

impl MysqlAgreement {
    /// With the health settings (a reload starts a new coordinator, and with it a new one).
    pub(crate) fn new(
        config: &HealthConfig,
        password: &Secret,
        sockets: CheckSockets,
    ) -> MysqlAgreement {
        MysqlAgreement {
            sockets,
            user: config.user.clone(),
            password: password.clone(),
            timeout: config.timeout,
            schema: config.agreement_schema.clone(),
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn pool(&self, node: SocketAddr) -> Pool {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(node)
            .or_insert_with(|| {
                let opts = login_opts(&self.user, &self.password, node, self.sockets)
                    // Reads wait until the node has applied what the cluster had committed.
                    .init(vec!["SET SESSION wsrep_sync_wait = 1"]);
                node_pool(opts, CONNECTIONS_PER_NODE)
            })
            .clone()
    }

    /// `CREATE DATABASE` and `CREATE TABLE`, both `IF NOT EXISTS` (DDL runs in total order on
    /// every node: instances that create it at once do no harm).
    fn create_statements(&self) -> [String; 2] {
        let schema = &self.schema;
        [
            format!("CREATE DATABASE IF NOT EXISTS `{schema}`"),
            format!(
                "CREATE TABLE IF NOT EXISTS `{schema}`.`writer` (\
                 pool VARCHAR(255) NOT NULL PRIMARY KEY, \
                 node VARCHAR(255) NOT NULL, \
                 epoch BIGINT UNSIGNED NOT NULL, \
                 updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) \
                 ON UPDATE CURRENT_TIMESTAMP(3)) ENGINE=InnoDB"
            ),
        ]
    }

    /// Runs `ask` on `node`, bounded by `health.timeout`; creates the table and asks once more
    /// when it is missing.
    async fn on_node<T, F>(&self, node: SocketAddr, ask: F) -> Asked<T>
    where
        F: for<'c> Fn(
            &'c mut mysql_async::Conn,
        ) -> AgreementFuture<'c, Result<T, mysql_async::Error>>,
    {
        let pool = self.pool(node);
        let attempt = async {
            let mut conn = match pool.get_conn().await {
                Ok(conn) => conn,
                Err(e) => return Asked::Error(format!("{node}: {e}")),
            };
            for first in [true, false] {
                match ask(&mut conn).await {
                    Ok(answer) => return Asked::Answer(answer),
                    Err(mysql_async::Error::Server(e))
                        if first && (e.code == ER_BAD_DB_ERROR || e.code == ER_NO_SUCH_TABLE) =>
                    {
                        for statement in self.create_statements() {
                            if let Err(e) = conn.query_drop(statement).await {
                                return Asked::Error(format!(
                                    "{node}: cannot create {}.writer: {e}",
                                    self.schema
                                ));
                            }
                        }
                    }
                    Err(mysql_async::Error::Server(e)) if e.code == ER_LOCK_DEADLOCK => {
                        return Asked::Conflict;
                    }
                    Err(e) => return Asked::Error(format!("{node}: {e}")),
                }
            }
            Asked::Error(format!("{node}: {}.writer still missing", self.schema))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(asked) => asked,
            Err(_) => Asked::Error(format!("{node}: no answer within {:?}", self.timeout)),
        }
    }
}

impl AgreementStore for MysqlAgreement {
    fn read<'a>(
        &'a self,
        nodes: &'a [SocketAddr],
        pool: &'a str,
    ) -> AgreementFuture<'a, Result<Option<Agreed>, String>> {
        Box::pin(async move {
            let query = format!(
                "SELECT node, epoch FROM `{}`.`writer` WHERE pool = ?",
                self.schema
            );
            let mut errors = Vec::new();
            for &node in nodes {
                let asked = self
                    .on_node(node, |conn| {
                        let (query, pool) = (query.clone(), pool.to_string());
                        Box::pin(async move {
                            let row: Option<(String, u64)> =
                                conn.exec_first(query, (pool,)).await?;
                            Ok(row.map(|(node, epoch)| Agreed { node, epoch }))
                        })
                    })
                    .await;
                match asked {
                    Asked::Answer(row) => return Ok(row),
                    Asked::Conflict => errors.push(format!("{node}: conflict on a read")),
                    Asked::Error(e) => errors.push(e),
                }
            }
            if errors.is_empty() {
                return Err("no node is up to ask".to_string());
            }
            Err(errors.join("; "))
        })
    }

    fn propose<'a>(
        &'a self,
        nodes: &'a [SocketAddr],
        pool: &'a str,
        node: &'a str,
        expected: Option<u64>,
    ) -> AgreementFuture<'a, Proposal> {
        Box::pin(async move {
            let schema = &self.schema;
            let statement = match expected {
                Some(_) => format!(
                    "UPDATE `{schema}`.`writer` SET node = ?, epoch = epoch + 1 \
                     WHERE pool = ? AND epoch = ?"
                ),
                None => format!(
                    "INSERT IGNORE INTO `{schema}`.`writer` (pool, node, epoch) VALUES (?, ?, 1)"
                ),
            };
            let mut errors = Vec::new();
            for &address in nodes {
                let asked = self
                    .on_node(address, |conn| {
                        let statement = statement.clone();
                        let (pool, node) = (pool.to_string(), node.to_string());
                        Box::pin(async move {
                            match expected {
                                Some(epoch) => {
                                    conn.exec_drop(statement, (node, pool, epoch)).await?
                                }
                                None => conn.exec_drop(statement, (pool, node)).await?,
                            }
                            Ok(conn.affected_rows())
                        })
                    })
                    .await;
                match asked {
                    Asked::Answer(1) => return Proposal::Won(expected.map_or(1, |e| e + 1)),
                    Asked::Answer(_) => return Proposal::Lost,
                    // A certification conflict: another instance's write committed first.
                    Asked::Conflict => return Proposal::Lost,
                    Asked::Error(e) => errors.push(e),
                }
            }
            if errors.is_empty() {
                return Proposal::Failed("no node is up to ask".to_string());
            }
            Proposal::Failed(errors.join("; "))
        })
    }
}
