//! Fast tests of the admin HTTP port (`src/admin/mod.rs`) and the metrics (`src/admin/metrics.rs`), with
//! galera-lb started in-process in front of small fake TCP backends (`health: check: none`,
//! or `tcp` where a test needs health-check metrics), and of the Prometheus files shipped in
//! `config/` (`alerts.yml`, `prometheus.yml`) with `promtool`.
//!
//! Access to the admin port: `admin.allow` closes other addresses' connections, `admin.token`
//! makes every endpoint but `/live` and `/ready` answer 401 without `Authorization: Bearer`.
//!
//! `promtool` comes with the Debian package `prometheus`; without it these tests fail with a
//! message saying so (they are never skipped). The real-cluster counterparts (a real Prometheus
//! server, the status page in Chromium) are in `tests/observability.rs`.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use galera_lb::config::Config;
use lb::HttpReply;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// fake backends and galera-lb

/// A fake backend: greets each client with its name and a newline, then echoes what it gets; on
/// the client's end of stream it writes "bye\n" and closes.
async fn echo_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                stream.write_all(format!("{name}\n").as_bytes()).await?;
                let mut buf = [0u8; 4096];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        stream.write_all(b"bye\n").await?;
                        return stream.shutdown().await;
                    }
                    stream.write_all(&buf[..n]).await?;
                }
            });
        }
    });
    address
}

/// `127.0.0.1:PORT` with a port that was free a moment ago. (Not port 0: the configuration
/// refuses two binds on 127.0.0.1:0, see the report.)
fn any_port() -> String {
    format!("127.0.0.1:{}", lb::free_port())
}

/// galera-lb started in-process, with its admin port on.
struct Lb {
    running: galera_lb::Running,
    admin: SocketAddr,
}

impl Lb {
    async fn start(yaml: &str) -> Lb {
        let config = Config::from_yaml(yaml, "test.yaml")
            .unwrap_or_else(|e| panic!("the test configuration is invalid: {e}\n{yaml}"));
        let running = galera_lb::start(&config, "test.yaml").await.unwrap();
        let admin = running.admin.expect("the admin port is on");
        Lb { running, admin }
    }

    /// Where listener `name` accepts clients.
    fn listener(&self, name: &str) -> SocketAddr {
        self.running
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no listener {name}"))
            .1
    }

    /// The live state of the backend known as `address`.
    fn backend(
        &self,
        address: SocketAddr,
    ) -> std::sync::Arc<galera_lb::core::backend::BackendState> {
        let snapshot = self.running.router.load_full();
        snapshot
            .find(&address.to_string(), None)
            .unwrap_or_else(|| panic!("no backend {address}"))
            .backend
            .clone()
    }

    async fn request(&self, method: &str, path: &str) -> HttpReply {
        let (admin, method, path) = (self.admin, method.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || lb::http(admin, &method, &path))
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> HttpReply {
        self.request("GET", path).await
    }

    /// A request with more headers (`Authorization`).
    async fn request_with(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        let (admin, method, path) = (self.admin, method.to_string(), path.to_string());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            lb::http_with(admin, &method, &path, &headers)
        })
        .await
        .unwrap()
    }

    async fn scrape(&self) -> Scrape {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, 200, "/metrics: {reply:?}");
        Scrape::parse(&reply.body)
    }

    async fn status(&self) -> Value {
        let reply = self.get("/status").await;
        assert_eq!(reply.status, 200, "/status: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("/status is not valid JSON ({e}): {}", reply.body))
    }

    /// Scrapes until `accept` is happy with the metrics, for up to 5 s; panics with the last
    /// scrape otherwise.
    async fn scrape_until(&self, what: &str, accept: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let scrape = self.scrape().await;
            if accept(&scrape) {
                return scrape;
            }
            if Instant::now() > deadline {
                panic!("the metrics never showed {what}:\n{}", scrape.text);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Connects through the proxy and reads the greeting line of the fake backend.
async fn session(proxy: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&line).into_owned())
}

/// Connects through the proxy and reads everything until the proxy closes (an ERR packet when
/// the client is refused).
async fn refused(proxy: SocketAddr) -> galera_lb::core::mysql_packet::ParsedError {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut data = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut data))
        .await
        .expect("the refused client is closed at once")
        .unwrap();
    galera_lb::core::mysql_packet::parse_err_packet(&data)
        .unwrap_or_else(|| panic!("expected an ERR packet, got {data:?}"))
}

// ---------------------------------------------------------------------------------------------
// the Prometheus text format

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One `/metrics` answer, parsed.
#[derive(Debug)]
struct Scrape {
    text: String,
    /// Metric family → `# TYPE`.
    types: BTreeMap<String, String>,
    /// Families with a `# HELP` line.
    helps: BTreeSet<String>,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = BTreeMap::new();
        let mut helps = BTreeSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "{name} has two TYPE lines"
                );
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("# HELP name text");
                assert!(!help.trim().is_empty(), "{name} has an empty HELP");
                helps.insert(name.to_string());
            } else if !line.is_empty() && !line.starts_with('#') {
                samples.push(parse_sample(line));
            }
        }
        Scrape {
            text: text.to_string(),
            types,
            helps,
            samples,
        }
    }

    /// The value of the series `name` with exactly `labels`; a `backend` given without a `name`
    /// is looked up under its address as its name too (as a backend no configuration names is).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(backend) = wanted.get("backend").cloned() {
            wanted.entry("name".to_string()).or_insert(backend);
        }
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Like [`Scrape::value`], panicking with the scrape when the series is missing.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in\n{}", self.text))
    }

    /// The family a sample belongs to (a histogram's `_bucket`, `_sum` and `_count` belong to
    /// the histogram).
    fn family<'a>(&self, sample: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && self.types.get(base).map(String::as_str) == Some("histogram")
            {
                return base;
            }
        }
        sample
    }
}

/// `name{a="x",b="y"} value`, with the text format's escapes in label values.
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).expect("a sample line has a value");
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let end = loop {
            let Some((i, c)) = chars.next() else {
                panic!("unterminated labels in {line:?}");
            };
            if c == '}' {
                break i + 1;
            }
            if c == ',' {
                continue;
            }
            let mut key = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "in {line:?}");
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => panic!("bad escape in {line:?}"),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            }
            labels.insert(key, value);
        };
        rest = &inner[end..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no numeric value in {line:?}"));
    Sample {
        name,
        labels,
        value,
    }
}

/// What the module documentation of `src/admin/metrics.rs` promises: metric → (type, label names).
/// Metrics of `health.writer_agreement: cluster` only (see tests/agreement.rs).
const CLUSTER_AGREEMENT_ONLY: [&str; 2] =
    ["galera_lb_writer_proposals_total", "galera_lb_writer_epoch"];

fn documented_metrics() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin/metrics.rs");
    let source = std::fs::read_to_string(&path).unwrap();
    let mut table = BTreeMap::new();
    for line in source.lines() {
        let Some(row) = line
            .strip_prefix("//! | `")
            .filter(|row| row.starts_with("galera_lb_") || row.starts_with("process_"))
        else {
            continue;
        };
        let columns: Vec<&str> = row.split('|').collect();
        let name = columns[0].trim().trim_end_matches('`').to_string();
        let kind = columns[1].trim().to_string();
        let labels = columns[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        table.insert(name, (kind, labels));
    }
    assert!(
        table.len() >= 20,
        "cannot read the metric table of {}",
        path.display()
    );
    table
}

// ---------------------------------------------------------------------------------------------
// promtool

/// The `promtool` binary; fails the test (it is never skipped) when it is missing.
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "promtool is not installed, and these tests need it: install the Debian package \
             `prometheus` (apt-get install -y prometheus), which provides /usr/bin/promtool"
        )
    })
}

/// Runs `promtool ARGS` (with `input` on stdin when given); its exit status and output.
fn run_promtool(args: &[&str], input: Option<&str>) -> lb::Bounded {
    let stdin = match input {
        Some(text) => {
            let mut file = tempfile::tempfile().unwrap();
            use std::io::{Seek, Write};
            file.write_all(text.as_bytes()).unwrap();
            file.rewind().unwrap();
            Stdio::from(file)
        }
        None => Stdio::null(),
    };
    lb::run_bounded(
        Command::new(promtool()).args(args),
        stdin,
        Duration::from_secs(60),
    )
}

/// Fails unless `promtool check metrics` reports nothing at all on `text`.
fn assert_promtool_accepts_metrics(text: &str) {
    let out = run_promtool(&["check", "metrics"], Some(text));
    assert!(
        out.status.success() && out.stdout.trim().is_empty() && out.stderr.trim().is_empty(),
        "promtool check metrics ({}) reported:\n{}{}\non:\n{text}",
        out.status,
        out.stdout,
        out.stderr
    );
}

fn config_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

// ---------------------------------------------------------------------------------------------
// /metrics

