//! Prometheus metrics, all named `galera_lb_*`.
//!
//! Two kinds, so that the proxy's hot path never takes a lock for metrics:
//! - values galera-lb keeps anyway as atomics (connections, bytes, health, weights, roles) are
//!   read when Prometheus scrapes, into a registry built for that scrape ([`render`]);
//! - events that only happen off the hot path (health checks, ERR packets sent to clients,
//!   control commands, refused control and admin clients, reloads, writer changes) are counted
//!   in process-wide collectors ([`crate::core::counters`]).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `galera_lb_build_info` | gauge | `version` |
//! | `galera_lb_connections_active` | gauge | `listener` |
//! | `galera_lb_connections_accepted_total` | counter | `listener` |
//! | `galera_lb_accept_errors_total` | counter | `listener` |
//! | `galera_lb_client_errors_total` | counter | `listener`, `reason` (ERR packets sent) |
//! | `galera_lb_backend_connections_active` | gauge | `backend` |
//! | `galera_lb_backend_connections_total` | counter | `backend` |
//! | `galera_lb_backend_connect_errors_total` | counter | `backend`, `reason` |
//! | `galera_lb_backend_sent_bytes_total` | counter | `backend` (client → backend) |
//! | `galera_lb_backend_received_bytes_total` | counter | `backend` (backend → client) |
//! | `galera_lb_backend_up` | gauge | `backend` (health checks pass) |
//! | `galera_lb_backend_usable` | gauge | `pool`, `backend` (up, in service, weight > 0; a full backend still counts) |
//! | `galera_lb_backend_writer` | gauge | `pool`, `backend` (1 for the pool's writer) |
//! | `galera_lb_backend_weight` | gauge | `pool`, `backend` |
//! | `galera_lb_backend_admin_state` | gauge | `backend`, `state` (1 for the current one) |
//! | `galera_lb_backend_wsrep_local_state` | gauge | `backend` (1..4, 0 unknown) |
//! | `galera_lb_backend_cluster_size` | gauge | `backend` (the size that node reports) |
//! | `galera_lb_health_check_duration_seconds` | histogram | `backend` |
//! | `galera_lb_health_check_failures_total` | counter | `backend`, `reason` |
//! | `galera_lb_writer_changes_total` | counter | `pool` |
//! | `galera_lb_control_commands_total` | counter | `command` |
//! | `galera_lb_access_denied_total` | counter | `port` (control, admin), `reason` (not_allowed, no_token, wrong_token) |
//! | `galera_lb_reloads_total` | counter | `result` |
//! | `galera_lb_sessions_parked` | gauge | none (idle sessions waiting off the runtime, see limits.park_idle_after) |
//! | `galera_lb_client_idle_timeouts_total` | counter | `listener` (sessions closed by limits.client_idle_timeout) |
//! | `galera_lb_proxy_header_rejected_total` | counter | `listener`, `reason` (accept_proxy connections closed: timeout, closed, missing, malformed, too_long, unsupported) |
//! | `galera_lb_port_clients_evicted_total` | counter | `port` (admin, control: connections closed to make room for a new one when max_clients were all taken) |

use std::sync::Arc;

use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::core::backend::AdminState;
use crate::core::counters::metrics;
use crate::proxy::ListenerState;
use crate::state::snapshot::Router;

