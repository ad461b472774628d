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

/// A loopback port that was free a moment ago (bound to port 0, then released), and that no
/// other call in this test binary has handed out. The kernel may give the same ephemeral port
/// to two binds in a row once the first is closed, and tests run in parallel threads; without
/// the memory two tests (or two ports of one test) could be told the same port.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A loopback address where nothing listens, never handed out twice (see [`free_port`]).
pub fn closed_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
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
        let log = collect_stderr(&mut child);
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

impl LbProcess {
    /// The configuration file galera-lb was started with: rewrite it, then send SIGHUP or the
    /// control port's `reload`.
    pub fn config_path(&self) -> &std::path::Path {
        self._config.path()
    }
}

/// Sends `text` to a control port, half-closes, and returns everything the port answered
/// before it closed the connection.
pub fn control(address: SocketAddr, text: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the control port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(text.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .expect("the control port answers and closes");
    reply
}

/// One HTTP/1.1 answer, read by [`http`].
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`, no body) and reads the whole answer (with a
/// Content-Length, chunked, or up to the close); panics on anything but a well-formed reply
/// within 10 s. Enough for the admin port and Prometheus' API.
pub fn http(address: SocketAddr, method: &str, path: &str) -> HttpReply {
    http_with(address, method, path, &[])
}

/// Like [`http`], with more request headers (`("Authorization", "Bearer x")`).
pub fn http_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpReply {
    let stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to http://{address}{path}: {e}"));
    http_on(stream, method, path, headers)
}

/// A TCP connection to `address` from the local address `source` (on Linux every address of
/// 127.0.0.0/8 is loopback, so 127.0.0.2 makes another client address).
pub fn connect_from(source: std::net::IpAddr, address: SocketAddr) -> std::net::TcpStream {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket
        .connect_timeout(&address.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect from {source} to {address}: {e}"));
    socket.into()
}

/// Sends one HTTP/1.1 request on `stream` and reads the answer, as [`http`] does.
pub fn http_on(
    mut stream: std::net::TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpReply {
    use std::io::{Read, Write};
    let address = stream.peer_addr().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: galera-lb-tests\r\n\
         Accept: */*\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} http://{address}{path}: reading the answer: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{method} http://{address}{path}: no header end in {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} http://{address}{path}: bad status {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)
            .unwrap_or_else(|| panic!("{method} http://{address}{path}: bad chunked body"));
    }
    let reply = HttpReply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    // A HEAD answer announces the length of the body it leaves out.
    if let Some(length) = reply.header("content-length").filter(|_| method != "HEAD") {
        assert_eq!(
            length.parse::<usize>().ok(),
            Some(body.len()),
            "{method} http://{address}{path}: Content-Length disagrees with the body"
        );
    }
    reply
}

/// A chunked body, decoded (trailers ignored); `None` when it is malformed.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `GET path`: shorthand for [`http`].
pub fn http_get(address: SocketAddr, path: &str) -> HttpReply {
    http(address, "GET", path)
}

/// The value of the series `name` with exactly `labels` (in any order) in Prometheus' text
/// format; `None` when the series is absent (a counter whose labels never occurred). A `backend`
/// given without a `name` is looked up under its address as its name too (a backend no
/// configuration names is named by its address).
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(backend) = labels.iter().find(|(k, _)| *k == "backend")
        && !labels.iter().any(|(k, _)| *k == "name")
    {
        wanted.push(("name".to_string(), backend.1.to_string()));
    }
    wanted.sort();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, mut found) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, parse_labels(rest.strip_suffix('}')?)?),
                None => (series, Vec::new()),
            };
            found.sort();
            (series_name == name && found == wanted).then(|| {
                value
                    .parse()
                    .unwrap_or_else(|e| panic!("{line:?}: not a number: {e}"))
            })
        })
}

/// `k1="v1",k2="v2"` (backslash escapes undone).
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    Some(labels)
}

/// One scrape of the admin port's `/metrics`: the value of one series, as [`metric_in`].
pub fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let reply = http_get(admin, "/metrics");
    assert_eq!(reply.status, 200, "/metrics: {reply:?}");
    metric_in(&reply.body, name, labels)
}

/// Scrapes the admin port's `/metrics` until `accept` is happy with the series' value (`None`
/// while it is absent), for up to `timeout`; returns the value, or panics with the last scrape.
pub fn wait_for_metric(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    timeout: Duration,
    accept: impl Fn(Option<f64>) -> bool,
) -> Option<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = http_get(admin, "/metrics");
        assert_eq!(reply.status, 200, "/metrics: {reply:?}");
        let value = metric_in(&reply.body, name, labels);
        if accept(value) {
            return value;
        }
        if Instant::now() > deadline {
            panic!(
                "{name}{labels:?} is {value:?}, not as expected, after {timeout:?}; the metrics:\n{}",
                reply.body
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The admin port's `/status` document.
pub fn status(admin: SocketAddr) -> serde_json::Value {
    let reply = http_get(admin, "/status");
    assert_eq!(reply.status, 200, "/status: {reply:?}");
    serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", reply.body))
}

/// What a command run by [`run_bounded`] did.
#[derive(Debug)]
pub struct Bounded {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` in a process group of its own with `stdin` (`Stdio::null()` unless it reads
/// something) and stdout and stderr captured to files, and waits at most `timeout`: past it, the
/// whole group is killed and this panics with what the command printed. Once the command has
/// exited, whatever it left behind in its group (helpers of a browser, say) is killed too, so
/// nothing outlives the call.
pub fn run_bounded(command: &mut Command, stdin: Stdio, timeout: Duration) -> Bounded {
    use std::os::unix::process::CommandExt;
    let out = tempfile::tempfile().expect("a temporary file");
    let err = tempfile::tempfile().expect("a temporary file");
    let shown = format!("{command:?}");
    let mut child = command
        .process_group(0)
        .stdin(stdin)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(err.try_clone().unwrap()))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let group = child.id() as i32;
    let read = |mut file: &std::fs::File| {
        use std::io::{Read, Seek};
        let mut text = String::new();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).unwrap();
        text.push_str(&String::from_utf8_lossy(&raw));
        text
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // The child is not reaped yet, so the group id is still ours.
            // SAFETY: kill(2) on the process group we created; no memory is involved.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "{shown} did not finish within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                read(&out),
                read(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: as above; ESRCH when the group is already empty, which is the usual case.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    Bounded {
        status,
        stdout: read(&out),
        stderr: read(&err),
    }
}

/// A fake backend on threads of its own: greets each client with `name` and a newline, then
/// echoes what it gets until the client closes.
pub fn echo_backend(name: &'static str) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                stream.write_all(format!("{name}\n").as_bytes())?;
                let mut buf = [0u8; 1024];
                loop {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    stream.write_all(&buf[..n])?;
                }
            });
        }
    });
    address
}

/// Runs the child with RLIMIT_NOFILE set to `descriptors` (soft and hard): for
/// [`LbProcess::start_with`].
pub fn with_descriptor_limit(descriptors: u64) -> impl FnOnce(&mut Command) {
    move |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: descriptors,
                    rlim_max: descriptors,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// The resident set size of process `pid`, in kB; panics when the process is gone.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Collects a child's piped stderr, line by line, in a shared string that grows as it runs.
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("the child's stderr is piped");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

/// Reads one line (up to `\n`, which is dropped) from a tokio stream; what came before an end of
/// stream or an error otherwise.
pub async fn read_line(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}
