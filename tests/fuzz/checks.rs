//! What each fuzz target does with one input, shared by the cargo-fuzz targets in
//! `tests/fuzz/fuzz_targets/` and by `tests/fuzz_corpus.rs`, which replays the committed seeds and
//! regression inputs on stable Rust. Every function must return for any input; a panic (a failed
//! assertion included) is a finding.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::time::{Duration, Instant};

use galera_lb::cli::glbd::{self, GlbdInvocation};
use galera_lb::config::diff;
use galera_lb::config::{Config, split_host_port};
use galera_lb::core::mysql_packet::{self, ServerError, parse_err_packet};
use galera_lb::core::wsrep::{WsrepStatus, parse_incoming_addresses};
use galera_lb::sources::control::{self, Request, take_line};
use galera_lb::sources::health::view::Views;

/// Default ports a control line is parsed with: the usual one, the extremes, and 0 (a listener
/// bound to port 0).
const DEFAULT_PORTS: [u16; 4] = [3306, 1, 65535, 0];

/// `control_line`: bytes as a control connection receives them, split into lines the way the
/// session splits them; every line parsed as a request and as a destination.
pub fn control_line(data: &[u8]) {
    let mut buffer = data.to_vec();
    let mut lines = Vec::new();
    while let Some(line) = take_line(&mut buffer, false) {
        lines.push(line);
    }
    assert!(!buffer.contains(&b'\n'), "a complete line was left behind");
    if let Some(rest) = take_line(&mut buffer, true) {
        lines.push(rest);
    }
    assert!(buffer.is_empty(), "bytes left at the end of the stream");
    // The lines, joined again, are the input: nothing is lost or duplicated.
    let mut rebuilt = lines.join(&b'\n');
    if data.ends_with(b"\n") {
        rebuilt.push(b'\n');
    }
    assert_eq!(rebuilt, data);

    for line in &lines {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        for port in DEFAULT_PORTS {
            check_request(text, port);
        }
    }
}

fn check_request(text: &str, default_port: u16) {
    match control::parse(text, default_port) {
        Ok(request) => {
            let _ = request.name();
            match &request {
                Request::Destination { address, weight } => {
                    assert!(weight.is_finite(), "{text:?}: weight {weight}");
                    check_address(address, *weight);
                }
                Request::Admin { address, .. } => check_address(address, 1.0),
                _ => {}
            }
        }
        Err(reason) => assert!(!reason.is_empty(), "{text:?}: an error without a reason"),
    }
    if let Ok((address, weight)) = control::parse_destination(text, default_port) {
        assert!(weight.is_finite(), "{text:?}: weight {weight}");
        check_address(&address, weight);
    }
}

/// An address the control port hands to the updater: the updater splits it with
/// `split_host_port`, and it reads back as itself whatever the default port.
fn check_address(address: &str, weight: f64) {
    let (_, port) = split_host_port(address)
        .unwrap_or_else(|e| panic!("{address:?} from the control parser: {e}"));
    assert_ne!(port, 0, "{address:?}");
    for default_port in DEFAULT_PORTS {
        assert_eq!(
            control::parse_destination(address, default_port),
            Ok((address.to_string(), 1.0)),
            "{address:?} does not read back as itself"
        );
        assert_eq!(
            control::parse(address, default_port),
            Ok(Request::Destination {
                address: address.to_string(),
                weight: 1.0
            }),
            "{address:?} is not a destination request"
        );
    }
    let with_weight = format!("{address}:{weight}");
    assert_eq!(
        control::parse_destination(&with_weight, 3306),
        Ok((address.to_string(), weight)),
        "{with_weight:?} does not read back"
    );
}

