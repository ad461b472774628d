//! How long picking a backend takes, per policy, for a small (3) and a large (64) pool; and the
//! same while another thread swaps the routing snapshot as fast as it can (a weight change
//! through the updater, as the control port makes one), which is far more often than health
//! changes or control requests ever swap it. Run with `cargo bench --bench pick`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use galera_lb::config::{Config, PolicyKind};
use galera_lb::state::snapshot::Updater;

fn config(policy: PolicyKind, backends: usize) -> Config {
    // No checks: every backend is healthy from the start, as after a first good round.
    let mut yaml = format!(
        "health:\n  check: none\nlisteners:\n  - name: rw\n    bind: 127.0.0.1:3306\n    policy: {}\nbackends:\n",
        policy.as_str()
    );
    for i in 0..backends {
        yaml.push_str(&format!(
            "  - address: 127.0.0.1:{}\n    weight: {}\n",
            10_000 + i,
            1 + i % 3
        ));
    }
    Config::from_yaml(&yaml, "bench").unwrap()
}

fn pick(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    for policy in [
        PolicyKind::RoundRobin,
        PolicyKind::Weighted,
        PolicyKind::LeastConn,
        PolicyKind::Random,
        PolicyKind::Source,
        PolicyKind::Single,
    ] {
        for backends in [3, 64] {
            let updater = runtime
                .block_on(Updater::new(&config(policy, backends)))
                .unwrap();
            let router = updater.router();
            c.bench_function(&format!("pick/{}/{backends}", policy.as_str()), |b| {
                b.iter(|| {
                    let snapshot = router.load();
                    let route = snapshot.route("rw").unwrap();
                    black_box(route.pick(black_box(client), &[]).unwrap())
                })
            });
        }
    }
}

/// Picks while a second thread keeps replacing the snapshot, alternating one backend's weight.
fn pick_during_swaps(c: &mut Criterion) {
    let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    for policy in [
        PolicyKind::RoundRobin,
        PolicyKind::Weighted,
        PolicyKind::LeastConn,
    ] {
        for backends in [3, 64] {
            let config = config(policy, backends);
            let stop = Arc::new(AtomicBool::new(false));
            let swaps = Arc::new(AtomicU64::new(0));
            let (router_tx, router_rx) = std::sync::mpsc::channel();
            let swapper = {
                let (stop, swaps) = (stop.clone(), swaps.clone());
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    let mut updater = runtime.block_on(Updater::new(&config)).unwrap();
                    router_tx.send(updater.router()).unwrap();
                    let mut weight = 1.0;
                    while !stop.load(Ordering::Relaxed) {
                        weight = if weight == 1.0 { 2.0 } else { 1.0 };
                        runtime
                            .block_on(updater.set_weight("127.0.0.1:10000", weight))
                            .unwrap();
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            let router = router_rx.recv().unwrap();
            let name = format!("pick_during_swaps/{}/{backends}", policy.as_str());
            c.bench_function(&name, |b| {
                b.iter(|| {
                    let snapshot = router.load();
                    let route = snapshot.route("rw").unwrap();
                    black_box(route.pick(black_box(client), &[]).unwrap())
                })
            });
            stop.store(true, Ordering::Relaxed);
            swapper.join().unwrap();
            assert!(
                swaps.load(Ordering::Relaxed) > 0,
                "{name}: the snapshot was never swapped"
            );
        }
    }
}

criterion_group!(benches, pick, pick_during_swaps);
criterion_main!(benches);