/// Every metric in Prometheus' text format.
pub(crate) fn render(router: &Router, listeners: &[Arc<ListenerState>]) -> String {
    let scrape = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| {
        let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
        scrape
            .register(Box::new(gauge.clone()))
            .expect("registered once per scrape");
        gauge
    };
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
        scrape
            .register(Box::new(counter.clone()))
            .expect("registered once per scrape");
        counter
    };

    gauge("galera_lb_build_info", "galera-lb's version.", &["version"])
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);

    let active = gauge(
        "galera_lb_connections_active",
        "Client connections open now.",
        &["listener"],
    );
    let accepted = counter(
        "galera_lb_connections_accepted_total",
        "Client connections accepted.",
        &["listener"],
    );
    let accept_errors = counter(
        "galera_lb_accept_errors_total",
        "accept() failures (EMFILE and the like).",
        &["listener"],
    );
    for listener in listeners {
        let name = [listener.name.as_str()];
        active
            .with_label_values(&name)
            .set(listener.active() as i64);
        accepted
            .with_label_values(&name)
            .inc_by(listener.accepted.load(std::sync::atomic::Ordering::Relaxed));
        accept_errors.with_label_values(&name).inc_by(
            listener
                .accept_errors
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    }

    let backend_active = gauge(
        "galera_lb_backend_connections_active",
        "Proxied connections open now (or being opened) to each backend.",
        &["backend"],
    );
    let backend_total = counter(
        "galera_lb_backend_connections_total",
        "Proxied connections established to each backend.",
        &["backend"],
    );
    let connect_errors = counter(
        "galera_lb_backend_connect_errors_total",
        "Failed connects to each backend, by reason.",
        &["backend", "reason"],
    );
    let sent = counter(
        "galera_lb_backend_sent_bytes_total",
        "Bytes from clients to each backend.",
        &["backend"],
    );
    let received = counter(
        "galera_lb_backend_received_bytes_total",
        "Bytes from each backend to clients.",
        &["backend"],
    );
    let up = gauge(
        "galera_lb_backend_up",
        "1 while the backend's health checks pass (rise/fall applied).",
        &["backend"],
    );
    let admin = gauge(
        "galera_lb_backend_admin_state",
        "1 for the backend's current admin state.",
        &["backend", "state"],
    );
    let wsrep_state = gauge(
        "galera_lb_backend_wsrep_local_state",
        "The node's wsrep_local_state (1 Joining, 2 Donor/Desynced, 3 Joined, 4 Synced; 0 unknown).",
        &["backend"],
    );
    let cluster_size = gauge(
        "galera_lb_backend_cluster_size",
        "The cluster size the node reports (wsrep_cluster_size; 0 unknown).",
        &["backend"],
    );
    let snapshot = router.load_full();
    for member in snapshot.backends() {
        let backend = &member.backend;
        let name = [backend.address.as_str()];
        let c = backend.counters();
        backend_active.with_label_values(&name).set(c.active as i64);
        backend_total.with_label_values(&name).inc_by(c.total);
        for (reason, count) in backend.connect_errors_by_reason() {
            connect_errors
                .with_label_values(&[backend.address.as_str(), reason])
                .inc_by(count);
        }
        sent.with_label_values(&name).inc_by(c.bytes_to_backend);
        received.with_label_values(&name).inc_by(c.bytes_to_client);
        up.with_label_values(&name)
            .set(i64::from(backend.is_healthy()));
        let current = backend.admin_state();
        for state in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
            admin
                .with_label_values(&[backend.address.as_str(), state.as_str()])
                .set(i64::from(state == current));
        }
        let report = backend.report();
        let wsrep = report.wsrep.as_ref();
        wsrep_state
            .with_label_values(&name)
            .set(wsrep.and_then(|w| w.local_state).map_or(0, i64::from));
        cluster_size
            .with_label_values(&name)
            .set(wsrep.and_then(|w| w.cluster_size).map_or(0, i64::from));
    }

    let usable = gauge(
        "galera_lb_backend_usable",
        "1 while the backend can take new clients in this pool (up, in service, weight > 0).",
        &["pool", "backend"],
    );
    let writer = gauge(
        "galera_lb_backend_writer",
        "1 for the pool's writer.",
        &["pool", "backend"],
    );
    let weight = GaugeVec::new(
        Opts::new(
            "galera_lb_backend_weight",
            "The backend's weight in the pool.",
        ),
        &["pool", "backend"],
    )
    .expect("valid gauge");
    scrape
        .register(Box::new(weight.clone()))
        .expect("registered once per scrape");
    for pool in &snapshot.pools {
        let pool_writer = pool.writer();
        for (i, member) in pool.members.iter().enumerate() {
            let labels = [pool.name.as_str(), member.backend.address.as_str()];
            usable
                .with_label_values(&labels)
                .set(i64::from(member.is_in_service()));
            writer
                .with_label_values(&labels)
                .set(i64::from(pool_writer == Some(i)));
            weight.with_label_values(&labels).set(member.weight);
        }
    }

    let mut families = scrape.gather();
    families.extend(metrics().registry.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding of gathered metrics");
    String::from_utf8(out).expect("the text format is UTF-8")
}
