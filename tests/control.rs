//! The glbd-compatible control port, end to end: galera-lb (in process, or the real binary where
//! a test needs a process or a file) in front of small fake backends that greet each client with
//! a line and then echo. No health checks (`check: none`); everything on loopback, free ports.
//!
//! What is checked, against glbd 1.0.2's behaviour (DESIGN §4) and where galera-lb does better:
//! - `getinfo` prints glbd's router table byte for byte (real connections held open), and is
//!   complete for 200 backends (glbd truncates at 8 KB);
//! - `getstat`/`getstats` count bytes and connections since the previous call;
//! - `HOST[:PORT[:WEIGHT]]` adds, reweights, drains (`:0`: open sessions keep working) and
//!   removes (negative: its sessions are closed, counters never go negative); replies are exactly
//!   `Ok\n` / `Error\n`;
//! - Debian's `nc` without `-q`/`-N` returns at once (glbd 1.0.2 never closes, so it hangs);
//!   `-N`; several requests on one connection (glbd answers only the first of a packet);
//!   `interactive`;
//! - host names, IPv6, `health`, `getinfo json`, `drain|maint|ready`, `reload`, `help`;
//! - bad input, idle and slow clients, more clients than `max_clients`: the port stays bounded,
//!   galera-lb stays up and proxy traffic is unaffected;
//! - `scripts/glbd-compat-test` drives galera-lb installed as `glbd` exactly as glbd users do.
//! - clients that send only blank lines, or never read their replies, cannot hold a slot;
//! - access: `control.allow` refuses other addresses with one line before they take a slot;
//!   `control.token` guards changes (not reads) until `auth TOKEN`, a wrong token is refused,
//!   counted and closes the connection, and the token never shows in logs or replies.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use galera_lb::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// Fakes and helpers
// ---------------------------------------------------------------------------------------------

/// A fake backend on `bind`: greets each client with `name` and a newline, then echoes.
async fn greeter(name: &'static str, bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    serve_greeter(name, listener)
}

fn serve_greeter(name: &'static str, listener: TcpListener) -> SocketAddr {
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
                        return stream.shutdown().await;
                    }
                    stream.write_all(&buf[..n]).await?;
                }
            });
        }
    });
    address
}

/// galera-lb started in process with a control port on a free port.
struct Lb {
    running: galera_lb::Running,
    proxy: SocketAddr,
    control: SocketAddr,
}

/// `backends` with their weights; `extra` is appended to the YAML (top-level sections).
async fn start_lb(policy: &str, backends: &[(SocketAddr, f64)], extra: &str) -> Lb {
    // A fixed port, not 0: a destination without a port gets the configured listener's port.
    let listen_port = lb::free_port();
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{listen_port}\n    policy: {policy}\nbackends:\n"
    );
    for (address, weight) in backends {
        yaml.push_str(&format!("  - address: {address}\n    weight: {weight}\n"));
    }
    let control_port = lb::free_port();
    yaml.push_str(&format!(
        "health:\n  check: none\ncontrol:\n  bind: 127.0.0.1:{control_port}\n"
    ));
    yaml.push_str(extra);
    let config = Config::from_yaml(&yaml, "test.yaml").unwrap();
    let running = galera_lb::start(&config, "test.yaml").await.unwrap();
    let proxy = running.listeners[0].1;
    let control = running.control.expect("the control port is on");
    Lb {
        running,
        proxy,
        control,
    }
}

/// Sends `text`, half-closes, and returns everything the control port says before it closes.
async fn ask(control: SocketAddr, text: &str) -> String {
    exchange(TcpStream::connect(control).await.unwrap(), text).await
}

/// Like [`ask`], from the loopback address `source` (Linux routes all of 127.0.0.0/8 to lo, so
/// 127.0.0.2 is another client address).
async fn ask_from(source: &str, control: SocketAddr, text: &str) -> String {
    exchange(connect_from(source, control).await, text).await
}

async fn connect_from(source: &str, control: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(control).await.unwrap()
}

async fn exchange(mut stream: TcpStream, text: &str) -> String {
    stream.write_all(text.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("the control port answers and closes within 5 s")
        .unwrap();
    String::from_utf8(reply).unwrap()
}

/// Reads exactly `len` bytes of answer (within 2 s).
async fn read_reply(stream: &mut TcpStream, len: usize) -> String {
    let mut buf = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buf))
        .await
        .expect("an answer within 2 s")
        .expect("an answer");
    String::from_utf8(buf).unwrap()
}

/// A client session through the proxy, with the greeting of the backend it reached.
struct Session {
    stream: TcpStream,
    backend: String,
}

impl Session {
    async fn open(proxy: SocketAddr) -> Session {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(5), read_line(&mut stream))
            .await
            .expect("a greeting within 5 s")
            .expect("a greeting");
        Session {
            stream,
            backend: line,
        }
    }

    /// Sends `data` and reads it back; false if the session is broken.
    async fn echo(&mut self, data: &[u8]) -> bool {
        if self.stream.write_all(data).await.is_err() {
            return false;
        }
        let mut back = vec![0u8; data.len()];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read_exact(&mut back)).await,
            Ok(Ok(_)) if back == data
        )
    }

    /// Whether the proxy closes this session within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

async fn read_line(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).await {
            Ok(1) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into()),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
}

/// The backend greetings `n` fresh sessions reach (each closed at once).
async fn reached(proxy: SocketAddr, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(Session::open(proxy).await.backend);
    }
    names
}

/// One row of `getinfo`: (address, weight, usage, conns).
fn rows(getinfo: &str) -> Vec<(String, f64, f64, u64)> {
    getinfo
        .lines()
        .filter(|l| l.contains(" : ") && !l.contains("Address"))
        .map(|l| {
            let (address, rest) = l.split_once(" : ").unwrap();
            let f: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(f.len(), 4, "row {l:?}");
            assert_eq!(f[2], "N/A", "row {l:?}");
            (
                address.trim().to_string(),
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[3].parse().unwrap_or_else(|_| panic!("conns in {l:?}")),
            )
        })
        .collect()
}

/// The `getinfo` row of `address`.
fn row(getinfo: &str, address: impl ToString) -> (String, f64, f64, u64) {
    let address = address.to_string();
    rows(getinfo)
        .into_iter()
        .find(|r| r.0 == address)
        .unwrap_or_else(|| panic!("no row for {address} in:\n{getinfo}"))
}

