//! galera-lb's admin port seen by real clients, in front of the real three-node Galera sandbox
//! (`scripts/sandbox`, see `tests/support/sandbox.rs`):
//! - a real Prometheus server (`/usr/bin/prometheus`, Debian package `prometheus`) scrapes the
//!   admin port with `config/alerts.yml` loaded, and its query API returns the per-backend
//!   series;
//! - headless Chromium (Debian package `chromium`) renders the status page, before and while a
//!   node is isolated from the cluster. Its screenshots are kept in `target/test-artifacts/`.
//!
//! Missing programs or a missing cluster fail the tests with what to install or start; they are
//! never skipped. Every process a test starts (galera-lb, Prometheus, Chromium) runs on loopback
//! on free ports and is stopped by the test, also when it fails.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lb::{LbProcess, free_port, http_get};
use serde_json::Value;
use support::sandbox;

// ---------------------------------------------------------------------------------------------
// galera-lb in front of the sandbox

/// galera-lb (the real binary) in front of the three sandbox nodes, wsrep checks every 300 ms,
/// its admin port on a free port; returns once `/ready` answers 200.
fn lb_with_admin() -> (LbProcess, SocketAddr) {
    let nodes = &sandbox::cluster().addresses;
    let (port, admin_port) = (free_port(), free_port());
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n    policy: round_robin\n\
         \x20 - name: writer\n    bind: 127.0.0.1:{}\n    role: writer\nbackends:\n",
        free_port()
    );
    for node in nodes {
        yaml.push_str(&format!("  - address: {node}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  check: wsrep\n  user: monitor\n  password: monitor\n  interval: 300ms\n\
         admin:\n  bind: 127.0.0.1:{admin_port}\n"
    ));
    let process = LbProcess::start(&yaml);
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    wait_for(
        "galera-lb to be ready",
        Duration::from_secs(30),
        || {
            let reply = http_get(admin, "/ready");
            (reply.status == 200).then_some(()).ok_or(reply.body)
        },
        &process,
    );
    (process, admin)
}

