//! A backend's identity and its live state.
//!
//! A backend is identified by its address as configured (`db1:3306`, `[::1]:3306`): never by its
//! weight or pool, so that a weight change keeps its health and counters. [`BackendState`] holds
//! everything that changes while galera-lb runs (health, connection and byte counters) as atomics,
//! shared by `Arc` between every snapshot that includes the backend; the proxy updates the counters
//! without a lock and readers (metrics, control port) load them when asked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::limit::ActiveCount;

/// Live state of one backend, shared across routing snapshots.
#[derive(Debug)]
pub struct BackendState {
    /// The address as configured, the backend's identity.
    pub address: String,
    /// False while health checks consider the backend down.
    healthy: AtomicBool,
    /// Proxied connections open now, or being opened.
    active: ActiveCount,
    /// Proxied connections ever established.
    total: AtomicU64,
    /// Connect attempts that failed (refused, timed out, unreachable).
    connect_errors: AtomicU64,
    /// Bytes from clients to the backend.
    bytes_to_backend: AtomicU64,
    /// Bytes from the backend to clients.
    bytes_to_client: AtomicU64,
}

/// A point-in-time copy of a backend's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendCounters {
    pub active: u64,
    pub total: u64,
    pub connect_errors: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
}

impl BackendState {
    pub fn new(address: String) -> Self {
        BackendState {
            address,
            healthy: AtomicBool::new(true),
            active: ActiveCount::default(),
            total: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            bytes_to_backend: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub fn active(&self) -> u64 {
        self.active.get()
    }

    pub fn count_established(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_connect_error(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_bytes_to_backend(&self, n: u64) {
        self.bytes_to_backend.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_bytes_to_client(&self, n: u64) {
        self.bytes_to_client.fetch_add(n, Ordering::Relaxed);
    }

    pub fn counters(&self) -> BackendCounters {
        BackendCounters {
            active: self.active.get(),
            total: self.total.load(Ordering::Relaxed),
            connect_errors: self.connect_errors.load(Ordering::Relaxed),
            bytes_to_backend: self.bytes_to_backend.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_to_client.load(Ordering::Relaxed),
        }
    }
}

impl AsRef<ActiveCount> for BackendState {
    fn as_ref(&self) -> &ActiveCount {
        &self.active
    }
}