/// Lets the proxy notice sessions the test has just closed.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// The "Destinations: N, total connections: X of MAX max" figures.
fn totals(getinfo: &str) -> (usize, u64, u64) {
    let line = getinfo
        .lines()
        .find(|l| l.starts_with("Destinations: "))
        .unwrap_or_else(|| panic!("no Destinations line in {getinfo:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 8, "{line:?}");
    assert_eq!(
        (words[0], words[2], words[3], words[5], words[7]),
        ("Destinations:", "total", "connections:", "of", "max"),
        "{line:?}"
    );
    (
        words[1].trim_end_matches(',').parse().unwrap(),
        words[4].parse().unwrap(),
        words[6].parse().unwrap(),
    )
}

/// The figures of a getstat line, after checking its layout word by word.
#[derive(Debug, PartialEq)]
struct Stat {
    bytes_in: u64,
    bytes_out: u64,
    transfers: u64,
    opened: u64,
    current: u64,
    elapsed: f64,
}

fn parse_getstat(line: &str) -> Stat {
    assert!(
        line.ends_with('\n') && line.lines().count() == 1,
        "{line:?}"
    );
    let w: Vec<&str> = line.split_whitespace().collect();
    let layout = [
        (0, "in:"),
        (2, "out:"),
        (4, "recv:"),
        (6, "/"),
        (8, "send:"),
        (10, "/"),
        (12, "conns:"),
        (14, "/"),
        (16, "poll:"),
        (18, "/"),
        (20, "/"),
        (22, "elapsed:"),
    ];
    assert_eq!(w.len(), 24, "{line:?}");
    for (i, word) in layout {
        assert_eq!(w[i], word, "word {i} of {line:?}");
    }
    let n = |i: usize| -> u64 { w[i].parse().unwrap_or_else(|_| panic!("{line:?}")) };
    let (bytes_in, bytes_out) = (n(1), n(3));
    // recv and send both count the bytes moved either way, and the same transfers.
    assert_eq!(n(5), bytes_in + bytes_out, "{line:?}");
    assert_eq!(n(9), bytes_in + bytes_out, "{line:?}");
    assert_eq!(n(7), n(11), "{line:?}");
    let elapsed = w[23];
    assert_eq!(
        elapsed.split_once('.').map(|(_, d)| d.len()),
        Some(5),
        "elapsed with 5 decimals: {line:?}"
    );
    Stat {
        bytes_in,
        bytes_out,
        transfers: n(7),
        opened: n(13),
        current: n(15),
        elapsed: elapsed.parse().unwrap(),
    }
}

/// glbd 1.0.2's `getinfo` answer, as DESIGN §4 records it.
const GLBD_SAMPLE: &str = "\
Router:
------------------------------------------------------
        Address       :   weight   usage    map  conns
      127.0.0.1:18021 :    1.000   0.667    N/A      2
      127.0.0.1:18022 :    2.000   0.800    N/A      4
------------------------------------------------------
Destinations: 2, total connections: 6 of 9981 max
";

// ---------------------------------------------------------------------------------------------
// 1. The protocol, as glbd's
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn getinfo_prints_glbds_router_table_byte_for_byte() {
    let a = greeter("a", "127.0.0.1:0").await;
    let b = greeter("b", "127.0.0.1:0").await;
    // Ephemeral ports have five digits, so the addresses are as wide as the sample's.
    assert_eq!((a.to_string().len(), b.to_string().len()), (15, 15));
    let lb = start_lb(
        "least_conn",
        &[(a, 1.0), (b, 2.0)],
        "limits:\n  max_connections: 9981\n",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(Session::open(lb.proxy).await);
    }
    let on = |name: &str| held.iter().filter(|s| s.backend == name).count();
    assert_eq!((on("a"), on("b")), (2, 4), "least_conn by weight fills 1:2");

    let expected = GLBD_SAMPLE
        .replace("127.0.0.1:18021", &a.to_string())
        .replace("127.0.0.1:18022", &b.to_string());
    assert_eq!(ask(lb.control, "getinfo\n").await, expected);
    // Without a newline (the end of the stream ends the request), and in capitals.
    assert_eq!(ask(lb.control, "GETINFO").await, expected);

    // usage = 1 - 1/(conns+1) as connections come and go; closed sessions are counted off.
    held.retain(|s| s.backend == "b");
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = ask(lb.control, "getinfo\n").await;
    assert_eq!(
        rows(&info),
        vec![(a.to_string(), 1.0, 0.0, 0), (b.to_string(), 2.0, 0.75, 3)],
        "{info}"
    );
    assert_eq!(totals(&info), (2, 3, 9981), "{info}");
}

#[tokio::test]
async fn getstat_counts_bytes_and_connections_since_the_previous_call() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = parse_getstat(&ask(lb.control, "getstat\n").await);
    assert_eq!(
        (first.bytes_in, first.bytes_out, first.opened, first.current),
        (0, 0, 0, 0)
    );
    assert!(first.elapsed >= 0.3, "since the start: {first:?}");

    // Three sessions: each gets "a\n" (2 bytes), sends 1000 bytes and reads them back.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut s = Session::open(lb.proxy).await;
        assert!(s.echo(&[b'x'; 1000]).await);
        sessions.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let stat = parse_getstat(&ask(lb.control, "getstat\n").await);
    assert_eq!(
        (stat.bytes_in, stat.bytes_out, stat.opened, stat.current),
        (3000, 3006, 3, 3),
        "{stat:?}"
    );
    assert!(stat.transfers >= 6, "{stat:?}");
    assert!(stat.elapsed >= 0.2 && stat.elapsed < 5.0, "{stat:?}");

    // `getstats` is the same request; one session closes, another moves 10 bytes.
    sessions.pop();
    assert!(sessions[0].echo(b"0123456789").await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stat = parse_getstat(&ask(lb.control, "getstats\n").await);
    assert_eq!(
        (stat.bytes_in, stat.bytes_out, stat.opened, stat.current),
        (10, 10, 0, 2),
        "{stat:?}"
    );
    assert!(
        stat.elapsed >= 0.19 && stat.elapsed <= started.elapsed().as_secs_f64() + 0.01,
        "{stat:?}"
    );
}

#[tokio::test]
async fn destinations_are_added_reweighted_drained_and_removed_as_in_glbd() {
    let a = greeter("a", "127.0.0.1:0").await;
    let b = greeter("b", "127.0.0.1:0").await;
    let c = greeter("c", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0), (b, 1.0)], "").await;
    let listen_port = lb.proxy.port();

    // Add with the weight left out: weight 1.
    assert_eq!(ask(lb.control, &format!("{c}\n")).await, "Ok\n");
    let info = ask(lb.control, "getinfo\n").await;
    assert_eq!(row(&info, c), (c.to_string(), 1.0, 0.0, 0), "{info}");
    let names = reached(lb.proxy, 9).await;
    assert_eq!(names.iter().filter(|n| *n == "c").count(), 3, "{names:?}");

    // Add with the port left out: the listener's port (a backend on 127.0.0.2 with that port).
    let d = greeter("d", &format!("127.0.0.2:{listen_port}")).await;
    assert_eq!(ask(lb.control, "127.0.0.2\n").await, "Ok\n");
    let info = ask(lb.control, "getinfo\n").await;
    assert_eq!(row(&info, d), (d.to_string(), 1.0, 0.0, 0), "{info}");
    let names = reached(lb.proxy, 8).await;
    assert_eq!(names.iter().filter(|n| *n == "d").count(), 2, "{names:?}");
    assert_eq!(ask(lb.control, &format!("{d}:-1\n")).await, "Ok\n");

    // Reweight, with a fractional weight shown to 3 decimals.
    assert_eq!(ask(lb.control, &format!("{a}:2.5\n")).await, "Ok\n");
    assert_eq!(ask(lb.control, &format!("{b}:0.1234\n")).await, "Ok\n");
    let info = ask(lb.control, "getinfo\n").await;
    assert!(info.contains(&format!("{a:>21} :    2.500 ")), "{info}");
    assert!(info.contains(&format!("{b:>21} :    0.123 ")), "{info}");

    // `:0` drains: no new sessions, the open one stays and keeps working.
    let mut on_a = loop {
        let s = Session::open(lb.proxy).await;
        if s.backend == "a" {
            break s;
        }
    };
    assert_eq!(ask(lb.control, &format!("{a}:0\n")).await, "Ok\n");
    let names = reached(lb.proxy, 20).await;
    assert!(!names.contains(&"a".to_string()), "{names:?}");
    assert!(on_a.echo(b"still here").await);
    settle().await;
    let info = ask(lb.control, "getinfo\n").await;
    // glbd 1.0.2 prints `-nan` as a drained row's usage; galera-lb keeps 1 - 1/(conns+1).
    assert_eq!(row(&info, a), (a.to_string(), 0.0, 0.5, 1), "{info}");

    // A negative weight removes it and closes its sessions (glbd leaves them open).
    let mut on_b = Vec::new();
    while on_b.len() < 3 {
        let s = Session::open(lb.proxy).await;
        if s.backend == "b" {
            on_b.push(s);
        }
    }
    settle().await;
    assert_eq!(totals(&ask(lb.control, "getinfo\n").await).1, 4);
    assert_eq!(ask(lb.control, &format!("{b}:-1\n")).await, "Ok\n");
    for s in &mut on_b {
        assert!(s.closed_within(Duration::from_secs(2)).await);
    }
    settle().await;
    let info = ask(lb.control, "getinfo\n").await;
    let listed: Vec<String> = rows(&info).into_iter().map(|r| r.0).collect();
    assert_eq!(listed, [a.to_string(), c.to_string()], "{info}");
    // The counters never go negative (glbd's do): only a's one session is left.
    assert_eq!(totals(&info), (2, 1, 10000), "{info}");
    assert_eq!(lb.running.active_connections(), 1);
    let stat = parse_getstat(&ask(lb.control, "getstat\n").await);
    assert_eq!(stat.current, 1, "{stat:?}");
    assert!(on_a.echo(b"a is untouched").await);

    // Removing what is not there is an error; b comes back with clean counters.
    let no_b = format!("Error: no backend {b}\n");
    assert_eq!(ask(lb.control, &format!("{b}:-1\n")).await, no_b);
    assert_eq!(ask(lb.control, &format!("{b}:-0.5\n")).await, no_b);
    assert_eq!(ask(lb.control, &format!("{b}:1\n")).await, "Ok\n");
    let info = ask(lb.control, "getinfo\n").await;
    assert_eq!(row(&info, b), (b.to_string(), 1.0, 0.0, 0), "{info}");
    drop(on_a);
    settle().await;
    let info = ask(lb.control, "getinfo\n").await;
    assert!(rows(&info).iter().all(|r| r.3 == 0), "{info}");
    assert_eq!(totals(&info).1, 0, "{info}");
}

