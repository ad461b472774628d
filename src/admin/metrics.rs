//! Prometheus metrics, named `galera_lb_*`, and the process's own `process_*` (read from
//! `/proc/self` at each scrape, with the names Prometheus' client libraries give them).
//!
//! Two kinds, so that the proxy's hot path never takes a lock for metrics:
//! - values galera-lb keeps anyway as atomics (connections, bytes, health, weights, roles) are
//!   read when Prometheus scrapes, into a registry built for that scrape ([`render`]);
//! - events that only happen off the hot path (health checks, ERR packets sent to clients,
//!   control commands, refused control and admin clients, reloads, writer changes) are counted
//!   in process-wide collectors ([`crate::core::counters`]).
//!
//! Labels, the same everywhere: `backend` is a backend's identity (its address as configured, or
//! as resolved for a `resolve_every` or discovered one) and `name` its name (`backends[].name`,
//! HAProxy's `server NAME`; the address when none is given, and for backends the control port,
//! discovery or the DNS added). Every per-backend series has both; a series about a backend as a
//! member of a pool adds `pool`. Alerts and dashboards may match on `backend` alone.
//! Counters of things known from the start (listeners, their ERR reasons, pools that elect a
//! writer, reload results, control commands, refusals per port) show 0 before the first event;
//! a backend or listener that goes has its series deleted.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `galera_lb_build_info` | gauge | `version` |
//! | `galera_lb_max_connections` | gauge | none (limits.max_connections as configured) |
//! | `galera_lb_session_cap` | gauge | none (client sessions admitted at once: limits.max_connections, or fewer when the open-files limit leaves room for fewer) |
//! | `galera_lb_connections_active` | gauge | `listener` |
//! | `galera_lb_connections_accepted_total` | counter | `listener` |
//! | `galera_lb_accept_errors_total` | counter | `listener` |
//! | `galera_lb_listener_max_connections` | gauge | `listener` (only listeners with max_connections) |
//! | `galera_lb_client_errors_total` | counter | `listener`, `reason` (ERR packets sent: too_many_connections, no_route, connect_failed, no_usable_backend) |
//! | `galera_lb_backend_connections_active` | gauge | `backend`, `name` |
//! | `galera_lb_backend_connections_total` | counter | `backend`, `name` |
//! | `galera_lb_backend_connect_errors_total` | counter | `backend`, `name`, `reason` |
//! | `galera_lb_backend_sent_bytes_total` | counter | `backend`, `name` (client → backend) |
//! | `galera_lb_backend_received_bytes_total` | counter | `backend`, `name` (backend → client) |
//! | `galera_lb_backend_up` | gauge | `backend`, `name` (health checks pass) |
//! | `galera_lb_backend_usable` | gauge | `pool`, `backend`, `name` (up, in service, weight > 0; a full backend still counts) |
//! | `galera_lb_backend_writer` | gauge | `pool`, `backend`, `name` (1 for the pool's writer) |
//! | `galera_lb_backend_weight` | gauge | `pool`, `backend`, `name` |
//! | `galera_lb_backend_max_connections` | gauge | `pool`, `backend`, `name` (only backends with max_connections) |
//! | `galera_lb_backend_admin_state` | gauge | `backend`, `name`, `state` (1 for the current one) |
//! | `galera_lb_backend_wsrep_local_state` | gauge | `backend`, `name` (1..4, 0 unknown) |
//! | `galera_lb_backend_cluster_size` | gauge | `backend`, `name` (the size that node reports) |
//! | `galera_lb_backend_recv_queue` | gauge | `backend`, `name` (wsrep_local_recv_queue: write-sets received, not yet applied) |
//! | `galera_lb_backend_seqno_lag` | gauge | `backend`, `name` (write-sets the node's wsrep_last_committed trails the most advanced node by) |
//! | `galera_lb_backend_lagging` | gauge | `backend`, `name` (1 while health.lag keeps the node from new reader sessions) |
//! | `galera_lb_backend_flow_control_paused` | gauge | `backend`, `name` (wsrep_flow_control_paused, 0 to 1) |
//! | `galera_lb_backend_segment` | gauge | `backend`, `name` (the node's gmcast.segment; -1 unknown) |
//! | `galera_lb_health_check_duration_seconds` | histogram | `backend`, `name` |
//! | `galera_lb_health_check_failures_total` | counter | `backend`, `name`, `reason` |
//! | `galera_lb_writer_changes_total` | counter | `pool` |
//! | `galera_lb_writer_proposals_total` | counter | `pool`, `outcome` (won, lost, failed; `writer_agreement: cluster`) |
//! | `galera_lb_writer_epoch` | gauge | `pool` (the agreed writer's epoch; `writer_agreement: cluster`, once read) |
//! | `galera_lb_control_commands_total` | counter | `command` |
//! | `galera_lb_access_denied_total` | counter | `port` (control, admin), `reason` (not_allowed, no_token, wrong_token) |
//! | `galera_lb_reloads_total` | counter | `result` (ok, error) |
//! | `galera_lb_sessions_parked` | gauge | none (idle sessions waiting off the runtime, see limits.park_idle_after) |
//! | `galera_lb_clients_held` | gauge | none (clients waiting now for a usable backend: a listener's failover_hold) |
//! | `galera_lb_client_holds_total` | counter | `listener`, `outcome` (served, expired: then the ERR packet, full: limits.max_held_clients reached) |
//! | `galera_lb_session_drains_total` | counter | `listener`, `outcome` (between_transactions, or deadline: health.drain_timeout or pxc_maint_transition_period) |
//! | `galera_lb_client_idle_timeouts_total` | counter | `listener` (sessions closed by limits.client_idle_timeout) |
//! | `galera_lb_proxy_header_rejected_total` | counter | `listener`, `reason` (accept_proxy connections closed: timeout, closed, missing, malformed, too_long, unsupported) |
//! | `galera_lb_port_clients_evicted_total` | counter | `port` (admin, control: connections closed to make room for a new one when max_clients were all taken) |
//! | `process_open_fds` | gauge | none (two per proxied session) |
//! | `process_max_fds` | gauge | none (the soft open-files limit) |
//! | `process_resident_memory_bytes` | gauge | none |
//! | `process_virtual_memory_bytes` | gauge | none |
//! | `process_cpu_seconds_total` | counter | none |
//! | `process_start_time_seconds` | gauge | none |

