//! The few MySQL protocol packets galera-lb writes or reads itself.
//!
//! galera-lb proxies bytes and does not parse client traffic. But a MySQL server speaks first, so
//! when galera-lb cannot serve a client (no usable node, a connection limit, shutting down) it
//! answers as a server would: an ERR packet with sequence id 0 in place of the greeting. Clients
//! then print `ERROR 1040 (08004): ...` instead of "Lost connection ... reading initial
//! communication packet".

/// A server error galera-lb sends to a client it cannot serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerError {
    pub code: u16,
    pub sql_state: &'static str,
}

/// ER_CON_COUNT_ERROR: a connection limit is reached.
pub(crate) const TOO_MANY_CONNECTIONS: ServerError = ServerError {
    code: 1040,
    sql_state: "08004",
};

/// ER_CONNECT_TO_FOREIGN_DATA_SOURCE ("Unable to connect to foreign data source"): no backend
/// could be reached. Not 2003: codes 2000-2999 are client-side codes, and MariaDB's client library
/// reports an ERR packet carrying one as "ERROR 2027: Received malformed packet".
pub const NO_BACKEND: ServerError = ServerError {
    code: 1429,
    sql_state: "HY000",
};

/// The largest message we put in an ERR packet; longer ones are cut (clients show ~512 bytes).
const MAX_MESSAGE: usize = 480;

/// Encodes an ERR packet with sequence id 0: header `len(3) seq(1)`, then `0xFF`, the error code
/// (u16 little-endian), `#`, the five-character SQLSTATE and the message.
pub fn err_packet(error: ServerError, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message.as_bytes()[..end];
    let body_len = 1 + 2 + 1 + 5 + message.len();
    let mut packet = Vec::with_capacity(4 + body_len);
    packet.extend_from_slice(&(body_len as u32).to_le_bytes()[..3]);
    packet.push(0);
    packet.push(0xFF);
    packet.extend_from_slice(&error.code.to_le_bytes());
    packet.push(b'#');
    packet.extend_from_slice(error.sql_state.as_bytes());
    packet.extend_from_slice(message);
    packet
}

/// An ERR packet as read back: code, SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedError {
    pub code: u16,
    pub sql_state: String,
    pub message: String,
}

/// Parses one ERR packet (with its 4-byte header) as a server or galera-lb sends it before the
/// greeting; `None` if `bytes` is not a complete, well-formed ERR packet.
pub fn parse_err_packet(bytes: &[u8]) -> Option<ParsedError> {
    let header: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let body_len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let body = bytes.get(4..4 + body_len)?;
    if body.first() != Some(&0xFF) || body.len() < 3 {
        return None;
    }
    let code = u16::from_le_bytes([body[1], body[2]]);
    let rest = &body[3..];
    let (sql_state, message) = match rest.strip_prefix(b"#") {
        Some(marked) if marked.len() >= 5 => (
            String::from_utf8_lossy(&marked[..5]).into_owned(),
            &marked[5..],
        ),
        _ => (String::new(), rest),
    };
    Some(ParsedError {
        code,
        sql_state,
        message: String::from_utf8_lossy(message).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_packet_layout() {
        let packet = err_packet(TOO_MANY_CONNECTIONS, "Too many connections");
        assert_eq!(&packet[..4], &[29, 0, 0, 0]);
        assert_eq!(packet[4], 0xFF);
        assert_eq!(&packet[5..7], &1040u16.to_le_bytes());
        assert_eq!(&packet[7..13], b"#08004");
        assert_eq!(&packet[13..], b"Too many connections");
    }

    #[test]
    fn err_packet_round_trips() {
        let packet = err_packet(NO_BACKEND, "galera-lb: no usable backend");
        let parsed = parse_err_packet(&packet).unwrap();
        assert_eq!(parsed.code, 1429);
        assert_eq!(parsed.sql_state, "HY000");
        assert_eq!(parsed.message, "galera-lb: no usable backend");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let message = "é".repeat(400);
        let packet = err_packet(NO_BACKEND, &message);
        let parsed = parse_err_packet(&packet).unwrap();
        assert!(parsed.message.len() <= MAX_MESSAGE);
        assert!(parsed.message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn malformed_packets_are_refused() {
        assert_eq!(parse_err_packet(&[]), None);
        assert_eq!(parse_err_packet(&[5, 0, 0, 0, 0xFF]), None);
        assert_eq!(parse_err_packet(&[3, 0, 0, 0, 0x0A, 1, 2]), None);
    }
}