#[tokio::test]
async fn replies_to_changes_are_ok_or_error_with_the_reason() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    // `Ok`, or `Error: ` and the reason: `Error` stays the first word for glbd's scripts.
    let cases = [
        ("127.0.0.1:1:1\n", "Ok"),
        ("127.0.0.1:1:3\n", "Ok"),
        ("127.0.0.1:1:0\n", "Ok"),
        ("127.0.0.1:1:-1\n", "Ok"),
        ("127.0.0.1:1:-1\n", "Error: no backend 127.0.0.1:1"),
        ("127.0.0.1:notaport\n", "Error: "),
        ("127.0.0.1:1:heavy\n", "Error: "),
        ("127.0.0.1:1:NaN\n", "Error: "),
        ("127.0.0.1:99999\n", "Error: "),
        ("no-such-host.invalid:3306\n", "Error: "),
    ];
    for (request, start) in cases {
        // Compare raw bytes: one line, no prompt, no trailing space, no \r.
        let reply = ask(lb.control, request).await;
        assert!(reply.starts_with(start), "{request:?}: {reply:?}");
        assert!(
            reply.ends_with('\n') && reply.lines().count() == 1,
            "{reply:?}"
        );
        assert!(!reply.contains('\r') && !reply.trim_end_matches('\n').ends_with(' '));
        if start == "Error: " {
            // The reason names what was wrong with the request.
            let what = request.trim().rsplit(':').next().unwrap();
            let what = if what == "3306" {
                "no-such-host.invalid"
            } else {
                what
            };
            assert!(reply.contains(what), "{request:?}: {reply:?}");
        }
    }
    // A refused change leaves the routing as it was.
    let info = ask(lb.control, "getinfo\n").await;
    assert_eq!(rows(&info).len(), 1, "{info}");
}

#[tokio::test]
async fn getinfo_is_complete_for_200_backends() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    // 200 more on ports where nothing listens (no health checks: they are only listed).
    let requests: String = (0..200)
        .map(|i| format!("127.0.1.{}:{}:{}\n", i % 250 + 1, 20000 + i, 1 + i % 3))
        .collect();
    let replies = ask(lb.control, &requests).await;
    assert_eq!(replies, "Ok\n".repeat(200));

    let info = ask(lb.control, "getinfo\n").await;
    assert!(
        info.len() > 8192,
        "longer than glbd's buffer: {}",
        info.len()
    );
    assert_eq!(info.lines().count(), 3 + 201 + 2);
    let rows = rows(&info);
    assert_eq!(rows.len(), 201);
    assert_eq!(rows[200], ("127.0.1.200:20199".to_string(), 2.0, 0.0, 0));
    assert!(info.ends_with(&format!(
        "{}\nDestinations: 201, total connections: 0 of 10000 max\n",
        "-".repeat(54)
    )));

    let json: serde_json::Value =
        serde_json::from_str(&ask(lb.control, "getinfo json\n").await).unwrap();
    assert_eq!(json["pools"][0]["backends"].as_array().unwrap().len(), 201);
}

