//! How long galera-lb's parsers take on the inputs they see: control-port request lines (glbd's
//! protocol and the extensions), destinations, the MySQL ERR packet it writes and reads back,
//! the wsrep status rows a health check turns into a verdict, and the session follower
//! (`core::mysql_follow`) on one point select's bytes, what every proxied query pays for drains
//! that never cut a transaction.
//! Run with `cargo bench --bench parsers`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use galera_lb::core::mysql_follow::Follower;
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

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    bytes.push(seq);
    bytes.extend_from_slice(payload);
    bytes
}

/// A follower past a login with `CLIENT_DEPRECATE_EOF` (as sysbench's libmariadb logs in).
fn logged_in() -> Follower {
    let caps: u32 = !1;
    let mut greeting = vec![10];
    greeting.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0\x07\0\0\0");
    greeting.extend_from_slice(&[1; 8]);
    greeting.push(0);
    greeting.extend_from_slice(&(caps as u16).to_le_bytes());
    greeting.extend_from_slice(&[45, 2, 0]);
    greeting.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    greeting.extend_from_slice(&[21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let client: u32 = (1 << 9) | (1 << 15) | (1 << 24);
    let mut response = client.to_le_bytes().to_vec();
    response.extend_from_slice(&[0, 0, 0, 1, 45]);
    response.extend_from_slice(&[0; 23]);
    response.extend_from_slice(b"app\0");
    let mut f = Follower::new();
    f.server_bytes(&packet(0, &greeting));
    f.client_bytes(&packet(1, &response));
    f.server_bytes(&packet(2, &[0, 0, 0, 2, 0, 0, 0]));
    f
}

fn follow(c: &mut Criterion) {
    // oltp_point_select: COM_STMT_EXECUTE of `SELECT c FROM sbtest1 WHERE id=?`, and its binary
    // result: one column, its definition, one row of 120 bytes, the closing OK.
    let execute = packet(
        0,
        &[
            0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 0x39, 0x30, 0, 0,
        ],
    );
    let mut reply = packet(1, &[1]);
    reply.extend(packet(2, b"\x03def\x06sbtest\x07sbtest1\x07sbtest1\x01c\x01c\x0c\x08\x00\x78\x00\x00\x00\xfe\x81\x50\x00\x00\x00"));
    let mut row = vec![0, 0, 120];
    row.extend_from_slice(&[b'7'; 120]);
    reply.extend(packet(3, &row));
    reply.extend(packet(4, &[0xFE, 0, 0, 2, 0, 0, 0]));
    let follower = std::sync::Mutex::new(logged_in());
    c.bench_function("follow/point_select_exchange", |b| {
        b.iter(|| {
            follower.lock().unwrap().client_bytes(black_box(&execute));
            follower.lock().unwrap().server_bytes(black_box(&reply));
            assert!(follower.lock().unwrap().is_idle());
        })
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

criterion_group!(benches, control, mysql, wsrep, follow);
criterion_main!(benches);
