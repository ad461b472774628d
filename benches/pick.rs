//! How long picking a backend takes, per policy, for a small (3) and a large (64) pool.
//! Run with `cargo bench --bench pick`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use galera_lb::config::{Config, PolicyKind};
use galera_lb::snapshot::Updater;

fn config(policy: PolicyKind, backends: usize) -> Config {
    let mut yaml = format!(
        "listeners:\n  - name: rw\n    bind: 127.0.0.1:3306\n    policy: {}\nbackends:\n",
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

criterion_group!(benches, pick);
criterion_main!(benches);