// ---------------------------------------------------------------------------------------------
// 2. netcat, several requests, interactive
// ---------------------------------------------------------------------------------------------

/// Runs `sh -c script` (off the runtime) and returns its stdout and how long it took.
async fn shell(script: String) -> (String, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            started.elapsed(),
        )
    })
    .await
    .unwrap()
}

fn require_netcat_openbsd() {
    let out = std::process::Command::new("nc").arg("-h").output();
    let text = match out {
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(e) => panic!("nc is missing ({e}): apt-get install netcat-openbsd"),
    };
    assert!(
        text.contains("OpenBSD netcat"),
        "these tests use Debian's netcat-openbsd: apt-get install netcat-openbsd; `nc -h` says:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_getinfo_into_plain_nc_prints_the_table_and_returns_at_once() {
    require_netcat_openbsd();
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    let port = lb.control.port();
    let expected = ask(lb.control, "getinfo\n").await;

    // Exactly as glbd users type it: no -q, no -N (this nc never half-closes).
    let (out, took) = shell(format!("echo getinfo | nc 127.0.0.1 {port}")).await;
    assert_eq!(out, expected);
    assert!(took < Duration::from_millis(800), "took {took:?}");
    eprintln!("echo getinfo | nc: {took:?}");

    // With -N (half-close after stdin's end): answered and closed at once.
    let (out, took) = shell(format!("echo getinfo | nc -N 127.0.0.1 {port}")).await;
    assert_eq!(out, expected);
    assert!(took < Duration::from_millis(500), "took {took:?}");
    eprintln!("echo getinfo | nc -N: {took:?}");

    // Two requests in one go, both answered, in order.
    let (out, took) = shell(format!(
        "printf 'getinfo\\ngetstat\\n' | nc 127.0.0.1 {port}"
    ))
    .await;
    let (info, stat) = out.split_at(expected.len());
    assert_eq!(info, expected);
    parse_getstat(stat);
    assert!(took < Duration::from_millis(800), "took {took:?}");
    eprintln!("printf 'getinfo\\ngetstat\\n' | nc: {took:?}");

    // glbd.sh's `add` compares the reply with "Ok" through command substitution.
    let (out, _) = shell(format!(
        "test \"$(echo 127.0.0.1:1:0 | nc 127.0.0.1 {port})\" = Ok && echo same"
    ))
    .await;
    assert_eq!(out, "same\n");
}

#[tokio::test]
async fn several_requests_per_packet_and_per_connection() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    let info = ask(lb.control, "getinfo\n").await;

    // One packet, four requests, a CRLF line and blank lines among them.
    let mut stream = TcpStream::connect(lb.control).await.unwrap();
    stream
        .write_all(b"127.0.0.1:1:2\r\n\n  \nmaint 127.0.0.1:1\n127.0.0.1:1:-1\ngetinfo\n")
        .await
        .unwrap();
    // No half-close: the connection closes on its own once it has answered.
    let mut reply = Vec::new();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut reply))
        .await
        .expect("a batch connection closes after its answers")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        format!("Ok\nOk\nOk\n{info}")
    );
}

#[tokio::test]
async fn interactive_keeps_the_connection_for_requests_sent_with_pauses() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    let info = ask(lb.control, "getinfo\n").await;

    let mut stream = TcpStream::connect(lb.control).await.unwrap();
    stream.write_all(b"interactive\n").await.unwrap();
    assert_eq!(read_reply(&mut stream, 3).await, "Ok\n");
    for _ in 0..3 {
        // Longer than a batch connection lingers.
        tokio::time::sleep(Duration::from_millis(700)).await;
        stream.write_all(b"getinfo\n").await.unwrap();
        assert_eq!(read_reply(&mut stream, info.len()).await, info);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream.write_all(b"127.0.0.1:1\n").await.unwrap();
    assert_eq!(read_reply(&mut stream, 3).await, "Ok\n");
    stream.write_all(b"quit\n").await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    // Without `interactive`, a connection that has been answered closes soon after.
    let mut stream = TcpStream::connect(lb.control).await.unwrap();
    stream.write_all(b"getstat\n").await.unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    parse_getstat(&String::from_utf8(reply).unwrap());
}

// ---------------------------------------------------------------------------------------------
// 3. Beyond glbd: names, IPv6, extensions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn host_names_and_ipv6_destinations_work() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;

    // IPv6: a backend on ::1.
    let v6 = greeter("v6", "[::1]:0").await;
    assert_eq!(
        ask(lb.control, &format!("[::1]:{}:2\n", v6.port())).await,
        "Ok\n"
    );
    let info = ask(lb.control, "getinfo\n").await;
    let v6_address = format!("[::1]:{}", v6.port());
    assert_eq!(
        row(&info, &v6_address),
        (v6_address.clone(), 2.0, 0.0, 0),
        "{info}"
    );
    let names = reached(lb.proxy, 4).await;
    assert_eq!(names.iter().filter(|n| *n == "v6").count(), 2, "{names:?}");
    assert_eq!(
        ask(lb.control, &format!("drain [::1]:{}\n", v6.port())).await,
        "Ok\n"
    );
    assert!(!reached(lb.proxy, 4).await.contains(&"v6".to_string()));
    assert_eq!(
        ask(lb.control, &format!("[::1]:{}:-1\n", v6.port())).await,
        "Ok\n"
    );

    // A host name: a backend that listens on localhost's addresses (v4, and v6 where it has one).
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = v4.local_addr().unwrap().port();
    v4.set_nonblocking(true).unwrap();
    serve_greeter("named", TcpListener::from_std(v4).unwrap());
    if let Ok(v6) = TcpListener::bind(("::1", port)).await {
        serve_greeter("named", v6);
    }
    assert_eq!(
        ask(lb.control, &format!("localhost:{port}\n")).await,
        "Ok\n"
    );
    let info = ask(lb.control, "getinfo\n").await;
    let named = format!("localhost:{port}");
    assert_eq!(row(&info, &named), (named.clone(), 1.0, 0.0, 0), "{info}");
    let names = reached(lb.proxy, 4).await;
    assert_eq!(
        names.iter().filter(|n| *n == "named").count(),
        2,
        "{names:?}"
    );

    // A name for a backend already there by address changes that backend, not a new one.
    assert_eq!(
        ask(lb.control, &format!("localhost:{}:4\n", a.port())).await,
        "Ok\n"
    );
    settle().await;
    let info = ask(lb.control, "getinfo\n").await;
    assert_eq!(rows(&info).len(), 2, "{info}");
    assert_eq!(row(&info, a), (a.to_string(), 4.0, 0.0, 0), "{info}");
    assert_eq!(
        ask(lb.control, &format!("localhost:{port}:-1\n")).await,
        "Ok\n"
    );
}

