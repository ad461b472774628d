//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): the header galera-lb
//! writes to a node before any client byte (`proxy_protocol: v1|v2`), so that the node sees the
//! real client address, and the header it reads from an upstream load balancer
//! (`accept_proxy: true`).
//!
//! Hand-written rather than taken from a crate: encoding is a few lines, and reading needs what
//! the general-purpose crates leave to the caller anyway: a hard size bound enforced while the
//! bytes arrive, a deadline, an exact count of the bytes that belong to the header (what follows
//! is the client's and is passed on), and a reason for every refusal, for the log line and the
//! `galera_lb_proxy_header_rejected_total{reason}` counter.
//!
//! - [`encode`] builds a header: with addresses (v1 `TCP4`/`TCP6`, v2 `PROXY` command) or
//!   without (v1 `UNKNOWN`, v2 `LOCAL`: "no client to relay", what health checks send).
//! - [`parse`] looks at the bytes received so far: a complete header (and its length), "need
//!   more", or a [`Reject`].
//! - [`read_header`] reads from a stream until [`parse`] decides, within a deadline and at most
//!   [`V1_MAX`] / [`V2_MAX`] bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest v1 header the specification allows, CRLF included.
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version and command, family, length.
pub const V2_FIXED: usize = 16;
/// The most address and TLV bytes accepted after the fixed part of a v2 header: room for the
/// largest address block (two Unix paths, 216 bytes) and the TLVs load balancers add (SSL
/// details, a unique id, an authority, cloud endpoint ids), with margin.
pub(crate) const V2_MAX_PAYLOAD: usize = 1024;
/// The longest v2 header accepted.
pub const V2_MAX: usize = V2_FIXED + V2_MAX_PAYLOAD;

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// Which version of the header to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The connection a header describes: the client, and the address it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// A header as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed connection from `source` to `destination`.
    Proxy(Addresses),
    /// v1 `UNKNOWN`, v2 `LOCAL`, or a v2 `PROXY` without IP addresses (unspecified or Unix
    /// family): use the socket's own addresses.
    Local,
}

/// Why a received header was refused; [`Reject::as_str`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No complete header within the deadline.
    Timeout,
    /// The peer closed (or reset) the connection before the header was complete.
    Closed,
    /// The first bytes are neither `PROXY ` nor the v2 signature: no header was sent.
    Missing,
    /// The header breaks the grammar (bad protocol word, address, port, CRLF, lengths).
    Malformed,
    /// Longer than [`V1_MAX`] (v1) or [`V2_MAX`] (v2).
    TooLong,
    /// Well-formed but not for a TCP stream: a v2 version other than 2, an unknown command, a
    /// UDP family.
    Unsupported,
}

impl Reject {
    pub(crate) const ALL: [Reject; 6] = [
        Reject::Timeout,
        Reject::Closed,
        Reject::Missing,
        Reject::Malformed,
        Reject::TooLong,
        Reject::Unsupported,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reject::Timeout => "timeout",
            Reject::Closed => "closed",
            Reject::Missing => "missing",
            Reject::Malformed => "malformed",
            Reject::TooLong => "too_long",
            Reject::Unsupported => "unsupported",
        }
    }
}

/// Makes `galera_lb_proxy_header_rejected_total` show zeros for an `accept_proxy` listener, so
/// that rates and alerts work before the first refusal.
pub(crate) fn register_listener(listener: &str) {
    for reason in Reject::ALL {
        crate::core::counters::metrics()
            .proxy_header_rejected
            .with_label_values(&[listener, reason.as_str()]);
    }
}

/// A refusal with the story behind it, for the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Refused {
    pub reason: Reject,
    pub detail: String,
}

fn refuse<T>(reason: Reject, detail: impl Into<String>) -> Result<T, Refused> {
    Err(Refused {
        reason,
        detail: detail.into(),
    })
}

/// What [`parse`] made of the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, `length` bytes long; whatever follows belongs to the client.
    Complete { header: Header, length: usize },
    /// So far so good: more bytes are needed.
    Incomplete,
}