/// `config_yaml`: the text as a configuration file. Errors are fine; a configuration that is
/// accepted must be usable the way galera-lb uses it.
pub fn config_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::from_yaml(&text, "fuzz.yaml") {
        Ok(config) => {
            if let Err(e) = config.validate("fuzz.yaml") {
                panic!("accepted, then refused on a second validation: {e}");
            }
            assert_eq!(config, config.clone());
            assert!(
                diff::diff(&config, &config).is_empty(),
                "reloading an unchanged configuration changes something"
            );
            assert!(!config.listeners.is_empty());
            for listener in &config.listeners {
                // Typed as it was read; written out again, it reads back as itself.
                let bind = listener.bind.to_string().parse::<SocketAddr>();
                assert_eq!(bind.ok(), Some(listener.bind), "listener bind");
                assert!(config.pools().iter().any(|p| p.name == listener.pool));
            }
            // Every duration galera-lb adds to an `Instant` or a timeout is in range, and
            // keepalive is one the kernel takes (whole seconds, 1 to 32767).
            let (ms, hour) = (Duration::from_millis, Duration::from_secs(3600));
            assert!((ms(10)..=hour).contains(&config.health.interval));
            assert!((ms(10)..=hour).contains(&config.health.timeout));
            assert!((ms(10)..=hour).contains(&config.limits.connect_timeout));
            assert!(config.limits.shutdown_grace <= 24 * hour);
            if let Some(idle) = config.tcp.keepalive {
                assert!(idle.subsec_nanos() == 0 && (1..=32_767).contains(&idle.as_secs()));
            }
            assert!(
                config
                    .runtime
                    .worker_threads
                    .is_none_or(|n| (1..=1024).contains(&n))
            );
            if let Some(control) = &config.control {
                assert!(control.idle_timeout <= 24 * hour);
            }
            for pool in config.pools() {
                for backend in pool.backends {
                    let split = split_host_port(&backend.address);
                    assert!(split.is_ok(), "backend {:?}", backend.address);
                    assert!(backend.weight.is_finite() && backend.weight > 0.0);
                    assert!(backend.tier >= 1);
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz.yaml: "), "{message}");
        }
    }
}

/// SQLSTATEs for the build-then-parse round trip (`ServerError` holds a `&'static str`).
const SQL_STATES: [&str; 6] = ["08004", "HY000", "08S01", "28000", "42000", "23000"];

/// `err_packet`: the bytes as an ERR packet read from a server; then an ERR packet built from
/// them (code, SQLSTATE, message text) must parse back to what was put in.
pub fn err_packet(data: &[u8]) {
    if let Some(parsed) = parse_err_packet(data) {
        assert_eq!(data[4], 0xFF);
        assert_eq!(parsed.code, u16::from_le_bytes([data[5], data[6]]));
        assert!(parsed.sql_state.is_empty() || data[7] == b'#');
        // What follows the packet does not change it.
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x0a5.5.5-10.11.6-MariaDB");
        assert_eq!(parse_err_packet(&longer), Some(parsed));
    }

    let (code, state, message) = match data {
        [a, b, c, rest @ ..] => (
            u16::from_le_bytes([*a, *b]),
            SQL_STATES[usize::from(*c) % SQL_STATES.len()],
            String::from_utf8_lossy(rest),
        ),
        _ => (
            mysql_packet::NO_BACKEND.code,
            mysql_packet::NO_BACKEND.sql_state,
            String::from_utf8_lossy(data),
        ),
    };
    let error = ServerError {
        code,
        sql_state: state,
    };
    let packet = mysql_packet::err_packet(error, &message);
    let body_len = u32::from_le_bytes([packet[0], packet[1], packet[2], 0]) as usize;
    assert_eq!(body_len + 4, packet.len(), "the header's length");
    assert_eq!(packet[3], 0, "sequence id");
    let parsed = parse_err_packet(&packet).expect("an ERR packet err_packet built parses");
    assert_eq!(parsed.code, code);
    assert_eq!(parsed.sql_state, state);
    // The message is cut to at most 480 bytes, on a character boundary.
    assert!(
        parsed.message.len() <= 480,
        "{} bytes",
        parsed.message.len()
    );
    assert!(message.starts_with(&parsed.message));
    if message.len() <= 480 {
        assert_eq!(parsed.message, message);
    } else {
        assert!(parsed.message.len() > 480 - 4, "cut too short");
    }
    // Any cut short of the whole packet is refused.
    let cut = data.len() % packet.len();
    assert_eq!(parse_err_packet(&packet[..cut]), None, "cut at {cut}");
}

/// `wsrep_status`: `NAME<TAB>VALUE` lines as rows of the wsrep check's two result sets, through
/// the rules; and the text as `wsrep_incoming_addresses`.
pub fn wsrep_status(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let rows: Vec<(String, String)> = text
        .lines()
        .map(|line| match line.split_once('\t') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect();
    let status = WsrepStatus::from_rows(rows.clone());

    let mut usable_without_donors = false;
    for available_when_donor in [false, true] {
        let verdict = status.verdict(available_when_donor);
        assert!(!verdict.reason.is_empty());
        assert!(!verdict.writable || verdict.usable, "{verdict:?}");
        if verdict.usable {
            assert!(
                status.wsrep_on && status.ready,
                "{verdict:?} for {status:?}"
            );
            assert!(status.cluster_status.eq_ignore_ascii_case("Primary"));
            assert!(!status.desync);
            assert!(matches!(status.local_state, Some(4) | Some(2)));
            assert!(available_when_donor || status.local_state == Some(4));
            assert_eq!(verdict.writable, !status.read_only);
        }
        // Allowing donors only ever adds usable nodes.
        if available_when_donor {
            assert!(verdict.usable || !usable_without_donors);
        } else {
            usable_without_donors = verdict.usable;
        }
    }

    // Variable names are case-insensitive (MySQL and MariaDB differ in case).
    let upper = rows
        .iter()
        .map(|(name, value)| (name.to_ascii_uppercase(), value.clone()));
    assert_eq!(WsrepStatus::from_rows(upper), status);

    check_addresses(&status.incoming_addresses);
    check_addresses(&parse_incoming_addresses(&text));

    // The view comparison: one view behind another node's, held for `after`, is stale.
    if let (Some(conf_id), false) = (status.conf_id, status.cluster_uuid.is_empty()) {
        let views = Views::default();
        let (node, other) = (
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        );
        let (start, after) = (Instant::now(), Duration::from_secs(1));
        let ahead = conf_id.saturating_add(1);
        assert!(
            views
                .observe(other, &status.cluster_uuid, ahead, start, after)
                .is_none()
        );
        let stale = views.observe(node, &status.cluster_uuid, conf_id, start + after, after);
        assert_eq!(stale.is_some(), conf_id < u64::MAX, "{stale:?}");
    }
}

fn check_addresses(addresses: &[String]) {
    for address in addresses {
        assert!(!address.is_empty());
        assert_eq!(address.trim(), address);
        assert!(!address.contains(','));
        assert!(!address.eq_ignore_ascii_case("AUTO") && !address.starts_with("AUTO:"));
    }
}

/// A resolver that never uses the network: `localhost` and one name with no address.
fn offline_resolver(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    match host {
        "localhost" => Ok(vec![
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 1], port)),
        ]),
        "nowhere.invalid" => Ok(Vec::new()),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not resolved while fuzzing",
        )),
    }
}