#[tokio::test]
async fn extensions_health_json_admin_states_reload_and_help() {
    let a = greeter("a", "127.0.0.1:0").await;
    let b = greeter("b", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0), (b, 3.0)], "").await;

    // help lists every request.
    let help = ask(lb.control, "help\n").await;
    for request in [
        "getinfo",
        "getinfo json",
        "getstat",
        "getstats",
        "HOST:PORT[:WEIGHT]",
        "drain HOST:PORT",
        "maint HOST:PORT",
        "ready HOST:PORT",
        "health",
        "reload",
        "interactive",
        "auth TOKEN",
        "quit",
        "help",
    ] {
        assert!(help.contains(request), "help lacks {request:?}:\n{help}");
    }

    // health: one line per backend.
    let health = ask(lb.control, "health\n").await;
    assert_eq!(health.lines().count(), 2, "{health}");
    for backend in [a, b] {
        let line = health
            .lines()
            .find(|l| l.contains(&backend.to_string()))
            .unwrap_or_else(|| panic!("{backend} in {health}"));
        assert!(
            line.starts_with("default ") && line.contains(" up ") && line.contains("admin=ready"),
            "{line}"
        );
    }

    // drain: a held session stays, new ones avoid a.
    let mut on_a = loop {
        let s = Session::open(lb.proxy).await;
        if s.backend == "a" {
            break s;
        }
    };
    assert_eq!(ask(lb.control, &format!("drain {a}\n")).await, "Ok\n");
    assert!(!reached(lb.proxy, 10).await.contains(&"a".to_string()));
    assert!(on_a.echo(b"drained, not dropped").await);

    // getinfo json: valid JSON with every backend, its weight, admin state and counts.
    let text = ask(lb.control, "getinfo json\n").await;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["listeners"][0]["listener"], "rw");
    assert_eq!(json["listeners"][0]["policy"], "round_robin");
    let backends = json["pools"][0]["backends"].as_array().unwrap();
    assert_eq!(json["pools"][0]["pool"], "default");
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[0]["address"], a.to_string());
    assert_eq!(backends[0]["admin"], "drain");
    assert_eq!(backends[0]["active"], 1);
    assert_eq!(backends[0]["healthy"], true);
    assert_eq!(backends[1]["address"], b.to_string());
    assert_eq!(backends[1]["weight"], 3.0);
    assert_eq!(backends[1]["admin"], "ready");
    assert!(backends[1]["total"].as_u64().unwrap() >= 10);
    assert!(ask(lb.control, "health\n").await.contains("admin=drain"));

    // ready: back in service; maint: out again; names are resolved too.
    assert_eq!(ask(lb.control, &format!("ready {a}\n")).await, "Ok\n");
    assert!(reached(lb.proxy, 4).await.contains(&"a".to_string()));
    assert_eq!(
        ask(lb.control, &format!("maint localhost:{}\n", a.port())).await,
        "Ok\n"
    );
    assert!(!reached(lb.proxy, 8).await.contains(&"a".to_string()));
    let json: serde_json::Value =
        serde_json::from_str(&ask(lb.control, "getinfo json\n").await).unwrap();
    assert_eq!(json["pools"][0]["backends"][0]["admin"], "maint");
    assert_eq!(ask(lb.control, &format!("ready {a}\n")).await, "Ok\n");
    assert!(on_a.echo(b"still fine").await);

    // Unknown backends and missing arguments are errors.
    assert_eq!(
        ask(lb.control, "drain 127.0.0.1:1\n").await,
        "Error: no backend 127.0.0.1:1\n"
    );
    let missing = ask(lb.control, "drain\n").await;
    assert!(
        missing.starts_with("Error: ") && missing.contains("HOST:PORT"),
        "{missing}"
    );
    assert_eq!(
        ask(lb.control, "ready 127.0.0.1:1\n").await,
        "Error: no backend 127.0.0.1:1\n"
    );
    // In process there is no file to re-read (tests/reload.rs covers `reload` with a file).
    let reload = ask(lb.control, "reload\n").await;
    assert!(
        reload.starts_with("Error: galera-lb runs without a configuration file"),
        "{reload}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input, idle, slow and too many clients
// ---------------------------------------------------------------------------------------------

/// What a raw request gets back: the bytes before the end, and whether it ended in a reset.
async fn raw(control: SocketAddr, bytes: &[u8], half_close: bool) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(control).await.unwrap();
    // The port may close before it has read everything: a failed write is part of the answer.
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(0)) => return (reply, false),
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return (reply, true),
            Err(_) => panic!("the control port neither answered nor closed: {reply:?}"),
        }
    }
}

/// One line, `Error: ` and a reason.
fn is_error_line(reply: &[u8]) -> bool {
    reply.starts_with(b"Error: ")
        && reply.len() > 8
        && reply.ends_with(b"\n")
        && !reply[..reply.len() - 1].contains(&b'\n')
}

