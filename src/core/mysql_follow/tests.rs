use super::*;

const AUTOCOMMIT: u16 = 2;

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    bytes.push(seq);
    bytes.extend_from_slice(payload);
    bytes
}

fn greeting(caps: u32, ext: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(&[1; 8]);
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&ext.to_le_bytes());
    p.extend_from_slice(&[2; 13]);
    p.extend_from_slice(b"mysql_native_password\0");
    packet(0, &p)
}

fn response(caps: u32, ext: u32) -> Vec<u8> {
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 19]);
    p.extend_from_slice(&ext.to_le_bytes());
    p.extend_from_slice(b"app\0");
    packet(1, &p)
}

fn ok(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    packet(seq, &p)
}

fn eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xFE, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    packet(seq, &p)
}

fn ok_fe(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xFE, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    packet(seq, &p)
}

fn err(seq: u8) -> Vec<u8> {
    packet(seq, b"\xFF\x28\x04#42000You have an error")
}

fn query(sql: &str) -> Vec<u8> {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    packet(0, &p)
}

fn column(seq: u8) -> Vec<u8> {
    packet(
        seq,
        b"\x03def\x04test\x01t\x01t\x01a\x01a\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00",
    )
}

const BASE: u32 = CLIENT_PROTOCOL_41 | (1 << 15) | (1 << 19);

/// A follower past a login with these client capabilities (the server offers everything).
fn logged_in(client_caps: u32) -> Follower {
    let mut f = Follower::new();
    f.server_bytes(&greeting(!CLIENT_MYSQL, u32::MAX));
    f.client_bytes(&response(client_caps, 0));
    f.server_bytes(&ok(2, AUTOCOMMIT));
    f
}

/// Feeds `reply` one byte at a time, asserting the session is busy until its last byte.
fn busy_until_end(f: &mut Follower, reply: &[u8]) {
    for (i, byte) in reply.iter().enumerate() {
        assert!(!f.is_idle(), "idle before byte {i} of the reply");
        f.server_bytes(std::slice::from_ref(byte));
    }
}

fn result_set(deprecate_eof: bool, rows: &[&[u8]], status: u16) -> Vec<u8> {
    let mut r = packet(1, &[2]);
    r.extend(column(2));
    r.extend(column(3));
    let mut seq = 4;
    if !deprecate_eof {
        r.extend(eof(seq, AUTOCOMMIT));
        seq += 1;
    }
    for row in rows {
        r.extend(packet(seq, row));
        seq += 1;
    }
    r.extend(match deprecate_eof {
        true => ok_fe(seq, status),
        false => eof(seq, status),
    });
    r
}

#[test]
fn a_login_then_queries_are_idle_between_them() {
    let mut f = Follower::new();
    assert!(!f.is_idle());
    f.server_bytes(&greeting(!CLIENT_MYSQL, 0));
    assert!(!f.is_idle());
    f.client_bytes(&response(BASE, 0));
    assert!(!f.is_idle(), "idle while authenticating");
    f.server_bytes(&packet(2, b"\xFE mysql_native_password\0abc"));
    f.client_bytes(&packet(3, b"scramble"));
    assert!(!f.is_idle());
    f.server_bytes(&ok(4, AUTOCOMMIT));
    assert!(f.is_idle());
    f.client_bytes(&query("UPDATE t SET a = 1"));
    assert!(!f.is_idle(), "idle with a command in flight");
    busy_until_end(&mut f, &ok(1, AUTOCOMMIT));
    assert!(f.is_idle());
}

#[test]
fn a_partial_command_is_in_flight() {
    let mut f = logged_in(BASE);
    let q = query("SELECT 1");
    f.client_bytes(&q[..2]);
    assert!(!f.is_idle());
    f.client_bytes(&q[2..]);
    busy_until_end(&mut f, &result_set(false, &[b"\x011"], AUTOCOMMIT));
    assert!(f.is_idle());
}

#[test]
fn an_open_transaction_is_not_idle_until_it_ends() {
    let mut f = logged_in(BASE);
    f.client_bytes(&query("BEGIN"));
    f.server_bytes(&ok(1, AUTOCOMMIT | SERVER_STATUS_IN_TRANS));
    assert!(!f.is_idle());
    f.client_bytes(&query("SELECT a FROM t"));
    f.server_bytes(&result_set(
        false,
        &[b"\x011"],
        AUTOCOMMIT | SERVER_STATUS_IN_TRANS,
    ));
    assert!(!f.is_idle());
    // An error leaves the transaction open.
    f.client_bytes(&query("bad"));
    f.server_bytes(&err(1));
    assert!(!f.is_idle());
    f.client_bytes(&query("COMMIT"));
    busy_until_end(&mut f, &ok(1, AUTOCOMMIT));
    assert!(f.is_idle());
}

