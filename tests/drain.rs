//! Shutdown, as the world sees it and as it leaves the process.
//!
//! - From SIGTERM on, the admin port's `/ready` answers 503 `draining` (within a poll of the
//!   signal); with `limits.shutdown_delay` the listeners keep accepting meanwhile, so a client
//!   churn that has not moved elsewhere yet is never refused; then they close, the admin port
//!   still answers through `limits.shutdown_grace`, and the process exits. The real binary,
//!   fake echo backends (a connect churn of a few hundred connections a second is what is
//!   measured, not MySQL), and a poller of `/ready` every 5 ms; then the same with MySQL
//!   clients (connect, query, disconnect) in front of the real Galera sandbox.
//! - Nothing is left behind: after `Running::drain`, every task galera-lb started (accept
//!   loops, sessions, the updater, health checks, discovery, the control and admin ports and
//!   their connections, the heap trimmer) has finished; the runtime's own count of alive tasks
//!   is the measure.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use galera_lb::config::Config;
use lb::{LbProcess, NO_CHECKS, echo_backend, free_port};
use support::load::{self, Load, LoadSpec, describe, errors_between, started_between};
use support::sandbox;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` on the admin port: the status and the body, or `None` when the port does not
/// answer (closed, or nothing within a second).
fn probe(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// One client of the churn: connect, read the backend's greeting, close. `Err` says why it was
/// refused (or failed).
fn one_client(listener: SocketAddr) -> Result<(), String> {
    let stream = std::net::TcpStream::connect_timeout(&listener, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let mut greeting = String::new();
    BufReader::new(stream)
        .read_line(&mut greeting)
        .map_err(|e| format!("read: {e}"))?;
    if greeting.is_empty() {
        return Err("closed before the greeting".into());
    }
    Ok(())
}

/// What a background thread saw, each with when it began.
type Record<T> = Arc<Mutex<Vec<(Instant, T)>>>;

/// Runs `each` in `threads` threads, `pause` apart in each, until `stop`; records every outcome.
fn repeat<T: Send + 'static>(
    threads: usize,
    pause: Duration,
    stop: &Arc<AtomicBool>,
    each: impl Fn() -> T + Send + Sync + 'static,
) -> (Record<T>, Vec<std::thread::JoinHandle<()>>) {
    let record: Record<T> = Default::default();
    let each = Arc::new(each);
    let handles = (0..threads)
        .map(|_| {
            let (record, stop, each) = (record.clone(), stop.clone(), each.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let outcome = each();
                    record.lock().unwrap().push((start, outcome));
                    std::thread::sleep(pause);
                }
            })
        })
        .collect();
    (record, handles)
}

fn ms(from: Instant, to: Instant) -> i128 {
    if to >= from {
        to.duration_since(from).as_millis() as i128
    } else {
        -(from.duration_since(to).as_millis() as i128)
    }
}

/// galera-lb with one listener in front of two echo backends and an admin port.
fn drain_config(listener: SocketAddr, admin: SocketAddr, limits: &str) -> String {
    let (a, b) = (echo_backend("a"), echo_backend("b"));
    format!(
        "listeners:\n  - name: rw\n    bind: {listener}\n\
         backends:\n  - address: {a}\n  - address: {b}\n{NO_CHECKS}\
         admin:\n  bind: {admin}\nlimits:\n{limits}"
    )
}

fn loopback_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[test]
fn sigterm_with_a_shutdown_delay_says_draining_at_once_and_refuses_no_one_during_the_delay() {
    let delay = Duration::from_secs(2);
    let grace = Duration::from_secs(2);
    let (listener, admin) = (loopback_port(), loopback_port());
    let mut lb = LbProcess::start(&drain_config(
        listener,
        admin,
        "  shutdown_delay: 2s\n  shutdown_grace: 2s\n",
    ));
    assert_eq!(
        probe(admin, "/ready").map(|r| r.0),
        Some(200),
        "{}",
        lb.log()
    );
    // A session that stays open through the drain: the grace period runs its full length.
    let mut session = std::net::TcpStream::connect(listener).unwrap();
    let mut greeting = [0u8; 2];
    session.read_exact(&mut greeting).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (churn, churners) = repeat(4, Duration::from_millis(5), &stop, move || {
        one_client(listener)
    });
    let (ready, pollers) = repeat(1, Duration::from_millis(5), &stop, move || {
        probe(admin, "/ready")
    });
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    lb.signal(libc::SIGTERM);

    // During the grace period (listeners closed, the session still open): the admin port
    // answers, /live passes, /ready says draining, and the open session still works.
    std::thread::sleep(delay + grace / 4);
    let live = probe(admin, "/live");
    let ready_in_grace = probe(admin, "/ready");
    session.write_all(b"ping\n").unwrap();
    let mut echo = [0u8; 5];
    session.read_exact(&mut echo).unwrap();
    assert_eq!(
        &echo, b"ping\n",
        "the open session works during the grace period"
    );

    let status = lb.wait_exit(delay + grace + Duration::from_secs(5));
    let exited = Instant::now();
    stop.store(true, Ordering::SeqCst);
    for thread in churners.into_iter().chain(pollers) {
        thread.join().unwrap();
    }
    let log = lb.log();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert_eq!(
        live.map(|r| r.0),
        Some(200),
        "/live during the grace period"
    );
    let (code, body) = ready_in_grace.expect("the admin port answers during the grace period");
    assert_eq!(code, 503, "/ready during the grace period: {body}");
    assert!(
        body.contains("draining"),
        "/ready's body says why: {body:?}"
    );

    // /ready: 200 before the signal, 503 draining from the first answer after it on.
    let ready = ready.lock().unwrap().clone();
    let before = ready.iter().filter(|(t, _)| *t < signalled).count();
    assert!(
        before > 10,
        "the poller asked /ready {before} times before the signal"
    );
    for (t, answer) in ready.iter().filter(|(t, _)| *t < signalled) {
        assert_eq!(
            answer.as_ref().map(|r| r.0),
            Some(200),
            "{} ms before the signal",
            ms(*t, signalled)
        );
    }
    let after: Vec<_> = ready.iter().filter(|(t, _)| *t >= signalled).collect();
    let first_503 = after
        .iter()
        .find(|(_, answer)| matches!(answer, Some((503, _))))
        .map(|(t, _)| *t)
        .expect("/ready answers 503 after SIGTERM");
    let to_503 = ms(signalled, first_503);
    for (t, answer) in &after {
        if *t >= first_503 {
            if let Some((code, body)) = answer {
                assert_eq!(
                    *code,
                    503,
                    "{} ms after the signal: {body}",
                    ms(signalled, *t)
                );
                assert!(body.contains("draining"), "{body:?}");
            }
        }
    }
    let answered_after = after.iter().filter(|(_, a)| a.is_some()).count();

    // The churn: nobody refused before the delay is over; refused once the listener is closed.
    let churn = churn.lock().unwrap().clone();
    let in_delay: Vec<_> = churn
        .iter()
        .filter(|(t, _)| *t >= signalled && *t < signalled + delay - Duration::from_millis(100))
        .collect();
    let refused_in_delay: Vec<_> = in_delay.iter().filter(|(_, r)| r.is_err()).collect();
    let refused_before = churn
        .iter()
        .filter(|(t, r)| *t < signalled && r.is_err())
        .count();
    let after_close: Vec<_> = churn
        .iter()
        .filter(|(t, _)| *t >= signalled + delay + Duration::from_millis(300))
        .collect();
    eprintln!(
        "/ready 503 {to_503} ms after SIGTERM ({answered_after} answers after it); {} clients \
         during the delay, {} refused; {} clients after it, {} refused; exit {} ms after SIGTERM",
        in_delay.len(),
        refused_in_delay.len(),
        after_close.len(),
        after_close.iter().filter(|(_, r)| r.is_err()).count(),
        ms(signalled, exited)
    );
    assert!(
        to_503 <= 150,
        "/ready answered 503 only {to_503} ms after SIGTERM"
    );
    assert_eq!(refused_before, 0, "refused before the signal; log:\n{log}");
    assert!(
        in_delay.len() > 100,
        "only {} clients in the delay",
        in_delay.len()
    );
    assert!(
        refused_in_delay.is_empty(),
        "{} of {} clients refused during limits.shutdown_delay, the first {} ms after \
         SIGTERM: {:?}",
        refused_in_delay.len(),
        in_delay.len(),
        ms(signalled, refused_in_delay[0].0),
        refused_in_delay[0].1
    );
    assert!(
        !after_close.is_empty() && after_close.iter().all(|(_, r)| r.is_err()),
        "the listener closes when the delay is over"
    );
    // It waited out the delay and the grace period (the session stayed open), no longer.
    let took = exited.duration_since(signalled);
    assert!(
        took >= delay + grace && took < delay + grace + Duration::from_secs(3),
        "exited {took:?} after SIGTERM"
    );
    assert!(log.contains("received SIGTERM"), "{log}");
}

/// Without a delay (the default), the listeners close at once, as before, but `/ready` says
/// `draining` all through the grace period instead of 200 for a process that refuses clients.
#[test]
fn sigterm_without_a_delay_closes_at_once_and_ready_says_draining_through_the_grace_period() {
    let (listener, admin) = (loopback_port(), loopback_port());
    let mut lb = LbProcess::start(&drain_config(listener, admin, "  shutdown_grace: 10s\n"));
    assert_eq!(
        probe(admin, "/ready").map(|r| r.0),
        Some(200),
        "{}",
        lb.log()
    );
    let mut session = std::net::TcpStream::connect(listener).unwrap();
    let mut greeting = [0u8; 2];
    session.read_exact(&mut greeting).unwrap();

    let signalled = Instant::now();
    lb.signal(libc::SIGTERM);
    lb.wait_for_log("received SIGTERM", Duration::from_secs(5));
    let deadline = signalled + Duration::from_secs(2);
    while one_client(listener).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the listener still accepts 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (code, body) = probe(admin, "/ready").expect("the admin port answers while draining");
    assert_eq!(
        (code, body.contains("draining")),
        (503, true),
        "/ready: {code} {body}"
    );
    assert_eq!(probe(admin, "/live").map(|r| r.0), Some(200));
    let status = http_status(admin);
    assert!(status.contains("\"draining\":true"), "{status}");

    // The last session ends: galera-lb exits without waiting out the 10 s grace.
    drop(session);
    let status = lb.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
}

fn http_status(admin: SocketAddr) -> String {
    probe(admin, "/status").map(|r| r.1).unwrap_or_default()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

// One thread: a task counts as alive until it has run to its end, and nothing runs while the
// test does not yield, so the count right after `drain` returns is exact.
#[tokio::test(flavor = "current_thread")]
async fn after_drain_no_task_is_left_alive() {
    let (a, b) = (echo_backend("a"), echo_backend("b"));
    // `localhost:PORT` with resolve_every starts a DNS follower; tcp checks start check tasks
    // and the writer coordinator; control and admin ports start their accept loops.
    let yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:0\n  - name: w\n    bind: 127.0.0.1:0\n    role: writer\n\
         backends:\n  - address: {a}\n  - address: localhost:{}\n    resolve_every: 1s\n\
         health:\n  check: tcp\n  interval: 100ms\n  on_writer_change: shutdown_sessions\n\
         control:\n  bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\n\
         limits:\n  shutdown_grace: 300ms\n",
        b.port()
    );
    let config = Config::from_yaml(&yaml, "test.yaml").unwrap();
    let before = alive_tasks();
    let running = galera_lb::start(&config, "test.yaml").await.unwrap();

    // A session on each listener, a control client and an admin keep-alive client, all open
    // when the drain begins.
    let mut sessions = Vec::new();
    for (_, address) in &running.listeners {
        let mut session = TcpStream::connect(address).await.unwrap();
        let mut greeting = [0u8; 2];
        session.read_exact(&mut greeting).await.unwrap();
        sessions.push(session);
    }
    let mut control = TcpStream::connect(running.control.unwrap()).await.unwrap();
    control.write_all(b"interactive\n").await.unwrap();
    let mut admin = TcpStream::connect(running.admin.unwrap()).await.unwrap();
    admin
        .write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = [0u8; 12];
    admin.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"HTTP/1.1 200");
    let started = alive_tasks() - before;
    assert!(
        started >= 10,
        "galera-lb runs its tasks on this runtime ({started} found)"
    );

    tokio::time::timeout(Duration::from_secs(10), running.drain())
        .await
        .expect("drain finishes");

    assert_eq!(
        alive_tasks(),
        before,
        "tasks still alive after drain (of {started} started)"
    );
    drop((sessions, control, admin));
}

/// The same drain with MySQL clients in front of the real cluster: no attempt that starts during
/// `limits.shutdown_delay` fails, and the attempts that started before it end well too.
#[test]
fn sigterm_under_a_mysql_load_on_the_sandbox_fails_no_client_during_the_delay() {
    let cluster = sandbox::cluster();
    let _shared = sandbox::shared_lock();
    cluster.sql(1, load::SCHEMA);
    let delay = Duration::from_secs(2);
    let (listener, admin) = (loopback_port(), loopback_port());
    let mut yaml = format!(
        "listeners:\n  - name: rr\n    bind: {listener}\n    policy: round_robin\nbackends:\n"
    );
    for address in &cluster.addresses {
        yaml.push_str(&format!("  - address: {address}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  check: wsrep\n  user: monitor\n  password: monitor\n\
         admin:\n  bind: {admin}\nlimits:\n  shutdown_delay: 2s\n  shutdown_grace: 2s\n"
    ));
    let mut lb = LbProcess::start(&yaml);
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe(admin, "/ready").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "never ready: {}", lb.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let reads = Load::start(LoadSpec::reads("rr", listener.port()));
    std::thread::sleep(Duration::from_secs(1));
    let signalled = Instant::now();
    lb.signal(libc::SIGTERM);
    let mut to_503 = None;
    while to_503.is_none() && signalled.elapsed() < delay {
        if let Some((503, body)) = probe(admin, "/ready") {
            assert!(body.contains("draining"), "{body:?}");
            to_503 = Some(signalled.elapsed());
        }
    }
    let status = lb.wait_exit(delay + Duration::from_secs(10));
    // Some attempts after the listener closed.
    std::thread::sleep(
        (signalled + delay + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    );
    let attempts = reads.finish();
    assert!(status.success(), "{status}; log:\n{}", lb.log());

    let delay_end = signalled + delay - Duration::from_millis(100);
    let before = started_between(&attempts, signalled - Duration::from_secs(1), signalled);
    let during = started_between(&attempts, signalled, delay_end);
    let failed = errors_between(&attempts, signalled - Duration::from_secs(1), delay_end);
    let after = started_between(
        &attempts,
        signalled + delay + Duration::from_millis(300),
        load::far_future(),
    );
    eprintln!(
        "/ready 503 {:?} after SIGTERM; {} MySQL clients in the second before it, {} during the \
         delay, {} failed; {} after it, {} failed",
        to_503,
        before.len(),
        during.len(),
        failed.len(),
        after.len(),
        after.iter().filter(|a| !a.ok()).count()
    );
    let to_503 = to_503.expect("/ready answers 503 during the delay");
    assert!(
        to_503 < Duration::from_millis(150),
        "/ready 503 only {to_503:?} after SIGTERM"
    );
    assert!(
        during.len() > 50,
        "only {} clients during the delay",
        during.len()
    );
    assert!(
        failed.is_empty(),
        "clients failed around SIGTERM, before the delay was over:\n{}",
        describe(&failed, signalled, 10)
    );
    assert!(
        !after.is_empty() && after.iter().all(|a| !a.ok()),
        "the listener closes when the delay is over"
    );
}
