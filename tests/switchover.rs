//! Switchover without errors, on the real sandbox: while every backend of a listener is out of
//! service for two seconds (all three drained over the control port, as during a switch in
//! which no node is usable yet), a listener with `failover_hold: 3s` keeps its clients waiting
//! and serves them all when the nodes come back, while a listener without a hold answers each
//! client in the gap with ERROR 1429, and one with a hold shorter than the gap answers them once
//! the hold runs out. Continuous connect churn on each listener; every attempt recorded.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb::{LbProcess, control, free_port};
use support::load::{self, Attempt, Load, LoadSpec, describe};
use support::sandbox::{self, FaultSession};

/// How long every backend stays drained.
const GAP: Duration = Duration::from_secs(2);

fn held_load(label: &str, port: u16) -> LoadSpec {
    LoadSpec {
        // A held client waits up to the hold: the attempt may take that long.
        attempt_timeout: Duration::from_secs(5),
        max_duration: Duration::from_secs(60),
        ..LoadSpec::reads(label, port)
    }
}

fn started_in(attempts: &[Attempt], from: Instant, to: Instant) -> Vec<&Attempt> {
    attempts
        .iter()
        .filter(|a| a.start >= from && a.start < to)
        .collect()
}

#[test]
fn a_failover_hold_serves_every_client_of_a_gap_where_no_backend_is_usable() {
    let _shared = sandbox::shared_lock();
    let cluster = sandbox::cluster();
    cluster.sql(1, load::SCHEMA);
    let (held, short, plain) = (free_port(), free_port(), free_port());
    let (control_port, admin_port) = (free_port(), free_port());
    let control_address: SocketAddr = ([127, 0, 0, 1], control_port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let mut yaml = format!(
        "listeners:\n\
         \x20 - name: held\n    bind: 127.0.0.1:{held}\n    failover_hold: 3s\n\
         \x20 - name: short\n    bind: 127.0.0.1:{short}\n    failover_hold: 300ms\n\
         \x20 - name: plain\n    bind: 127.0.0.1:{plain}\n\
         backends:\n"
    );
    for address in &cluster.addresses {
        yaml.push_str(&format!("  - address: {address}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  interval: 300ms\n  user: monitor\n  password: monitor\n\
         control:\n  bind: {control_address}\nadmin:\n  bind: {admin}\n"
    ));
    let lb = LbProcess::start(&yaml);
    let loads = [
        Load::start(held_load("held", held)),
        Load::start(held_load("short", short)),
        Load::start(held_load("plain", plain)),
    ];
    for load in &loads {
        load.wait_for(load.epoch, Duration::from_secs(10), Attempt::ok)
            .unwrap_or_else(|| panic!("{} serves before the gap\n{}", load.spec.label, lb.log()));
    }
    std::thread::sleep(Duration::from_millis(500));

    let every = |command: &str| {
        let lines: String = cluster
            .addresses
            .iter()
            .map(|a| format!("{command} {a}\n"))
            .collect();
        assert_eq!(control(control_address, &lines), "Ok\n".repeat(3));
    };
    let gap_start = Instant::now();
    every("drain");
    std::thread::sleep(GAP);
    every("ready");
    let gap_end = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let [held_load, short_load, plain_load] = loads;
    let (held_attempts, short_attempts, plain_attempts) =
        (held_load.finish(), short_load.finish(), plain_load.finish());

    // Without a hold: ERROR 1429 for each client in the gap.
    let plain_in_gap = started_in(&plain_attempts, gap_start, gap_end);
    let plain_errors: Vec<&Attempt> = plain_in_gap.iter().copied().filter(|a| !a.ok()).collect();
    assert!(
        plain_errors.len() > 20
            && plain_errors
                .iter()
                .all(|a| a.error.as_deref().is_some_and(|e| e.contains("1429"))),
        "no hold: ERROR 1429 in the gap: {}",
        describe(&plain_errors, gap_start, 5)
    );
    // With a 3s hold: every client served, the ones that came in the gap once it was over.
    let held_errors: Vec<&Attempt> = held_attempts.iter().filter(|a| !a.ok()).collect();
    assert!(
        held_errors.is_empty(),
        "failover_hold 3s: 0 client errors, got {}:\n{}",
        held_errors.len(),
        describe(&held_errors, gap_start, 10)
    );
    let held_in_gap = started_in(&held_attempts, gap_start, gap_end);
    let longest = held_in_gap
        .iter()
        .map(|a| a.end.duration_since(a.start))
        .max()
        .unwrap_or_default();
    assert!(
        held_in_gap.len() >= 6 && longest >= GAP / 2,
        "clients waited through the gap: {} in it, the longest {longest:?}",
        held_in_gap.len()
    );
    // With a hold shorter than the gap: the ERR packet, but only after the hold.
    let short_errors: Vec<&Attempt> = short_attempts.iter().filter(|a| !a.ok()).collect();
    let quickest_error = short_errors
        .iter()
        .map(|a| a.end.duration_since(a.start))
        .min()
        .unwrap_or_default();
    assert!(
        !short_errors.is_empty() && quickest_error >= Duration::from_millis(290),
        "failover_hold 300ms: errors after the hold only ({} errors, the quickest {quickest_error:?})",
        short_errors.len()
    );

    let metrics = lb::http_get(admin, "/metrics").body;
    let holds = |listener: &str, outcome: &str| {
        lb::metric_in(
            &metrics,
            "galera_lb_client_holds_total",
            &[("listener", listener), ("outcome", outcome)],
        )
        .unwrap_or(-1.0)
    };
    assert!(
        holds("held", "served") >= held_in_gap.len() as f64 - 6.0,
        "{metrics}"
    );
    assert_eq!(holds("held", "expired"), 0.0);
    assert!(
        holds("short", "expired") >= short_errors.len() as f64,
        "{metrics}"
    );
    assert_eq!(holds("plain", "served"), 0.0);
    assert_eq!(
        lb::metric_in(&metrics, "galera_lb_clients_held", &[]),
        Some(0.0),
        "nobody waits any more"
    );
    println!(
        "every backend drained for {GAP:?}: no hold: {} of {} clients in the gap got ERROR 1429; \
         failover_hold 3s: {} clients in the gap, 0 errors, the longest waited {:.2} s \
         ({} holds served); failover_hold 300ms: {} errors, none sooner than {:.0} ms",
        plain_errors.len(),
        plain_in_gap.len(),
        held_in_gap.len(),
        longest.as_secs_f64(),
        holds("held", "served"),
        short_errors.len(),
        quickest_error.as_secs_f64() * 1000.0
    );
    drop(lb);
}

/// A node killed under connect churn is taken out in well under a check interval: the refused
/// connects of clients ask for checks at once (50 ms apart at the least), and `fall` failed
/// checks come in a fraction of a second instead of `fall` × `interval`.
#[test]
fn refused_connects_check_a_killed_node_at_once_instead_of_at_the_next_interval() {
    let session = FaultSession::begin();
    let cluster = session.cluster;
    let port = free_port();
    const INTERVAL: Duration = Duration::from_secs(5);
    let mut yaml = format!("listeners:\n  - name: any\n    bind: 127.0.0.1:{port}\nbackends:\n");
    for address in &cluster.addresses {
        yaml.push_str(&format!("  - address: {address}\n"));
    }
    yaml.push_str(&format!(
        "health:\n  interval: {}s\n  fall: 2\n  user: monitor\n  password: monitor\n",
        INTERVAL.as_secs()
    ));
    let lb = LbProcess::start(&yaml);
    let load = Load::start(LoadSpec::reads("any", port));
    load.wait_for(load.epoch, Duration::from_secs(10), |a| {
        a.ok() && a.node.as_deref() == Some("node3")
    })
    .expect("node3 serves before the kill");
    cluster.kill(3);
    let killed = Instant::now();
    let address = cluster.node_address(3).to_string();
    let deadline = killed + INTERVAL * 3;
    let down = loop {
        let log = lb.log();
        if log
            .lines()
            .any(|l| l.contains("backend down") && l.contains(&address))
        {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "node3 never went down:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let detection = down.duration_since(killed);
    std::thread::sleep(Duration::from_millis(500));
    let attempts = load.finish();
    // Sessions that were on node3 at the kill are cut; every later one fails over.
    let cut = attempts
        .iter()
        .filter(|a| !a.ok() && a.start < killed + Duration::from_millis(100))
        .count();
    let errors = load::errors_after(&attempts, killed + Duration::from_millis(100));
    println!(
        "kill -9 of node3 under connect churn, health.interval {INTERVAL:?}, fall 2: taken out \
         after {:.0} ms; {cut} sessions on it were cut by the kill, and {} client errors after \
         it (each refused connect failed over to another node)",
        detection.as_secs_f64() * 1000.0,
        errors.len()
    );
    assert!(
        detection < Duration::from_millis(1500),
        "refused connects check at once: {detection:?} (fall × interval would be {:?})\n{}",
        INTERVAL * 2,
        lb.log()
    );
    assert!(
        errors.is_empty(),
        "connect failover hides the kill: {}",
        describe(&errors, killed, 10)
    );
}

/// The first bytes a client of `port` gets within 5 s, and how long they took.
fn first_bytes(port: u16) -> (Vec<u8>, Duration) {
    use std::io::Read;
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap_or(0);
    (buf[..n].to_vec(), started.elapsed())
}

/// `limits.max_held_clients` bounds the clients that wait: past it a client gets the ERR packet
/// at once, counted as `full`; the one that waits is served when a backend is back.
#[test]
fn past_max_held_clients_a_client_gets_the_err_packet_at_once() {
    let backend = lb::echo_backend("hello");
    let (port, control_port, admin_port) = (free_port(), free_port(), free_port());
    let control_address: SocketAddr = ([127, 0, 0, 1], control_port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let yaml = format!(
        "listeners:\n  - name: held\n    bind: 127.0.0.1:{port}\n    failover_hold: 3s\n\
         backends:\n  - address: {backend}\n{}limits:\n  max_held_clients: 1\n\
         control:\n  bind: {control_address}\nadmin:\n  bind: {admin}\n",
        lb::NO_CHECKS
    );
    let lb = LbProcess::start(&yaml);
    assert_eq!(
        control(control_address, &format!("drain {backend}\n")),
        "Ok\n"
    );
    let waiting = std::thread::spawn(move || first_bytes(port));
    std::thread::sleep(Duration::from_millis(300));
    let (refused, refused_after) = first_bytes(port);
    assert!(
        refused.len() > 7 && refused[4] == 0xff && refused_after < Duration::from_millis(500),
        "the second client: an ERR packet at once, got {refused:?} after {refused_after:?}"
    );
    assert!(
        String::from_utf8_lossy(&refused).contains("no usable backend"),
        "{refused:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        control(control_address, &format!("ready {backend}\n")),
        "Ok\n"
    );
    let (greeting, waited) = waiting.join().unwrap();
    assert_eq!(greeting, b"hello\n", "the held client is served");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    let metrics = lb::http_get(admin, "/metrics").body;
    let holds = |outcome: &str| {
        lb::metric_in(
            &metrics,
            "galera_lb_client_holds_total",
            &[("listener", "held"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (holds("served"), holds("full"), holds("expired")),
        (Some(1.0), Some(1.0), Some(0.0)),
        "{metrics}"
    );
    drop(lb);
}

/// A writer listener whose pool has no writable node (all `read_only`, as during a switch in
/// which the new writer is not open for writes yet) answers "no usable backend ... as the
/// writer" without a hold (it used to say "Too many connections"), and with a hold keeps the
/// client until a node is writable again.
#[test]
fn a_writer_listener_holds_clients_while_every_node_is_read_only() {
    let session = FaultSession::begin();
    let cluster = session.cluster;
    let (held, plain) = (free_port(), free_port());
    let mut yaml = format!(
        "listeners:\n\
         \x20 - name: held\n    bind: 127.0.0.1:{held}\n    role: writer\n    failover_hold: 5s\n\
         \x20 - name: plain\n    bind: 127.0.0.1:{plain}\n    role: writer\n\
         backends:\n"
    );
    for address in &cluster.addresses {
        yaml.push_str(&format!("  - address: {address}\n"));
    }
    yaml.push_str("health:\n  interval: 300ms\n  user: monitor\n  password: monitor\n");
    let lb = LbProcess::start(&yaml);
    for n in 1..=3 {
        cluster.read_only(n, true);
    }
    std::thread::sleep(Duration::from_secs(2)); // checks see read_only everywhere
    let (refused, _) = first_bytes(plain);
    let text = String::from_utf8_lossy(&refused).to_string();
    assert!(
        refused.len() > 7
            && refused[4] == 0xff
            && text.contains("no usable backend for listener 'plain'")
            && text.contains("as the writer"),
        "{text:?}\n{}",
        lb.log()
    );
    let waiting = std::thread::spawn(move || first_bytes(held));
    std::thread::sleep(Duration::from_millis(1000));
    cluster.read_only(2, false);
    let (greeting, waited) = waiting.join().unwrap();
    assert!(
        greeting.len() > 5 && greeting[4] == 10,
        "a server greeting (protocol 10) once node2 is writable: {greeting:?}\n{}",
        lb.log()
    );
    println!(
        "every node read_only: without a hold ERR 1429 ({text:?}); with failover_hold 5s the \
         client got node2's greeting after {:.2} s",
        waited.as_secs_f64()
    );
    drop(lb);
}

/// A session the backend resets (RST, as when a node dies with a query unread) asks for a
/// check of that node at once, not at the next `health.interval`.
#[test]
fn a_session_reset_by_its_backend_checks_that_node_at_once() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.write_all(b"hello\n");
                let mut byte = [0u8; 1];
                let _ = stream.read(&mut byte);
                // Closed with data unread and SO_LINGER 0: the kernel sends a RST.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            });
        }
    });
    let (port, admin_port) = (free_port(), free_port());
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let yaml = format!(
        "listeners:\n  - name: any\n    bind: 127.0.0.1:{port}\nbackends:\n  - address: {backend}\n\
         health:\n  check: tcp\n  interval: 1h\nadmin:\n  bind: {admin}\n"
    );
    let lb = LbProcess::start(&yaml);
    let checks = || {
        lb::metric(
            admin,
            "galera_lb_health_check_duration_seconds_count",
            &[("backend", &backend.to_string())],
        )
        .unwrap_or(0.0)
    };
    let before = checks();
    assert!(before >= 1.0, "the first check ran");
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut greeting = [0u8; 6];
    client.read_exact(&mut greeting).unwrap();
    client.write_all(b"xy").unwrap();
    let reset = Instant::now();
    let mut rest = [0u8; 16];
    let _ = client.read(&mut rest);
    while checks() <= before {
        assert!(
            reset.elapsed() < Duration::from_secs(3),
            "a check after the reset (interval 1h)\n{}",
            lb.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "a session reset by its backend: that node checked again {:.0} ms later (interval 1h)",
        reset.elapsed().as_secs_f64() * 1000.0
    );
}
