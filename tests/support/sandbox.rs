//! The real three-node MariaDB Galera cluster that end-to-end tests run against, driven through
//! `scripts/sandbox` (see the comment at its top for the layout, ports and users).
//!
//! [`cluster()`] returns the test binary's shared cluster:
//! - when `GALERA_LB_SANDBOX_DIR` is set, the sandbox already running in that directory (this is
//!   how `scripts/test` and CI start one cluster for every test binary);
//! - otherwise one this binary starts itself in `<temp dir>/galera-lb-test-4400` (base port
//!   4400: clients on 127.0.0.1:4410, 4420, 4430). `start` is idempotent and registers this
//!   process as an owner, so test binaries run one after another share it; a detached watcher
//!   stops it a few seconds after the last owner has exited.
//!
//! A test that needs the cluster and cannot get one panics with what failed and how to fix it: it
//! fails, it is never skipped.
//!
//! Users: `root` (no password, loopback), `app`/`app` (all privileges but READ_ONLY ADMIN),
//! `monitor`/`monitor` (USAGE only). Nodes are numbered 1..=3.
//!
//! Locking: a test that injects faults holds [`fault_lock()`] and restores the cluster (all three
//! Synced, every setting back) before it releases it; a test that only reads holds
//! [`shared_lock()`]. If a fault test panics while holding the lock, the next test to take either
//! lock first runs [`Cluster::restore`].
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Base port of the sandbox a test binary starts itself (without `GALERA_LB_SANDBOX_DIR`).
pub const BASE_PORT: u16 = 4400;
/// Names the directory of an already running sandbox to use instead of starting one.
pub const DIR_ENV: &str = "GALERA_LB_SANDBOX_DIR";

/// A running three-node sandbox.
#[derive(Debug)]
pub struct Cluster {
    /// The sandbox directory (`--dir` of `scripts/sandbox`).
    pub dir: PathBuf,
    /// The client addresses of node1, node2 and node3, in that order.
    pub addresses: Vec<SocketAddr>,
}

/// The cluster shared by this test binary; started (or attached to) on first use.
///
/// Panics, with instructions, when no cluster can be had.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(obtain) {
        Ok(cluster) => cluster,
        Err(message) => panic!("{message}"),
    }
}

static LOCK: RwLock<()> = RwLock::new(());

/// Exclusive access, for a test that injects faults. Restore the cluster before dropping it.
pub fn fault_lock() -> RwLockWriteGuard<'static, ()> {
    match LOCK.write() {
        Ok(guard) => guard,
        Err(poisoned) => {
            // A fault test panicked while holding the lock: the cluster may be left broken.
            let guard = poisoned.into_inner();
            LOCK.clear_poison();
            cluster().restore();
            guard
        }
    }
}

/// Exclusive use of the cluster for one fault test: holds the fault lock, creates the load's
/// tables (`super::load::SCHEMA`), and restores the cluster (all three Synced, every setting
/// and `lag` back) when dropped — also when the test fails, before the lock is released.
pub struct FaultSession {
    pub cluster: &'static Cluster,
    _lock: RwLockWriteGuard<'static, ()>,
}

impl FaultSession {
    pub fn begin() -> FaultSession {
        let lock = fault_lock();
        let cluster = cluster();
        cluster.sql(1, super::load::SCHEMA);
        FaultSession {
            cluster,
            _lock: lock,
        }
    }
}

impl Drop for FaultSession {
    fn drop(&mut self) {
        let cluster = self.cluster;
        if std::thread::panicking() {
            // A second panic here would abort the test binary; the next test to take the lock
            // restores the cluster again anyway.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.restore()));
        } else {
            cluster.restore();
        }
    }
}

/// Shared access, for a test that only reads (or writes its own tables).
pub fn shared_lock() -> RwLockReadGuard<'static, ()> {
    loop {
        match LOCK.read() {
            Ok(guard) => return guard,
            // Let fault_lock() restore the cluster and clear the poison, then try again.
            Err(poisoned) => {
                drop(poisoned.into_inner());
                drop(fault_lock());
            }
        }
    }
}

impl Cluster {
    /// The client address of node `n` (1..=3).
    pub fn node_address(&self, n: usize) -> SocketAddr {
        assert!((1..=3).contains(&n), "nodes are numbered 1..=3, not {n}");
        self.addresses[n - 1]
    }