use std::sync::Arc;

use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::core::backend::AdminState;
use crate::core::counters::metrics;
use crate::proxy::ListenerState;
use crate::state::snapshot::Router;

/// The connection limits in force for the whole process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// `limits.max_connections` as configured.
    pub max_connections: u64,
    /// The client sessions galera-lb admits: `max_connections`, or fewer when the open-files
    /// limit leaves room for fewer (see `crate::core::fd_budget`).
    pub session_cap: u64,
}

/// Every metric in Prometheus' text format.
pub(crate) fn render(router: &Router, listeners: &[Arc<ListenerState>], limits: Limits) -> String {
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
    gauge(
        "galera_lb_max_connections",
        "limits.max_connections as configured: client sessions at once, every listener together.",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(limits.max_connections as i64);
    gauge(
        "galera_lb_session_cap",
        "Client sessions galera-lb admits at once: limits.max_connections, or fewer when the \
         open-files limit leaves room for fewer (two descriptors per session); clients past it get \
         ERROR 1040.",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(limits.session_cap as i64);
    process_metrics(&scrape);

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
    let listener_max = gauge(
        "galera_lb_listener_max_connections",
        "The listener's max_connections (only for listeners that have one).",
        &["listener"],
    );
    for listener in listeners {
        let name = [listener.name.as_str()];
        if let Some(max) = listener.max_connections() {
            listener_max.with_label_values(&name).set(i64::from(max));
        }
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
        &["backend", "name"],
    );
    let backend_total = counter(
        "galera_lb_backend_connections_total",
        "Proxied connections established to each backend.",
        &["backend", "name"],
    );
    let connect_errors = counter(
        "galera_lb_backend_connect_errors_total",
        "Failed connects to each backend, by reason.",
        &["backend", "name", "reason"],
    );
    let sent = counter(
        "galera_lb_backend_sent_bytes_total",
        "Bytes from clients to each backend.",
        &["backend", "name"],
    );
    let received = counter(
        "galera_lb_backend_received_bytes_total",
        "Bytes from each backend to clients.",
        &["backend", "name"],
    );
    let up = gauge(
        "galera_lb_backend_up",
        "1 while the backend's health checks pass (rise/fall applied).",
        &["backend", "name"],
    );
    let admin = gauge(
        "galera_lb_backend_admin_state",
        "1 for the backend's current admin state.",
        &["backend", "name", "state"],
    );
    let wsrep_state = gauge(
        "galera_lb_backend_wsrep_local_state",
        "The node's wsrep_local_state (1 Joining, 2 Donor/Desynced, 3 Joined, 4 Synced; 0 unknown).",
        &["backend", "name"],
    );
    let cluster_size = gauge(
        "galera_lb_backend_cluster_size",
        "The cluster size the node reports (wsrep_cluster_size; 0 unknown).",
        &["backend", "name"],
    );
    let recv_queue = gauge(
        "galera_lb_backend_recv_queue",
        "Write-sets the node has received and not yet applied (wsrep_local_recv_queue).",
        &["backend", "name"],
    );
    let seqno_lag = gauge(
        "galera_lb_backend_seqno_lag",
        "Write-sets the node's wsrep_last_committed trails the most advanced checked node of its cluster by.",
        &["backend", "name"],
    );
    let lagging = gauge(
        "galera_lb_backend_lagging",
        "1 while the node lags (health.lag): no new reader sessions while another reader does not.",
        &["backend", "name"],
    );
    let segment = gauge(
        "galera_lb_backend_segment",
        "The node's Galera segment (gmcast.segment; -1 unknown).",
        &["backend", "name"],
    );
    let flow_control = GaugeVec::new(
        Opts::new(
            "galera_lb_backend_flow_control_paused",
            "The share of time replication was paused by flow control, as the node reports it (wsrep_flow_control_paused, 0 to 1).",
        ),
        &["backend", "name"],
    )
    .expect("valid gauge");
    scrape
        .register(Box::new(flow_control.clone()))
        .expect("registered once per scrape");
    let snapshot = router.load_full();
    for member in snapshot.backends() {
        let backend = &member.backend;
        let backend_name = backend.name();
        let name = [backend.address.as_str(), backend_name.as_str()];
        let c = backend.counters();
        backend_active.with_label_values(&name).set(c.active as i64);
        backend_total.with_label_values(&name).inc_by(c.total);
        for (reason, count) in backend.connect_errors_by_reason() {
            connect_errors
                .with_label_values(&[backend.address.as_str(), backend_name.as_str(), reason])
                .inc_by(count);
        }
        sent.with_label_values(&name).inc_by(c.bytes_to_backend);
        received.with_label_values(&name).inc_by(c.bytes_to_client);
        up.with_label_values(&name)
            .set(i64::from(backend.is_healthy()));
        let current = backend.admin_state();
        for state in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
            admin
                .with_label_values(&[
                    backend.address.as_str(),
                    backend_name.as_str(),
                    state.as_str(),
                ])
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
        recv_queue.with_label_values(&name).set(
            wsrep
                .and_then(|w| w.recv_queue)
                .map_or(0, |q| i64::try_from(q).unwrap_or(i64::MAX)),
        );
        seqno_lag.with_label_values(&name).set(
            report
                .seqno_lag
                .map_or(0, |lag| i64::try_from(lag).unwrap_or(i64::MAX)),
        );
        lagging
            .with_label_values(&name)
            .set(i64::from(backend.is_lagging()));
        segment
            .with_label_values(&name)
            .set(backend.segment().map_or(-1, i64::from));
        flow_control.with_label_values(&name).set(
            wsrep
                .and_then(|w| w.flow_control_paused_ppm)
                .map_or(0.0, |ppm| f64::from(ppm) / 1e6),
        );
    }

    let usable = gauge(
        "galera_lb_backend_usable",
        "1 while the backend can take new clients in this pool (up, in service, weight > 0).",
        &["pool", "backend", "name"],
    );
    let writer = gauge(
        "galera_lb_backend_writer",
        "1 for the pool's writer.",
        &["pool", "backend", "name"],
    );
    let weight = GaugeVec::new(
        Opts::new(
            "galera_lb_backend_weight",
            "The backend's weight in the pool.",
        ),
        &["pool", "backend", "name"],
    )
    .expect("valid gauge");
    scrape
        .register(Box::new(weight.clone()))
        .expect("registered once per scrape");
    let backend_max = gauge(
        "galera_lb_backend_max_connections",
        "The backend's max_connections in the pool (only for backends that have one).",
        &["pool", "backend", "name"],
    );
    let epoch = gauge(
        "galera_lb_writer_epoch",
        "writer_agreement: cluster: the epoch of the pool's agreed writer last read from the \
         cluster's table (pools with an agreed writer only).",
        &["pool"],
    );
    for pool in &snapshot.pools {
        if pool.writer_role.epoch() > 0 {
            let agreed = i64::try_from(pool.writer_role.epoch()).unwrap_or(i64::MAX);
            epoch.with_label_values(&[pool.name.as_str()]).set(agreed);
        }
        let pool_writer = pool.writer();
        for (i, member) in pool.members.iter().enumerate() {
            let backend_name = member.backend.name();
            let labels = [
                pool.name.as_str(),
                member.backend.address.as_str(),
                backend_name.as_str(),
            ];
            usable
                .with_label_values(&labels)
                .set(i64::from(member.is_in_service()));
            writer
                .with_label_values(&labels)
                .set(i64::from(pool_writer == Some(i)));
            weight.with_label_values(&labels).set(member.weight);
            if let Some(max) = member.max_connections {
                backend_max.with_label_values(&labels).set(i64::from(max));
            }
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

/// The process's own figures, as Prometheus' client libraries name them (`process_*`), read from
/// `/proc/self` at each scrape. A figure that cannot be read is left out.
fn process_metrics(scrape: &Registry) {
    let gauge = |name: &str, help: &str, value: f64| {
        let gauge = Gauge::new(name, help).expect("valid gauge");
        gauge.set(value);
        scrape
            .register(Box::new(gauge))
            .expect("registered once per scrape");
    };
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        // The directory being read holds one descriptor of its own: not counted.
        let open = entries.count().saturating_sub(1);
        gauge(
            "process_open_fds",
            "Open file descriptors (two per proxied session).",
            open as f64,
        );
    }
    if let Ok(limit) = crate::core::fd_budget::file_limit() {
        gauge(
            "process_max_fds",
            "The open-files limit (soft RLIMIT_NOFILE).",
            limit.soft as f64,
        );
    }
    let Some(stat) = ProcStat::read() else {
        return;
    };
    gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        stat.virtual_bytes as f64,
    );
    gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        stat.resident_bytes as f64,
    );
    let cpu = Counter::new(
        "process_cpu_seconds_total",
        "User and system CPU time spent, in seconds.",
    )
    .expect("valid counter");
    cpu.inc_by(stat.cpu_seconds);
    scrape
        .register(Box::new(cpu))
        .expect("registered once per scrape");
    if let Some(start) = stat.start_time {
        gauge(
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch.",
            start,
        );
    }
}

/// What `/proc/self/stat` (and `/proc/stat`'s boot time) tell of this process.
#[derive(Debug, Clone, PartialEq)]
struct ProcStat {
    cpu_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
    start_time: Option<f64>,
}

impl ProcStat {
    fn read() -> Option<ProcStat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|t| t.trim().parse::<u64>().ok())
        });
        // SAFETY: sysconf only reads system configuration.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        ProcStat::parse(&stat, boot_time, ticks.max(1) as u64, page.max(1) as u64)
    }

    /// Parses `/proc/self/stat` (fields after the command name, which may hold spaces and
    /// parentheses: everything up to the last `)`), with the boot time, clock ticks per second
    /// and the page size.
    fn parse(stat: &str, boot_time: Option<u64>, ticks: u64, page: u64) -> Option<ProcStat> {
        let rest = &stat[stat.rfind(')')? + 1..];
        // `rest` starts at field 3 (state); fields are numbered from 1 in proc(5).
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let (utime, stime) = (field(14)?, field(15)?);
        let start_ticks = field(22)?;
        Some(ProcStat {
            cpu_seconds: (utime + stime) as f64 / ticks as f64,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            start_time: boot_time.map(|boot| boot as f64 + start_ticks as f64 / ticks as f64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (galera (lb) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 150 0 0 20 0 \
                    9 0 120000 1000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let parsed = ProcStat::parse(stat, Some(1_700_000_000), 100, 4096).unwrap();
        assert_eq!(
            parsed,
            ProcStat {
                cpu_seconds: 4.0,
                virtual_bytes: 1_000_000,
                resident_bytes: 300 * 4096,
                start_time: Some(1_700_001_200.0),
            }
        );
        assert_eq!(ProcStat::parse("garbage", None, 100, 4096), None);
    }

    #[test]
    fn this_process_has_its_figures() {
        let stat = ProcStat::read().expect("/proc/self/stat is readable on Linux");
        assert!(stat.resident_bytes > 0 && stat.virtual_bytes >= stat.resident_bytes);
        assert!(stat.start_time.is_some());
    }
}