/// Both addresses in one family: when they differ, IPv4 becomes IPv4-mapped IPv6 (a header
/// carries one family).
fn same_family(addresses: Addresses) -> (SocketAddr, SocketAddr) {
    let (s, d) = (addresses.source, addresses.destination);
    if s.is_ipv4() == d.is_ipv4() {
        return (s, d);
    }
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    (v6(s), v6(d))
}

/// A header carrying `addresses`, or, with `None`, one that says "no client to relay" (v1
/// `PROXY UNKNOWN`, v2 `LOCAL`), for connections galera-lb makes on its own behalf.
pub fn encode(version: Version, addresses: Option<Addresses>) -> Vec<u8> {
    match version {
        Version::V1 => match addresses.map(same_family) {
            None => b"PROXY UNKNOWN\r\n".to_vec(),
            Some((s, d)) => {
                let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
                format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                )
                .into_bytes()
            }
        },
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            match addresses.map(same_family) {
                None => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
                Some((s, d)) => {
                    let mut block = Vec::with_capacity(36);
                    let family = match (s.ip(), d.ip()) {
                        (IpAddr::V4(si), IpAddr::V4(di)) => {
                            block.extend_from_slice(&si.octets());
                            block.extend_from_slice(&di.octets());
                            0x11
                        }
                        (IpAddr::V6(si), IpAddr::V6(di)) => {
                            block.extend_from_slice(&si.octets());
                            block.extend_from_slice(&di.octets());
                            0x21
                        }
                        _ => unreachable!("same_family returns one family"),
                    };
                    block.extend_from_slice(&s.port().to_be_bytes());
                    block.extend_from_slice(&d.port().to_be_bytes());
                    out.push(0x21);
                    out.push(family);
                    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
                    out.extend_from_slice(&block);
                }
            }
            out
        }
    }
}

