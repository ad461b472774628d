//! The writer role of each pool, kept outside the routing snapshot.
//!
//! A snapshot is immutable and replaced on every change; a session keeps the snapshot's pieces
//! it connected with for as long as it lives. If the writer lived in the snapshot, a session
//! opened before a rebuild would watch a pool that no election touches any more, and keep
//! writing to the old writer after the role moved: two writers. So the role is a [`WriterRole`]
//! per pool name, created once and shared by every snapshot that has the pool (the way a
//! backend's live state is shared), and sessions follow the role, not a snapshot.
//!
//! The role names the backend that holds it (its [`BackendState`], by identity), not a position
//! in a member list, so it means the same thing in every snapshot. It has one owner that changes
//! it: the health coordinator, through [`crate::state::snapshot::Pool::elect_writer`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::core::backend::BackendState;

/// Which backend holds a pool's writer role, and a signal for sessions that follow it.
#[derive(Debug)]
pub struct WriterRole {
    holder: ArcSwapOption<BackendState>,
    /// Bumped on every change of holder.
    changed: watch::Sender<u64>,
    /// `writer_agreement: cluster`: the epoch of the agreed writer last read from the cluster's
    /// table (0: none read yet, or local agreement).
    epoch: AtomicU64,
}

impl Default for WriterRole {
    fn default() -> Self {
        WriterRole {
            holder: ArcSwapOption::empty(),
            changed: watch::Sender::new(0),
            epoch: AtomicU64::new(0),
        }
    }
}

impl WriterRole {
    /// The backend that holds the role now.
    pub(crate) fn holder(&self) -> Option<Arc<BackendState>> {
        self.holder.load_full()
    }

    /// Whether `backend` holds the role now.
    pub(crate) fn is_held_by(&self, backend: &BackendState) -> bool {
        self.holder
            .load()
            .as_deref()
            .is_some_and(|holder| std::ptr::eq(holder, backend))
    }

    /// A receiver that changes whenever the holder changes.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The agreed epoch last read (`writer_agreement: cluster`), 0 when none.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Records the agreed epoch read from the cluster. Only the coordinator calls this.
    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Gives the role to `backend` (or to nobody). Only the election calls this.
    pub(crate) fn hand_to(&self, backend: Option<Arc<BackendState>>) {
        self.holder.store(backend);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Every pool's writer role, by pool name: kept by the updater across snapshots.
#[derive(Debug, Default)]
pub(crate) struct WriterRoles(HashMap<String, Arc<WriterRole>>);

impl WriterRoles {
    /// The role of `pool`, created the first time the pool is seen.
    pub(crate) fn of(&mut self, pool: &str) -> Arc<WriterRole> {
        self.0.entry(pool.to_string()).or_default().clone()
    }

    /// Forgets the roles of pools that are gone.
    pub(crate) fn retain(&mut self, in_use: impl Fn(&str) -> bool) {
        self.0.retain(|name, _| in_use(name));
    }
}
