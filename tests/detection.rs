//! How soon a dead or frozen writer stops taking sessions, on the real sandbox, and what
//! `tcp.user_timeout` does for a session on a frozen node. Each test prints its figures
//! (`cargo test --test detection -- --nocapture --test-threads 1`); the bounds asserted have
//! margins for a noisy two-core machine.
//!
//! - `kill -9` of the writer under connect churn through a writer listener: the clients' refused
//!   connects ask for checks at once, so the next writer serves new sessions within
//!   `interval / 2` plus a connect; without traffic, the same kill is seen only by the checks on
//!   their interval (`fall` checks: between one and two intervals).
//! - `kill -STOP` of the writer: the node's kernel still completes connects, nothing is refused,
//!   so only the checks see it: each one times out after `health.timeout`, and `fall` of them in
//!   a row take the node out.
//! - A session writing into a stopped node: once the node's receive window is full, Linux sends
//!   zero-window probes, which the node's kernel answers; TCP_USER_TIMEOUT counts them, so the
//!   session ends about `tcp.user_timeout` later; without it, it waits as long as the node is
//!   stopped. A session that only waits for an answer has nothing unacknowledged: it waits with
//!   or without the option (on loopback the stopped node's kernel acknowledges everything).

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lb::{LbProcess, free_port};
use support::load::{self, Attempt, Load, LoadSpec, describe};
use support::sandbox::{Cluster, FaultSession};

/// A writer listener on `port` over the three nodes, with these health settings.
fn writer_config(cluster: &Cluster, port: u16, health: &str, tcp: &str) -> String {
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{port}\n    role: writer\nbackends:\n"
    );
    for address in &cluster.addresses {
        yaml.push_str(&format!("  - address: {address}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  user: monitor\n  password: monitor\n{health}{tcp}"
    ));
    yaml
}

/// `node2` → 2.
fn node_number(name: &str) -> usize {
    name.trim_start_matches("node")
        .parse()
        .unwrap_or_else(|_| panic!("a sandbox node name: {name:?}"))
}

/// Starts a write load on the writer listener and returns it with the writer's node name.
fn churn(port: u16) -> (Load, String) {
    let load = Load::start(LoadSpec::writes("rw", port));
    let first = load
        .wait_for(load.epoch, Duration::from_secs(10), Attempt::ok)
        .expect("the writer serves before the fault");
    // A few sessions more, so that the churn is steady when the fault comes.
    std::thread::sleep(Duration::from_millis(300));
    (load, first.node.expect("an ok attempt names its node"))
}

/// Reads and writes through the writer listener on `port`: the reads show where galera-lb sends
/// new sessions, the writes also when the cluster commits again. With the writer's node name.
fn reads_and_writes(port: u16) -> (Load, Load, String) {
    let (writes, writer) = churn(port);
    let reads = Load::start(LoadSpec::reads("rw-reads", port));
    reads
        .wait_for(reads.epoch, Duration::from_secs(10), Attempt::ok)
        .expect("reads are served before the fault");
    std::thread::sleep(Duration::from_millis(200));
    (reads, writes, writer)
}

/// The first session served after `fault` by another node than `writer`: how long after the
/// fault it was answered.
fn next_writer_serves(load: &Load, fault: Instant, writer: &str, within: Duration) -> Attempt {
    load.wait_for(fault, within, |a| {
        a.ok() && a.node.as_deref().is_some_and(|n| n != writer)
    })
    .unwrap_or_else(|| {
        let attempts = load.attempts();
        let after: Vec<&Attempt> = attempts.iter().filter(|a| a.start >= fault).collect();
        panic!(
            "no session served by another node than {writer} within {within:?} of the fault:\n{}",
            describe(&after, fault, 20)
        )
    })
}