/// Two listeners on two pools: `rw` on `default` (a, b), and the writer listener `side` on
/// `side` (c). Only `side`'s pool elects a writer: no listener routes by `default`'s.
async fn two_pools() -> (Lb, [SocketAddr; 3]) {
    let backends = [
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    ];
    let [a, b, c] = backends;
    let (l1, l2, adm) = (any_port(), any_port(), any_port());
    let yaml = format!(
        "listeners:\n\
         \x20 - name: rw\n    bind: {l1}\n    policy: round_robin\n\
         \x20 - name: side\n    bind: {l2}\n    pool: side\n    role: writer\n\
         backends:\n  - address: {a}\n    weight: 2\n  - address: {b}\n\
         pools:\n  - name: side\n    backends:\n      - address: {c}\n\
         health:\n  check: none\n\
         admin:\n  bind: {adm}\n"
    );
    (Lb::start(&yaml).await, backends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_backend_and_listener_and_move_with_traffic() {
    let (lb, [a, b, c]) = two_pools().await;
    let (a, b, c) = (a.to_string(), b.to_string(), c.to_string());

    let reply = lb.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "Prometheus' text format, version 0.0.4"
    );
    let before = Scrape::parse(&reply.body);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        before.get("galera_lb_build_info", &[("version", version)]),
        1.0
    );

    // Per listener.
    for listener in ["rw", "side"] {
        let l = [("listener", listener)];
        assert_eq!(before.get("galera_lb_connections_active", &l), 0.0);
        assert_eq!(before.get("galera_lb_connections_accepted_total", &l), 0.0);
        assert_eq!(before.get("galera_lb_accept_errors_total", &l), 0.0);
    }
    // Per backend, and per pool and backend.
    for (pool, backend, weight) in [
        ("default", a.as_str(), 2.0),
        ("default", b.as_str(), 1.0),
        ("side", c.as_str(), 1.0),
    ] {
        let one = [("backend", backend)];
        let both = [("pool", pool), ("backend", backend)];
        assert_eq!(before.get("galera_lb_backend_up", &one), 1.0);
        assert_eq!(
            before.get("galera_lb_backend_connections_active", &one),
            0.0
        );
        assert_eq!(before.get("galera_lb_backend_connections_total", &one), 0.0);
        assert_eq!(before.get("galera_lb_backend_sent_bytes_total", &one), 0.0);
        assert_eq!(
            before.get("galera_lb_backend_received_bytes_total", &one),
            0.0
        );
        assert_eq!(before.get("galera_lb_backend_wsrep_local_state", &one), 0.0);
        assert_eq!(before.get("galera_lb_backend_cluster_size", &one), 0.0);
        for reason in ["refused", "timeout", "other"] {
            let labels = [("backend", backend), ("reason", reason)];
            assert_eq!(
                before.get("galera_lb_backend_connect_errors_total", &labels),
                0.0
            );
        }
        for (state, expected) in [("ready", 1.0), ("drain", 0.0), ("maint", 0.0)] {
            let labels = [("backend", backend), ("state", state)];
            assert_eq!(
                before.get("galera_lb_backend_admin_state", &labels),
                expected
            );
        }
        assert_eq!(before.get("galera_lb_backend_usable", &both), 1.0);
        assert_eq!(before.get("galera_lb_backend_weight", &both), weight);
        assert!(before.value("galera_lb_backend_writer", &both).is_some());
    }
    // The pool a writer listener uses has exactly one writer, and its first election counted;
    // the other elects none.
    let writers = |scrape: &Scrape, pool: &str| -> Vec<String> {
        scrape
            .samples
            .iter()
            .filter(|s| s.name == "galera_lb_backend_writer" && s.labels["pool"] == pool)
            .filter(|s| s.value == 1.0)
            .map(|s| s.labels["backend"].clone())
            .collect()
    };
    let before = lb
        .scrape_until("a writer in side", |s| writers(s, "side").len() == 1)
        .await;
    assert!(writers(&before, "default").is_empty());
    assert_eq!(writers(&before, "side"), [c.as_str()]);
    assert!(before.get("galera_lb_writer_changes_total", &[("pool", "side")]) >= 1.0);
    // (Not `writer_changes_total{pool="default"}` == 0: the counters are the process's, and
    // other tests of this binary run galera-lb instances whose pool `default` elects a writer.)
    // Every family has HELP and TYPE; the series of a label set appear once.
    for family in before.types.keys() {
        assert!(before.helps.contains(family), "{family} has no HELP");
    }
    let mut seen = BTreeSet::new();
    for sample in &before.samples {
        assert!(
            seen.insert((sample.name.clone(), sample.labels.clone())),
            "{} {:?} appears twice",
            sample.name,
            sample.labels
        );
    }

    // One session through `side` (to c): 1000 bytes up, the greeting and the echo down.
    let (mut stream, name) = session(lb.listener("side")).await;
    assert_eq!(name, "c");
    let payload = vec![b'x'; 1000];
    stream.write_all(&payload).await.unwrap();
    let mut echoed = vec![0u8; payload.len()];
    stream.read_exact(&mut echoed).await.unwrap();
    let greeting = "c\n".len() as f64;
    let during = lb
        .scrape_until("the open session and its bytes", |s| {
            s.value("galera_lb_backend_received_bytes_total", &[("backend", &c)])
                == Some(greeting + 1000.0)
        })
        .await;
    let side = [("listener", "side")];
    let on_c = [("backend", c.as_str())];
    assert_eq!(during.get("galera_lb_connections_active", &side), 1.0);
    assert_eq!(
        during.get("galera_lb_connections_accepted_total", &side),
        1.0
    );
    assert_eq!(
        during.get("galera_lb_backend_connections_active", &on_c),
        1.0
    );
    assert_eq!(
        during.get("galera_lb_backend_connections_total", &on_c),
        1.0
    );
    assert_eq!(
        during.get("galera_lb_backend_sent_bytes_total", &on_c),
        1000.0
    );
    // Nothing else moved.
    assert_eq!(
        during.get(
            "galera_lb_connections_accepted_total",
            &[("listener", "rw")]
        ),
        0.0
    );
    for other in [&a, &b] {
        let labels = [("backend", other.as_str())];
        assert_eq!(
            during.get("galera_lb_backend_connections_total", &labels),
            0.0
        );
        assert_eq!(
            during.get("galera_lb_backend_sent_bytes_total", &labels),
            0.0
        );
    }

    // The client ends its side: the backend says "bye" and closes; the gauges go back to 0.
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"bye\n");
    let after = lb
        .scrape_until("the session closed", |s| {
            s.value("galera_lb_connections_active", &side) == Some(0.0)
                && s.value("galera_lb_backend_connections_active", &on_c) == Some(0.0)
        })
        .await;
    assert_eq!(
        after.get("galera_lb_backend_received_bytes_total", &on_c),
        greeting + 1000.0 + 4.0
    );
    assert_eq!(after.get("galera_lb_backend_connections_total", &on_c), 1.0);

    // Round robin over a (weight 2) and b through `rw`: both backends count their sessions.
    for _ in 0..6 {
        let (stream, _) = session(lb.listener("rw")).await;
        drop(stream);
    }
    let after = lb
        .scrape_until("six sessions through rw", |s| {
            s.value(
                "galera_lb_connections_accepted_total",
                &[("listener", "rw")],
            ) == Some(6.0)
        })
        .await;
    let total = |backend: &str| {
        after.get(
            "galera_lb_backend_connections_total",
            &[("backend", backend)],
        )
    };
    assert_eq!(total(&a) + total(&b), 6.0);
    assert!(total(&a) >= 1.0 && total(&b) >= 1.0, "{}", after.text);

    assert_promtool_accepts_metrics(&after.text);
}