/// Decides what the bytes received so far are: a complete header, the start of one, or not a
/// valid header at all. Never looks past the header's own bytes.
pub fn parse(buf: &[u8]) -> Result<Parsed, Refused> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return if buf.len() < V1_PREFIX.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v1(buf)
        };
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return parse_v2(buf);
    }
    refuse(
        Reject::Missing,
        format!(
            "no PROXY header: the connection starts with {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(16)])
        ),
    )
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Refused> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX {
            return refuse(
                Reject::TooLong,
                format!("a v1 header has no line end within {V1_MAX} bytes"),
            );
        }
        return Ok(Parsed::Incomplete);
    };
    let length = lf + 1;
    if length > V1_MAX {
        return refuse(
            Reject::TooLong,
            format!("a v1 header of {length} bytes, longer than {V1_MAX}"),
        );
    }
    if lf == 0 || buf[lf - 1] != b'\r' {
        return refuse(Reject::Malformed, "a v1 header must end with CRLF");
    }
    let line = std::str::from_utf8(&buf[..lf - 1])
        .map_err(|_| Refused {
            reason: Reject::Malformed,
            detail: "a v1 header that is not text".to_string(),
        })?
        .strip_prefix("PROXY ")
        .expect("checked by parse()");
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        // The receiver must ignore whatever follows UNKNOWN.
        return Ok(Parsed::Complete {
            header: Header::Local,
            length,
        });
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [family, source, destination, source_port, destination_port] = fields[..] else {
        return refuse(
            Reject::Malformed,
            format!(
                "a v1 header needs TCP4|TCP6 and four fields, got {:?}",
                truncate(line)
            ),
        );
    };
    let ip = |text: &str| -> Result<IpAddr, Refused> {
        let parsed = match family {
            "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4).ok(),
            "TCP6" => text.parse::<Ipv6Addr>().map(IpAddr::V6).ok(),
            _ => {
                return refuse(
                    Reject::Malformed,
                    format!(
                        "unknown v1 protocol {:?} (TCP4, TCP6, UNKNOWN)",
                        truncate(family)
                    ),
                );
            }
        };
        parsed.ok_or_else(|| Refused {
            reason: Reject::Malformed,
            detail: format!("{:?} is not a {family} address", truncate(text)),
        })
    };
    let port = |text: &str| -> Result<u16, Refused> {
        let valid = !text.is_empty()
            && text.len() <= 5
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        valid
            .then(|| text.parse::<u16>().ok())
            .flatten()
            .ok_or_else(|| Refused {
                reason: Reject::Malformed,
                detail: format!("{:?} is not a port", truncate(text)),
            })
    };
    let addresses = Addresses {
        source: SocketAddr::new(ip(source)?, port(source_port)?),
        destination: SocketAddr::new(ip(destination)?, port(destination_port)?),
    };
    Ok(Parsed::Complete {
        header: Header::Proxy(addresses),
        length,
    })
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Refused> {
    if buf.len() < V2_FIXED {
        return Ok(Parsed::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return refuse(
            Reject::Unsupported,
            format!("a v2 header with version {version} (only 2 exists)"),
        );
    }
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return refuse(
            Reject::TooLong,
            format!(
                "a v2 header announces {payload} bytes of addresses and TLVs, more than \
                 {V2_MAX_PAYLOAD}"
            ),
        );
    }
    let length = V2_FIXED + payload;
    if buf.len() < length {
        return Ok(Parsed::Incomplete);
    }
    let block = &buf[V2_FIXED..length];
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let header = match command {
        // LOCAL: the sender's own connection (a health check); the addresses are ignored.
        0 => Header::Local,
        1 => {
            if transport == 2 {
                return refuse(Reject::Unsupported, "a v2 header for a UDP (DGRAM) stream");
            }
            if transport > 2 || family > 3 {
                return refuse(
                    Reject::Unsupported,
                    format!(
                        "a v2 header with unknown family/transport 0x{:02x}",
                        buf[13]
                    ),
                );
            }
            match family {
                1 => {
                    let a = block_at::<12>(block, "TCP4")?;
                    let ip = |o: usize| IpAddr::from([a[o], a[o + 1], a[o + 2], a[o + 3]]);
                    Header::Proxy(Addresses {
                        source: SocketAddr::new(ip(0), u16::from_be_bytes([a[8], a[9]])),
                        destination: SocketAddr::new(ip(4), u16::from_be_bytes([a[10], a[11]])),
                    })
                }
                2 => {
                    let a = block_at::<36>(block, "TCP6")?;
                    let ip = |o: usize| {
                        let octets: [u8; 16] = a[o..o + 16].try_into().expect("16 bytes");
                        IpAddr::from(octets)
                    };
                    Header::Proxy(Addresses {
                        source: SocketAddr::new(ip(0), u16::from_be_bytes([a[32], a[33]])),
                        destination: SocketAddr::new(ip(16), u16::from_be_bytes([a[34], a[35]])),
                    })
                }
                3 => {
                    block_at::<216>(block, "UNIX")?;
                    Header::Local
                }
                _ => Header::Local,
            }
        }
        other => {
            return refuse(
                Reject::Unsupported,
                format!("a v2 header with unknown command {other} (LOCAL 0, PROXY 1)"),
            );
        }
    };
    Ok(Parsed::Complete { header, length })
}

/// The first `N` bytes of the address block, or a refusal when the announced length is too short
/// for the family.
fn block_at<const N: usize>(block: &[u8], family: &str) -> Result<[u8; N], Refused> {
    block
        .get(..N)
        .map(|b| b.try_into().expect("N bytes"))
        .ok_or_else(|| Refused {
            reason: Reject::Malformed,
            detail: format!(
                "a v2 {family} header announces {} address bytes, fewer than {N}",
                block.len()
            ),
        })
}

/// A header read from a stream, and the bytes read after it (the client's first bytes, to be
/// passed on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub header: Header,
    pub rest: Vec<u8>,
}