/// Waits (up to `limit`) until galera-lb has logged more "writer changed" lines than `before`;
/// how long after `from` it saw that.
fn writer_changed(lb: &LbProcess, before: usize, from: Instant, limit: Duration) -> Duration {
    loop {
        if lb.log().matches("writer changed").count() > before {
            return from.elapsed();
        }
        assert!(
            from.elapsed() < limit,
            "the writer did not change within {limit:?}:\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

const KILL_INTERVAL: Duration = Duration::from_secs(4);

/// `kill -9` of the writer under connect churn: the next writer serves new sessions within
/// `interval / 2` plus a connect (the clients' refused connects ask for checks at once). Two
/// loads on the writer listener: reads (what galera-lb's routing takes) and writes, which also
/// wait for Galera itself to evict the dead node (`evs.suspect_timeout`, 5 s by default: until
/// then the group waits for it and commits stall on every node).
#[test]
fn a_killed_writer_is_replaced_within_half_an_interval_under_traffic() {
    let session = FaultSession::begin();
    let cluster = session.cluster;
    let port = free_port();
    let health = format!(
        "  interval: {}s\n  timeout: 500ms\n  fall: 2\n",
        KILL_INTERVAL.as_secs()
    );
    let lb = LbProcess::start(&writer_config(cluster, port, &health, ""));
    let (reads, writes, writer) = reads_and_writes(port);
    let before = lb.log().matches("writer changed").count();
    cluster.kill(node_number(&writer));
    let killed = Instant::now();
    let elected = writer_changed(&lb, before, killed, KILL_INTERVAL * 3);
    let next = next_writer_serves(&reads, killed, &writer, KILL_INTERVAL * 3);
    let gap = next.end.duration_since(killed);
    let next_write = next_writer_serves(&writes, killed, &writer, KILL_INTERVAL * 4);
    let write_gap = next_write.end.duration_since(killed);
    std::thread::sleep(Duration::from_millis(300));
    let (read_attempts, write_attempts) = (reads.finish(), writes.finish());
    let failed_reads = load::errors_between(&read_attempts, killed, next.start);
    let failed_writes = load::errors_between(&write_attempts, killed, next_write.start);
    let bound = KILL_INTERVAL / 2 + Duration::from_secs(1);
    println!(
        "kill -9 of the writer ({writer}) under connect churn, health.interval {KILL_INTERVAL:?}, \
         timeout 500ms, fall 2: the writer role moved {:.0} ms after the kill; the next writer \
         ({}) answered its first new session {:.0} ms after the kill (bound {bound:?}; {} read \
         attempts failed in between); its first write \
         committed {:.0} ms after the kill ({} write attempts failed in between: Galera's own \
         eviction of the dead node)",
        elected.as_secs_f64() * 1000.0,
        next.node.as_deref().unwrap_or("?"),
        gap.as_secs_f64() * 1000.0,
        failed_reads.len(),
        write_gap.as_secs_f64() * 1000.0,
        failed_writes.len()
    );
    assert!(
        elected <= bound,
        "the writer role moves within interval/2 + a connect: {elected:?} > {bound:?}\n{}",
        lb.log()
    );
    assert!(
        gap <= bound,
        "the next writer serves within interval/2 + a connect: {gap:?} > {bound:?}\n\
         failed reads:\n{}\n{}",
        describe(&failed_reads, killed, 10),
        lb.log()
    );
    // Galera's evs.suspect_timeout (5 s) and the view change after it, with a margin.
    assert!(
        write_gap <= Duration::from_secs(9),
        "writes resume once Galera has evicted the node: {write_gap:?}\nfailed writes:\n{}",
        describe(&failed_writes, killed, 10)
    );
}

/// The same kill without any traffic: only the checks, on their interval, see it. For
/// comparison with the test above: `fall` failed checks take between one and two intervals.
#[test]
fn without_traffic_a_killed_writer_is_seen_by_the_checks_on_their_interval() {
    let session = FaultSession::begin();
    let cluster = session.cluster;
    let port = free_port();
    let health = format!(
        "  interval: {}s\n  timeout: 500ms\n  fall: 2\n",
        KILL_INTERVAL.as_secs()
    );
    let lb = LbProcess::start(&writer_config(cluster, port, &health, ""));
    // One session to learn the writer; a served connect asks for no check.
    let (load, writer) = churn(port);
    drop(load.finish());
    std::thread::sleep(Duration::from_millis(500));
    let before = lb.log().matches("writer changed").count();
    cluster.kill(node_number(&writer));
    let killed = Instant::now();
    let gap = writer_changed(&lb, before, killed, KILL_INTERVAL * 4);
    println!(
        "kill -9 of the writer ({writer}) without traffic, health.interval {KILL_INTERVAL:?}, \
         fall 2: the writer changed {:.0} ms after the kill (the checks alone: between one and \
         two intervals, plus jitter)",
        gap.as_secs_f64() * 1000.0
    );
    assert!(
        gap >= KILL_INTERVAL.mul_f64(0.9)
            && gap <= KILL_INTERVAL.mul_f64(2.2) + Duration::from_secs(2),
        "fall 2 checks {KILL_INTERVAL:?} apart: {gap:?}\n{}",
        lb.log()
    );
}

const STOP_INTERVAL: Duration = Duration::from_secs(2);
const STOP_TIMEOUT: Duration = Duration::from_millis(500);

/// `kill -STOP` of the writer under connect churn: connects to it still succeed (its kernel
/// completes them), so only the checks see it, each timing out after `health.timeout`. With
/// `fall: 1` the next writer serves within one interval (plus its jitter) and one timeout; with
/// the default `fall: 2`, one interval and one timeout more. Writes commit again only once
/// Galera has evicted the stopped node (`evs.suspect_timeout`, 5 s by default).
#[test]
fn a_stopped_writer_is_replaced_once_fall_checks_have_timed_out() {
    for fall in [1u32, 2] {
        let session = FaultSession::begin();
        let cluster = session.cluster;
        let port = free_port();
        let health = format!(
            "  interval: {}s\n  timeout: {}ms\n  fall: {fall}\n",
            STOP_INTERVAL.as_secs(),
            STOP_TIMEOUT.as_millis()
        );
        let lb = LbProcess::start(&writer_config(cluster, port, &health, ""));
        let (reads, writes, writer) = reads_and_writes(port);
        let before = lb.log().matches("writer changed").count();
        cluster.pause(node_number(&writer));
        let stopped = Instant::now();
        let elected = writer_changed(&lb, before, stopped, STOP_INTERVAL * 6);
        let next = next_writer_serves(&reads, stopped, &writer, STOP_INTERVAL * 6);
        let gap = next.end.duration_since(stopped);
        let next_write = next_writer_serves(&writes, stopped, &writer, Duration::from_secs(20));
        let write_gap = next_write.end.duration_since(stopped);
        drop((reads.finish(), writes.finish()));
        // Each check: up to an interval (+10% jitter) until it starts, then the timeout.
        let per_check = STOP_INTERVAL.mul_f64(1.1) + STOP_TIMEOUT;
        let bound = per_check * fall + Duration::from_millis(1500);
        println!(
            "kill -STOP of the writer ({writer}), health.interval {STOP_INTERVAL:?}, timeout \
             {STOP_TIMEOUT:?}, fall {fall}: the writer role moved {:.0} ms after the stop; the \
             next writer ({}) served its first new session {:.0} ms after the stop (bound \
             {bound:?}); its first write committed {:.0} ms after the stop (Galera evicting the \
             stopped node)",
            elected.as_secs_f64() * 1000.0,
            next.node.as_deref().unwrap_or("?"),
            gap.as_secs_f64() * 1000.0,
            write_gap.as_secs_f64() * 1000.0
        );
        assert!(
            elected <= bound && gap <= bound,
            "fall {fall}: moved after {elected:?}, served after {gap:?}, bound {bound:?}\n{}",
            lb.log()
        );
        drop(lb);
        drop(session);
    }
}

/// Connects a raw client to `port` and reads the node's greeting through it: the session has its
/// backend connection.
fn session_with_greeting(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut greeting = [0u8; 512];
    let n = stream.read(&mut greeting).unwrap();
    assert!(
        n > 5 && greeting[4] == 10,
        "a server greeting: {:?}",
        &greeting[..n]
    );
    stream
}

/// Writes into `stream` until the session ends (an error other than a write timeout), for at
/// most `limit`; how long after `from` it ended, `None` if it did not.
fn write_until_closed(mut stream: TcpStream, from: Instant, limit: Duration) -> Option<Duration> {
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let chunk = vec![0x55u8; 64 * 1024];
    while from.elapsed() < limit {
        match stream.write(&chunk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(from.elapsed()),
        }
    }
    None
}

/// Waits on `stream` for an answer until the session ends, for at most `limit`.
fn read_until_closed(mut stream: TcpStream, from: Instant, limit: Duration) -> Option<Duration> {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 512];
    while from.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(from.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(from.elapsed()),
        }
    }
    None
}

const USER_TIMEOUT: Duration = Duration::from_secs(2);

/// A session writing into a stopped node ends about `tcp.user_timeout` after the node stopped
/// taking data; with `tcp.user_timeout: null` it is still waiting well after that. A session
/// that only waits for an answer waits either way: nothing of it is unacknowledged.
#[test]
fn a_session_writing_into_a_stopped_node_ends_after_the_user_timeout() {
    let session = FaultSession::begin();
    let cluster = session.cluster;
    let node = 3;
    let backend: SocketAddr = cluster.node_address(node);
    let start = |user_timeout: &str| {
        let port = free_port();
        let yaml = format!(
            "listeners:\n  - name: any\n    bind: 127.0.0.1:{port}\nbackends:\n  \
             - address: {backend}\nhealth:\n  check: none\n\
             tcp:\n  user_timeout: {user_timeout}\n"
        );
        (LbProcess::start(&yaml), port)
    };
    let (bounded_lb, bounded) = start(&format!("{}ms", USER_TIMEOUT.as_millis()));
    let (unbounded_lb, unbounded) = start("null");
    let writing = session_with_greeting(bounded);
    let writing_without = session_with_greeting(unbounded);
    let waiting = session_with_greeting(bounded);
    cluster.pause(node);
    let stopped = Instant::now();
    let limit = USER_TIMEOUT * 4;
    let threads = [
        std::thread::spawn(move || write_until_closed(writing, stopped, limit)),
        std::thread::spawn(move || write_until_closed(writing_without, stopped, limit)),
        std::thread::spawn(move || {
            let mut waiting = waiting;
            // A query's worth of bytes (not a valid packet: the node never reads it).
            waiting.write_all(&[1, 0, 0, 0, 0x0e]).unwrap();
            read_until_closed(waiting, stopped, limit)
        }),
    ];
    let [with, without, answer] = threads.map(|t| t.join().unwrap());
    cluster.resume(node);
    let shown = |d: Option<Duration>| match d {
        Some(d) => format!("ended after {:.0} ms", d.as_secs_f64() * 1000.0),
        None => format!("still open after {limit:?}"),
    };
    println!(
        "kill -STOP of the backend: a session writing into it with tcp.user_timeout \
         {USER_TIMEOUT:?} {}; the same with user_timeout null {}; a session waiting for an \
         answer with user_timeout {USER_TIMEOUT:?} {} (nothing unacknowledged on loopback)",
        shown(with),
        shown(without),
        shown(answer)
    );
    let ended = with.unwrap_or_else(|| {
        panic!(
            "the writing session ends after about tcp.user_timeout:\n{}",
            bounded_lb.log()
        )
    });
    assert!(
        ended >= USER_TIMEOUT && ended <= USER_TIMEOUT * 2 + Duration::from_secs(1),
        "ended after {ended:?}, tcp.user_timeout {USER_TIMEOUT:?}\n{}",
        bounded_lb.log()
    );
    assert_eq!(
        without,
        None,
        "without tcp.user_timeout the session waits\n{}",
        unbounded_lb.log()
    );
    assert_eq!(answer, None, "a session waiting for an answer waits");
}