#[test]
fn rows_that_look_like_ok_or_eof_do_not_end_a_result() {
    for deprecate in [false, true] {
        let caps = BASE | if deprecate { CLIENT_DEPRECATE_EOF } else { 0 };
        let mut f = logged_in(caps);
        f.client_bytes(&packet(0, &[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0]));
        // Binary rows start with 0x00 like an OK packet; a short text row may start with
        // 0xFB (NULL) or look like anything else.
        let rows: [&[u8]; 4] = [
            b"\x00\x00\x00\x00\x00\x00\x00",
            b"\x00\x00\x02\x00\x00\x00",
            b"\xFB\xFB",
            b"\x00",
        ];
        busy_until_end(&mut f, &result_set(deprecate, &rows, AUTOCOMMIT));
        assert!(f.is_idle(), "deprecate_eof {deprecate}");
    }
}

#[test]
fn a_row_of_16_mib_continued_by_a_short_packet_starting_with_0xfe_is_a_row() {
    let mut f = logged_in(BASE);
    f.client_bytes(&query("SELECT big"));
    let mut head = packet(1, &[1]);
    head.extend(column(2));
    head.extend(eof(3, AUTOCOMMIT));
    f.server_bytes(&head);
    let mut big = vec![0xFE];
    big.extend_from_slice(&(MAX_PAYLOAD as u64 + 10).to_le_bytes());
    big.resize(MAX_PAYLOAD, b'x');
    f.server_bytes(&packet(4, &big));
    assert!(!f.is_idle());
    // The continuation: short, and starting with 0xFE.
    f.server_bytes(&packet(5, &[0xFE, 0, 0, 2, 0, 0, 0, 0, 0, 0, b'x']));
    assert!(!f.is_idle());
    busy_until_end(&mut f, &eof(6, AUTOCOMMIT));
    assert!(f.is_idle());
}

#[test]
fn more_results_keep_the_reply_open() {
    let mut f = logged_in(BASE);
    f.client_bytes(&query("CALL p()"));
    let mut reply = result_set(false, &[b"\x011"], AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS);
    reply.extend(ok(7, AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS));
    reply.extend(ok(8, AUTOCOMMIT));
    busy_until_end(&mut f, &reply);
    assert!(f.is_idle());
}

#[test]
fn an_error_in_the_middle_of_rows_ends_the_reply() {
    let mut f = logged_in(BASE);
    f.client_bytes(&query("SELECT"));
    let mut reply = packet(1, &[1]);
    reply.extend(column(2));
    reply.extend(eof(3, AUTOCOMMIT));
    reply.extend(packet(4, b"\x011"));
    reply.extend(err(5));
    busy_until_end(&mut f, &reply);
    assert!(f.is_idle());
}

#[test]
fn prepare_replies_are_followed_with_and_without_eof() {
    for deprecate in [false, true] {
        let caps = BASE | if deprecate { CLIENT_DEPRECATE_EOF } else { 0 };
        let mut f = logged_in(caps);
        f.client_bytes(&packet(0, b"\x16SELECT ? FROM t WHERE b = ?"));
        let mut reply = packet(1, &[0, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]);
        let mut seq = 2;
        for _ in 0..2 {
            reply.extend(column(seq));
            seq += 1;
        }
        if !deprecate {
            reply.extend(eof(seq, AUTOCOMMIT));
            seq += 1;
        }
        reply.extend(column(seq));
        seq += 1;
        if !deprecate {
            reply.extend(eof(seq, AUTOCOMMIT));
        }
        busy_until_end(&mut f, &reply);
        assert!(f.is_idle(), "deprecate_eof {deprecate}");
        // Closing a statement has no answer.
        f.client_bytes(&packet(0, &[0x19, 1, 0, 0, 0]));
        assert!(f.is_idle());
    }
}

#[test]
fn local_infile_waits_for_the_file_and_the_answer() {
    let mut f = logged_in(BASE);
    f.client_bytes(&query("LOAD DATA LOCAL INFILE 'x' INTO TABLE t"));
    f.server_bytes(&packet(1, b"\xFBx"));
    assert!(!f.is_idle());
    f.client_bytes(&packet(2, b"1\n2\n"));
    f.client_bytes(&packet(3, b""));
    assert!(!f.is_idle());
    busy_until_end(&mut f, &ok(4, AUTOCOMMIT));
    assert!(f.is_idle());
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut f = logged_in(BASE);
    f.client_bytes(&query("SET a = 1"));
    f.client_bytes(&packet(0, &[0x0E]));
    f.server_bytes(&ok(1, AUTOCOMMIT));
    assert!(!f.is_idle(), "idle with the ping unanswered");
    f.server_bytes(&ok(1, AUTOCOMMIT));
    assert!(f.is_idle());
}

