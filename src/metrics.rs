//! Prometheus metrics, all named `galera_lb_*`.
//!
//! Two kinds, so that the proxy's hot path never takes a lock for metrics:
//! - values galera-lb keeps anyway as atomics (connections, bytes, health, weights, roles) are
//!   read when Prometheus scrapes, into a registry built for that scrape ([`render`]);
//! - events that only happen off the hot path (health checks, ERR packets sent to clients,
//!   control commands, refused control and admin clients, reloads, writer changes) are counted
//!   in process-wide collectors ([`metrics`]).
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

use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::backend::AdminState;
use crate::proxy::ListenerState;
use crate::snapshot::Router;

/// Counters of events that happen off the hot path, for the whole process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub check_duration: HistogramVec,
    pub check_failures: IntCounterVec,
    pub client_errors: IntCounterVec,
    pub writer_changes: IntCounterVec,
    pub control_commands: IntCounterVec,
    pub access_denied: IntCounterVec,
    pub reloads: IntCounterVec,
    pub sessions_parked: IntGauge,
    pub idle_timeouts: IntCounterVec,
    pub proxy_header_rejected: IntCounterVec,
}

/// The process-wide event counters.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let check_duration = HistogramVec::new(
            HistogramOpts::new(
                "galera_lb_health_check_duration_seconds",
                "How long health checks took.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["backend"],
        )
        .expect("valid histogram");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
        };
        let metrics = Metrics {
            check_duration,
            check_failures: counter(
                "galera_lb_health_check_failures_total",
                "Failed health checks, by reason.",
                &["backend", "reason"],
            ),
            client_errors: counter(
                "galera_lb_client_errors_total",
                "ERR packets sent to clients galera-lb could not serve, by reason.",
                &["listener", "reason"],
            ),
            writer_changes: counter(
                "galera_lb_writer_changes_total",
                "Times a pool's writer changed (including the first election).",
                &["pool"],
            ),
            control_commands: counter(
                "galera_lb_control_commands_total",
                "Requests on the control port, by command.",
                &["command"],
            ),
            access_denied: counter(
                "galera_lb_access_denied_total",
                "Clients refused on the control or admin port: address not allowed, token \
                 missing or wrong.",
                &["port", "reason"],
            ),
            reloads: counter(
                "galera_lb_reloads_total",
                "Configuration reloads, by result.",
                &["result"],
            ),
            sessions_parked: IntGauge::new(
                "galera_lb_sessions_parked",
                "Idle sessions parked off the runtime until either side sends again.",
            )
            .expect("valid gauge"),
            idle_timeouts: counter(
                "galera_lb_client_idle_timeouts_total",
                "Sessions closed because they moved no bytes for limits.client_idle_timeout.",
                &["listener"],
            ),
            proxy_header_rejected: counter(
                "galera_lb_proxy_header_rejected_total",
                "Connections to accept_proxy listeners closed because their PROXY header was \
                 missing, malformed, too long, unsupported or late, by reason.",
                &["listener", "reason"],
            ),
            registry,
        };
        for collector in [
            Box::new(metrics.check_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.check_failures.clone()),
            Box::new(metrics.client_errors.clone()),
            Box::new(metrics.writer_changes.clone()),
            Box::new(metrics.control_commands.clone()),
            Box::new(metrics.access_denied.clone()),
            Box::new(metrics.reloads.clone()),
            Box::new(metrics.sessions_parked.clone()),
            Box::new(metrics.idle_timeouts.clone()),
            Box::new(metrics.proxy_header_rejected.clone()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("each metric is registered once");
        }
        metrics
    })
}

/// Every metric in Prometheus' text format.
pub fn render(router: &Router, listeners: &[Arc<ListenerState>]) -> String {
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
