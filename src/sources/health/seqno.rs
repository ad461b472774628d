//! The [`SeqnoProbe`] behind `causal_reads: connect`: a small pool of connections per node,
//! logged in as the check user, each question one `SHOW GLOBAL STATUS LIKE
//! 'wsrep_last_committed'` bounded by `health.timeout`. A reload that changes the health
//! settings gives it the new user, password and timeout ([`MysqlSeqnos::configure`]); the
//! pools of the old ones are dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use mysql_async::Pool;
use mysql_async::prelude::Queryable;

use super::probe::{login_opts, node_pool};
use super::socket::CheckSockets;
use crate::config::HealthConfig;
use crate::core::secret::Secret;
use crate::core::seqno::{SeqnoFuture, SeqnoProbe};

/// Connections kept per node at most: causal sessions that start at once share them.
const CONNECTIONS_PER_NODE: usize = 8;

/// Who the questions log in as, and how long one may take.
#[derive(Debug)]
struct Settings {
    user: String,
    password: Secret,
    timeout: Duration,
}

/// Asks nodes for their `wsrep_last_committed` over pooled connections.
#[derive(Debug)]
pub(crate) struct MysqlSeqnos {
    settings: ArcSwap<Settings>,
    /// The keepalive of the pooled connections (`tcp:` takes a restart to change).
    sockets: CheckSockets,
    pools: Mutex<HashMap<SocketAddr, Pool>>,
}

impl MysqlSeqnos {
    pub(crate) fn new(
        config: &HealthConfig,
        password: &Secret,
        sockets: CheckSockets,
    ) -> MysqlSeqnos {
        MysqlSeqnos {
            sockets,
            settings: ArcSwap::from_pointee(Settings {
                user: config.user.clone(),
                password: password.clone(),
                timeout: config.timeout,
            }),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// Takes new health settings (a reload): later questions log in with them.
    pub(crate) fn configure(&self, config: &HealthConfig, password: &Secret) {
        self.settings.store(Arc::new(Settings {
            user: config.user.clone(),
            password: password.clone(),
            timeout: config.timeout,
        }));
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn pool(&self, node: SocketAddr, settings: &Settings) -> Pool {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(node)
            .or_insert_with(|| {
                let opts = login_opts(&settings.user, &settings.password, node, self.sockets);
                node_pool(opts, CONNECTIONS_PER_NODE)
            })
            .clone()
    }
}

impl SeqnoProbe for MysqlSeqnos {
    fn last_committed(&self, node: SocketAddr) -> SeqnoFuture<'_> {
        Box::pin(async move {
            let settings = self.settings.load_full();
            let pool = self.pool(node, &settings);
            let ask = async {
                let mut conn = pool.get_conn().await.ok()?;
                let row: Option<(String, u64)> = conn
                    .query_first("SHOW GLOBAL STATUS LIKE 'wsrep_last_committed'")
                    .await
                    .ok()?;
                row.map(|(_, seqno)| seqno)
            };
            tokio::time::timeout(settings.timeout, ask)
                .await
                .ok()
                .flatten()
        })
    }
}
