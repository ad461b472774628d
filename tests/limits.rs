//! Limits under load, with the real binary in front of fake backends in this process, all on
//! loopback: 8000 concurrent proxied connections held and released within a 20000 descriptor
//! limit (all served, memory back near the start once they close, no growth over rounds), and
//! slow or silent clients that cannot take more than the configured limits. The descriptor
//! exhaustion test (a low RLIMIT_NOFILE) is in `tests/cli.rs`; the control port's limits are in
//! `tests/control.rs`.

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use galera_lb::core::mysql_packet::parse_err_packet;
use lb::{LbProcess, free_port, rss_kb, simple_config, with_descriptor_limit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NO_CHECKS: &str = "health:\n  check: none\n";

/// Raises this process's soft descriptor limit to `want`; fails when the hard limit is lower.
fn raise_descriptor_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= want,
            "this test needs {want} file descriptors and the hard limit is {}; raise it \
             (ulimit -Hn) for the test run",
            limit.rlim_max
        );
        limit.rlim_cur = want;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// A fake backend: greets each client with "g\n", then echoes.
async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                stream.write_all(b"g\n").await?;
                let mut buf = [0u8; 512];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    stream.write_all(&buf[..n]).await?;
                }
            });
        }
    });
    address
}

/// One round trip on every stream, 200 at a time; panics naming the first that fails.
async fn round_trip_all(streams: &mut [TcpStream], what: &str) {
    for (batch_index, batch) in streams.chunks_mut(200).enumerate() {
        let trips = batch.iter_mut().enumerate().map(|(i, stream)| async move {
            stream.write_all(b"ping").await?;
            let mut back = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
                .await
                .map_err(|_| std::io::Error::other("no echo within 10 s"))??;
            assert_eq!(&back, b"ping");
            Ok::<_, std::io::Error>(i)
        });
        for result in futures_join_all(trips).await {
            if let Err(e) = result {
                panic!("{what}: a round trip in batch {batch_index} failed: {e}");
            }
        }
    }
}

/// `join_all` without a dependency: spawns nothing, polls all futures in this task.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// Opens `count` clients through `proxy`, 200 at a time, each reading its greeting.
async fn open_clients(proxy: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    while streams.len() < count {
        let batch = (count - streams.len()).min(200);
        let opened = futures_join_all((0..batch).map(|_| async move {
            let mut stream = TcpStream::connect(proxy).await?;
            let mut greeting = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut greeting))
                .await
                .map_err(|_| std::io::Error::other("no greeting within 10 s"))??;
            if &greeting != b"g\n" {
                let mut reply = greeting.to_vec();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut reply))
                        .await;
                return Err(std::io::Error::other(format!(
                    "refused: {:?}",
                    parse_err_packet(&reply).map_or_else(
                        || String::from_utf8_lossy(&reply).into_owned(),
                        |e| format!("{} {}", e.code, e.message)
                    )
                )));
            }
            Ok::<_, std::io::Error>(stream)
        }))
        .await;
        for result in opened {
            let opened_so_far = streams.len();
            streams.push(result.unwrap_or_else(|e| {
                panic!("client {opened_so_far} of {count} was not served: {e}")
            }));
        }
    }
    streams
}

#[test]
fn eight_thousand_connections_are_held_and_released_and_memory_comes_back() {
    const CLIENTS: usize = 8000;
    // This process holds both ends' backend side: 8000 clients and 8000 accepted streams.
    raise_descriptor_limit(19_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = runtime.block_on(echo_backend());
    let port = free_port();
    let yaml = simple_config(
        port,
        "round_robin",
        &[backend],
        &format!(
            "{NO_CHECKS}limits:\n  max_connections: 9000\n  connect_timeout: 5s\n  park_idle_after: 500ms\n"
        ),
    );
    let lb = LbProcess::start_with(&yaml, with_descriptor_limit(20_000));
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    std::thread::sleep(Duration::from_millis(500));
    let start_kb = rss_kb(lb.pid());

    let mut after_close = Vec::new();
    for round in 1..=2 {
        let started = Instant::now();
        let mut clients = runtime.block_on(open_clients(proxy, CLIENTS));
        runtime.block_on(round_trip_all(&mut clients, "with all open"));
        let opened_in = started.elapsed();
        // Idle long enough to be parked, then every one of them works again.
        std::thread::sleep(Duration::from_secs(2));
        let open_kb = rss_kb(lb.pid());
        runtime.block_on(round_trip_all(&mut clients, "after they were idle"));
        drop(clients);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut closed_kb = rss_kb(lb.pid());
        while closed_kb > start_kb + 4096 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            closed_kb = rss_kb(lb.pid());
        }
        eprintln!(
            "round {round}: {CLIENTS} clients served in {opened_in:?}; RSS start {start_kb} kB, \
             {CLIENTS} idle {open_kb} kB ({:.2} kB each), after closing {closed_kb} kB",
            (open_kb.saturating_sub(start_kb)) as f64 / CLIENTS as f64
        );
        assert!(
            closed_kb <= start_kb + 4096,
            "round {round}: RSS did not come back near the start after the clients closed: \
             {start_kb} kB at the start, {closed_kb} kB 10 s after closing"
        );
        after_close.push(closed_kb);
    }
    assert!(
        after_close[1] <= after_close[0] + 1024,
        "RSS grows from round to round (a leak?): {after_close:?} kB after each round"
    );
    let log = lb.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn silent_and_trickling_clients_get_no_more_than_the_limits_and_idle_ones_are_closed() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = runtime.block_on(echo_backend());
    let port = free_port();
    let yaml = simple_config(
        port,
        "round_robin",
        &[backend],
        &format!(
            "{NO_CHECKS}limits:\n  max_connections: 50\n  client_idle_timeout: 2s\n  \
             park_idle_after: 500ms\n"
        ),
    );
    let lb = LbProcess::start(&yaml);
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    runtime.block_on(async {
        // 40 silent clients (they never send a byte) and 10 that send one byte per second.
        let silent = open_clients(proxy, 40).await;
        let mut tricklers = open_clients(proxy, 10).await;
        // The global limit holds: the 51st client gets ERROR 1040, and galera-lb stays well.
        let mut extra = TcpStream::connect(proxy).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut reply))
            .await
            .expect("the extra client gets its answer at once")
            .unwrap();
        let error = parse_err_packet(&reply).expect("an ERR packet");
        assert_eq!(error.code, 1040, "{error:?}");

        // For 4 s the tricklers keep their sessions alive one byte a second; the silent ones
        // pass the idle timeout and are closed.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            for stream in &mut tricklers {
                stream.write_all(b"x").await.unwrap();
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for (i, mut stream) in silent.into_iter().enumerate() {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut rest));
            assert!(
                read.await.is_ok(),
                "silent client {i} is still open after 4 s (client_idle_timeout: 2s)"
            );
        }
        // Their slots are free again: new clients are served.
        let mut fresh = open_clients(proxy, 30).await;
        round_trip_all(&mut fresh, "new clients after the silent ones were closed").await;
        round_trip_all(&mut tricklers, "the tricklers").await;
    });
    let log = lb.log();
    assert!(!log.contains("panicked"), "{log}");
}