/// Every metric of the table in `src/admin/metrics.rs` is exported with the documented type and label
/// names once the events it counts have happened (health checks, a failing one, an ERR packet,
/// a control command, a reload), nothing undocumented is exported, and `promtool check metrics`
/// finds nothing to say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exported_as_documented_and_promtool_agrees() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let dead = lb::closed_address();
    let (l1, l2, ctl, adm) = (any_port(), any_port(), any_port(), any_port());
    let yaml = format!(
        "listeners:\n  - name: limited\n    bind: {l1}\n    max_connections: 1\n\
         \x20 - name: behind_lb\n    bind: {l2}\n    accept_proxy: true\n\
         backends:\n  - address: {a}\n    max_connections: 50\n  - address: {b}\n    name: bee\n\
         \x20 - address: {dead}\n\
         health:\n  check: tcp\n  interval: 100ms\n  rise: 1\n  fall: 1\n\
         limits:\n  park_idle_after: 100ms\n  client_idle_timeout: 1s\n\
         control:\n  bind: {ctl}\n\
         admin:\n  bind: {adm}\n"
    );
    let lb = Lb::start(&yaml).await;
    let dead = dead.to_string();

    // Health checks ran (a and b pass, `dead` fails)...
    lb.scrape_until("a failed health check of the dead backend", |s| {
        s.samples.iter().any(|x| {
            x.name == "galera_lb_health_check_failures_total" && x.labels["backend"] == dead
        })
    })
    .await;
    // ...a client is refused (the listener allows one at a time)...
    let (_held, _) = session(lb.listener("limited")).await;
    let error = refused(lb.listener("limited")).await;
    assert_eq!(error.code, 1040, "{error:?}");
    // ...a control command, and a reload (refused: there is no file to re-read)...
    let control = lb.running.control.unwrap();
    let reply = tokio::task::spawn_blocking(move || lb::control(control, "getinfo\n"))
        .await
        .unwrap();
    assert!(!reply.is_empty());
    assert!(lb.running.reload().await.is_err());

    // ...and the held session, idle, is parked, then closed by the idle timeout.
    let scrape = lb
        .scrape_until(
            "the refused client, the control command and the idle timeout",
            |s| {
                s.types.contains_key("galera_lb_client_errors_total")
                    && s.types.contains_key("galera_lb_control_commands_total")
                    && s.types.contains_key("galera_lb_client_idle_timeouts_total")
            },
        )
        .await;
    let documented = documented_metrics();
    let mut missing = Vec::new();
    for (name, (kind, labels)) in &documented {
        if CLUSTER_AGREEMENT_ONLY.contains(&name.as_str()) {
            // Exported only by an instance with writer_agreement: cluster, which needs the
            // real cluster: tests/agreement.rs reads them there.
            continue;
        }
        match scrape.types.get(name) {
            None => missing.push(name.clone()),
            Some(exported) => assert_eq!(exported, kind, "the TYPE of {name}"),
        }
        for sample in scrape
            .samples
            .iter()
            .filter(|s| scrape.family(&s.name) == name)
        {
            let mut names: BTreeSet<String> = sample.labels.keys().cloned().collect();
            if sample.name.ends_with("_bucket") {
                assert!(names.remove("le"), "{sample:?} has no le label");
            }
            assert_eq!(
                &names, labels,
                "{} has labels {names:?}; src/admin/metrics.rs documents {labels:?}",
                sample.name
            );
        }
    }
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}\n{}",
        scrape.text
    );
    let undocumented: Vec<_> = scrape
        .types
        .keys()
        .filter(|name| !documented.contains_key(*name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in the table of src/admin/metrics.rs: {undocumented:?}"
    );

    // The values behind those series.
    assert_eq!(
        scrape.get(
            "galera_lb_client_errors_total",
            &[("listener", "limited"), ("reason", "too_many_connections")]
        ),
        1.0
    );
    assert_eq!(
        scrape.get("galera_lb_backend_up", &[("backend", &dead)]),
        0.0
    );
    assert_eq!(
        scrape.get(
            "galera_lb_backend_usable",
            &[("pool", "default"), ("backend", &dead)]
        ),
        0.0
    );
    assert!(scrape.get("galera_lb_reloads_total", &[("result", "error")]) >= 1.0);
    let checks = scrape.get(
        "galera_lb_health_check_duration_seconds_count",
        &[("backend", &a.to_string())],
    );
    assert!(checks >= 1.0, "{}", scrape.text);
    assert_eq!(
        scrape.get(
            "galera_lb_health_check_duration_seconds_bucket",
            &[("backend", &a.to_string()), ("le", "+Inf")]
        ),
        checks
    );

    // /status shows the checks too: when (seconds since the epoch) and how long.
    let status = lb.status().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for backend in status["backends"].as_array().unwrap() {
        let last = backend["last_check"].as_f64().expect("last_check is set");
        assert!(now - 10.0 < last && last <= now + 1.0, "{backend}");
        let took = backend["last_check_duration_seconds"].as_f64().unwrap();
        assert!((0.0..5.0).contains(&took), "{backend}");
    }
    let dead_row = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == dead.as_str())
        .unwrap();
    assert_eq!(dead_row["health"], "down");
    assert_ne!(dead_row["reason"], "", "a down backend says why");

    assert_promtool_accepts_metrics(&scrape.text);
}

// ---------------------------------------------------------------------------------------------
// /status

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_listeners_and_backends_with_every_documented_field() {
    let (lb, [a, b, c]) = two_pools().await;
    let (mut stream, name) = session(lb.listener("side")).await;
    assert_eq!(name, "c");
    stream.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    stream.read_exact(&mut echoed).await.unwrap();

    // Wait until the bytes are counted, then read the document.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = lb.status().await;
        let counted = status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["bytes_to_client"] == 7);
        if counted || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["ready"], true, "{status}");
    assert!(status["not_ready_reason"].is_null(), "{status}");

    let listeners = status["listeners"].as_array().expect("listeners: an array");
    assert_eq!(listeners.len(), 2, "{status}");
    let listener = |name: &str| {
        listeners
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no listener {name} in {status}"))
    };
    for (name, pool, active, accepted) in [("rw", "default", 0, 0), ("side", "side", 1, 1)] {
        let l = listener(name);
        let fields: BTreeSet<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            BTreeSet::from([
                "name",
                "pool",
                "policy",
                "role",
                "active",
                "accepted",
                "usable_backends",
                "backends",
                "writer",
            ]),
            "{l}"
        );
        assert_eq!(l["pool"], pool);
        assert_eq!(l["role"], if name == "side" { "writer" } else { "any" });
        assert_eq!(l["active"], active, "{l}");
        assert_eq!(l["accepted"], accepted, "{l}");
        let backends = if name == "side" { 1 } else { 2 };
        assert_eq!(
            (&l["usable_backends"], &l["backends"]),
            (&backends.into(), &backends.into()),
            "{l}"
        );
    }
    assert_eq!(listener("side")["writer"], c.to_string().as_str());
    assert!(
        listener("rw")["writer"].is_null(),
        "no listener routes by default's writer"
    );
    assert_eq!(listener("rw")["policy"], "round_robin");

    let backends = status["backends"].as_array().expect("backends: an array");
    assert_eq!(backends.len(), 3, "{status}");
    let backend = |address: SocketAddr| {
        backends
            .iter()
            .find(|b| b["address"] == address.to_string().as_str())
            .unwrap_or_else(|| panic!("no backend {address} in {status}"))
    };
    let expected_fields = BTreeSet::from([
        "address",
        "name",
        "socket_address",
        "pool",
        "weight",
        "tier",
        "admin",
        "health",
        "health_since",
        "usable",
        "reason",
        "role",
        "wsrep_local_state",
        "wsrep_state",
        "cluster_size",
        "cluster_conf_id",
        "segment",
        "recv_queue",
        "last_committed",
        "seqno_lag",
        "flow_control_paused",
        "lagging",
        "lag_reason",
        "active",
        "total",
        "connect_errors",
        "bytes_to_backend",
        "bytes_to_client",
        "last_check",
        "last_check_duration_seconds",
    ]);
    for (address, pool, weight, role) in [
        (a, "default", 2.0, "reader"),
        (b, "default", 1.0, "reader"),
        (c, "side", 1.0, "writer"),
    ] {
        let row = backend(address);
        let fields: BTreeSet<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, expected_fields, "{row}");
        assert_eq!(row["socket_address"], address.to_string().as_str());
        assert_eq!(row["pool"], pool);
        assert_eq!(row["weight"].as_f64(), Some(weight), "{row}");
        assert_eq!(row["tier"], 1);
        assert_eq!(row["admin"], "ready");
        assert_eq!(row["health"], "up");
        assert_eq!(row["usable"], true);
        assert_eq!(row["role"], role, "{row}");
        assert_eq!(
            row["name"],
            address.to_string().as_str(),
            "named by its address"
        );
        let since = row["health_since"].as_f64().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(now - 60.0 < since && since <= now + 1.0, "{row}");
        // No checks ran (check: none), and these fake nodes report no wsrep state.
        assert!(row["last_check"].is_null(), "{row}");
        assert!(row["last_check_duration_seconds"].is_null(), "{row}");
        assert!(row["wsrep_state"].is_null(), "{row}");
        // The numbers are the backend's own counters.
        let counters = lb.backend(address).counters();
        assert_eq!(row["active"], counters.active, "{row}");
        assert_eq!(row["total"], counters.total, "{row}");
        assert_eq!(row["connect_errors"], counters.connect_errors, "{row}");
        assert_eq!(row["bytes_to_backend"], counters.bytes_to_backend, "{row}");
        assert_eq!(row["bytes_to_client"], counters.bytes_to_client, "{row}");
    }
    let c_row = backend(c);
    assert_eq!(c_row["active"], 1, "{c_row}");
    assert_eq!(c_row["total"], 1, "{c_row}");
    assert_eq!(c_row["bytes_to_backend"], 5, "{c_row}");
    assert_eq!(c_row["bytes_to_client"], 7, "greeting + echo: {c_row}");
    drop(stream);
}