/// `glbd_args`: one argument per line (one final newline is ignored; bytes need not be UTF-8) as
/// glbd's command line.
pub fn glbd_args(data: &[u8]) {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let args: Vec<OsString> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|b| *b == b'\n')
            .map(|arg| OsString::from_vec(arg.to_vec()))
            .collect()
    };
    match glbd::parse_with_resolver(&args, &offline_resolver) {
        Ok(GlbdInvocation::Run(run)) => {
            if let Err(e) = run.config.validate(glbd::SOURCE) {
                panic!("accepted, then refused on a second validation: {e}");
            }
            assert_eq!(run.config.listeners.len(), 1);
            assert!(!run.config.backends.is_empty());
            for backend in &run.config.backends {
                assert!(split_host_port(&backend.address).is_ok());
                assert!(backend.weight.is_finite() && backend.weight > 0.0);
                assert!(backend.tier >= 1);
            }
            let control = run.config.control.as_ref().map(|c| c.bind);
            assert_eq!(control, run.control);
        }
        Ok(GlbdInvocation::Help(text)) => assert!(!text.is_empty()),
        Ok(GlbdInvocation::Version(text)) => assert!(!text.is_empty()),
        Err(e) => assert!(!e.message.is_empty()),
    }
}

/// `proxy_header`: the first bytes of a connection to an `accept_proxy` listener. The parser
/// decides within the size bounds, a complete header never claims more bytes than it was given
/// or than the bounds allow, bytes after it do not change it, and every prefix of it asks for more
/// (or is refused the same way, for a header that is refused as soon as its start is known).
/// Headers with addresses encode and parse back to themselves.
pub fn proxy_header(data: &[u8]) {
    use galera_lb::core::proxy_protocol::{
        self, Header, Parsed, V1_MAX, V2_FIXED, V2_MAX, V2_SIGNATURE, Version,
    };
    match proxy_protocol::parse(data) {
        Ok(Parsed::Complete { header, length }) => {
            assert!(length <= data.len());
            let v2 = data.starts_with(&V2_SIGNATURE);
            assert!(length <= if v2 { V2_MAX } else { V1_MAX }, "{length}");
            assert!(!v2 || length >= V2_FIXED);
            let mut longer = data[..length].to_vec();
            longer.extend_from_slice(b"\r\n\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
            assert_eq!(
                proxy_protocol::parse(&longer),
                Ok(Parsed::Complete { header, length })
            );
            for end in 0..length {
                match proxy_protocol::parse(&data[..end]) {
                    Ok(Parsed::Incomplete) => {}
                    other => panic!("a prefix of {end} bytes of a valid header: {other:?}"),
                }
            }
            if let Header::Proxy(addresses) = header {
                let same_family = addresses.source.is_ipv4() == addresses.destination.is_ipv4();
                for version in [Version::V1, Version::V2] {
                    let encoded = proxy_protocol::encode(version, Some(addresses));
                    if same_family {
                        assert_eq!(
                            proxy_protocol::parse(&encoded),
                            Ok(Parsed::Complete {
                                header,
                                length: encoded.len()
                            })
                        );
                    }
                }
            }
        }
        Ok(Parsed::Incomplete) => {
            // Undecided only while a header could still be completed within the bounds.
            let bound = if data.starts_with(&V2_SIGNATURE[..data.len().min(12)]) {
                V2_MAX
            } else {
                V1_MAX
            };
            assert!(data.len() < bound, "undecided after {} bytes", data.len());
        }
        Err(refused) => assert!(!refused.detail.is_empty()),
    }
}

/// `mysql_follow`: the session follower that decides when a drain may close a session.
///
/// 1. The input, split at its first byte into a client and a server stream, fed in chunks
///    after a login and a query: never a panic, whatever the bytes.
/// 2. The input as choices that build a *valid* reply to a query (OK, ERR, result sets whose
///    rows look like OK, EOF or anything else, several results, with or without
///    `CLIENT_DEPRECATE_EOF`), fed in chunks the input chooses: the follower never says idle
///    before the reply's last byte (a drain would cut a result), and after it says idle exactly
///    when no transaction is open (it follows valid streams to the end).
pub fn mysql_follow(data: &[u8]) {
    use galera_lb::core::mysql_follow::Follower;

    let mut raw = follow::logged_in(false);
    raw.client_bytes(&follow::packet(0, b"\x03SELECT 1"));
    let split = data.first().map_or(0, |&b| b as usize).min(data.len());
    let (client, server) = data.split_at(split);
    for (i, chunk) in server.chunks(7).enumerate() {
        raw.server_bytes(chunk);
        if let Some(c) = client.chunks(5).nth(i) {
            raw.client_bytes(c);
        }
        let _ = raw.is_idle();
    }
    let mut fresh = Follower::new();
    fresh.server_bytes(server);
    fresh.client_bytes(client);
    let _ = (fresh.is_idle(), fresh.opaque_reason());

    let mut choices = follow::Choices { data, at: 0 };
    let deprecate_eof = choices.next() & 1 == 1;
    let (reply, in_transaction) = follow::reply(&mut choices, deprecate_eof);
    let mut f = follow::logged_in(deprecate_eof);
    f.client_bytes(&follow::packet(0, b"\x03SELECT a FROM t"));
    let mut fed = 0;
    while fed < reply.len() {
        assert!(!f.is_idle(), "idle after {fed} of {} bytes", reply.len());
        let size = 1 + choices.next() as usize % 64;
        let end = (fed + size).min(reply.len());
        f.server_bytes(&reply[fed..end]);
        fed = end;
    }
    assert_eq!(f.opaque_reason(), None, "a valid reply is followed");
    assert_eq!(
        f.is_idle(),
        !in_transaction,
        "idle after the reply unless in a transaction"
    );
}

mod follow {
    use galera_lb::core::mysql_follow::Follower;

    const PROTOCOL_41: u32 = 1 << 9;
    const DEPRECATE_EOF: u32 = 1 << 24;
    const IN_TRANS: u16 = 1;
    const MORE_RESULTS: u16 = 8;

    pub struct Choices<'a> {
        pub data: &'a [u8],
        pub at: usize,
    }

    impl Choices<'_> {
        /// The next byte of the input, 0 once it is used up.
        pub fn next(&mut self) -> u8 {
            let byte = self.data.get(self.at).copied().unwrap_or(0);
            self.at += 1;
            byte
        }
    }

    pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        bytes.push(seq);
        bytes.extend_from_slice(payload);
        bytes
    }

    /// A follower past a MariaDB greeting, a login (with `CLIENT_DEPRECATE_EOF` or not) and
    /// its OK.
    pub fn logged_in(deprecate_eof: bool) -> Follower {
        let caps: u32 = !1;
        let mut greeting = vec![10];
        greeting.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0\x07\0\0\0");
        greeting.extend_from_slice(&[1; 8]);
        greeting.push(0);
        greeting.extend_from_slice(&(caps as u16).to_le_bytes());
        greeting.extend_from_slice(&[45, 2, 0]);
        greeting.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        greeting.extend_from_slice(&[21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let client = PROTOCOL_41 | (1 << 15) | if deprecate_eof { DEPRECATE_EOF } else { 0 };
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

    fn status_ok(header: u8, status: u16) -> Vec<u8> {
        let mut p = vec![header, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        p
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xFE, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }

    /// A valid reply to a query, and whether it leaves a transaction open.
    pub fn reply(c: &mut Choices<'_>, deprecate_eof: bool) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut seq = 1u8;
        let mut push = |out: &mut Vec<u8>, payload: &[u8]| {
            out.extend(packet(seq, payload));
            seq = seq.wrapping_add(1);
        };
        let mut in_transaction = false;
        let results = 1 + c.next() % 3;
        for i in 0..results {
            let last = i + 1 == results;
            let trans = c.next() & 1 == 1;
            let status = 2 | if trans { IN_TRANS } else { 0 } | if last { 0 } else { MORE_RESULTS };
            match c.next() % 4 {
                0 => {
                    push(&mut out, &status_ok(0, status));
                    in_transaction = trans;
                }
                1 => {
                    push(&mut out, b"\xFF\x28\x04#42000error");
                    return (out, in_transaction);
                }
                kind => {
                    let binary = kind == 3;
                    let columns = 1 + c.next() % 4;
                    push(&mut out, &[columns]);
                    for _ in 0..columns {
                        let mut def = b"\x03def\x01s\x01t\x01t\x01c\x01c\x0c".to_vec();
                        def.extend((0..c.next() % 12).map(|_| c.next()));
                        push(&mut out, &def);
                    }
                    if !deprecate_eof {
                        push(&mut out, &eof(2));
                    }
                    for _ in 0..c.next() % 6 {
                        let mut row = vec![if binary {
                            0
                        } else {
                            // A text row starts with a length (or 0xFB, NULL); 0xFE only for
                            // fields of 16 MiB and more, and never 0xFF.
                            match c.next() {
                                0xFE | 0xFF => 0xFB,
                                b => b,
                            }
                        }];
                        row.extend((0..c.next() % 40).map(|_| c.next()));
                        push(&mut out, &row);
                    }
                    match deprecate_eof {
                        true => push(&mut out, &status_ok(0xFE, status)),
                        false => push(&mut out, &eof(status)),
                    }
                    in_transaction = trans;
                }
            }
        }
        (out, in_transaction)
    }
}
