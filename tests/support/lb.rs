//! Runs the real `galera-lb` binary for a test: writes its configuration to a temporary file,
//! starts it, waits until it logs "ready", collects its log, and kills it when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct LbProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    _config: tempfile::NamedTempFile,
}

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_galera-lb"))
}

impl LbProcess {
    /// Starts galera-lb with `yaml` and waits until it is ready.
    pub fn start(yaml: &str) -> LbProcess {
        Self::start_with(yaml, |_| {})
    }

    /// Like [`LbProcess::start`], with a chance to adjust the command (environment, limits).
    pub fn start_with(yaml: &str, adjust: impl FnOnce(&mut Command)) -> LbProcess {
        let process = Self::spawn(yaml, adjust);
        process.wait_for_log("ready", Duration::from_secs(20));
        process
    }

    /// Starts galera-lb with `yaml` without waiting for it to be ready.
    pub fn spawn(yaml: &str, adjust: impl FnOnce(&mut Command)) -> LbProcess {
        let config = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("a temporary file");
        std::fs::write(config.path(), yaml).unwrap();
        let mut command = binary();
        command
            .arg("--config")
            .arg(config.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut command);
        let mut child = command.spawn().expect("the galera-lb binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        LbProcess {
            child,
            log,
            _config: config,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything galera-lb has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `text`; panics with the log when it does not in time.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            if Instant::now() > deadline {
                panic!(
                    "galera-lb did not log {text:?} within {timeout:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.child.id());
    }

    /// Waits for galera-lb to exit; panics with its log when it does not in time.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "galera-lb did not exit within {timeout:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Health settings for fake backends, which speak no MySQL: no checks, only connect failover.
pub const NO_CHECKS: &str = "health:\n  check: none\n";

/// A listener section for one listener on `port` with `policy`, then the given backends and
/// `extra` (which should set `health:`; see [`NO_CHECKS`]).
pub fn simple_config(port: u16, policy: &str, backends: &[SocketAddr], extra: &str) -> String {
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n    policy: {policy}\nbackends:\n"
    );
    for backend in backends {
        yaml.push_str(&format!("  - address: {backend}\n"));
    }
    yaml.push_str(extra);
    yaml
}
