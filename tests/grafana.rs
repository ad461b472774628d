//! The Grafana dashboard `deploy/grafana/galera-lb.json`:
//! - its structure: Grafana's dashboard JSON model with a data source variable
//!   (`DS_PROMETHEUS`) and `job`/`instance` query variables; every panel has a unique id, a
//!   place on the grid that no other panel takes, a title and a data source; every query
//!   selects `job="$job",instance="$instance"`; every metric galera-lb documents
//!   (`src/admin/metrics.rs`) is on it, and it names no galera-lb metric that is not documented;
//! - its queries, against the real thing: galera-lb (the real binary) in front of the real
//!   three-node Galera sandbox (`scripts/sandbox`), with a little client traffic and one event
//!   of each kind the panels count (an ERR packet, a refused backend connect, failed checks, a
//!   refused control request, an evicted control client, a reload, a bad PROXY header, an idle
//!   timeout; `writer_agreement: cluster`, so that its proposals and epoch are exported),
//!   scraped every second by a real Prometheus server (`/usr/bin/prometheus`, Debian package
//!   `prometheus`) of the test's own. Every expression of the dashboard (panel targets,
//!   annotations, variable queries), with the variables substituted as Grafana would, is sent
//!   to Prometheus' `/api/v1/query`: an expression that errors fails the test, and so does one
//!   that returns nothing although every metric it names is in galera-lb's export (an event
//!   query ending in `> 0`, an annotation's, is also run without it, which must return data:
//!   no event need have happened). One whose
//!   metrics galera-lb does not export (the `process_*` metrics on a build without them) is
//!   reported as skipped, with the metrics that are missing; a missing `galera_lb_*` metric
//!   fails the test.
//!
//! A missing Prometheus or cluster fails the test with what to install or start; it is never
//! skipped. Prometheus and galera-lb run on loopback, on free ports, and are stopped by the test,
//! also when it fails.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lb::{LbProcess, closed_address, free_port, http_get};
use serde_json::Value;
use support::load::{Load, LoadSpec, SCHEMA};
use support::sandbox;

const DASHBOARD: &str = "deploy/grafana/galera-lb.json";

/// What Grafana puts in place of its built-in variables, for a 1 s scrape interval (Grafana's
/// `$__rate_interval` is at least four scrape intervals).
const BUILT_INS: [(&str, &str); 3] = [
    ("__rate_interval", "10s"),
    ("__interval", "2s"),
    ("__range", "5m"),
];

/// The selector every query of the dashboard carries (each metric it names, that is).
const SELECTOR: [&str; 2] = ["job=\"$job\"", "instance=\"$instance\""];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

// ---------------------------------------------------------------------------------------------
// the dashboard's panels and expressions

/// Every panel, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels: an array") {
        out.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            out.extend(inner.iter());
        }
    }
    out
}

/// One PromQL expression of the dashboard, and where it is.
#[derive(Debug, Clone)]
struct Expression {
    place: String,
    promql: String,
}

/// A variable's query: Grafana keeps it as a string or as `{"query": ...}`.
fn variable_query(variable: &Value) -> String {
    match &variable["query"] {
        Value::String(text) => text.clone(),
        other => other["query"]
            .as_str()
            .unwrap_or_else(|| panic!("variable {}: no query", variable["name"]))
            .to_string(),
    }
}

/// `label_values(SELECTOR, LABEL)` as a PromQL query that returns one series per value.
fn label_values_query(query: &str) -> (String, String) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("a variable query this test does not know: {query}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("label_values without a metric: {query}"));
    let label = label.trim().to_string();
    (format!("count by ({label}) ({})", selector.trim()), label)
}

/// Every panel target's and annotation's expression.
fn expressions(dashboard: &Value) -> Vec<Expression> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(Expression {
                place: format!(
                    "panel {} \"{}\" target {}",
                    panel["id"],
                    panel["title"].as_str().unwrap_or(""),
                    target["refId"].as_str().unwrap_or("?")
                ),
                promql: target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {}: a target without expr", panel["id"]))
                    .to_string(),
            });
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            out.push(Expression {
                place: format!(
                    "annotation \"{}\"",
                    annotation["name"].as_str().unwrap_or("")
                ),
                promql: expr.to_string(),
            });
        }
    }
    out
}