    /// SIGKILL node `n` (its grastate.dat keeps seqno -1, as after a crash).
    pub fn kill(&self, n: usize) {
        self.node_command("kill", n, &[]);
    }

    /// Start a stopped or killed node `n` and wait until it is Synced again (IST, or SST when
    /// needed).
    pub fn start_node(&self, n: usize) {
        self.node_command("start-node", n, &[]);
    }

    /// Wipe the datadir of the stopped node `n` and start it: it rejoins by a full rsync SST.
    pub fn start_node_with_sst(&self, n: usize) {
        self.node_command("start-node", n, &["--sst"]);
    }

    /// Shut node `n` down cleanly.
    pub fn stop_node(&self, n: usize) {
        self.node_command("stop-node", n, &[]);
    }

    /// SIGSTOP node `n`: it keeps its sockets but answers nothing.
    pub fn pause(&self, n: usize) {
        self.node_command("pause", n, &[]);
    }

    /// SIGCONT node `n`. It may take a few seconds to be Synced again: see [`Self::wait_synced`].
    pub fn resume(&self, n: usize) {
        self.node_command("resume", n, &[]);
    }

    /// Cut node `n` off the group (`gmcast.isolate=1`); returns once it is non-Primary.
    pub fn isolate(&self, n: usize) {
        self.node_command("isolate", n, &[]);
    }

    /// Undo [`Self::isolate`] and wait until node `n` is Synced in the Primary component again.
    pub fn rejoin(&self, n: usize) {
        self.node_command("rejoin", n, &[]);
    }

    /// `wsrep_desync` ON (state 2, Donor/Desynced) or OFF (back to 4); waits for the state.
    pub fn desync(&self, n: usize, on: bool) {
        self.node_command("desync", n, &[if on { "on" } else { "off" }]);
    }

    /// `wsrep_reject_queries` ALL or NONE.
    pub fn reject_queries(&self, n: usize, on: bool) {
        self.node_command("reject", n, &[if on { "all" } else { "none" }]);
    }

    /// `read_only` ON or OFF.
    pub fn read_only(&self, n: usize, on: bool) {
        self.node_command("readonly", n, &[if on { "on" } else { "off" }]);
    }

    /// `scripts/sandbox lag N on|off`: node `n` falls behind while it stays Synced (a write
    /// load it applies slowly, with flow control raised so that the cluster does not wait for
    /// it), or catches up.
    pub fn lag(&self, n: usize, on: bool) {
        self.node_command("lag", n, &[if on { "on" } else { "off" }]);
    }

    /// Run `statement` as root on node `n`; rows tab-separated, no header, trailing newline
    /// trimmed.
    pub fn sql(&self, n: usize, statement: &str) -> String {
        let out = self.node_command("sql", n, &[statement]);
        out.trim_end_matches('\n').to_string()
    }

    /// Wait until all three nodes are Synced in one Primary component of size 3.
    pub fn wait_synced(&self) {
        self.command(&["wait-synced"]);
    }

    /// Undo every fault: resume, start, rejoin; desync, reject_queries and read_only off,
    /// proxy_protocol_networks empty; then wait until all three are Synced.
    pub fn restore(&self) {
        self.command(&["restore"]);
    }

    /// `scripts/sandbox status`: one tab-separated line per node.
    pub fn status(&self) -> String {
        self.command(&["status"])
    }

    fn node_command(&self, command: &str, n: usize, extra: &[&str]) -> String {
        assert!((1..=3).contains(&n), "nodes are numbered 1..=3, not {n}");
        let n = n.to_string();
        let mut args = vec![command, n.as_str()];
        args.extend_from_slice(extra);
        self.command(&args)
    }

    fn command(&self, args: &[&str]) -> String {
        let dir = self.dir.to_string_lossy();
        let mut all = args.to_vec();
        all.extend_from_slice(&["--dir", &dir]);
        match run_script(&all) {
            Ok(stdout) => stdout,
            Err(message) => panic!(
                "{message}\nThe cluster's logs are in {}/node*/error.log.",
                self.dir.display()
            ),
        }
    }
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sandbox")
}