#[tokio::test]
async fn bad_input_gets_error_or_a_closed_connection_and_galera_lb_stays_up() {
    let a = lb::echo_backend("hello");
    let control_port = lb::free_port();
    let listen_port = lb::free_port();
    let admin_port = lb::free_port();
    let yaml = format!(
        "{}control:\n  bind: 127.0.0.1:{control_port}\nadmin:\n  bind: 127.0.0.1:{admin_port}\n",
        lb::simple_config(listen_port, "round_robin", &[a], lb::NO_CHECKS)
    );
    let mut process = lb::LbProcess::start(&yaml);
    let control: SocketAddr = format!("127.0.0.1:{control_port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{listen_port}").parse().unwrap();
    let mut session = Session::open(proxy).await;

    for garbage in [
        &b"garbage\n"[..],
        b"getinfo xml\n",
        b"getstat now\n",
        b"a b c\n",
        b"rm -rf /\n",
        b"127.0.0.1:3306:heavy\n",
        b"127.0.0.1:3306:inf\n",
        b"[::1\n",
        b":3306\n",
        b"\x00\x01\x02\xff\xfe\n",
        b"\xc3\x28 invalid utf-8\n",
        b"\x1b[2J\x07\n",
    ] {
        let (reply, _) = raw(control, garbage, true).await;
        assert!(is_error_line(&reply), "{garbage:?}: {reply:?}");
    }
    // Binary bytes with no newline at all, then the end of the stream.
    let binary: Vec<u8> = (0..=255u8)
        .cycle()
        .take(700)
        .filter(|b| *b != b'\n')
        .collect();
    assert!(is_error_line(&raw(control, &binary, true).await.0));

    // An overlong line (> max_line, 1024): `Error` and the connection closes, or only the close
    // (the reply can be lost to the reset when the port closes with unread input).
    for size in [1100, 2100, 100_000, 1_000_000] {
        let line = vec![b'a'; size];
        let (reply, reset) = raw(control, &line, false).await;
        assert!(
            reply == b"Error: the request line is longer than 1024 bytes (control.max_line)\n"
                || (reply.is_empty() && reset),
            "{size} bytes: {reply:?} reset={reset}"
        );
    }
    // An overlong line that does end in a newline within the limit's reach.
    let mut line = vec![b'a'; 1500];
    line.push(b'\n');
    let (reply, _) = raw(control, &line, false).await;
    assert!(is_error_line(&reply), "{reply:?}");
    assert!(
        reply.len() < 300,
        "the reason is cut short: {} bytes",
        reply.len()
    );

    // A bad request in the middle does not spoil the good ones around it.
    let (reply, _) = raw(control, b"getstat\n\xff\xfe\ngetstat\n", true).await;
    let reply = String::from_utf8(reply).unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines.len(), 3, "{reply}");
    assert!(lines[1].starts_with("Error: "), "{reply}");

    // Still up, still serving control and proxy, the held session untouched.
    assert!(
        alive(process.pid()),
        "galera-lb died; log:\n{}",
        process.log()
    );
    assert!(lb::control(control, "getinfo\n").contains("Destinations: 1,"));
    assert!(session.echo(b"unaffected").await);
    assert_eq!(Session::open(proxy).await.backend, "hello");
    // Every line that does not parse was counted as one: eleven of the twelve above (`garbage`
    // reads as a host name, refused later), the binary one and the one in the middle.
    let invalid = lb::metric(
        admin,
        "galera_lb_control_commands_total",
        &[("command", "invalid")],
    );
    assert_eq!(invalid, Some(13.0), "invalid requests counted");
    // (An overlong line's refusal shows in its reply above: nothing else answers a line that
    // has no newline.)
    let log = process.log();
    assert!(!log.contains("panicked"), "{log}");
    drop(session);
    process.signal(libc::SIGTERM);
    assert!(process.wait_exit(Duration::from_secs(10)).success());
}

/// Whether process `pid` is running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// Whether the server closes `stream` within `within` (true) or keeps it open (false).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => panic!("an idle client got an answer"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_beyond_max_clients_evict_the_idlest_and_a_fresh_request_is_answered() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    let started = Instant::now();

    // 300 idle clients for max_clients = 32 (the default).
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(lb.control).await.unwrap());
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for mut stream in idle {
        if closed_within(&mut stream, Duration::from_millis(20)).await {
            refused += 1;
        } else {
            held.push(stream);
        }
    }
    // A few of the held ones may have been closed only after the 20 ms: count again, slowly.
    let mut still_held = Vec::new();
    for mut stream in held {
        if closed_within(&mut stream, Duration::from_millis(200)).await {
            refused += 1;
        } else {
            still_held.push(stream);
        }
    }
    // Each new client took the slot of the idlest: the last 32 are held, the rest were closed.
    assert_eq!(still_held.len(), 32, "exactly max_clients are kept");
    assert_eq!(refused, 268);

    // With every slot taken by idle clients, an operator's request is answered (it evicts the
    // idlest), again and again, and the proxy serves clients as usual.
    let evictions = || {
        galera_lb::core::counters::metrics()
            .clients_evicted
            .with_label_values(&["control"])
            .get()
    };
    let before = evictions();
    for _ in 0..5 {
        parse_getstat(&ask(lb.control, "getstat\n").await);
    }
    let mut session = Session::open(lb.proxy).await;
    assert!(session.echo(b"proxy unaffected").await);
    // The first request took an idle client's slot (later ones may find it free again): each
    // eviction closed one of the held clients.
    let mut left = Vec::new();
    // (Quickly: the held clients reach the 10 s line deadline soon.)
    for mut stream in still_held {
        if !closed_within(&mut stream, Duration::from_millis(10)).await {
            left.push(stream);
        }
    }
    let evicted = evictions() - before;
    assert!(evicted >= 1, "the first request found every slot taken");
    assert_eq!(left.len() as u64, 32 - evicted);
    let mut still_held = left;

    // The idle ones are closed at the line deadline (10 s), and then the port serves again.
    for stream in &mut still_held {
        let left = Duration::from_secs(12).saturating_sub(started.elapsed());
        assert!(closed_within(stream, left).await, "idle past 12 s");
    }
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(9500),
        "closed after {closed_after:?}, before the 10 s line deadline"
    );
    parse_getstat(&ask(lb.control, "getstat\n").await);
    assert!(session.echo(b"still unaffected").await);
}

