//! Shutdown leaves nothing behind: after `Running::drain`, every task galera-lb started (accept
//! loops, sessions, the updater, health checks, discovery, the control and admin ports and their
//! connections, the heap trimmer) has finished. Fake backends; the runtime's own count of alive
//! tasks is the measure.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use std::time::Duration;

use galera_lb::config::Config;
use lb::echo_backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
