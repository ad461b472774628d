//! How long galera-lb's parsers take on the inputs they see: control-port request lines (glbd's
//! protocol and the extensions), destinations, the MySQL ERR packet it writes and reads back,
//! and the wsrep status rows a health check turns into a verdict.
//! Run with `cargo bench --bench parsers`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use galera_lb::core::mysql_packet::{NO_BACKEND, err_packet, parse_err_packet};
use galera_lb::core::wsrep::{WsrepStatus, parse_incoming_addresses};
use galera_lb::sources::control::{parse, parse_destination};

fn control(c: &mut Criterion) {
    for (name, line) in [
        ("getstat", "getstat"),
        ("getinfo_json", "getinfo json"),
        ("set_weight_v4", "192.168.0.17:3306:2.5"),
        ("remove_v6", "[2001:db8::17]:3306:-1"),
        ("drain", "drain 10.0.0.3:3306"),
        ("bad", "frobnicate the cluster please"),
    ] {
        c.bench_function(&format!("control_parse/{name}"), |b| {
            b.iter(|| black_box(parse(black_box(line), 3306)))
        });
    }
    c.bench_function("parse_destination/host_port_weight", |b| {
        b.iter(|| {
            black_box(parse_destination(
                black_box("db-node-3.example:3306:10"),
                3306,
            ))
        })
    });
}

fn mysql(c: &mut Criterion) {
    let message = "galera-lb: no usable backend for listener 'rw' (3 of 3 down)";
    c.bench_function("err_packet/build", |b| {
        b.iter(|| black_box(err_packet(NO_BACKEND, black_box(message))))
    });
    let packet = err_packet(NO_BACKEND, message);
    c.bench_function("err_packet/parse", |b| {
        b.iter(|| black_box(parse_err_packet(black_box(&packet))))
    });
    c.bench_function("err_packet/parse_truncated", |b| {
        b.iter(|| black_box(parse_err_packet(black_box(&packet[..packet.len() / 2]))))
    });
}

fn wsrep(c: &mut Criterion) {
    let rows: Vec<(String, String)> = [
        ("wsrep_local_state", "4"),
        ("wsrep_local_state_comment", "Synced"),
        ("wsrep_cluster_status", "Primary"),
        ("wsrep_cluster_size", "3"),
        ("wsrep_ready", "ON"),
        ("wsrep_connected", "ON"),
        ("wsrep_desync_count", "0"),
        ("wsrep_local_index", "1"),
        (
            "wsrep_cluster_state_uuid",
            "6b3b1f2e-3c2a-11ef-9a1b-0242ac120002",
        ),
        (
            "wsrep_incoming_addresses",
            "127.0.0.1:3316,127.0.0.1:3326,127.0.0.1:3336",
        ),
        ("wsrep_on", "ON"),
        ("read_only", "OFF"),
        ("wsrep_reject_queries", "NONE"),
        ("wsrep_sst_donor_rejects_queries", "OFF"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    c.bench_function("wsrep/status_and_verdict", |b| {
        b.iter(|| {
            let status = WsrepStatus::from_rows(black_box(rows.clone()));
            black_box(status.verdict(false))
        })
    });
    c.bench_function("wsrep/incoming_addresses", |b| {
        b.iter(|| {
            black_box(parse_incoming_addresses(black_box(
                "10.0.0.1:3306,10.0.0.2:3306,[2001:db8::3]:3306,AUTO",
            )))
        })
    });
}

criterion_group!(benches, control, mysql, wsrep);
criterion_main!(benches);