#[tokio::test]
async fn a_slow_client_cannot_hold_a_slot_past_the_line_deadline() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;

    // A slow but complete request (one byte every 200 ms) is answered.
    let mut stream = TcpStream::connect(lb.control).await.unwrap();
    for byte in b"getstat\n" {
        stream.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    parse_getstat(&String::from_utf8(reply).unwrap());

    // A line that never ends, one byte every 200 ms: closed at the 10 s deadline.
    let stream = TcpStream::connect(lb.control).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let dripping = tokio::spawn(async move {
        while writer.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 64];
    let outcome = tokio::time::timeout(Duration::from_secs(15), reader.read(&mut buf)).await;
    let took = started.elapsed();
    dripping.abort();
    assert!(
        matches!(outcome, Ok(Ok(0) | Err(_))),
        "not closed in 15 s: {outcome:?}"
    );
    assert!(
        took >= Duration::from_millis(9800) && took < Duration::from_secs(11),
        "closed after {took:?}"
    );
    let mut session = Session::open(lb.proxy).await;
    assert!(session.echo(b"ok").await);
}

/// Fills every control slot with clients that each send one blank line every 2 s (and nothing
/// else), then asks whether a newcomer is served after the line deadline has passed.
#[tokio::test]
async fn blank_lines_do_not_keep_a_slot_past_the_line_deadline() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    let mut squatters = Vec::new();
    for _ in 0..32 {
        squatters.push(TcpStream::connect(lb.control).await.unwrap());
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(13) {
        for s in &mut squatters {
            let _ = s.write_all(b"\n").await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (reply, _) = raw(lb.control, b"getstat\n", true).await;
    assert!(
        !reply.is_empty(),
        "after 13 s of blank lines the 32 squatters still hold every slot"
    );
}

/// Fills every control slot with clients that send many requests and never read the replies.
#[tokio::test]
async fn clients_that_never_read_do_not_hold_slots_forever() {
    let a = greeter("a", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    let mut squatters = Vec::new();
    for _ in 0..32 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(lb.control).await.unwrap();
        // Enough `getinfo`s that the replies overflow both socket buffers.
        let requests = b"getinfo\n".repeat(50_000);
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&requests)).await;
        squatters.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (reply, _) = raw(lb.control, b"getstat\n", true).await;
    assert!(
        !reply.is_empty(),
        "12 s on, 32 clients that never read still hold every slot"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. scripts/glbd-compat-test against galera-lb installed as `glbd`
// ---------------------------------------------------------------------------------------------

#[test]
fn glbd_compat_script_drives_galera_lb_installed_as_glbd() {
    require_netcat_openbsd();
    let bin = tempfile::tempdir().unwrap();
    let glbd = bin.path().join("glbd");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_galera-lb"), &glbd).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/glbd-compat-test");
    let started = Instant::now();
    let out = std::process::Command::new("bash")
        .arg(script)
        .env("PATH", path)
        .env("GLBD", &glbd)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("all glbd steps passed"),
        "{stdout}\n{stderr}"
    );
    // Better than glbd 1.0.2, which never closes: plain `echo getinfo | nc` returns.
    assert!(stdout.contains("and nc returned after"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

// ---------------------------------------------------------------------------------------------
// 8. Access: the allowlist and the token
// ---------------------------------------------------------------------------------------------

/// How many control clients were refused for `reason` so far, in this test binary.
fn denied(reason: &str) -> u64 {
    galera_lb::core::counters::metrics()
        .access_denied
        .with_label_values(&["control", reason])
        .get()
}

#[tokio::test]
async fn the_allowlist_refuses_other_addresses_with_one_line_before_they_take_a_slot() {
    let a = greeter("a", "127.0.0.1:0").await;
    let b = greeter("b", "127.0.0.1:0").await;
    let lb = start_lb(
        "round_robin",
        &[(a, 1.0)],
        "  max_clients: 1\n  allow: [127.0.0.2, 127.0.0.4/31]\n",
    )
    .await;
    let before = denied("not_allowed");

    // Allowed: the one address, and both of the /31.
    for source in ["127.0.0.2", "127.0.0.4", "127.0.0.5"] {
        let info = ask_from(source, lb.control, "getinfo\n").await;
        assert!(info.starts_with("Router:"), "{source}: {info:?}");
    }
    assert_eq!(
        denied("not_allowed"),
        before,
        "allowed clients are not counted"
    );

    // Refused: one line that says why, then the close; a change is not made.
    for source in ["127.0.0.1", "127.0.0.3", "127.0.0.6"] {
        assert_eq!(
            ask_from(source, lb.control, "getinfo\n").await,
            format!("Error: {source} is not allowed on the control port\n")
        );
    }
    assert_eq!(
        ask_from("127.0.0.3", lb.control, &format!("{b}:1\n")).await,
        "Error: 127.0.0.3 is not allowed on the control port\n"
    );
    let info = ask_from("127.0.0.2", lb.control, "getinfo\n").await;
    assert_eq!(
        totals(&info).0,
        1,
        "the refused client added nothing: {info}"
    );

    // A refused client takes no slot: with the only slot held, it still gets its line and the
    // holder keeps its slot.
    let mut holder = connect_from("127.0.0.2", lb.control).await;
    holder.write_all(b"interactive\n").await.unwrap();
    assert_eq!(read_reply(&mut holder, 3).await, "Ok\n");
    assert_eq!(
        ask_from("127.0.0.3", lb.control, "getinfo\n").await,
        "Error: 127.0.0.3 is not allowed on the control port\n"
    );
    holder.write_all(b"health\n").await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(2), read_line(&mut holder))
        .await
        .unwrap()
        .unwrap();
    assert!(
        line.contains(&a.to_string()),
        "the holder is served: {line}"
    );
    // An allowed client beyond max_clients takes the slot of the idle holder, and is answered.
    let info = ask_from("127.0.0.5", lb.control, "getinfo\n").await;
    assert_eq!(totals(&info).0, 1, "{info}");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(2), holder.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the idle holder was closed for it: {end:?}");

    assert_eq!(
        denied("not_allowed") - before,
        5,
        "every refusal is counted"
    );
    drop(lb.running);
}

#[tokio::test]
async fn with_a_token_changes_need_auth_and_reads_do_not() {
    let a = greeter("a", "127.0.0.1:0").await;
    let b = greeter("b", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "  token: Changes-0nly\n").await;
    let before = denied("no_token");
    let needs_token = "Error: this request needs the control token: send auth TOKEN first\n";

    // Reads: as without a token.
    assert!(ask(lb.control, "getinfo\n").await.starts_with("Router:"));
    assert!(ask(lb.control, "GETINFO json\n").await.starts_with('{'));
    parse_getstat(&ask(lb.control, "getstat\n").await);
    assert!(ask(lb.control, "health\n").await.contains(&a.to_string()));
    assert!(ask(lb.control, "help\n").await.contains("auth TOKEN"));
    assert_eq!(ask(lb.control, "quit\n").await, "");

    // Changes without auth: refused, one by one, and nothing changes.
    for change in [
        format!("{b}:1\n"),
        format!("{a}:0\n"),
        format!("{a}:-1\n"),
        format!("drain {a}\n"),
        format!("maint {a}\n"),
        format!("ready {a}\n"),
        "reload\n".to_string(),
    ] {
        assert_eq!(ask(lb.control, &change).await, needs_token, "{change}");
    }
    assert_eq!(denied("no_token") - before, 7);
    let info = ask(lb.control, "getinfo\n").await;
    assert_eq!(totals(&info).0, 1, "{info}");
    assert_eq!(row(&info, a).1, 1.0, "{info}");
    assert!(ask(lb.control, "health\n").await.contains("admin=ready"));

    // With auth first, on the same connection: applied. Reads still answer in between.
    assert_eq!(
        ask(
            lb.control,
            &format!("auth Changes-0nly\n{b}:2\ngetstat\n{a}:3\n")
        )
        .await
        .lines()
        .filter(|l| !l.starts_with("in:"))
        .collect::<Vec<_>>(),
        ["Ok", "Ok", "Ok"]
    );
    let info = ask(lb.control, "getinfo\n").await;
    assert_eq!((row(&info, a).1, row(&info, b).1), (3.0, 2.0), "{info}");
    assert!(reached(lb.proxy, 10).await.contains(&"b".to_string()));

    // `auth` holds for its connection only, for as long as it is open.
    let mut session = TcpStream::connect(lb.control).await.unwrap();
    session.write_all(b"interactive\n").await.unwrap();
    assert_eq!(read_reply(&mut session, 3).await, "Ok\n");
    session
        .write_all(format!("drain {b}\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_reply(&mut session, needs_token.len()).await,
        needs_token
    );
    session.write_all(b"auth Changes-0nly\n").await.unwrap();
    assert_eq!(read_reply(&mut session, 3).await, "Ok\n");
    tokio::time::sleep(Duration::from_millis(400)).await;
    session
        .write_all(format!("drain {b}\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut session, 3).await, "Ok\n");
    assert_eq!(ask(lb.control, &format!("ready {b}\n")).await, needs_token);
    session
        .write_all(format!("ready {b}\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut session, 3).await, "Ok\n");
    assert_eq!(denied("no_token") - before, 9);
}

#[tokio::test]
async fn a_wrong_token_is_refused_counted_and_ends_the_connection() {
    let a = greeter("a", "127.0.0.1:0").await;
    let b = greeter("b", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "  token: right-token\n").await;
    let before = denied("wrong_token");

    // The change after a wrong token is not even looked at: the connection is closed.
    for wrong in [
        "wrong-token",
        "right-toke",
        "right-token2",
        "RIGHT-TOKEN",
        "right-token\u{0}",
    ] {
        assert_eq!(
            ask(lb.control, &format!("auth {wrong}\n{b}:1\n")).await,
            "Error: wrong token\n",
            "{wrong:?}"
        );
    }
    // A malformed auth is a bad request, not counted as a guess; the reply does not repeat it.
    assert_eq!(
        ask(lb.control, "auth\n").await,
        "Error: a malformed request (not repeated: it holds the token)\n"
    );
    assert_eq!(
        ask(lb.control, "auth right-token more\n").await,
        "Error: a malformed request (not repeated: it holds the token)\n"
    );
    assert_eq!(denied("wrong_token") - before, 5);
    assert_eq!(totals(&ask(lb.control, "getinfo\n").await).0, 1);

    // A right token after a wrong one needs a new connection; then it works.
    assert_eq!(
        ask(lb.control, &format!("auth right-token\n{b}:1\n")).await,
        "Ok\nOk\n"
    );
    assert_eq!(totals(&ask(lb.control, "getinfo\n").await).0, 2);
}

#[tokio::test]
async fn without_a_token_auth_is_accepted_and_changes_need_nothing() {
    let a = greeter("a", "127.0.0.1:0").await;
    let b = greeter("b", "127.0.0.1:0").await;
    let lb = start_lb("round_robin", &[(a, 1.0)], "").await;
    // glbd's behaviour: anyone who reaches the port may change the routing.
    assert_eq!(ask(lb.control, &format!("{b}:1\n")).await, "Ok\n");
    // Scripts may send `auth` before a token is configured; it changes nothing.
    assert_eq!(
        ask(lb.control, &format!("auth anything\n{b}:2\n")).await,
        "Ok\nOk\n"
    );
    assert_eq!(row(&ask(lb.control, "getinfo\n").await, b).1, 2.0);
}

/// The real binary with the token in a file: `printf 'auth TOKEN\n…' | nc` works, and the token
/// shows in no log line and no reply, whatever the client sends it in.
#[test]
fn the_token_works_from_nc_and_never_shows_in_logs_or_replies() {
    require_netcat_openbsd();
    const TOKEN: &str = "tok-3n.Secret_42";
    let a = lb::echo_backend("a");
    let b = lb::echo_backend("b");
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), format!("{TOKEN}\n")).unwrap();
    let (listen_port, control_port) = (lb::free_port(), lb::free_port());
    let yaml = format!(
        "{}control:\n  bind: 127.0.0.1:{control_port}\n  token_file: {}\n",
        lb::simple_config(listen_port, "round_robin", &[a], lb::NO_CHECKS),
        token_file.path().display()
    );
    let process = lb::LbProcess::start(&yaml);
    let control: SocketAddr = format!("127.0.0.1:{control_port}").parse().unwrap();
    let sh = |script: String| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };

    // The one-liner, exactly as documented.
    assert_eq!(
        sh(format!(
            "printf 'auth {TOKEN}\\n{b}:1\\n' | nc 127.0.0.1 {control_port}"
        )),
        "Ok\nOk\n"
    );
    assert_eq!(
        sh(format!("echo {b}:2 | nc 127.0.0.1 {control_port}")),
        "Error: this request needs the control token: send auth TOKEN first\n"
    );

    // Everything a client might put the token in.
    let mut replies = String::new();
    for request in [
        "auth wrong-guess\n".to_string(),
        format!("auth {TOKEN} extra\n"),
        format!("{TOKEN}:3306:1\n"),
        format!("{TOKEN}!\n"),
        format!("auth {TOKEN}\n{TOKEN}:3306:1\n"),
        format!("auth {TOKEN}\ndrain {TOKEN}:3306\n"),
        format!("getinfo {TOKEN}\n"),
        "getinfo\ngetinfo json\nhealth\nhelp\ngetstat\n".to_string(),
    ] {
        replies.push_str(&lb::control(control, &request));
    }
    assert!(replies.contains("Error: wrong token\n"), "{replies}");
    assert!(
        !replies.contains(TOKEN),
        "a reply holds the token:\n{replies}"
    );

    // Kept on the log: refusals and bad requests are logged for the operator, and these are the
    // lines the token must not reach.
    process.wait_for_log("control: wrong token", Duration::from_secs(5));
    process.wait_for_log("control: a change without auth", Duration::from_secs(5));
    process.wait_for_log("control: refused", Duration::from_secs(5));
    process.wait_for_log("control: bad request", Duration::from_secs(5));
    let log = process.log();
    assert!(log.contains("control: authenticated"), "{log}");
    assert!(log.contains("127.0.0.1:"), "the client is named: {log}");
    assert!(
        log.contains("token=true"),
        "the start-up line says a token is set (not which): {log}"
    );
    assert!(!log.contains(TOKEN), "the log holds the token:\n{log}");
    assert!(
        !log.contains("Secret_42"),
        "the log holds part of the token:\n{log}"
    );
}