/// Runs `scripts/sandbox ARGS`; its stdout, or a message with its stderr.
fn run_script(args: &[&str]) -> Result<String, String> {
    let script = script_path();
    let shown = format!("{} {}", script.display(), args.join(" "));
    let output = Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("`{shown}` failed ({}):\n{stderr}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn parse_addresses(stdout: &str) -> Result<Vec<SocketAddr>, String> {
    let addresses = stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.trim().parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unexpected address list {stdout:?}: {e}"))?;
    if addresses.len() != 3 {
        return Err(format!("expected three node addresses, got {stdout:?}"));
    }
    Ok(addresses)
}

fn obtain() -> Result<Cluster, String> {
    match std::env::var_os(DIR_ENV).filter(|dir| !dir.is_empty()) {
        Some(dir) => attach(PathBuf::from(dir)),
        None => start_own(),
    }
}

/// Uses the sandbox another process started in `dir` (it must be running).
fn attach(dir: PathBuf) -> Result<Cluster, String> {
    let shown = dir.display().to_string();
    let fix = format!(
        "{DIR_ENV}={shown} names no running sandbox. Start it with\n  \
         scripts/sandbox start --dir {shown} --base-port {BASE_PORT}\n\
         or unset {DIR_ENV} to let the tests start their own. Logs: {shown}/node*/error.log"
    );
    let addresses = run_script(&["addresses", "--dir", &shown])
        .and_then(|out| parse_addresses(&out))
        .map_err(|e| format!("{e}\n{fix}"))?;
    // A previous test binary may have left a fault behind; heal it if the cluster is not Synced.
    if run_script(&["wait-synced", "--dir", &shown, "--timeout", "20"]).is_err() {
        run_script(&["restore", "--dir", &shown]).map_err(|e| format!("{e}\n{fix}"))?;
    }
    Ok(Cluster { dir, addresses })
}

/// Starts (or adopts) this binary's own sandbox on base port 4400.
fn start_own() -> Result<Cluster, String> {
    let dir = std::env::temp_dir().join(format!("galera-lb-test-{BASE_PORT}"));
    let shown = dir.display().to_string();
    let port = BASE_PORT.to_string();
    let pid = std::process::id().to_string();
    let started = run_script(&[
        "start",
        "--dir",
        &shown,
        "--base-port",
        &port,
        "--owner-pid",
        &pid,
    ]);
    let fix = format!(
        "These tests need a real three-node MariaDB Galera cluster on 127.0.0.1 ports {}..{}.\n\
         - Packages: apt-get install -y mariadb-server galera-4 rsync mariadb-client \
         (scripts/sandbox installs them itself when run as root).\n\
         - Try it by hand: scripts/sandbox start --dir {shown} --base-port {BASE_PORT}\n\
         - Node logs: {shown}/node*/error.log\n\
         - Or point {DIR_ENV} at a sandbox you started (scripts/test does this).",
        BASE_PORT + 10,
        BASE_PORT + 33,
    );
    let addresses = started
        .and_then(|out| parse_addresses(&out))
        .map_err(|e| format!("cannot start the Galera sandbox: {e}\n{fix}"))?;
    Ok(Cluster { dir, addresses })
}

/// A sandbox of its own (not the shared one), with each node in the Galera segment given
/// (`scripts/sandbox start --segments A,B,C`); stopped when dropped.
pub struct OwnCluster {
    pub cluster: Cluster,
}

impl OwnCluster {
    /// Starts one in `<temp dir>/galera-lb-test-NAME-PORT` on `base_port`.
    pub fn start_segmented(name: &str, base_port: u16, segments: [u8; 3]) -> OwnCluster {
        let dir = std::env::temp_dir().join(format!("galera-lb-test-{name}-{base_port}"));
        let shown = dir.display().to_string();
        let port = base_port.to_string();
        let pid = std::process::id().to_string();
        let segments = segments.map(|s| s.to_string()).join(",");
        let started = run_script(&[
            "start",
            "--dir",
            &shown,
            "--base-port",
            &port,
            "--segments",
            &segments,
            "--owner-pid",
            &pid,
        ])
        .and_then(|out| parse_addresses(&out))
        .unwrap_or_else(|e| panic!("a sandbox with segments {segments}: {e}"));
        OwnCluster {
            cluster: Cluster {
                dir,
                addresses: started,
            },
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let dir = self.cluster.dir.display().to_string();
        let _ = run_script(&["stop", "--dir", &dir]);
    }
}