/// The metric names in `promql`, each with the label matchers written after it (`None` when
/// it has none): identifiers outside quotes that start with `galera_lb_` or `process_`, or are
/// followed by `{`.
fn metrics_in(promql: &str) -> Vec<(String, Option<String>)> {
    let bytes = promql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'{' {
            // Label matchers that follow no name: skip them (their names are labels).
            i = selector_end(promql, i) + 1;
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let name = &promql[start..i];
            let selector = (bytes.get(i) == Some(&b'{')).then(|| {
                let end = selector_end(promql, i);
                let matchers = promql[i + 1..end.min(bytes.len())].to_string();
                i = end + 1;
                matchers
            });
            if selector.is_some() || name.starts_with("galera_lb_") || name.starts_with("process_")
            {
                out.push((name.to_string(), selector));
            }
        } else if c.is_ascii_digit() {
            // A number (0.95, 2e3) or a duration (10s): not a name.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Where the label matchers opened by the `{` at `open` close (quoted `}` aside); the length
/// of `promql` when they do not.
fn selector_end(promql: &str, open: usize) -> usize {
    let bytes = promql.as_bytes();
    let mut i = open + 1;
    let mut quoted = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return i,
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// `promql` with the dashboard's variables (`$name`, `${name}`) replaced by `values`; panics on
/// a variable it does not know.
fn substitute(promql: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = promql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("an unclosed ${{ in {promql}"));
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let value = values
            .get(name)
            .unwrap_or_else(|| panic!("${name} in {promql}: not a variable of the dashboard"));
        out.push_str(value);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The metric names galera-lb documents in the table at the top of `src/admin/metrics.rs`.
fn documented_metrics() -> BTreeSet<String> {
    let source = std::fs::read_to_string(root().join("src/admin/metrics.rs")).unwrap();
    let names: BTreeSet<String> = source
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("galera_lb_"))
        .map(str::to_string)
        .collect();
    assert!(
        names.len() > 10,
        "the metrics table of src/admin/metrics.rs was not found: {names:?}"
    );
    names
}

/// A histogram's series names (`_bucket`, `_sum`, `_count`) as the metric's name.
fn family(name: &str, documented: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && documented.contains(base)
        {
            return base.to_string();
        }
    }
    name.to_string()
}

// ---------------------------------------------------------------------------------------------
// the structure

#[test]
fn the_dashboard_is_an_importable_grafana_dashboard() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    assert_eq!(dashboard["uid"], "galera-lb");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    // `id` null: Grafana gives an imported dashboard an id of its own.
    assert!(dashboard["id"].is_null(), "id: {}", dashboard["id"]);

    // The variables: a data source chosen on import (or provisioning), then job and instance.
    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("a variable's name"), v))
        .collect();
    let source = variables["DS_PROMETHEUS"];
    assert_eq!(source["type"], "datasource", "{source}");
    assert_eq!(source["query"], "prometheus", "{source}");
    let reference = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    for name in ["job", "instance"] {
        let variable = variables
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` variable"));
        assert_eq!(variable["type"], "query", "{variable}");
        assert_eq!(variable["datasource"], reference, "{variable}");
        assert!(variable_query(variable).starts_with("label_values("));
        // One galera-lb at a time: per-backend panels would mix instances otherwise.
        assert_eq!(variable["multi"], false, "{variable}");
    }
    assert_eq!(variables.len(), 3, "{variables:?}");

    // Every panel: a unique id, a title, a place on the 24-column grid that no other takes,
    // and (rows aside) the data source and at least one query.
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let all = panels(&dashboard);
    for panel in &all {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("a panel without id: {panel}"));
        assert!(ids.insert(id), "panel id {id} is used twice");
        let title = panel["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "panel {id} has no title");
        let grid = &panel["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| {
            grid[k]
                .as_u64()
                .unwrap_or_else(|| panic!("panel {id} \"{title}\": gridPos.{k} missing: {grid}"))
        });
        assert!(
            h > 0 && w > 0 && x + w <= 24,
            "panel {id} \"{title}\": {grid}"
        );
        for row in y..y + h {
            for column in x..x + w {
                if let Some(other) = cells.insert((row, column), id) {
                    panic!("panels {other} and {id} overlap at row {row}, column {column}");
                }
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], reference, "panel {id} \"{title}\"");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} \"{title}\" has no query");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"], reference, "panel {id}: {target}");
            assert!(
                refs.insert(target["refId"].as_str().expect("refId")),
                "panel {id}: refId used twice"
            );
        }
    }
    let rows: Vec<&str> = all
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "Overview",
            "Cluster and nodes",
            "Sessions and traffic",
            "Errors",
            "Health checks",
            "Control, admin and reloads",
            "Process",
        ]
    );

    // Every query selects the chosen job and instance, with each metric it names.
    let expressions = expressions(&dashboard);
    let mut named = BTreeSet::new();
    let documented = documented_metrics();
    for expression in &expressions {
        let metrics = metrics_in(&expression.promql);
        assert!(!metrics.is_empty(), "{}: names no metric", expression.place);
        for (name, selector) in metrics {
            let selector = selector.unwrap_or_default();
            for matcher in SELECTOR {
                assert!(
                    selector.contains(matcher),
                    "{}: {name} is not selected by {matcher}: {}",
                    expression.place,
                    expression.promql
                );
            }
            if name.starts_with("galera_lb_") {
                named.insert(family(&name, &documented));
            }
        }
    }
    // The dashboard shows every metric galera-lb documents, and no other of galera-lb's.
    let undocumented: Vec<&String> = named.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "the dashboard queries metrics src/admin/metrics.rs does not document: {undocumented:?}"
    );
    let missing: Vec<&String> = documented.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "documented metrics no panel shows: {missing:?}"
    );
    // The process panels: descriptors against the limit, memory, CPU.
    let process: BTreeSet<String> = expressions
        .iter()
        .flat_map(|e| metrics_in(&e.promql))
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("process_"))
        .collect();
    for name in [
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(process.contains(name), "no panel shows {name}: {process:?}");
    }
    eprintln!(
        "{} panels ({} rows), {} expressions",
        all.len(),
        rows.len(),
        expressions.len()
    );
}

#[test]
fn metric_names_and_variables_are_read_as_grafana_and_prometheus_would() {
    assert_eq!(
        metrics_in(
            r#"histogram_quantile(0.95, sum by (backend, le) (rate(galera_lb_x_bucket{job="$job",a="b{c}"}[$__rate_interval])))"#
        ),
        [(
            "galera_lb_x_bucket".to_string(),
            Some(r#"job="$job",a="b{c}""#.to_string())
        )]
    );
    assert_eq!(
        metrics_in(r#"time() - up{job="a"} + 2e3 * process_threads"#),
        [
            ("up".to_string(), Some(r#"job="a""#.to_string())),
            ("process_threads".to_string(), None)
        ]
    );
    let values = BTreeMap::from([
        ("job".to_string(), "galera-lb".to_string()),
        ("__rate_interval".to_string(), "10s".to_string()),
    ]);
    assert_eq!(
        substitute(r#"rate(x{job="$job"}[$__rate_interval]) + ${job}"#, &values),
        r#"rate(x{job="galera-lb"}[10s]) + galera-lb"#
    );
    assert_eq!(
        label_values_query(r#"label_values(galera_lb_build_info{job="$job"}, instance)"#),
        (
            r#"count by (instance) (galera_lb_build_info{job="$job"})"#.to_string(),
            "instance".to_string()
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/// A Prometheus server of the test's own, scraping one target every second, with its
/// configuration and storage in a temporary directory, on a free loopback port. Dropping it stops
/// it (SIGTERM, then SIGKILL) and removes the directory.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

const PROMETHEUS: &str = "/usr/bin/prometheus";

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        use std::os::unix::process::CommandExt;
        assert!(
            Path::new(PROMETHEUS).is_file(),
            "{PROMETHEUS} is missing: install the Debian package `prometheus` \
             (apt-get install -y prometheus)"
        );
        let dir = tempfile::Builder::new()
            .prefix("galera-lb-grafana-")
            .tempdir()
            .unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: galera-lb\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS}: {e}"));
        let mut prometheus = Prometheus {
            child,
            address,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!(
                    "Prometheus exited ({status}) at start; its log:\n{}",
                    prometheus.log()
                );
            }
            if TcpStream::connect(address).is_ok() && http_get(address, "/-/ready").status == 200 {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus was not ready within 20 s; its log:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: its result, or Prometheus' error.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let reply = http_get(
            self.address,
            &format!("/api/v1/query?query={}", percent_encode(promql)),
        );
        let body: Value =
            serde_json::from_str(&reply.body).map_err(|e| format!("not JSON ({e}): {reply:?}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "{} {}: {}",
                reply.status, body["errorType"], body["error"]
            ));
        }
        match body["data"]["resultType"].as_str() {
            Some("vector") | Some("matrix") => Ok(body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()),
            Some("scalar") | Some("string") => Ok(vec![body["data"]["result"].clone()]),
            other => Err(format!("unexpected resultType {other:?}: {body}")),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let group = self.child.id() as i32;
        // SAFETY: kill(2) on the process group we created (the child is not reaped yet, so the
        // id is still ours); no memory is involved.
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; ESRCH when it is already gone.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// galera-lb with a little of everything

/// galera-lb's ports in this test.
struct Ports {
    rw: u16,
    full: u16,
    proxied: u16,
    broken: u16,
    control: SocketAddr,
    admin: SocketAddr,
}

/// galera-lb in front of the sandbox: `rw` and `writer` over the three nodes; `full` (one
/// client at most); `proxied` (expects a PROXY header); `broken` over a pool of two backends
/// that refuse connections, one of them checked on a node's port (so it is up, and every
/// connect to it fails) and one not (its checks fail). Control with a token and one client at
/// a time, the admin port, a 1 s client idle timeout.
fn start_lb() -> (LbProcess, Ports) {
    let nodes = &sandbox::cluster().addresses;
    // The writer agreement's panel needs its metrics: the check user may keep the writer table.
    sandbox::cluster().sql(
        1,
        "GRANT SELECT, INSERT, UPDATE, CREATE ON galera_lb_grafana.* TO 'monitor'@'%'",
    );
    let ports = Ports {
        rw: free_port(),
        full: free_port(),
        proxied: free_port(),
        broken: free_port(),
        control: SocketAddr::from(([127, 0, 0, 1], free_port())),
        admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
    };
    let (refusing_but_up, refusing) = (closed_address(), closed_address());
    let mut yaml = format!(
        "listeners:\n\
         \x20 - name: rw\n    bind: 127.0.0.1:{}\n    policy: round_robin\n\
         \x20 - name: writer\n    bind: 127.0.0.1:{}\n    role: writer\n\
         \x20 - name: full\n    bind: 127.0.0.1:{}\n    max_connections: 1\n\
         \x20 - name: proxied\n    bind: 127.0.0.1:{}\n    accept_proxy: true\n\
         \x20 - name: broken\n    bind: 127.0.0.1:{}\n    pool: broken\n\
         backends:\n",
        ports.rw,
        free_port(),
        ports.full,
        ports.proxied,
        ports.broken
    );
    for node in nodes {
        yaml.push_str(&format!("  - address: {node}\n"));
    }
    yaml.push_str(&format!(
        "pools:\n  - name: broken\n    backends:\n\
         \x20     - address: {refusing_but_up}\n        check_port: {}\n\
         \x20     - address: {refusing}\n        max_connections: 10\n\
         health:\n  check: wsrep\n  user: monitor\n  password: monitor\n  interval: 300ms\n\
         \x20 writer_agreement: cluster\n  agreement_schema: galera_lb_grafana\n\
         limits:\n  client_idle_timeout: 1s\n\
         control:\n  bind: {}\n  token: grafana-test\n  max_clients: 1\n\
         admin:\n  bind: {}\n",
        nodes[0].port(),
        ports.control,
        ports.admin
    ));
    (LbProcess::start(&yaml), ports)
}

/// Connects to `port`, sends `send`, and reads until galera-lb closes (or 5 s pass): what came
/// back.
fn exchange(port: u16, send: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(send);
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

/// One event of each kind the error, control and reload panels count.
fn provoke_events(lb: &LbProcess, ports: &Ports) {
    // A second client on `full` while one holds it: an ERR packet (too_many_connections). The
    // first is closed by the idle timeout a second later (galera_lb_client_idle_timeouts_total).
    let holder = TcpStream::connect(("127.0.0.1", ports.full)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let refused = exchange(ports.full, b"");
        // An ERR packet: 4 bytes of header, then 0xff.
        if refused.get(4) == Some(&0xff) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`full` did not refuse a second client: {refused:?}\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // `broken`: once its first backend is up (checked on a node's port), that backend refuses
    // the connect (galera_lb_backend_connect_errors_total) and the client gets an ERR packet
    // (connect_failed; no_usable_backend before the first check).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let failed = exchange(ports.broken, b"");
        assert_eq!(failed.get(4), Some(&0xff), "{failed:?}\n{}", lb.log());
        let export = http_get(ports.admin, "/metrics").body;
        if export.contains("galera_lb_backend_connect_errors_total{") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connect error on `broken` within 10 s:\n{export}\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Not a PROXY header.
    exchange(ports.proxied, b"GET / HTTP/1.0\r\n\r\n");
    // A change without the token: refused (galera_lb_access_denied_total); with one control
    // client at most, an idle one is evicted by the next (galera_lb_port_clients_evicted_total).
    let idle = TcpStream::connect(ports.control).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let reply = lb::control(ports.control, "127.0.0.1:1:1\n");
    assert!(reply.contains("token"), "{reply}");
    assert!(!lb::control(ports.control, "getinfo\n").is_empty());
    drop(idle);
    // A reload with the same file (galera_lb_reloads_total).
    lb.signal(libc::SIGHUP);
    lb::wait_for_metric(
        ports.admin,
        "galera_lb_reloads_total",
        &[("result", "ok")],
        Duration::from_secs(10),
        |v| v == Some(1.0),
    );
    // The idle client on `full` goes within the 1 s idle timeout.
    let mut holder = holder;
    holder
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = holder.read_to_end(&mut sink);
}

// ---------------------------------------------------------------------------------------------
// every expression against Prometheus

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let started = Instant::now();
    let dashboard = dashboard();
    let _shared = sandbox::shared_lock();
    sandbox::cluster().sql(1, SCHEMA);
    let (lb, ports) = start_lb();

    // A little traffic through `rw` for the rate panels, for the whole test.
    let load = Load::start(LoadSpec {
        tasks: 2,
        pause: Duration::from_millis(100),
        max_duration: Duration::from_secs(45),
        ..LoadSpec::reads("rw", ports.rw)
    });
    provoke_events(&lb, &ports);
    let prometheus = Prometheus::start(ports.admin);

    // Enough scrapes for every rate window ($__rate_interval is 10 s): six of the target.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrapes = prometheus
            .query("count_over_time(galera_lb_build_info[10s])")
            .unwrap_or_default();
        let count = scrapes
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        if count >= 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape galera-lb six times within 30 s: {scrapes:?}\n\
             Prometheus' log:\n{}\ngalera-lb's log:\n{}",
            prometheus.log(),
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let attempts = load.finish();
    assert!(
        attempts.iter().filter(|a| a.ok()).count() > 10,
        "the traffic through rw failed: {} attempts, {} ok",
        attempts.len(),
        attempts.iter().filter(|a| a.ok()).count()
    );

    // What galera-lb exports: each series name.
    let export = http_get(ports.admin, "/metrics");
    assert_eq!(export.status, 200, "{export:?}");
    let exported: BTreeSet<String> = export
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();

    // The variables, as Grafana resolves them: each query must return a value, and the one
    // galera-lb is scraped as must be among them.
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    values.insert("DS_PROMETHEUS".into(), "unused".into());
    for (name, value) in BUILT_INS {
        values.insert(name.into(), value.into());
    }
    let wanted = BTreeMap::from([
        ("job", "galera-lb".to_string()),
        ("instance", ports.admin.to_string()),
    ]);
    let mut checked = 0;
    let mut failures = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap();
        let (query, label) = label_values_query(&variable_query(variable));
        let query = substitute(&query, &values);
        checked += 1;
        let found: Vec<String> = match prometheus.query(&query) {
            Ok(result) => result
                .iter()
                .filter_map(|s| s["metric"][&label].as_str().map(str::to_string))
                .collect(),
            Err(e) => {
                failures.push(format!("variable {name}: {query}: {e}"));
                continue;
            }
        };
        let want = &wanted[name];
        if !found.contains(want) {
            failures.push(format!(
                "variable {name}: {query} gives {found:?}, not {want}"
            ));
        }
        values.insert(name.to_string(), want.clone());
    }

    // Every expression.
    let expressions = expressions(&dashboard);
    let mut skipped = Vec::new();
    let mut with_data = 0;
    for expression in &expressions {
        let full = substitute(&expression.promql, &values);
        checked += 1;
        // An event query (an annotation's) keeps only the moments something happened with a
        // final `> 0`: it must not error, and what it filters must return data.
        let promql = match full.strip_suffix(" > 0") {
            Some(unfiltered) => {
                if let Err(e) = prometheus.query(&full) {
                    failures.push(format!("{}: {full}\n  error: {e}", expression.place));
                    continue;
                }
                unfiltered.to_string()
            }
            None => full,
        };
        match prometheus.query(&promql) {
            Err(e) => failures.push(format!("{}: {promql}\n  error: {e}", expression.place)),
            Ok(result) if !result.is_empty() => with_data += 1,
            Ok(_) => {
                let absent: BTreeSet<String> = metrics_in(&expression.promql)
                    .into_iter()
                    .map(|(name, _)| name)
                    .filter(|name| name != "up" && !exported.contains(name))
                    .collect();
                let own: Vec<&String> = absent
                    .iter()
                    .filter(|name| !name.starts_with("process_"))
                    .collect();
                if absent.is_empty() {
                    failures.push(format!(
                        "{}: {promql}\n  returned nothing, although galera-lb exports every \
                         metric it names",
                        expression.place
                    ));
                } else if !own.is_empty() {
                    failures.push(format!(
                        "{}: {promql}\n  returned nothing: galera-lb does not export {own:?}",
                        expression.place
                    ));
                } else {
                    skipped.push(format!(
                        "{}: galera-lb does not export {absent:?}",
                        expression.place
                    ));
                }
            }
        }
    }
    eprintln!(
        "{checked} queries ({} variables, {} expressions): {with_data} returned data, {} \
         skipped, {} failed; {:.1} s",
        checked - expressions.len(),
        expressions.len(),
        skipped.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    for skip in &skipped {
        eprintln!("skipped: {skip}");
    }
    assert!(
        failures.is_empty(),
        "{} of the dashboard's queries failed:\n{}\n\ngalera-lb exports: {exported:?}\n\
         Prometheus' log:\n{}",
        failures.len(),
        failures.join("\n"),
        prometheus.log()
    );
    drop(prometheus);
    drop(lb);
}
