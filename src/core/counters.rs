//! Counters of events that happen off the hot path (health checks, ERR packets sent to clients,
//! control commands, refused control and admin clients, reloads, writer changes, PROXY header
//! refusals), for the whole process: a leaf that any layer may bump. Rendering them, together
//! with the values galera-lb keeps anyway as atomics, is the admin layer's job
//! (`crate::admin::metrics`), which only reads.

use std::collections::HashMap;
use std::sync::OnceLock;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Counters of events that happen off the hot path, for the whole process.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) registry: Registry,
    pub check_duration: HistogramVec,
    pub check_failures: IntCounterVec,
    pub client_errors: IntCounterVec,
    pub writer_changes: IntCounterVec,
    pub writer_proposals: IntCounterVec,
    pub control_commands: IntCounterVec,
    pub access_denied: IntCounterVec,
    pub reloads: IntCounterVec,
    pub sessions_parked: IntGauge,
    pub idle_timeouts: IntCounterVec,
    pub proxy_header_rejected: IntCounterVec,
    pub clients_evicted: IntCounterVec,
    pub clients_held: IntGauge,
    pub client_holds: IntCounterVec,
    pub session_drains: IntCounterVec,
}

/// How a session that was to close between transactions ended: at an idle point, or at the
/// drain's deadline (busy, or a session galera-lb cannot follow: TLS, compressed).
pub(crate) const DRAIN_OUTCOMES: [&str; 2] = ["between_transactions", "deadline"];

/// How a client's wait for a usable backend (`failover_hold`) ended.
pub(crate) const HOLD_OUTCOMES: [&str; 3] = ["served", "expired", "full"];

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
            &["backend", "name"],
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
                &["backend", "name", "reason"],
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
            writer_proposals: counter(
                "galera_lb_writer_proposals_total",
                "writer_agreement: cluster: this instance's proposals of a new writer to the \
                 cluster's table, by outcome: won, lost (another instance's won), failed (no \
                 answer, no Primary component, an error).",
                &["pool", "outcome"],
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
            clients_held: IntGauge::new(
                "galera_lb_clients_held",
                "Clients waiting now for a usable backend (a listener's failover_hold).",
            )
            .expect("valid gauge"),
            client_holds: counter(
                "galera_lb_client_holds_total",
                "Clients that waited for a usable backend (failover_hold), by how the wait ended: \
                 served, expired (then the ERR packet), full (limits.max_held_clients reached: \
                 the ERR packet at once).",
                &["listener", "outcome"],
            ),
            session_drains: counter(
                "galera_lb_session_drains_total",
                "Sessions closed by a drain between transactions (maint, pxc_maint_mode, \
                 wsrep_reject_queries, close_when_idle), by how: between_transactions, or at \
                 the deadline (health.drain_timeout).",
                &["listener", "outcome"],
            ),
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
            clients_evicted: counter(
                "galera_lb_port_clients_evicted_total",
                "Connections to the admin or control port closed to make room for a new one \
                 (its max_clients were all taken; the idlest goes).",
                &["port"],
            ),
            registry,
        };
        for collector in [
            Box::new(metrics.check_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.check_failures.clone()),
            Box::new(metrics.client_errors.clone()),
            Box::new(metrics.writer_changes.clone()),
            Box::new(metrics.writer_proposals.clone()),
            Box::new(metrics.control_commands.clone()),
            Box::new(metrics.access_denied.clone()),
            Box::new(metrics.reloads.clone()),
            Box::new(metrics.sessions_parked.clone()),
            Box::new(metrics.idle_timeouts.clone()),
            Box::new(metrics.proxy_header_rejected.clone()),
            Box::new(metrics.clients_evicted.clone()),
            Box::new(metrics.clients_held.clone()),
            Box::new(metrics.client_holds.clone()),
            Box::new(metrics.session_drains.clone()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("each metric is registered once");
        }
        metrics
    })
}

/// The reasons of `galera_lb_client_errors_total` (the ERR packets galera-lb sends).
pub(crate) const CLIENT_ERROR_REASONS: [&str; 4] = [
    "too_many_connections",
    "no_route",
    "connect_failed",
    "no_usable_backend",
];

/// The results of `galera_lb_reloads_total`.
pub(crate) const RELOAD_RESULTS: [&str; 2] = ["ok", "error"];

impl Metrics {
    /// Makes a listener's counters show zeros from its start (ERR packets by reason, idle
    /// timeouts), so that rates and alerts work before the first event.
    pub(crate) fn register_listener(&self, listener: &str) {
        for reason in CLIENT_ERROR_REASONS {
            self.client_errors.with_label_values(&[listener, reason]);
        }
        self.idle_timeouts.with_label_values(&[listener]);
        for outcome in HOLD_OUTCOMES {
            self.client_holds.with_label_values(&[listener, outcome]);
        }
        for outcome in DRAIN_OUTCOMES {
            self.session_drains.with_label_values(&[listener, outcome]);
        }
    }

    /// Makes a pool's writer changes show 0 from the start (for a pool that elects a writer).
    pub(crate) fn register_writer_pool(&self, pool: &str) {
        self.writer_changes.with_label_values(&[pool]);
    }

    /// Makes the reload counter show zeros for each result from the start.
    pub(crate) fn register_reloads(&self) {
        for result in RELOAD_RESULTS {
            self.reloads.with_label_values(&[result]);
        }
    }

    /// Deletes every series whose label `label` is `value` (a backend that was removed, say), so
    /// that a scrape shows only what exists.
    pub(crate) fn forget(&self, label: &str, value: &str) {
        self.forget_all(label, &std::collections::HashSet::from([value]));
    }

    /// [`Metrics::forget`] for many values at once: one pass over each metric's series, however
    /// many values go (a reload that drops thousands of backends must not collect every series
    /// once per backend).
    pub(crate) fn forget_all(&self, label: &str, values: &std::collections::HashSet<&str>) {
        if values.is_empty() {
            return;
        }
        forget_in(&self.check_duration, label, values);
        forget_in(&self.check_failures, label, values);
        forget_in(&self.client_errors, label, values);
        forget_in(&self.writer_changes, label, values);
        forget_in(&self.idle_timeouts, label, values);
        forget_in(&self.proxy_header_rejected, label, values);
    }
}

/// Removes the series of `vec` whose label `label` is one of `values`, whatever its other labels.
fn forget_in<T: MetricVecBuilder>(
    vec: &MetricVec<T>,
    label: &str,
    values: &std::collections::HashSet<&str>,
) {
    let doomed: Vec<HashMap<String, String>> = vec
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|pair| pair.name() == label && values.contains(pair.value()))
        })
        .map(|m| {
            m.get_label()
                .iter()
                .map(|pair| (pair.name().to_string(), pair.value().to_string()))
                .collect()
        })
        .collect();
    for labels in &doomed {
        let labels: HashMap<&str, &str> = labels
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let _ = vec.remove(&labels);
    }
}
