//! Control-port changes must not get slower faster than the number of backends grows.
//!
//! The real binary, no health checks, one control connection sending adds one at a time (each
//! waits for its `Ok`, as a script piping lines into `nc` does). No server listens at the added
//! addresses; nothing connects to them. The figure is a ratio measured in the same run, not a
//! time: the adds around 4000 backends against those around 1000. A change that copies the
//! pool (linear in the backends) gives at most about 4×; a change whose cost grows with the
//! square of the backends (as before: every change rebuilt everything with linear searches
//! inside) gives 16×. The test stops as soon as two blocks in a row are over the limit, and
//! gives up after [`GIVE_UP`], so the old code fails it (a debug build: at 2250 backends, after 86 s).

#[allow(dead_code)]
#[path = "support/lb.rs"]
mod lb;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lb::{LbProcess, NO_CHECKS, free_port};

/// Adds per timed block.
const BLOCK: usize = 250;
/// The reference blocks end here (about 1000 backends)...
const REFERENCE_END: usize = 1000;
/// ...and the compared ones here: four times as many backends.
const LAST: usize = 4000;
/// The largest ratio of a block's time to the reference's.
const LIMIT: f64 = 8.0;
/// Stops a run that is far too slow to be worth finishing.
const GIVE_UP: Duration = Duration::from_secs(120);

fn address(i: usize) -> String {
    format!("127.1.{}.{}:5599", i / 250, i % 250 + 1)
}

#[test]
fn the_cost_of_an_add_grows_at_most_linearly_with_the_backends() {
    let (listen, control) = (free_port(), free_port());
    let yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:{listen}\nbackends:\n  \
         - address: 127.0.0.1:5597\n{NO_CHECKS}control:\n  bind: 127.0.0.1:{control}\n"
    );
    let _lb = LbProcess::start_with(&yaml, |c| {
        // One log line per add would be most of the work: the ratio is about the updater.
        c.env("RUST_LOG", "info,galera_lb::sources::control=warn");
    });
    let mut stream = TcpStream::connect(("127.0.0.1", control)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    let mut ask = |line: &str| {
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        replies.read_line(&mut reply).unwrap();
        reply
    };
    assert_eq!(ask("interactive"), "Ok\n");

    let started = Instant::now();
    let mut blocks: Vec<(usize, f64)> = Vec::new();
    let mut reference = f64::NAN;
    let mut over = 0;
    let mut block_started = Instant::now();
    for i in 0..LAST {
        assert_eq!(ask(&format!("{}:1", address(i))), "Ok\n", "add {i}");
        let done = i + 1;
        if done % BLOCK != 0 {
            continue;
        }
        let seconds = block_started.elapsed().as_secs_f64();
        block_started = Instant::now();
        blocks.push((done, seconds));
        if done == REFERENCE_END {
            // The median of the blocks from 250 to 1000 backends: one hiccup does not move it.
            let mut times: Vec<f64> = blocks[1..].iter().map(|b| b.1).collect();
            times.sort_by(f64::total_cmp);
            reference = times[times.len() / 2];
        }
        if done > REFERENCE_END {
            over = if seconds / reference > LIMIT {
                over + 1
            } else {
                0
            };
            assert!(
                over < 2,
                "adds up to {done} took {:.1}× the time of those around {REFERENCE_END} \
                 backends, twice in a row (limit {LIMIT}×); blocks (adds, s): {blocks:?}",
                seconds / reference,
            );
        }
        assert!(
            started.elapsed() < GIVE_UP,
            "gave up after {done} adds and {GIVE_UP:?}; blocks (adds, s): {blocks:?}"
        );
    }
    let last = blocks.last().unwrap().1;
    eprintln!(
        "{LAST} adds in {:.2} s; the last {BLOCK} took {:.1}× the time of {BLOCK} around \
         {REFERENCE_END} backends",
        started.elapsed().as_secs_f64(),
        last / reference
    );
}