/// Calls `probe` every 200 ms until it returns `Ok`, for up to `limit`; panics with the last
/// `Err` and galera-lb's log otherwise.
fn wait_for<T, E: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
    lb: &LbProcess,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => panic!(
                "waited {limit:?} for {what}; last: {last:?}\ngalera-lb's log:\n{}",
                lb.log()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `/status`, parsed.
fn status(admin: SocketAddr) -> Value {
    let reply = http_get(admin, "/status");
    assert_eq!(reply.status, 200, "{reply:?}");
    serde_json::from_str(&reply.body).unwrap()
}

/// Each backend's `health` in `/status`, by address.
fn health(admin: SocketAddr) -> BTreeMap<String, String> {
    status(admin)["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["health"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn addresses() -> Vec<String> {
    sandbox::cluster()
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/// A Prometheus server of the test's own: its own configuration and storage in a temporary
/// directory, on a free loopback port. Dropping it stops it (SIGTERM, then SIGKILL) and removes
/// the directory.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

const PROMETHEUS: &str = "/usr/bin/prometheus";

impl Prometheus {
    /// Starts Prometheus scraping `target` (job `galera-lb`) every second, with the alert rules
    /// of `config/alerts.yml`; returns once it is ready.
    fn start(target: SocketAddr) -> Prometheus {
        use std::os::unix::process::CommandExt;
        assert!(
            Path::new(PROMETHEUS).is_file(),
            "{PROMETHEUS} is missing: install the Debian package `prometheus` \
             (apt-get install -y prometheus)"
        );
        let dir = tempfile::Builder::new()
            .prefix("galera-lb-prometheus-")
            .tempdir()
            .unwrap();
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: galera-lb\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.display()
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
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!(
                    "Prometheus exited ({status}) at start; its log:\n{}",
                    prometheus.log()
                );
            }
            let ready = std::net::TcpStream::connect(address).is_ok()
                && http_get(address, "/-/ready").status == 200;
            if ready {
                return prometheus;
            }
            if Instant::now() > deadline {
                panic!(
                    "Prometheus was not ready within 60 s; its log:\n{}",
                    prometheus.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`: the `data` of a `success` answer.
    fn api(&self, path: &str) -> Value {
        let reply = http_get(self.address, &format!("/api/v1/{path}"));
        let body: Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("/api/v1/{path}: not JSON ({e}): {reply:?}"));
        assert_eq!(body["status"], "success", "/api/v1/{path}: {body}");
        body["data"].clone()
    }

    /// An instant query: its result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("query?query={}", percent_encode(promql)));
        assert_eq!(data["resultType"], "vector", "{data}");
        data["result"].as_array().unwrap().clone()
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

#[test]
fn prometheus_scrapes_every_backend_and_loads_the_alert_rules() {
    let _shared = sandbox::shared_lock();
    let (lb, admin) = lb_with_admin();
    let prometheus = Prometheus::start(admin);
    let nodes = addresses();

    // The query API returns one galera_lb_backend_up series per node, all 1.
    let series = wait_for(
        "Prometheus to return three galera_lb_backend_up series",
        Duration::from_secs(60),
        || {
            let result = prometheus.query("galera_lb_backend_up");
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            for series in &result {
                seen.insert(
                    series["metric"]["backend"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    series["value"][1].as_str().unwrap_or("").to_string(),
                );
            }
            if seen.len() == 3 && seen.values().all(|v| v == "1") {
                Ok(result)
            } else {
                Err(format!(
                    "{result:?}\nPrometheus' log:\n{}",
                    prometheus.log()
                ))
            }
        },
        &lb,
    );
    let mut backends: Vec<String> = series
        .iter()
        .map(|s| s["metric"]["backend"].as_str().unwrap().to_string())
        .collect();
    backends.sort();
    let mut expected = nodes.clone();
    expected.sort();
    assert_eq!(backends, expected);
    for s in &series {
        assert_eq!(s["metric"]["job"], "galera-lb", "{s}");
        assert_eq!(s["metric"]["instance"], admin.to_string().as_str(), "{s}");
        assert_eq!(s["metric"]["__name__"], "galera_lb_backend_up", "{s}");
    }

    // The target is healthy, and the wsrep view of each node made it through.
    let up = prometheus.query(r#"up{job="galera-lb"}"#);
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    let synced = prometheus.query("galera_lb_backend_wsrep_local_state == 4");
    assert_eq!(synced.len(), 3, "all three Synced: {synced:?}");
    let sizes = prometheus.query("galera_lb_backend_cluster_size");
    assert!(
        sizes.iter().all(|s| s["value"][1] == "3"),
        "each node reports a cluster of 3: {sizes:?}"
    );
    let writers = prometheus.query("galera_lb_backend_writer == 1");
    assert_eq!(writers.len(), 1, "one writer: {writers:?}");
    let changes = prometheus.query("galera_lb_writer_changes_total");
    assert_eq!(changes.len(), 1, "{changes:?}");

    // config/alerts.yml is loaded and every rule evaluates without error...
    let rules = wait_for(
        "every alert rule to be evaluated",
        Duration::from_secs(30),
        || {
            let groups = prometheus.api("rules")["groups"].clone();
            let rules: Vec<Value> = groups
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap().clone())
                .collect();
            let evaluated = !rules.is_empty()
                && rules
                    .iter()
                    .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z");
            if evaluated {
                Ok(rules)
            } else {
                Err(format!("{rules:?}"))
            }
        },
        &lb,
    );
    let names: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    for expected in [
        "GaleraLbDown",
        "GaleraLbNoUsableBackend",
        "GaleraLbWriterChanged",
        "GaleraLbBackendFlapping",
        "GaleraLbBackendDown",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not loaded: {names:?}"
        );
    }
    // ...and on a healthy cluster, a few evaluations later, none is pending or firing (the
    // first writer election in particular is not a "writer changed").
    std::thread::sleep(Duration::from_secs(3));
    let alerts = prometheus.api("alerts")["alerts"].clone();
    assert_eq!(
        alerts.as_array().map(Vec::len),
        Some(0),
        "alerts on a healthy cluster: {alerts}"
    );
    drop(prometheus);
    drop(lb);
}

// ---------------------------------------------------------------------------------------------
// Chromium

/// The Chromium binary; fails the test when it is missing.
fn chromium() -> PathBuf {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("Chromium is missing: install the Debian package `chromium` (apt-get install -y chromium)")
    })
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom`, or `--screenshot=FILE` and a
/// window size), a fresh profile, and no network of its own; bounded, and nothing is left
/// running afterwards.
fn run_chromium(action: &[String], url: &str) -> lb::Bounded {
    let profile = tempfile::Builder::new()
        .prefix("galera-lb-chromium-")
        .tempdir()
        .unwrap();
    let out = lb::run_bounded(
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(action)
            .arg(url),
        Stdio::null(),
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "Chromium {action:?} {url} failed ({}):\n{}",
        out.status,
        out.stderr
    );
    out
}

/// The page at `url` as Chromium rendered it.
fn dump_dom(url: &str) -> String {
    let out = run_chromium(&["--dump-dom".to_string()], url);
    assert!(
        out.stdout.contains("</html>"),
        "Chromium printed no DOM for {url}:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Where screenshots and DOM dumps are kept after the test.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 1200x800 screenshot of `url` in `target/test-artifacts/<name>.png`, checked to be a PNG
/// of that size.
fn screenshot(url: &str, name: &str) -> PathBuf {
    let file = artifacts().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    run_chromium(
        &[
            format!("--screenshot={}", file.display()),
            "--window-size=1200,800".to_string(),
        ],
        url,
    );
    let png = std::fs::read(&file)
        .unwrap_or_else(|e| panic!("Chromium wrote no screenshot {}: {e}", file.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {}",
        file.display()
    );
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 800), "{}", file.display());
    assert!(png.len() > 10_000, "a blank screenshot? {}", file.display());
    file
}

/// The backend rows of the status page's DOM: address → (`data-state`, the row's HTML).
fn backend_rows(dom: &str) -> BTreeMap<String, (String, String)> {
    let attribute = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = start + tag[start..].find('"')?;
        Some(tag[start..end].to_string())
    };
    let mut rows = BTreeMap::new();
    for chunk in dom.split("<tr").skip(1) {
        let row = chunk.split("</tr>").next().unwrap_or_default();
        let tag = row.split('>').next().unwrap_or_default();
        if let (Some(address), Some(state)) =
            (attribute(tag, "data-backend"), attribute(tag, "data-state"))
        {
            rows.insert(address, (state, row.to_string()));
        }
    }
    rows
}

/// Brings an isolated node back when the test ends, also when it fails.
struct Rejoin(Option<usize>);

impl Rejoin {
    fn now(mut self) {
        if let Some(n) = self.0.take() {
            sandbox::cluster().rejoin(n);
        }
    }
}

impl Drop for Rejoin {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            // Unwinding already: report, do not panic again.
            if std::panic::catch_unwind(|| sandbox::cluster().rejoin(n)).is_err() {
                eprintln!("could not rejoin node {n}; the next test to take a lock restores it");
            }
        }
    }
}

#[test]
fn the_status_page_in_chromium_shows_the_nodes_and_an_isolated_one_down() {
    let _fault = sandbox::fault_lock();
    let (lb, admin) = lb_with_admin();
    let url = format!("http://{admin}/");
    let nodes = addresses();

    // All three up, Synced, one of them the writer.
    let dom = dump_dom(&url);
    std::fs::write(artifacts().join("status-page-all-up.html"), &dom).unwrap();
    let rows = backend_rows(&dom);
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        {
            let mut sorted = nodes.clone();
            sorted.sort();
            sorted
        },
        "the page shows the three nodes:\n{dom}"
    );
    for (address, (state, row)) in &rows {
        assert_eq!(state, "up", "{address}: {row}");
        assert!(row.contains("<td>Synced</td>"), "{address}: {row}");
        // The cluster's size and configuration id, as each node reports them.
        let cells: Vec<&str> = row
            .split("<td")
            .skip(1)
            .map(|cell| cell.split_once('>').map_or("", |(_, rest)| rest))
            .map(|cell| cell.split("</td>").next().unwrap_or_default())
            .collect();
        assert_eq!(
            cells.get(8),
            Some(&"3"),
            "{address}: cluster size 3 in {row}"
        );
        // (A fresh sandbox's nodes report wsrep_cluster_conf_id 0: a number, not "-".)
        let conf_id = cells.get(9).and_then(|c| c.parse::<u64>().ok());
        assert!(conf_id.is_some(), "{address}: a configuration id in {row}");
    }
    assert!(
        dom.contains("3 of 3 backends usable"),
        "per listener:\n{dom}"
    );
    assert_eq!(
        rows.values()
            .filter(|(_, row)| row.contains("<td>writer</td>"))
            .count(),
        1,
        "one writer:\n{dom}"
    );
    assert!(
        dom.contains("Ready: every listener has a usable backend."),
        "{dom}"
    );
    screenshot(&url, "status-page-all-up");

    // Node 2 is cut off the group: non-Primary, so its checks fail and it goes down.
    let isolated = 2;
    let isolated_address = sandbox::cluster().node_address(isolated).to_string();
    let started = Instant::now();
    let rejoin = Rejoin(Some(isolated));
    sandbox::cluster().isolate(isolated);
    let isolated_at = Instant::now();
    wait_for(
        "the isolated node to be down in /status",
        Duration::from_secs(30),
        || {
            let health = health(admin);
            (health[&isolated_address] == "down")
                .then_some(())
                .ok_or(health)
        },
        &lb,
    );
    eprintln!(
        "node {isolated}: `isolate` took {:?}; down in /status {:?} after it returned",
        isolated_at - started,
        isolated_at.elapsed()
    );
    let dom = dump_dom(&url);
    std::fs::write(artifacts().join("status-page-node2-isolated.html"), &dom).unwrap();
    let rows = backend_rows(&dom);
    assert_eq!(rows.len(), 3, "{dom}");
    let (state, row) = &rows[&isolated_address];
    assert_eq!(state, "down", "{row}");
    assert!(row.contains(r#"class="down"#), "shown as down: {row}");
    let reason = row.split("<td>").nth(4).unwrap_or_default();
    assert!(
        !reason.starts_with("</td>"),
        "a down node shows the reason: {row}"
    );
    for (address, (state, row)) in &rows {
        if address != &isolated_address {
            assert_eq!(state, "up", "{address} stays up: {row}");
        }
    }
    // The writer is one of the nodes still in the cluster (it moves if node 2 held it).
    let writers: Vec<&String> = rows
        .iter()
        .filter(|(_, (_, row))| row.contains("<td>writer</td>"))
        .map(|(address, _)| address)
        .collect();
    assert_eq!(writers.len(), 1, "one writer:\n{dom}");
    assert_ne!(
        writers[0], &isolated_address,
        "the isolated node is not the writer"
    );
    assert!(
        dom.contains("Ready: every listener has a usable backend."),
        "{dom}"
    );
    assert!(
        dom.contains("2 of 3 backends usable"),
        "per listener:\n{dom}"
    );
    let shot = screenshot(&url, "status-page-node2-isolated");
    eprintln!("screenshot with node {isolated} down: {}", shot.display());

    // Back in the group: up again.
    rejoin.now();
    wait_for(
        "the rejoined node to be up in /status",
        Duration::from_secs(30),
        || {
            let health = health(admin);
            health
                .values()
                .all(|h| h == "up")
                .then_some(())
                .ok_or(health)
        },
        &lb,
    );
    let dom = dump_dom(&url);
    let rows = backend_rows(&dom);
    assert!(
        rows.values().all(|(state, _)| state == "up"),
        "all up after the rejoin:\n{dom}"
    );
    screenshot(&url, "status-page-rejoined");
    drop(lb);
}