// ---------------------------------------------------------------------------------------------
// /ready

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_with_the_reason_while_a_listener_has_no_usable_backend() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let c = echo_backend("c").await;
    // A pool and a listener whose names need escaping in every format.
    let odd_pool = r#"p"<b>&\"#;
    let odd_listener = r#"odd <i>listener</i> & "co""#;
    let (l1, l2, l3, adm) = (any_port(), any_port(), any_port(), any_port());
    let yaml = format!(
        "listeners:\n\
         \x20 - name: rw\n    bind: {l1}\n\
         \x20 - name: w\n    bind: {l2}\n    role: writer\n\
         \x20 - name: '{odd_listener}'\n    bind: {l3}\n    pool: '{odd_pool}'\n\
         backends:\n  - address: {a}\n  - address: {b}\n\
         pools:\n  - name: '{odd_pool}'\n    backends:\n      - address: {c}\n\
         health:\n  check: none\n\
         admin:\n  bind: {adm}\n"
    );
    let lb = Lb::start(&yaml).await;

    async fn ready(lb: &Lb) -> HttpReply {
        let reply = lb.get("/ready").await;
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        reply
    }
    let reply = ready(&lb).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ready\n"));

    // The only backend of the odd pool goes down.
    lb.backend(c).set_healthy(false);
    let reply = ready(&lb).await;
    let reason = format!("listener '{odd_listener}' has no usable backend");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.body, format!("not ready: {reason}\n"));
    let status = lb.status().await;
    assert_eq!(status["ready"], false);
    assert_eq!(status["not_ready_reason"], reason.as_str());
    let page = lb.get("/").await.body;
    assert!(
        page.contains(
            "NOT READY: listener 'odd &lt;i&gt;listener&lt;/i&gt; &amp; &quot;co&quot;' has no \
             usable backend"
        ),
        "the page says why, escaped:\n{page}"
    );
    assert!(
        !page.contains("<i>"),
        "unescaped markup in the page:\n{page}"
    );
    assert!(page.contains("p&quot;&lt;b&gt;&amp;\\"), "{page}");
    let scrape = lb.scrape().await;
    let c_name = c.to_string();
    assert_eq!(
        scrape.get("galera_lb_backend_up", &[("backend", &c_name)]),
        0.0
    );
    assert_eq!(
        scrape.get(
            "galera_lb_backend_usable",
            &[("pool", odd_pool), ("backend", &c_name)]
        ),
        0.0
    );
    // The label values are escaped so that Prometheus reads them back (promtool parses them).
    assert_promtool_accepts_metrics(&scrape.text);
    // Its clients get an ERR packet; the other listeners still serve.
    let error = refused(lb.listener(odd_listener)).await;
    assert_eq!(
        error.code,
        galera_lb::core::mysql_packet::NO_BACKEND.code,
        "{error:?}"
    );
    assert!(error.message.contains("no usable backend"), "{error:?}");
    let (_s, name) = session(lb.listener("rw")).await;
    assert!(name == "a" || name == "b");
    let scrape = lb.scrape().await;
    assert_eq!(
        scrape.get(
            "galera_lb_client_errors_total",
            &[("listener", odd_listener), ("reason", "no_usable_backend")]
        ),
        1.0
    );
    // Back up: ready again.
    lb.backend(c).set_healthy(true);
    let reply = ready(&lb).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ready\n"));

    // Both nodes of `default` down: `rw` and `w` both named.
    lb.backend(a).set_healthy(false);
    lb.backend(b).set_healthy(false);
    let reply = ready(&lb).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            503,
            "not ready: listener 'rw' has no usable backend; \
             listener 'w' has no usable backend\n"
        )
    );
    lb.backend(a).set_healthy(true);
    lb.backend(b).set_healthy(true);
    assert_eq!(ready(&lb).await.status, 200);

    // Every node up but none writable (read_only everywhere): only the writer listener is stuck.
    lb.backend(a).set_writable(false);
    lb.backend(b).set_writable(false);
    let reply = ready(&lb).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "not ready: listener 'w' has no usable backend\n")
    );
    lb.backend(a).set_writable(true);
    lb.backend(b).set_writable(true);
    assert_eq!(ready(&lb).await.status, 200);

    // The test's own way in, as the brief describes it: pools[0].members[i].
    let snapshot = lb.running.router.load_full();
    for member in &snapshot.pools[0].members {
        member.backend.set_healthy(false);
    }
    assert_eq!(ready(&lb).await.status, 503);
    for member in &snapshot.pools[0].members {
        member.backend.set_healthy(true);
    }
    assert_eq!(ready(&lb).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// /live, /, other paths and methods

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_the_status_page_and_everything_else() {
    let (lb, [a, b, c]) = two_pools().await;

    let live = lb.get("/live").await;
    assert_eq!((live.status, live.body.as_str()), (200, "live\n"));
    assert_eq!(live.header("cache-control"), Some("no-store"));
    let head = lb.request("HEAD", "/live").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let query = lb.get("/live?probe=kubelet").await;
    assert_eq!(query.status, 200, "a query string does not change the path");

    // The status page: HTML, refreshes itself, shows every backend and listener.
    let page = lb.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = &page.body;
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.trim_end().ends_with("</html>"), "{html}");
    assert!(
        html.contains(r#"<meta http-equiv="refresh" content="2">"#),
        "refreshes every 2 s: {html}"
    );
    for backend in [a, b, c] {
        assert!(
            html.contains(&format!(r#"data-backend="{backend}" data-state="up""#)),
            "{backend} shown up: {html}"
        );
    }
    for name in [
        "<td>rw</td>",
        "<td>side</td>",
        "<td>writer</td>",
        "<td>reader</td>",
    ] {
        assert!(html.contains(name), "{name} in {html}");
    }
    // No external assets: nothing is loaded from elsewhere (no scripts, styles, images, fonts).
    let lower = html.to_ascii_lowercase();
    for attribute in ["src=", "href="] {
        for (at, _) in lower.match_indices(attribute) {
            let value = lower[at + attribute.len()..].trim_start_matches(['"', '\'']);
            assert!(
                !value.starts_with("http:")
                    && !value.starts_with("https:")
                    && !value.starts_with("//"),
                "an external asset at {}",
                &html[at..(at + 80).min(html.len())]
            );
        }
    }
    for external in ["@import", "url(http", "url(//", "<script src", "<link"] {
        assert!(!lower.contains(external), "{external} in the page: {html}");
    }

    // Anything else: 404, with a hint.
    for path in [
        "/nope",
        "/metrics/",
        "/status.json",
        "/READY",
        "/favicon.ico",
    ] {
        let reply = lb.get(path).await;
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
        assert!(reply.body.contains("/metrics"), "{path}: {}", reply.body);
    }
    // Only GET (and HEAD): 405 for the rest, on every path.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/", "/metrics", "/ready", "/live", "/nope"] {
            let reply = lb.request(method, path).await;
            assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        }
    }
}

/// RFC 9110, 15.5.6: "The origin server MUST generate an Allow header field in a 405 response
/// containing a list of the target resource's currently supported methods."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_405_answer_names_the_allowed_methods() {
    let (lb, _) = two_pools().await;
    let reply = lb.request("POST", "/metrics").await;
    assert_eq!(reply.status, 405);
    let allow = reply
        .header("allow")
        .unwrap_or_default()
        .to_ascii_uppercase();
    assert!(
        allow.contains("GET") && allow.contains("HEAD"),
        "405 without `Allow: GET, HEAD`: {reply:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// configuration of the admin port, and the real binary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_is_off_unless_configured_and_defaults_to_loopback_9104() {
    let a = echo_backend("a").await;
    let base = format!(
        "listeners:\n  - name: rw\n    bind: {}\nbackends:\n  - address: {a}\n{}",
        any_port(),
        lb::NO_CHECKS
    );
    let config = Config::from_yaml(&base, "t.yaml").unwrap();
    assert!(config.admin.is_none());
    let running = galera_lb::start(&config, "t.yaml").await.unwrap();
    assert!(running.admin.is_none(), "no admin: section, no admin port");
    drop(running);

    let config = Config::from_yaml(&format!("{base}admin: {{}}\n"), "t.yaml").unwrap();
    assert_eq!(config.admin.unwrap().bind.to_string(), "127.0.0.1:9104");
    let config =
        Config::from_yaml(&format!("{base}admin:\n  bind: 127.0.0.1:9200\n"), "t.yaml").unwrap();
    assert_eq!(config.admin.unwrap().bind.to_string(), "127.0.0.1:9200");
    let error = Config::from_yaml(&format!("{base}admin:\n  bind: localhost\n"), "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("admin.bind"), "{error}");
}

#[test]
fn the_real_binary_serves_the_admin_port() {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_address = backend.local_addr().unwrap();
    let (port, admin_port) = (lb::free_port(), lb::free_port());
    let yaml = lb::simple_config(
        port,
        "round_robin",
        &[backend_address],
        &format!("{}admin:\n  bind: 127.0.0.1:{admin_port}\n", lb::NO_CHECKS),
    );
    let process = lb::LbProcess::start(&yaml);
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    assert_eq!(
        lb::http_get(admin, "/live").status,
        200,
        "{}",
        process.log()
    );
    assert_eq!(lb::http_get(admin, "/ready").status, 200);
    let metrics = lb::http_get(admin, "/metrics").body;
    let scrape = Scrape::parse(&metrics);
    assert_eq!(
        scrape.get(
            "galera_lb_backend_up",
            &[("backend", &backend_address.to_string())]
        ),
        1.0
    );
    // Where the admin port listens is shown by the answers above, on that address.
    assert_promtool_accepts_metrics(&metrics);
}

/// A backend removed at run time leaves no series behind: neither the values read at each
/// scrape nor the event counters (health-check durations and failures) keep its label.
#[test]
fn a_removed_backend_leaves_no_series_behind() {
    let kept = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let removed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // A third that refuses, so that check failures have series too once it is removed.
    let refusing = lb::closed_address();
    let [kept, removed] = [&kept, &removed].map(|l| l.local_addr().unwrap());
    let (port, admin_port, control_port) = (lb::free_port(), lb::free_port(), lb::free_port());
    let yaml = lb::simple_config(
        port,
        "round_robin",
        &[kept, removed, refusing],
        &format!(
            "health:\n  check: tcp\n  interval: 100ms\nadmin:\n  bind: 127.0.0.1:{admin_port}\n\
             control:\n  bind: 127.0.0.1:{control_port}\n"
        ),
    );
    let process = lb::LbProcess::start(&yaml);
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let control: SocketAddr = format!("127.0.0.1:{control_port}").parse().unwrap();
    let series_of = |backend: SocketAddr| -> Vec<String> {
        let label = format!("backend=\"{backend}\"");
        lb::http_get(admin, "/metrics")
            .body
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&label))
            .map(str::to_string)
            .collect()
    };
    let has = |series: &[String], metric: &str| series.iter().any(|l| l.starts_with(metric));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(has(
        &series_of(removed),
        "galera_lb_health_check_duration_seconds",
    ) && has(
        &series_of(refusing),
        "galera_lb_health_check_failures_total",
    )) {
        assert!(Instant::now() < deadline, "checks ran: {}", process.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    for gone in [removed, refusing] {
        assert_eq!(lb::control(control, &format!("{gone}:-1\n")).trim(), "Ok");
    }
    // Gone with the removal; a check that was under way as it happened may add its result,
    // which its task deletes as it stops, within moments.
    let deadline = Instant::now() + Duration::from_secs(1);
    while !(series_of(removed).is_empty() && series_of(refusing).is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(series_of(removed), Vec::<String>::new());
    assert_eq!(series_of(refusing), Vec::<String>::new());
    assert!(has(
        &series_of(kept),
        "galera_lb_health_check_duration_seconds"
    ));
    assert!(has(&series_of(kept), "galera_lb_backend_up"));
}

// ---------------------------------------------------------------------------------------------
// access: admin.allow and admin.token

/// How many admin clients were refused for `reason` so far, in this test binary.
fn denied(reason: &str) -> u64 {
    galera_lb::core::counters::metrics()
        .access_denied
        .with_label_values(&["admin", reason])
        .get()
}

/// One admin connection from `source`: the reply, or `None` when the port closed it unanswered.
fn http_from(source: &str, admin: SocketAddr, path: &str) -> Option<HttpReply> {
    use std::io::{Read, Write};
    let mut stream = lb::connect_from(source.parse().unwrap(), admin);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The port may have closed already: a failed write or a reset is part of the answer.
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) if raw.is_empty() => None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && raw.is_empty() => None,
        Ok(_) => {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
            let body = text
                .split_once("\r\n\r\n")
                .map_or("", |(_, b)| b)
                .to_string();
            Some(HttpReply {
                status,
                headers: Vec::new(),
                body,
            })
        }
        Err(e) => panic!("GET {path} from {source}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_allowlist_closes_other_addresses_at_once_and_counts_them() {
    let a = echo_backend("a").await;
    let yaml = format!(
        "listeners:\n  - name: rw\n    bind: {}\nbackends:\n  - address: {a}\n{}\
         admin:\n  bind: {}\n  allow: [127.0.0.2, 127.0.0.8/30]\n",
        any_port(),
        lb::NO_CHECKS,
        any_port()
    );
    let lb = Lb::start(&yaml).await;
    let admin = lb.admin;
    let before = denied("not_allowed");
    let (allowed, refused) = tokio::task::spawn_blocking(move || {
        let mut allowed = Vec::new();
        for source in ["127.0.0.2", "127.0.0.8", "127.0.0.11"] {
            for path in ["/live", "/ready", "/metrics", "/status", "/"] {
                allowed.push((source, path, http_from(source, admin, path)));
            }
        }
        let mut refused = Vec::new();
        for source in ["127.0.0.1", "127.0.0.3", "127.0.0.12"] {
            for path in ["/live", "/metrics"] {
                refused.push((source, path, http_from(source, admin, path)));
            }
        }
        (allowed, refused)
    })
    .await
    .unwrap();
    for (source, path, reply) in allowed {
        let reply = reply.unwrap_or_else(|| panic!("{path} from {source}: closed"));
        assert_eq!(reply.status, 200, "{path} from {source}: {reply:?}");
    }
    for (source, path, reply) in refused {
        assert!(reply.is_none(), "{path} from {source}: answered {reply:?}");
    }
    assert_eq!(
        denied("not_allowed") - before,
        6,
        "every refused connection counts"
    );
    let scrape = Scrape::parse(&http_from("127.0.0.2", admin, "/metrics").unwrap().body);
    assert!(
        scrape.get(
            "galera_lb_access_denied_total",
            &[("port", "admin"), ("reason", "not_allowed")]
        ) >= 6.0,
        "{}",
        scrape.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_endpoint_but_live_and_ready_needs_the_bearer() {
    const TOKEN: &str = "Adm1n-token.for_tests";
    let a = echo_backend("a").await;
    let yaml = format!(
        "listeners:\n  - name: rw\n    bind: {}\nbackends:\n  - address: {a}\n{}\
         admin:\n  bind: {}\n  token: {TOKEN}\n",
        any_port(),
        lb::NO_CHECKS,
        any_port()
    );
    let lb = Lb::start(&yaml).await;
    let (no_token, wrong_token) = (denied("no_token"), denied("wrong_token"));
    let bearer = format!("Bearer {TOKEN}");
    let right = [("Authorization", bearer.as_str())];

    // The probes need nothing.
    for path in ["/live", "/ready"] {
        for method in ["GET", "HEAD"] {
            let reply = lb.request(method, path).await;
            assert_eq!(reply.status, 200, "{method} {path}: {reply:?}");
        }
    }
    assert_eq!(denied("no_token"), no_token);

    // Everything else: 401 with the challenge, without a token or with a wrong one.
    let paths = [
        "/metrics",
        "/status",
        "/",
        "/nope",
        "/live/",
        "/metrics?x=/live",
    ];
    for path in paths {
        let reply = lb.get(path).await;
        assert_eq!(reply.status, 401, "{path}: {reply:?}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer realm="galera-lb""#),
            "{path}"
        );
        assert!(!reply.body.contains(TOKEN));
    }
    for wrong in [
        "Bearer wrong",
        "Bearer Adm1n-token.for_test",
        "Bearer Adm1n-token.for_testsX",
        "Bearer adm1n-token.for_tests",
    ] {
        let reply = lb
            .request_with("GET", "/metrics", &[("Authorization", wrong)])
            .await;
        assert_eq!(reply.status, 401, "{wrong}: {reply:?}");
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer ") && c.contains("invalid_token")),
            "{wrong}: {reply:?}"
        );
    }
    // Other schemes, an empty bearer, the token alone: no bearer token.
    let basic = format!("Basic {TOKEN}");
    for missing in [basic.as_str(), "Bearer", "Bearer ", TOKEN] {
        let reply = lb
            .request_with("GET", "/status", &[("Authorization", missing)])
            .await;
        assert_eq!(reply.status, 401, "{missing}: {reply:?}");
    }
    // A POST is refused for the token before its method.
    assert_eq!(lb.request("POST", "/metrics").await.status, 401);
    assert_eq!(denied("no_token") - no_token, paths.len() as u64 + 4 + 1);
    assert_eq!(denied("wrong_token") - wrong_token, 4);

    // With the token: as without one configured. The scheme is case-insensitive.
    let reply = lb.request_with("GET", "/metrics", &right).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let scrape = Scrape::parse(&reply.body);
    assert_eq!(
        scrape.get(
            "galera_lb_access_denied_total",
            &[("port", "admin"), ("reason", "wrong_token")]
        ),
        denied("wrong_token") as f64
    );
    let status = lb.request_with("GET", "/status", &right).await;
    assert_eq!(status.status, 200);
    assert!(status.body.contains(&a.to_string()), "{}", status.body);
    let lower = format!("bearer {TOKEN}");
    assert_eq!(
        lb.request_with("GET", "/", &[("Authorization", lower.as_str())])
            .await
            .status,
        200
    );
    assert_eq!(lb.request_with("GET", "/nope", &right).await.status, 404);
    assert_eq!(
        lb.request_with("POST", "/metrics", &right).await.status,
        405
    );
    for reply in [&reply, &status] {
        assert!(
            !reply.body.contains(TOKEN),
            "the token in a reply: {}",
            reply.body
        );
    }
}

/// The real binary: the admin token from an environment variable, never in the log; a port bound
/// beyond loopback with neither token nor allowlist is warned about, and one with either is not.
#[test]
fn the_real_binary_guards_the_admin_port_and_warns_about_open_ports() {
    const TOKEN: &str = "env-admin-token-0123456789";
    let backend = lb::echo_backend("a");
    let (port, admin_port, control_port) = (lb::free_port(), lb::free_port(), lb::free_port());
    // Bound to every address (the warning is about that); the tests only use loopback.
    let yaml = lb::simple_config(
        port,
        "round_robin",
        &[backend],
        &format!(
            "{}admin:\n  bind: 127.0.0.1:{admin_port}\n  token_env: GALERA_LB_TEST_ADMIN_TOKEN\n\
             control:\n  bind: 0.0.0.0:{control_port}\n",
            lb::NO_CHECKS
        ),
    );
    let process = lb::LbProcess::start_with(&yaml, |command| {
        command.env("GALERA_LB_TEST_ADMIN_TOKEN", TOKEN);
    });
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    assert_eq!(lb::http_get(admin, "/live").status, 200);
    assert_eq!(lb::http_get(admin, "/metrics").status, 401);
    let wrong = lb::http_with(admin, "GET", "/status", &[("Authorization", "Bearer nope")]);
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let status = lb::http_with(admin, "GET", "/status", &[("Authorization", &bearer)]);
    assert_eq!(status.status, 200, "{status:?}");
    assert!(!status.body.contains(TOKEN));

    // Kept on the log: a refused admin client is logged for the operator (docs/src/operations.md, access), and
    // those are the lines the token must not reach. The counts are checked just below.
    process.wait_for_log("admin: wrong bearer token", Duration::from_secs(5));
    process.wait_for_log("admin: no bearer token", Duration::from_secs(5));
    let metrics = lb::http_with(admin, "GET", "/metrics", &[("Authorization", &bearer)]).body;
    for reason in ["wrong_token", "no_token"] {
        assert_eq!(
            lb::metric_in(
                &metrics,
                "galera_lb_access_denied_total",
                &[("port", "admin"), ("reason", reason)]
            ),
            Some(1.0),
            "{reason}: {metrics}"
        );
    }
    let log = process.log();
    assert!(!log.contains(TOKEN), "the log holds the token:\n{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("beyond this host"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, for the control port: {log}"
    );
    for words in [
        format!("0.0.0.0:{control_port}"),
        "control.token_file".to_string(),
        "control.allow".to_string(),
        "WARN".to_string(),
    ] {
        assert!(warnings[0].contains(&words), "{words} in {}", warnings[0]);
    }
}

// ---------------------------------------------------------------------------------------------
// config/alerts.yml and config/prometheus.yml

fn yaml_file(name: &str) -> serde_yaml::Value {
    let path = config_file(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn alert_rules() -> Vec<serde_yaml::Value> {
    yaml_file("alerts.yml")["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("rules").clone())
        .collect()
}

#[test]
fn the_alert_rules_and_the_scrape_config_pass_promtool() {
    let rules = config_file("alerts.yml");
    let out = run_promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(
        out.status.success() && out.stdout.contains("SUCCESS"),
        "promtool check rules config/alerts.yml ({}):\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let config = config_file("prometheus.yml");
    let out = run_promtool(&["check", "config", config.to_str().unwrap()], None);
    assert!(
        out.status.success() && out.stdout.contains("alerts.yml"),
        "promtool check config config/prometheus.yml ({}) must pass and check alerts.yml:\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );

    // Each rule: an alert with an expression, a `for`, a severity, a summary and a description.
    let mut names = BTreeSet::new();
    let documented = documented_metrics();
    for rule in alert_rules() {
        let name = rule["alert"]
            .as_str()
            .expect("every rule is an alert")
            .to_string();
        let expr = rule["expr"].as_str().unwrap_or_default();
        assert!(!expr.is_empty(), "{name}: no expr");
        assert!(rule["for"].as_str().is_some(), "{name}: no `for:`");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: no {annotation}");
        }
        // Every galera-lb metric an expression uses exists.
        for (at, _) in expr.match_indices("galera_lb_") {
            let metric: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                documented.contains_key(&metric),
                "{name} uses {metric}, which src/admin/metrics.rs does not document"
            );
        }
        names.insert(name);
    }
    for expected in [
        "GaleraLbDown",
        "GaleraLbNoUsableBackend",
        "GaleraLbWriterChanged",
        "GaleraLbBackendFlapping",
        "GaleraLbBackendDown",
    ] {
        assert!(names.contains(expected), "no {expected} in {names:?}");
    }

    // The scrape config: job galera-lb on the admin port's default address, with the rules.
    let prometheus = yaml_file("prometheus.yml");
    let files: Vec<&str> = prometheus["rule_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert_eq!(files, ["alerts.yml"]);
    let job = prometheus["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|job| job["job_name"] == "galera-lb")
        .expect("a galera-lb scrape job");
    let default_bind = galera_lb::config::AdminConfig::default().bind.to_string();
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some(default_bind.as_str())
    );
}

/// Runs the rules against made-up series with `promtool test rules`: each alert fires when it
/// should, after its `for:`, and not in the look-alike cases (a restart is not a writer change,
/// a node under maintenance is not "down", another pool still has backends). Annotations are
/// left out of the copy under test (their templates are checked by `promtool check rules`).
#[test]
fn the_alert_rules_fire_when_they_should_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = yaml_file("alerts.yml");
    for group in rules["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            rule.as_mapping_mut().unwrap().remove("annotations");
        }
    }
    std::fs::write(
        dir.path().join("rules.yml"),
        serde_yaml::to_string(&rules).unwrap(),
    )
    .unwrap();
    let tests = r#"
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  # galera-lb unreachable from 2m on; `for: 1m`.
  - interval: 1m
    input_series:
      - series: 'up{job="galera-lb",instance="lb:9104"}'
        values: '1 1 0 0 0 0'
      - series: 'up{job="galera-lb",instance="other:9104"}'
        values: '1 1 1 1 1 1'
    alert_rule_test:
      - {eval_time: 2m, alertname: GaleraLbDown, exp_alerts: []}
      - eval_time: 3m
        alertname: GaleraLbDown
        exp_alerts:
          - exp_labels: {severity: critical, job: galera-lb, instance: "lb:9104"}

  # Pool default loses both nodes by 2m; pool side keeps its one; `for: 30s`.
  - interval: 1m
    input_series:
      - series: 'galera_lb_backend_usable{job="galera-lb",instance="lb:9104",pool="default",backend="n1:3306"}'
        values: '1 1 0 0 0 1'
      - series: 'galera_lb_backend_usable{job="galera-lb",instance="lb:9104",pool="default",backend="n2:3306"}'
        values: '1 0 0 0 0 0'
      - series: 'galera_lb_backend_usable{job="galera-lb",instance="lb:9104",pool="side",backend="n3:3306"}'
        values: '1 1 1 1 1 1'
      - series: 'galera_lb_backend_writer{job="galera-lb",instance="lb:9104",pool="default",backend="n1:3306"}'
        values: '1 1 0 0 0 1'
      - series: 'galera_lb_backend_writer{job="galera-lb",instance="lb:9104",pool="side",backend="n3:3306"}'
        values: '1 1 1 1 1 1'
    alert_rule_test:
      - {eval_time: 1m, alertname: GaleraLbNoUsableBackend, exp_alerts: []}
      - {eval_time: 2m, alertname: GaleraLbNoUsableBackend, exp_alerts: []}
      - eval_time: 3m
        alertname: GaleraLbNoUsableBackend
        exp_alerts:
          - exp_labels: {severity: critical, job: galera-lb, instance: "lb:9104", pool: default}
      - {eval_time: 5m, alertname: GaleraLbNoUsableBackend, exp_alerts: []}
      # No usable node at all is that alert, not "no writer".
      - {eval_time: 4m, alertname: GaleraLbNoWriter, exp_alerts: []}

  # Both nodes up but neither writable (read_only) from 1m on.
  - interval: 1m
    input_series:
      - series: 'galera_lb_backend_usable{job="galera-lb",instance="lb:9104",pool="default",backend="n1:3306"}'
        values: '1 1 1 1 1'
      - series: 'galera_lb_backend_writer{job="galera-lb",instance="lb:9104",pool="default",backend="n1:3306"}'
        values: '1 0 0 0 0'
    alert_rule_test:
      - {eval_time: 1m, alertname: GaleraLbNoWriter, exp_alerts: []}
      - eval_time: 3m
        alertname: GaleraLbNoWriter
        exp_alerts:
          - exp_labels: {severity: critical, job: galera-lb, instance: "lb:9104", pool: default}

  # Instance a: the writer changes once at 3m (the first election, counted before the first
  # scrape, shows no increase). Instance b: galera-lb restarts at 3m (a counter reset).
  # Instance c: galera-lb starts at 3m (the series appears at 1).
  - interval: 1m
    input_series:
      - series: 'galera_lb_writer_changes_total{job="galera-lb",instance="a:9104",pool="default"}'
        values: '1 1 1 2 2 2 2 2 2 2 2 2'
      - series: 'galera_lb_writer_changes_total{job="galera-lb",instance="b:9104",pool="default"}'
        values: '5 5 5 1 1 1 1 1 1 1 1 1'
      - series: 'galera_lb_writer_changes_total{job="galera-lb",instance="c:9104",pool="default"}'
        values: '_ _ _ 1 1 1 1 1 1 1 1 1'
    alert_rule_test:
      - {eval_time: 2m, alertname: GaleraLbWriterChanged, exp_alerts: []}
      - eval_time: 4m
        alertname: GaleraLbWriterChanged
        exp_alerts:
          - exp_labels: {severity: warning, job: galera-lb, instance: "a:9104", pool: default}
      - eval_time: 7m
        alertname: GaleraLbWriterChanged
        exp_alerts:
          - exp_labels: {severity: warning, job: galera-lb, instance: "a:9104", pool: default}
      - {eval_time: 10m, alertname: GaleraLbWriterChanged, exp_alerts: []}

  # n1 flaps (up and down every minute); n2 goes down once and stays down; n3 is down but
  # under maintenance.
  - interval: 1m
    input_series:
      - series: 'galera_lb_backend_up{job="galera-lb",instance="lb:9104",backend="n1:3306"}'
        values: '1 0 1 0 1 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'galera_lb_backend_up{job="galera-lb",instance="lb:9104",backend="n2:3306"}'
        values: '1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
      - series: 'galera_lb_backend_up{job="galera-lb",instance="lb:9104",backend="n3:3306"}'
        values: '0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
      - series: 'galera_lb_backend_admin_state{job="galera-lb",instance="lb:9104",backend="n3:3306",state="maint"}'
        values: '1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'galera_lb_backend_admin_state{job="galera-lb",instance="lb:9104",backend="n2:3306",state="maint"}'
        values: '0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
    alert_rule_test:
      - {eval_time: 4m, alertname: GaleraLbBackendFlapping, exp_alerts: []}
      - eval_time: 7m
        alertname: GaleraLbBackendFlapping
        exp_alerts:
          - exp_labels: {severity: warning, job: galera-lb, instance: "lb:9104", backend: "n1:3306"}
      - {eval_time: 20m, alertname: GaleraLbBackendFlapping, exp_alerts: []}
      - {eval_time: 5m, alertname: GaleraLbBackendDown, exp_alerts: []}
      - eval_time: 7m
        alertname: GaleraLbBackendDown
        exp_alerts:
          - exp_labels: {severity: warning, job: galera-lb, instance: "lb:9104", backend: "n2:3306"}
"#;
    let test_file = dir.path().join("alerts_test.yml");
    std::fs::write(&test_file, tests).unwrap();
    let out = lb::run_bounded(
        Command::new(promtool())
            .args(["test", "rules"])
            .arg(&test_file)
            .current_dir(dir.path()),
        Stdio::null(),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "promtool test rules ({}):\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// names, limits, zeros from the start, the status page in Chromium (the real binary)

/// The samples of `text` (the Prometheus text format) whose `backend` label is `backend`.
fn series_naming(text: &str, label: &str, value: &str) -> Vec<Sample> {
    Scrape::parse(text)
        .samples
        .into_iter()
        .filter(|s| s.labels.get(label).map(String::as_str) == Some(value))
        .collect()
}

/// Waits up to 5 s for `accept` to hold of `/metrics`; panics with the last scrape otherwise.
fn metrics_until(admin: SocketAddr, what: &str, accept: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = lb::http_get(admin, "/metrics").body;
        if accept(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics never showed {what}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_backend_series_carries_its_address_and_name_and_a_reload_renames_and_drops() {
    let [a, b, c] = [
        lb::echo_backend("a"),
        lb::echo_backend("b"),
        lb::echo_backend("c"),
    ];
    let (port, side, admin_port, control_port) = (
        lb::free_port(),
        lb::free_port(),
        lb::free_port(),
        lb::free_port(),
    );
    let config = |names: [&str; 2], with_c: bool| {
        let mut yaml = format!(
            "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n\
             \x20 - name: side\n    bind: 127.0.0.1:{side}\n    pool: side\n    role: writer\n\
             backends:\n  - address: {a}\n    name: {}\n  - address: {b}\n",
            names[0]
        );
        if with_c {
            yaml.push_str(&format!("  - address: {c}\n    name: {}\n", names[1]));
        }
        yaml.push_str(&format!(
            "pools:\n  - name: side\n    backends:\n      - address: {a}\n        name: {}\n\
             health:\n  check: tcp\n  interval: 100ms\n\
             admin:\n  bind: 127.0.0.1:{admin_port}\ncontrol:\n  bind: 127.0.0.1:{control_port}\n",
            names[0]
        ));
        yaml
    };
    let process = lb::LbProcess::start(&config(["db1", "db3"], true));
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let control: SocketAddr = format!("127.0.0.1:{control_port}").parse().unwrap();
    let (a, b, c) = (a.to_string(), b.to_string(), c.to_string());
    let text = metrics_until(admin, "checks of every backend", |text| {
        [&a, &b, &c].iter().all(|backend| {
            series_naming(text, "backend", backend)
                .iter()
                .any(|s| s.name == "galera_lb_health_check_duration_seconds_count")
        })
    });

    // Every series about a backend has `backend` (the address) and `name`; those about a pool
    // member add `pool`; nothing else varies.
    let pool_series = [
        "galera_lb_backend_usable",
        "galera_lb_backend_writer",
        "galera_lb_backend_weight",
        "galera_lb_backend_max_connections",
    ];
    for (backend, name) in [(&a, "db1"), (&b, b.as_str()), (&c, "db3")] {
        let series = series_naming(&text, "backend", backend);
        assert!(series.len() > 10, "{backend}: {series:?}");
        for sample in &series {
            assert_eq!(
                sample.labels.get("name").map(String::as_str),
                Some(name),
                "{sample:?}"
            );
            assert_eq!(
                sample.labels.contains_key("pool"),
                pool_series.contains(&sample.name.as_str()),
                "{sample:?}"
            );
        }
    }
    // a is in both pools, under one name.
    let scrape = Scrape::parse(&text);
    for pool in ["default", "side"] {
        assert_eq!(
            scrape.get(
                "galera_lb_backend_usable",
                &[("pool", pool), ("backend", &a), ("name", "db1")]
            ),
            1.0
        );
    }
    assert_eq!(
        scrape.get(
            "galera_lb_backend_writer",
            &[("pool", "side"), ("backend", &a), ("name", "db1")]
        ),
        1.0
    );

    // /status, the status page, getinfo json, health and the log name them too.
    let status = lb::status(admin);
    let named: BTreeSet<(String, String)> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        named,
        BTreeSet::from([
            (a.clone(), "db1".to_string()),
            (b.clone(), b.clone()),
            (c.clone(), "db3".to_string())
        ]),
        "{status}"
    );
    let side_listener = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "side")
        .unwrap()
        .clone();
    assert_eq!(side_listener["writer"], "db1", "{status}");
    let page = lb::http_get(admin, "/").body;
    assert!(
        page.contains(&format!(
            r#"data-backend="{a}" data-state="up" data-name="db1""#
        )),
        "{page}"
    );
    let info: Value = serde_json::from_str(&lb::control(control, "getinfo json\n")).unwrap();
    let names: Vec<&str> = info["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db1", b.as_str(), "db3"], "{info}");
    let health = lb::control(control, "health\n");
    assert!(
        health.contains(&format!("default {a} up ")) && health.contains(" name=db1\n"),
        "{health}"
    );
    assert!(process.log().contains("name=db1"), "{}", process.log());

    // A backend added over the control port is named by its address.
    let added = lb::echo_backend("d").to_string();
    assert_eq!(lb::control(control, &format!("{added}:1\n")).trim(), "Ok");
    let text = metrics_until(admin, "the added backend", |text| {
        lb::metric_in(
            text,
            "galera_lb_backend_up",
            &[("backend", &added), ("name", &added)],
        )
        .is_some()
    });
    // ...and removed over it, it leaves no series behind (its check may have reported: wait
    // for its task to stop).
    assert!(!series_naming(&text, "backend", &added).is_empty());
    assert_eq!(lb::control(control, &format!("{added}:-1\n")).trim(), "Ok");
    metrics_until(admin, "no series of the removed backend", |text| {
        series_naming(text, "backend", &added).is_empty()
    });

    // A reload renames a (db1 → node1) and drops c: no series has the old name or c any more.
    std::fs::write(process.config_path(), config(["node1", "db3"], false)).unwrap();
    assert_eq!(lb::control(control, "reload\n").trim(), "Ok");
    metrics_until(admin, "the renamed backend checked again", |text| {
        series_naming(text, "name", "node1")
            .iter()
            .any(|s| s.name == "galera_lb_health_check_duration_seconds_count")
    });
    let text = metrics_until(admin, "no series of the dropped or old names", |_| {
        let text = lb::http_get(admin, "/metrics").body;
        series_naming(&text, "backend", &c).is_empty()
            && series_naming(&text, "name", "db1").is_empty()
            && series_naming(&text, "name", "db3").is_empty()
    });
    assert!(!series_naming(&text, "backend", &b).is_empty());
    drop(process);
}

#[test]
fn counters_known_at_start_show_zero_and_the_limits_and_the_process_are_exported() {
    let backend = lb::echo_backend("a");
    let (port, writer, admin_port, control_port) = (
        lb::free_port(),
        lb::free_port(),
        lb::free_port(),
        lb::free_port(),
    );
    let yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n    max_connections: 40\n\
         \x20 - name: writes\n    bind: 127.0.0.1:{writer}\n    role: writer\n\
         backends:\n  - address: {backend}\n    name: db1\n    max_connections: 30\n\
         health:\n  check: none\nlimits:\n  max_connections: 100\n\
         admin:\n  bind: 127.0.0.1:{admin_port}\ncontrol:\n  bind: 127.0.0.1:{control_port}\n"
    );
    // 200 descriptors: fewer sessions than limits.max_connections fit.
    let process = lb::LbProcess::start_with(&yaml, lb::with_descriptor_limit(200));
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let text = lb::http_get(admin, "/metrics").body;
    let scrape = Scrape::parse(&text);

    // Nothing has happened yet, and every counter of something known shows 0.
    for listener in ["rw", "writes"] {
        for reason in [
            "too_many_connections",
            "no_route",
            "connect_failed",
            "no_usable_backend",
        ] {
            let labels = [("listener", listener), ("reason", reason)];
            assert_eq!(scrape.get("galera_lb_client_errors_total", &labels), 0.0);
        }
        let labels = [("listener", listener)];
        assert_eq!(
            scrape.get("galera_lb_client_idle_timeouts_total", &labels),
            0.0
        );
        assert_eq!(
            scrape.get("galera_lb_connections_accepted_total", &labels),
            0.0
        );
    }
    for result in ["ok", "error"] {
        assert_eq!(
            scrape.get("galera_lb_reloads_total", &[("result", result)]),
            0.0
        );
    }
    for command in [
        "getinfo",
        "health",
        "reload",
        "set_weight",
        "remove",
        "invalid",
    ] {
        let labels = [("command", command)];
        assert_eq!(scrape.get("galera_lb_control_commands_total", &labels), 0.0);
    }
    // The writer pool has elected its first writer (that counts as a change).
    assert_eq!(
        scrape.get("galera_lb_writer_changes_total", &[("pool", "default")]),
        1.0
    );

    // The limits.
    assert_eq!(scrape.get("galera_lb_max_connections", &[]), 100.0);
    let cap = scrape.get("galera_lb_session_cap", &[]);
    assert!(
        cap > 0.0 && cap < 100.0,
        "200 descriptors fit fewer sessions: {cap}"
    );
    assert_eq!(
        scrape.get("galera_lb_listener_max_connections", &[("listener", "rw")]),
        40.0
    );
    assert_eq!(
        scrape.value(
            "galera_lb_listener_max_connections",
            &[("listener", "writes")]
        ),
        None,
        "no limit, no series"
    );
    let backend = backend.to_string();
    assert_eq!(
        scrape.get(
            "galera_lb_backend_max_connections",
            &[("pool", "default"), ("backend", &backend), ("name", "db1")]
        ),
        30.0
    );

    // The process: its descriptors (two per session), its limit, memory, CPU, start.
    assert_eq!(scrape.get("process_max_fds", &[]), 200.0);
    let rss = scrape.get("process_resident_memory_bytes", &[]);
    // Read a moment apart, so within 25 % (the process keeps allocating while it serves).
    let rss_now = lb::rss_kb(process.pid()) as f64 * 1024.0;
    assert!(
        (rss - rss_now).abs() <= rss_now * 0.25,
        "RSS in bytes: {rss} exported, {rss_now} in /proc/PID/status"
    );
    assert!(scrape.get("process_virtual_memory_bytes", &[]) >= rss);
    assert!(scrape.get("process_cpu_seconds_total", &[]) >= 0.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = scrape.get("process_start_time_seconds", &[]);
    assert!(now - 60.0 < start && start <= now + 1.0, "{start} vs {now}");
    let fds_before = scrape.get("process_open_fds", &[]);
    let clients: Vec<std::net::TcpStream> = (0..10)
        .map(|_| {
            use std::io::Read;
            let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut greeting = [0u8; 2];
            client.read_exact(&mut greeting).unwrap();
            client
        })
        .collect();
    let text = metrics_until(admin, "ten sessions' descriptors", |text| {
        lb::metric_in(text, "process_open_fds", &[]).is_some_and(|n| n >= fds_before + 20.0)
    });
    assert!(lb::metric_in(&text, "process_open_fds", &[]).unwrap() < fds_before + 30.0);
    drop(clients);
    drop(process);
}

/// The page at `url` as headless Chromium renders it (bounded; a fresh profile).
fn dump_dom(url: &str) -> String {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("Chromium is missing: install the Debian package `chromium`");
    let profile = tempfile::Builder::new()
        .prefix("galera-lb-chromium-")
        .tempdir()
        .unwrap();
    let out = lb::run_bounded(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url),
        Stdio::null(),
        Duration::from_secs(90),
    );
    assert!(out.status.success(), "Chromium failed: {}", out.stderr);
    assert!(out.stdout.contains("</html>"), "{}", out.stdout);
    out.stdout
}

/// The cells of the row of `table` whose tag has `attribute`, as text (tags removed).
fn row_cells(dom: &str, attribute: &str) -> Vec<String> {
    let start = dom
        .find(attribute)
        .unwrap_or_else(|| panic!("no row with {attribute} in {dom}"));
    let row = &dom[start..start + dom[start..].find("</tr>").unwrap()];
    row.split("<td")
        .skip(1)
        .map(|cell| {
            let inner = &cell[cell.find('>').unwrap() + 1..];
            let inner = inner.split("</td>").next().unwrap();
            let mut text = String::new();
            let mut in_tag = false;
            for ch in inner.chars() {
                match ch {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            text
        })
        .collect()
}

#[test]
fn the_status_page_in_chromium_says_since_when_why_and_per_listener_how_many_are_usable() {
    let [a, b] = [lb::echo_backend("a"), lb::echo_backend("b")];
    let dead = lb::closed_address();
    let (port, writer, admin_port) = (lb::free_port(), lb::free_port(), lb::free_port());
    let yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n\
         \x20 - name: writes\n    bind: 127.0.0.1:{writer}\n    role: writer\n\
         backends:\n  - address: {a}\n    name: db1\n  - address: {b}\n    name: db2\n\
         \x20 - address: {dead}\n    name: db3\n\
         health:\n  check: tcp\n  interval: 200ms\n  rise: 1\n  fall: 1\n\
         admin:\n  bind: 127.0.0.1:{admin_port}\n"
    );
    let process = lb::LbProcess::start(&yaml);
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let dom = dump_dom(&format!("http://{admin}/"));

    // Per listener: how many backends it can use of how many, and the writer.
    for listener in ["rw", "writes"] {
        let attribute = format!(r#"data-listener="{listener}" data-usable="2" data-backends="3""#);
        assert!(dom.contains(&attribute), "{attribute} in {dom}");
    }
    // The writer is one of the two that are up (the one first by address: ports are random).
    let writer = ["db1", "db2"]
        .into_iter()
        .find(|w| dom.contains(&format!("2 of 3 backends usable, writer {w}<")))
        .unwrap_or_else(|| panic!("the writer named: {dom}"));

    // Per backend: name, state and for how long, reason, last check and its latency.
    let header = [
        "pool",
        "backend",
        "state",
        "reason",
        "role",
        "wsrep",
        "name",
        "for",
        "cluster size",
        "conf id",
        "segment",
        "recv queue",
        "seqno lag",
        "last check",
        "latency",
    ];
    for (backend, name, state) in [(a, "db1", "up"), (b, "db2", "up"), (dead, "db3", "down")] {
        let cells = row_cells(&dom, &format!(r#"data-backend="{backend}""#));
        let cell = |column: &str| cells[header.iter().position(|h| *h == column).unwrap()].as_str();
        assert_eq!(cell("name"), name, "{cells:?}");
        assert_eq!(cell("state"), state, "{cells:?}");
        let since = cell("for");
        assert!(
            since.starts_with(&format!("{state} for ")) && since.ends_with('s'),
            "{cells:?}"
        );
        assert!(cell("last check").ends_with("s ago"), "{cells:?}");
        assert!(cell("latency").ends_with(" ms"), "{cells:?}");
        // A TCP check reads no wsrep status: no cluster size or configuration id to show.
        assert_eq!(
            (cell("cluster size"), cell("conf id")),
            ("-", "-"),
            "{cells:?}"
        );
        if state == "down" {
            assert!(
                !cell("reason").is_empty(),
                "a down backend says why: {cells:?}"
            );
        }
    }
    // The listener table says it too.
    let cells = row_cells(&dom, "<td>writes</td>");
    assert!(
        cells.contains(&"2 of 3".to_string()) && cells.contains(&writer.to_string()),
        "{cells:?}"
    );
    drop(process);
}