/// Reads a PROXY header from `stream`: at most [`V2_MAX`] bytes, within `deadline`. Whatever
/// arrived after the header comes back in [`Received::rest`].
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
    deadline: Duration,
) -> Result<Received, Refused> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            match parse(&buf)? {
                Parsed::Complete { header, length } => {
                    return Ok(Received {
                        header,
                        rest: buf.split_off(length),
                    });
                }
                Parsed::Incomplete => {}
            }
            // Never more than the longest header could still need.
            let room = V2_MAX.saturating_sub(buf.len()).clamp(1, chunk.len());
            let n = match stream.read(&mut chunk[..room]).await {
                Ok(0) => {
                    return refuse(
                        Reject::Closed,
                        format!("the connection closed after {} header bytes", buf.len()),
                    );
                }
                Ok(n) => n,
                Err(e) => {
                    return refuse(Reject::Closed, format!("reading the header failed: {e}"));
                }
            };
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result,
        Err(_) => refuse(
            Reject::Timeout,
            format!("no complete PROXY header within {deadline:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn pair(s: &str, d: &str) -> Addresses {
        Addresses {
            source: addr(s),
            destination: addr(d),
        }
    }

    fn complete(bytes: &[u8]) -> (Header, usize) {
        match parse(bytes) {
            Ok(Parsed::Complete { header, length }) => (header, length),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn rejected(bytes: &[u8]) -> Reject {
        match parse(bytes) {
            Err(refused) => {
                assert!(!refused.detail.is_empty());
                refused.reason
            }
            other => panic!("{:?} should be refused: {other:?}", bytes),
        }
    }

    #[test]
    fn v1_encodes_as_the_specification_shows() {
        let a = pair("192.168.0.1:56324", "192.168.0.11:443");
        assert_eq!(
            encode(Version::V1, Some(a)),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        let a = pair("[2001:db8::1]:1", "[::1]:3306");
        assert_eq!(
            encode(Version::V1, Some(a)),
            b"PROXY TCP6 2001:db8::1 ::1 1 3306\r\n"
        );
        assert_eq!(encode(Version::V1, None), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_encodes_byte_for_byte() {
        let a = pair("127.0.0.2:40000", "127.0.0.1:3306");
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 2, 127, 0, 0, 1]);
        expected.extend_from_slice(&40000u16.to_be_bytes());
        expected.extend_from_slice(&3306u16.to_be_bytes());
        assert_eq!(encode(Version::V2, Some(a)), expected);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(encode(Version::V2, None), local);
        let v6 = encode(Version::V2, Some(pair("[::2]:1", "[::1]:2")));
        assert_eq!(v6.len(), 16 + 36);
        assert_eq!(&v6[12..16], &[0x21, 0x21, 0, 36]);
    }

    #[test]
    fn every_encoding_parses_back() {
        let cases = [
            pair("127.0.0.2:40000", "127.0.0.1:3306"),
            pair("10.1.2.3:0", "10.9.8.7:65535"),
            pair("[2001:db8::5]:1234", "[fe80::1]:3306"),
        ];
        for version in [Version::V1, Version::V2] {
            for a in cases {
                let bytes = encode(version, Some(a));
                assert_eq!(
                    complete(&bytes),
                    (Header::Proxy(a), bytes.len()),
                    "{version:?}"
                );
            }
            let bytes = encode(version, None);
            assert_eq!(complete(&bytes), (Header::Local, bytes.len()));
        }
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let a = pair("10.0.0.1:5000", "[::1]:3306");
        assert_eq!(
            encode(Version::V1, Some(a)),
            b"PROXY TCP6 ::ffff:10.0.0.1 ::1 5000 3306\r\n"
        );
        let (header, _) = complete(&encode(Version::V2, Some(a)));
        let Header::Proxy(got) = header else {
            panic!("{header:?}")
        };
        assert_eq!(got.source, addr("[::ffff:10.0.0.1]:5000"));
        assert_eq!(got.destination, a.destination);
    }

    #[test]
    fn the_longest_v1_header_fits_the_limit() {
        let a = pair(
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        );
        let bytes = encode(Version::V1, Some(a));
        assert_eq!(bytes.len(), 104, "TCP6 at its longest");
        assert_eq!(complete(&bytes).1, 104);
        // The specification's worst case: UNKNOWN followed by the longest TCP6 fields.
        let unknown = String::from_utf8(bytes).unwrap().replace("TCP6", "UNKNOWN");
        assert_eq!(unknown.len(), V1_MAX);
        assert_eq!(complete(unknown.as_bytes()), (Header::Local, V1_MAX));
    }

    #[test]
    fn unknown_ignores_the_rest_of_its_line() {
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\nrest"),
            (Header::Local, 59)
        );
    }

    #[test]
    fn every_prefix_of_a_valid_header_asks_for_more() {
        for version in [Version::V1, Version::V2] {
            let bytes = encode(version, Some(pair("[::2]:1", "[::1]:2")));
            for end in 0..bytes.len() {
                assert_eq!(
                    parse(&bytes[..end]),
                    Ok(Parsed::Incomplete),
                    "{version:?} {end}"
                );
            }
        }
    }

    #[test]
    fn the_header_length_leaves_the_client_bytes_alone() {
        for version in [Version::V1, Version::V2] {
            let mut bytes = encode(version, Some(pair("1.2.3.4:5", "6.7.8.9:10")));
            let length = bytes.len();
            bytes.extend_from_slice(b"\x05\0\0\x01hello");
            assert_eq!(complete(&bytes).1, length);
        }
    }

    #[test]
    fn v1_refusals() {
        let cases: &[(&[u8], Reject)] = &[
            (b"GET / HTTP/1.1\r\n", Reject::Missing),
            (b"\x16\x03\x01", Reject::Missing),
            (b"PROXX", Reject::Missing),
            (b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", Reject::Missing),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\r\n", Reject::Malformed),
            (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", Reject::Malformed),
            (b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n", Reject::Malformed),
            (b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", Reject::Malformed),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", Reject::Malformed),
            (b"PROXY TCP4 localhost 1.2.3.4 1 2\r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 \r\n", Reject::Malformed),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2x\r\n", Reject::Malformed),
            (b"PROXY TCP4 \xff.2.3.4 1.2.3.4 1 2\r\n", Reject::Malformed),
            (b"PROXY \r\n", Reject::Malformed),
            (b"PROXY UNKNOWNX\r\n", Reject::Malformed),
        ];
        for (bytes, reason) in cases {
            assert_eq!(
                rejected(bytes),
                *reason,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        // No line end within 107 bytes.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'a');
        assert_eq!(rejected(&long), Reject::TooLong);
        assert_eq!(parse(&long[..V1_MAX - 1]), Ok(Parsed::Incomplete));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX - 1, b'a');
        long.extend_from_slice(b"\r\n");
        assert_eq!(rejected(&long), Reject::TooLong, "108 bytes with the CRLF");
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(command);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[test]
    fn v2_local_unspec_and_unix_mean_the_socket_address() {
        // LOCAL ignores whatever address block it carries.
        assert_eq!(complete(&v2(0x20, 0x11, &[9; 12])).0, Header::Local);
        assert_eq!(complete(&v2(0x20, 0x00, &[])).0, Header::Local);
        assert_eq!(complete(&v2(0x21, 0x00, &[])).0, Header::Local);
        assert_eq!(complete(&v2(0x21, 0x31, &[0; 216])).0, Header::Local);
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let mut block = vec![127, 0, 0, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x0c, 0xea];
        block.extend_from_slice(&[0x04, 0, 3, 1, 2, 3]); // PP2_TYPE_NOOP with 3 bytes
        let bytes = v2(0x21, 0x11, &block);
        assert_eq!(
            complete(&bytes),
            (
                Header::Proxy(pair("127.0.0.9:40000", "127.0.0.1:3306")),
                bytes.len()
            )
        );
    }

    #[test]
    fn v2_refusals() {
        let cases: Vec<(Vec<u8>, Reject)> = vec![
            (v2(0x11, 0x11, &[0; 12]), Reject::Unsupported), // version 1 in binary form
            (v2(0x31, 0x11, &[0; 12]), Reject::Unsupported), // version 3
            (v2(0x22, 0x11, &[0; 12]), Reject::Unsupported), // command 2
            (v2(0x21, 0x12, &[0; 12]), Reject::Unsupported), // UDP4
            (v2(0x21, 0x22, &[0; 36]), Reject::Unsupported), // UDP6
            (v2(0x21, 0x41, &[0; 12]), Reject::Unsupported), // family 4
            (v2(0x21, 0x13, &[0; 12]), Reject::Unsupported), // transport 3
            (v2(0x21, 0x11, &[0; 11]), Reject::Malformed),   // too short for TCP4
            (v2(0x21, 0x21, &[0; 12]), Reject::Malformed),   // too short for TCP6
            (v2(0x21, 0x31, &[0; 100]), Reject::Malformed),  // too short for UNIX
            (v2(0x21, 0x11, &[0; V2_MAX_PAYLOAD + 1]), Reject::TooLong),
        ];
        for (bytes, reason) in cases {
            assert_eq!(rejected(&bytes), reason, "{:02x?}", &bytes[12..16]);
        }
        // Too long is known from the fixed part alone, before the payload arrives.
        let announced = v2(0x21, 0x11, &[0; 60_000]);
        assert_eq!(rejected(&announced[..16]), Reject::TooLong);
        // The largest accepted payload parses.
        let bytes = v2(0x21, 0x11, &[0; V2_MAX_PAYLOAD]);
        assert_eq!(complete(&bytes).1, V2_MAX);
        // A broken signature is no header at all.
        let mut broken = v2(0x21, 0x11, &[0; 12]);
        broken[11] = b'X';
        assert_eq!(rejected(&broken), Reject::Missing);
    }

    #[tokio::test]
    async fn read_header_returns_the_bytes_after_the_header() {
        for version in [Version::V1, Version::V2] {
            let a = pair("127.0.0.9:40000", "127.0.0.1:3306");
            let mut bytes = encode(version, Some(a));
            bytes.extend_from_slice(b"client bytes");
            let mut reader = &bytes[..];
            let received = read_header(&mut reader, Duration::from_secs(1))
                .await
                .unwrap();
            assert_eq!(received.header, Header::Proxy(a));
            assert_eq!(received.rest, b"client bytes");
        }
    }

    #[tokio::test]
    async fn read_header_assembles_a_header_sent_in_pieces() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let bytes = encode(Version::V2, Some(pair("[::9]:1", "[::1]:2")));
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in bytes.chunks(5) {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
        });
        let received = read_header(&mut server, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(received.header, Header::Proxy(pair("[::9]:1", "[::1]:2")));
        assert!(received.rest.is_empty());
        drop(writer.await);
    }

    #[tokio::test]
    async fn read_header_times_out_closes_and_stops_at_the_bound() {
        let (_client, mut server) = tokio::io::duplex(64);
        let refused = read_header(&mut server, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(refused.reason, Reject::Timeout);

        let mut half: &[u8] = b"PROXY TCP4 1.2.3.4";
        let refused = read_header(&mut half, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(refused.reason, Reject::Closed);

        let mut empty: &[u8] = b"";
        let refused = read_header(&mut empty, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(refused.reason, Reject::Closed);

        // An endless line is refused at 107 bytes, not read to its end.
        let endless = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100_000]].concat();
        let mut reader = &endless[..];
        let refused = read_header(&mut reader, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(refused.reason, Reject::TooLong);
        assert!(
            endless.len() - reader.len() <= V2_MAX,
            "read {} bytes",
            endless.len() - reader.len()
        );

        let mut mysql_login: &[u8] = b"\x20\0\0\x01\x85\xa6\xff\x01";
        let refused = read_header(&mut mysql_login, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(refused.reason, Reject::Missing);
    }
}