#[test]
fn mariadb_progress_reports_are_not_the_end() {
    let mut f = Follower::new();
    f.server_bytes(&greeting(!CLIENT_MYSQL, MARIADB_CLIENT_PROGRESS));
    f.client_bytes(&response(BASE, MARIADB_CLIENT_PROGRESS));
    f.server_bytes(&ok(2, AUTOCOMMIT));
    f.client_bytes(&query("ALTER TABLE t ADD c INT"));
    f.server_bytes(&packet(1, b"\xFF\xFF\xFF\x01\x01\x02\x00\x00\x00\x00"));
    assert!(!f.is_idle());
    f.server_bytes(&ok(2, AUTOCOMMIT));
    assert!(f.is_idle());
}

#[test]
fn mariadb_cached_metadata_may_skip_the_definitions_but_not_their_eof() {
    let ext = MARIADB_CLIENT_CACHE_METADATA;
    for deprecate in [true, false] {
        let caps = BASE | if deprecate { CLIENT_DEPRECATE_EOF } else { 0 };
        let mut f = Follower::new();
        f.server_bytes(&greeting(!CLIENT_MYSQL, ext));
        f.client_bytes(&response(caps, ext));
        f.server_bytes(&ok(2, AUTOCOMMIT));
        f.client_bytes(&packet(0, &[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0]));
        // As sysbench's libmariadb gets it: the count with "no metadata", then (without
        // CLIENT_DEPRECATE_EOF) the EOF that would end the definitions, a binary row, the EOF.
        let mut reply = packet(1, &[1, 0]);
        let mut seq = 2;
        if !deprecate {
            reply.extend(eof(seq, AUTOCOMMIT | SERVER_STATUS_IN_TRANS));
            seq += 1;
        }
        reply.extend(packet(seq, b"\x00\x00\x03abc"));
        reply.extend(match deprecate {
            true => ok_fe(seq + 1, AUTOCOMMIT),
            false => eof(seq + 1, AUTOCOMMIT),
        });
        busy_until_end(&mut f, &reply);
        assert!(f.is_idle(), "deprecate_eof {deprecate}");
    }
}

#[test]
fn tls_compression_cursors_and_unknown_commands_are_never_idle() {
    let mut tls = Follower::new();
    tls.server_bytes(&greeting(!CLIENT_MYSQL, 0));
    tls.client_bytes(&packet(1, &(BASE | CLIENT_SSL).to_le_bytes()));
    assert_eq!(tls.opaque_reason(), Some(Opaque::Tls));

    let compressed = logged_in(BASE | CLIENT_COMPRESS);
    assert_eq!(compressed.opaque_reason(), Some(Opaque::Compressed));
    assert!(!compressed.is_idle());

    let mut cursor = logged_in(BASE);
    cursor.client_bytes(&packet(0, &[0x17, 1, 0, 0, 0, 1, 1, 0, 0, 0]));
    cursor.server_bytes(&ok(1, AUTOCOMMIT));
    assert!(cursor.opaque_reason().is_some() && !cursor.is_idle());

    let mut binlog = logged_in(BASE);
    binlog.client_bytes(&packet(0, &[0x12, 4, 0, 0, 0]));
    assert!(!binlog.is_idle());

    let mut unprompted = logged_in(BASE);
    unprompted.server_bytes(&err(0));
    assert!(!unprompted.is_idle());
}

#[test]
fn what_is_fed_in_one_piece_or_byte_by_byte_is_followed_alike() {
    let mut stream_client = response(BASE, 0);
    stream_client.extend(query("SELECT 1"));
    let mut stream_server = greeting(!CLIENT_MYSQL, 0);
    let login = ok(2, AUTOCOMMIT);
    let reply = result_set(false, &[b"\x011", b"\x012"], AUTOCOMMIT);
    let mut whole = Follower::new();
    whole.server_bytes(&stream_server);
    whole.client_bytes(&stream_client[..stream_client.len() - query("SELECT 1").len()]);
    whole.server_bytes(&login);
    whole.client_bytes(&query("SELECT 1"));
    whole.server_bytes(&reply);
    assert!(whole.is_idle());

    stream_server.extend(&login);
    let mut bytes = Follower::new();
    for b in &stream_server[..stream_server.len() - login.len()] {
        bytes.server_bytes(std::slice::from_ref(b));
    }
    for b in &stream_client[..stream_client.len() - query("SELECT 1").len()] {
        bytes.client_bytes(std::slice::from_ref(b));
    }
    for b in &login {
        bytes.server_bytes(std::slice::from_ref(b));
    }
    assert!(bytes.is_idle());
    for b in &query("SELECT 1") {
        bytes.client_bytes(std::slice::from_ref(b));
    }
    busy_until_end(&mut bytes, &reply);
    assert!(bytes.is_idle());
}
