//! Following a proxied MySQL session cheaply, to know when it sits between transactions.
//!
//! A drain that must not cut a transaction (`maint`, `pxc_maint_mode`, `wsrep_reject_queries`,
//! `on_down` or `on_writer_change: close_when_idle`) closes a session at its next *idle point*:
//! no command in flight, no partial packet either way, and the server's last word was an OK or
//! EOF whose status flags say no transaction is open (`SERVER_STATUS_IN_TRANS`).
//!
//! [`Follower`] reads packet headers in both directions and, on the server's side, just enough
//! of each response to know where it ends: OK, ERR, a result set (column count, definitions,
//! EOF unless `CLIENT_DEPRECATE_EOF`, rows, the closing EOF or OK), the answer to a prepare,
//! `LOCAL INFILE`, a change of user, and results that say more follow. It copies at most a
//! few dozen bytes of a packet and never buffers a stream.
//!
//! It is conservative: whatever it cannot follow for sure turns it *opaque* for the rest of the
//! session, and an opaque session is never idle (a drain then closes it at its deadline). That
//! covers TLS and compressed sessions (seen in the handshake), cursors, replication commands,
//! unknown commands and anything unexpected. So a wrong verdict can only be "busy", never
//! "idle" in the middle of a result.

use std::collections::VecDeque;

const CLIENT_MYSQL: u32 = 1;
const CLIENT_COMPRESS: u32 = 1 << 5;
const CLIENT_PROTOCOL_41: u32 = 1 << 9;
const CLIENT_SSL: u32 = 1 << 11;
const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
const CLIENT_OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
const CLIENT_ZSTD_COMPRESSION: u32 = 1 << 26;
/// MariaDB's extended capabilities (in the bytes MySQL reserves), shifted down by 32.
const MARIADB_CLIENT_PROGRESS: u32 = 1;
const MARIADB_CLIENT_CACHE_METADATA: u32 = 1 << 4;

const SERVER_STATUS_IN_TRANS: u16 = 1;
const SERVER_MORE_RESULTS_EXISTS: u16 = 8;

/// A physical packet of this length is continued by the next one.
const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// Commands sent and not answered yet that the follower keeps track of; more is opaque.
const MAX_PENDING: usize = 64;
/// Bytes of a server packet kept for the handshake (the greeting's version string comes first).
const HEAD_HANDSHAKE: usize = 160;
/// Bytes of a packet kept otherwise: an OK packet's status flags are within 21, MariaDB's
/// capabilities in a handshake response end at 32.
const HEAD_COMMANDS: usize = 32;

/// Why a session cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opaque {
    Tls,
    Compressed,
    /// Something the follower does not know (an old protocol, a cursor, replication, a command
    /// or packet it did not expect): the session is never taken for idle.
    Unfollowed(&'static str),
}

impl Opaque {
    pub fn as_str(self) -> &'static str {
        match self {
            Opaque::Tls => "tls",
            Opaque::Compressed => "compressed",
            Opaque::Unfollowed(what) => what,
        }
    }
}

/// One direction's packet framing: where the current packet ends and its first `N` bytes.
#[derive(Debug, Default)]
struct Framer<const N: usize> {
    /// Header bytes of the next packet read so far.
    header: [u8; 4],
    header_len: u8,
    /// Payload bytes of the current physical packet still to come.
    left: usize,
    /// The current packet continues a logical packet (its predecessor was `MAX_PAYLOAD` long).
    continuation: bool,
    /// The logical packet being read: its first physical packet's length and sequence id, and
    /// its first bytes.
    packet: Packet<N>,
    in_packet: bool,
}

/// A logical packet as the follower sees it.
#[derive(Debug, Clone)]
pub(crate) struct Packet<const N: usize> {
    /// The first physical packet's payload length (`MAX_PAYLOAD` when it is continued).
    len: usize,
    seq: u8,
    head: [u8; N],
    head_len: usize,
}

impl<const N: usize> Default for Packet<N> {
    fn default() -> Self {
        Packet {
            len: 0,
            seq: 0,
            head: [0; N],
            head_len: 0,
        }
    }
}

impl<const N: usize> Packet<N> {
    fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }

    fn first(&self) -> Option<u8> {
        self.head().first().copied()
    }
}

impl<const N: usize> Framer<N> {
    /// Reads `data`, calling `done` with each logical packet that ends in it; at most `keep`
    /// (and `N`) first bytes of each are kept.
    fn feed(&mut self, mut data: &[u8], keep: usize, mut done: impl FnMut(&Packet<N>)) {
        while !data.is_empty() {
            if self.left == 0 && self.header_len < 4 {
                let take = (4 - self.header_len as usize).min(data.len());
                let at = self.header_len as usize;
                self.header[at..at + take].copy_from_slice(&data[..take]);
                self.header_len += take as u8;
                data = &data[take..];
                if self.header_len < 4 {
                    return;
                }
                let len = u32::from_le_bytes([self.header[0], self.header[1], self.header[2], 0])
                    as usize;
                if !self.continuation {
                    self.packet.len = len;
                    self.packet.seq = self.header[3];
                    self.packet.head_len = 0;
                    self.in_packet = true;
                }
                self.left = len;
                if len == 0 {
                    self.end_physical(&mut done);
                }
                continue;
            }
            let take = self.left.min(data.len());
            if !self.continuation {
                let have = self.packet.head_len;
                let copy = keep.min(N).saturating_sub(have).min(take);
                self.packet.head[have..have + copy].copy_from_slice(&data[..copy]);
                self.packet.head_len += copy;
            }
            self.left -= take;
            data = &data[take..];
            if self.left == 0 {
                self.end_physical(&mut done);
            }
        }
    }

    fn end_physical(&mut self, done: &mut impl FnMut(&Packet<N>)) {
        let len = u32::from_le_bytes([self.header[0], self.header[1], self.header[2], 0]) as usize;
        self.header_len = 0;
        if len == MAX_PAYLOAD {
            self.continuation = true;
            return;
        }
        self.continuation = false;
        self.in_packet = false;
        done(&self.packet);
    }

    /// Inside a packet, or between a packet and its continuation.
    fn mid_packet(&self) -> bool {
        self.in_packet || self.header_len > 0
    }
}

/// What the server still owes for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// A command answered by OK, ERR, a result set, or `LOCAL INFILE` (`COM_QUERY` and kin).
    Results,
    /// One packet whatever it is (`COM_STATISTICS`).
    OnePacket,
    /// OK, ERR or EOF (`COM_PING`, `COM_INIT_DB`, ...).
    Status,
    /// `COM_FIELD_LIST`: definitions up to an EOF, or ERR.
    FieldList,
    /// `COM_STMT_PREPARE`: ERR, or its OK and the definitions it announces.
    Prepare,
    /// `COM_CHANGE_USER`: an authentication exchange ending in OK or ERR.
    Auth,
}

/// Where the server is within the reply to the oldest pending command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Within {
    /// Its first packet is next.
    Start,
    /// This many column definitions, then rows (with an EOF between unless deprecated).
    Columns(u64),
    /// The EOF after the column definitions.
    ColumnsEof,
    /// Rows up to the closing EOF (or OK) packet.
    Rows,
    /// This many packets whatever they hold (a prepare's definitions and EOFs).
    Skip(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    HandshakeResponse,
    Authenticating,
    Commands,
    Opaque(Opaque),
}

/// Follows one session; feed it every byte each way, in order. See the module doc.
#[derive(Debug)]
pub struct Follower {
    phase: Phase,
    client: Framer<HEAD_COMMANDS>,
    server: Framer<HEAD_HANDSHAKE>,
    server_caps: u32,
    server_ext_caps: u32,
    deprecate_eof: bool,
    progress: bool,
    cache_metadata: bool,
    pending: VecDeque<Reply>,
    within: Within,
    /// The client is sending a `LOCAL INFILE` file: its packets are data up to an empty one.
    infile: bool,
    in_transaction: bool,
}

impl Default for Follower {
    fn default() -> Self {
        Follower::new()
    }
}

impl Follower {
    /// A follower for a session whose first byte is the server's greeting.
    pub fn new() -> Follower {
        Follower {
            phase: Phase::Greeting,
            client: Framer::default(),
            server: Framer::default(),
            server_caps: 0,
            server_ext_caps: 0,
            deprecate_eof: false,
            progress: false,
            cache_metadata: false,
            pending: VecDeque::new(),
            within: Within::Start,
            infile: false,
            in_transaction: false,
        }
    }

    /// A follower that never says idle (a session whose start it did not see).
    pub fn opaque(why: Opaque) -> Follower {
        Follower {
            phase: Phase::Opaque(why),
            ..Follower::new()
        }
    }

    /// Why the session cannot be followed, if it cannot.
    pub fn opaque_reason(&self) -> Option<Opaque> {
        match self.phase {
            Phase::Opaque(why) => Some(why),
            _ => None,
        }
    }

    /// The session sits between transactions: nothing in flight either way, and no transaction
    /// open. Closing it now loses no work of the client's.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Commands
            && self.pending.is_empty()
            && !self.infile
            && !self.in_transaction
            && !self.client.mid_packet()
            && !self.server.mid_packet()
    }

    fn keep(&self) -> usize {
        match self.phase {
            Phase::Commands => HEAD_COMMANDS,
            _ => HEAD_HANDSHAKE,
        }
    }

    /// Bytes the client sent towards the server.
    pub fn client_bytes(&mut self, data: &[u8]) {
        if matches!(self.phase, Phase::Opaque(_)) {
            return;
        }
        let keep = self.keep();
        let mut framer = std::mem::take(&mut self.client);
        framer.feed(data, keep, |packet| self.client_packet(packet));
        self.client = framer;
    }

    /// Bytes the server sent towards the client.
    pub fn server_bytes(&mut self, data: &[u8]) {
        if matches!(self.phase, Phase::Opaque(_)) {
            return;
        }
        let keep = self.keep();
        let mut framer = std::mem::take(&mut self.server);
        framer.feed(data, keep, |packet| self.server_packet(packet));
        self.server = framer;
    }

    fn give_up(&mut self, why: Opaque) {
        self.phase = Phase::Opaque(why);
        self.pending = VecDeque::new();
    }

    fn client_packet(&mut self, packet: &Packet<HEAD_COMMANDS>) {
        match self.phase {
            Phase::Greeting => self.give_up(Opaque::Unfollowed("client spoke first")),
            Phase::HandshakeResponse => self.handshake_response(packet),
            Phase::Authenticating | Phase::Opaque(_) => {}
            Phase::Commands => self.command(packet),
        }
    }

    fn server_packet(&mut self, packet: &Packet<HEAD_HANDSHAKE>) {
        match self.phase {
            Phase::Greeting => self.greeting(packet),
            Phase::HandshakeResponse => self.give_up(Opaque::Unfollowed("server spoke twice")),
            Phase::Authenticating => match packet.first() {
                Some(0x00) => match ok_status(packet.head()) {
                    Some(status) => {
                        self.in_transaction = status & SERVER_STATUS_IN_TRANS != 0;
                        self.phase = Phase::Commands;
                    }
                    None => self.give_up(Opaque::Unfollowed("malformed OK")),
                },
                Some(0xFF) => self.give_up(Opaque::Unfollowed("login refused")),
                // An authentication switch or more data: the client answers.
                _ => {}
            },
            Phase::Commands => self.reply_packet(packet),
            Phase::Opaque(_) => {}
        }
    }

    fn greeting(&mut self, packet: &Packet<HEAD_HANDSHAKE>) {
        let head = packet.head();
        if head.first() != Some(&10) {
            return self.give_up(Opaque::Unfollowed("no protocol 10 greeting"));
        }
        let Some(nul) = head[1..].iter().position(|&b| b == 0) else {
            return self.give_up(Opaque::Unfollowed("greeting too long"));
        };
        // After the version: thread id (4), scramble (8), filler (1), capabilities (2),
        // charset (1), status (2), capabilities (2), scramble length (1), reserved (6),
        // MariaDB's extended capabilities (4).
        let at = 1 + nul + 1 + 4 + 8 + 1;
        let Some(low) = head.get(at..at + 2) else {
            return self.give_up(Opaque::Unfollowed("greeting too short"));
        };
        let mut caps = u16::from_le_bytes([low[0], low[1]]) as u32;
        if let Some(high) = head.get(at + 5..at + 7) {
            caps |= (u16::from_le_bytes([high[0], high[1]]) as u32) << 16;
        }
        if caps & CLIENT_MYSQL == 0
            && let Some(ext) = head.get(at + 14..at + 18)
        {
            self.server_ext_caps = u32::from_le_bytes([ext[0], ext[1], ext[2], ext[3]]);
        }
        self.server_caps = caps;
        self.phase = Phase::HandshakeResponse;
    }

    fn handshake_response(&mut self, packet: &Packet<HEAD_COMMANDS>) {
        let head = packet.head();
        let Some(caps) = head.get(..4) else {
            return self.give_up(Opaque::Unfollowed("short handshake response"));
        };
        let client = u32::from_le_bytes([caps[0], caps[1], caps[2], caps[3]]);
        let caps = client & self.server_caps;
        if client & CLIENT_SSL != 0 {
            return self.give_up(Opaque::Tls);
        }
        if caps & (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION) != 0 {
            return self.give_up(Opaque::Compressed);
        }
        if caps & CLIENT_PROTOCOL_41 == 0 {
            return self.give_up(Opaque::Unfollowed("pre-4.1 protocol"));
        }
        if caps & CLIENT_OPTIONAL_RESULTSET_METADATA != 0 {
            return self.give_up(Opaque::Unfollowed("optional result set metadata"));
        }
        if client & CLIENT_MYSQL == 0 {
            let ext = head
                .get(28..32)
                .map_or(0, |e| u32::from_le_bytes([e[0], e[1], e[2], e[3]]));
            let ext = ext & self.server_ext_caps;
            self.progress = ext & MARIADB_CLIENT_PROGRESS != 0;
            self.cache_metadata = ext & MARIADB_CLIENT_CACHE_METADATA != 0;
        }
        self.deprecate_eof = caps & CLIENT_DEPRECATE_EOF != 0;
        self.phase = Phase::Authenticating;
    }

    fn command(&mut self, packet: &Packet<HEAD_COMMANDS>) {
        if self.infile {
            // The file's packets, then an empty one; the server answers after it.
            if packet.len == 0 {
                self.infile = false;
            }
            return;
        }
        if packet.seq != 0 {
            // Part of an exchange the server started (an authentication switch).
            if self.pending.front() == Some(&Reply::Auth) {
                return;
            }
            return self.give_up(Opaque::Unfollowed("client packet out of sequence"));
        }
        let reply = match packet.first() {
            // COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE: no answer.
            Some(0x01 | 0x18 | 0x19) => return,
            // COM_QUERY, COM_PROCESS_INFO.
            Some(0x03 | 0x0A) => Reply::Results,
            // COM_STMT_EXECUTE: a cursor (flags after the statement id) is not followed.
            Some(0x17) => match packet.head().get(5) {
                Some(0) => Reply::Results,
                _ => return self.give_up(Opaque::Unfollowed("cursor")),
            },
            Some(0x16) => Reply::Prepare,
            Some(0x04) => Reply::FieldList,
            Some(0x09) => Reply::OnePacket,
            Some(0x11) => Reply::Auth,
            // COM_INIT_DB, CREATE_DB, DROP_DB, REFRESH, SHUTDOWN, PROCESS_KILL, DEBUG, PING,
            // STMT_RESET, SET_OPTION, RESET_CONNECTION.
            Some(0x02 | 0x05 | 0x06 | 0x07 | 0x08 | 0x0C | 0x0D | 0x0E | 0x1A | 0x1B | 0x1F) => {
                Reply::Status
            }
            _ => return self.give_up(Opaque::Unfollowed("command not followed")),
        };
        if self.pending.len() >= MAX_PENDING {
            return self.give_up(Opaque::Unfollowed("too many commands in flight"));
        }
        self.pending.push_back(reply);
    }

    /// The oldest pending command is answered.
    fn answered(&mut self) {
        self.pending.pop_front();
        self.within = Within::Start;
    }

    /// An OK or EOF closing a result: the transaction state, and whether another follows.
    fn closing_status(&mut self, status: Option<u16>) {
        let Some(status) = status else {
            return self.give_up(Opaque::Unfollowed("malformed OK or EOF"));
        };
        self.in_transaction = status & SERVER_STATUS_IN_TRANS != 0;
        if status & SERVER_MORE_RESULTS_EXISTS != 0 {
            self.within = Within::Start;
        } else {
            self.answered();
        }
    }

    fn is_progress(&self, packet: &Packet<HEAD_HANDSHAKE>) -> bool {
        self.progress && packet.head().get(..3) == Some(&[0xFF, 0xFF, 0xFF])
    }

    /// A packet closing a result set: an EOF (or, with `CLIENT_DEPRECATE_EOF`, an OK that
    /// starts with 0xFE). A row can start with 0xFE only as the length of a field of 16 MiB
    /// or more, so its packet is longer than either.
    fn closes_rows(&self, packet: &Packet<HEAD_HANDSHAKE>) -> bool {
        packet.first() == Some(0xFE)
            && if self.deprecate_eof {
                packet.len < MAX_PAYLOAD
            } else {
                packet.len < 9
            }
    }

    fn reply_packet(&mut self, packet: &Packet<HEAD_HANDSHAKE>) {
        let Some(&reply) = self.pending.front() else {
            return self.give_up(Opaque::Unfollowed("server packet without a command"));
        };
        let first = packet.first();
        if first == Some(0xFF) {
            if self.is_progress(packet) {
                return;
            }
            // An error ends the reply wherever it comes; it leaves a transaction as it was.
            return self.answered();
        }
        match (self.within, reply) {
            (Within::Start, Reply::Results) => match first {
                Some(0x00) => self.closing_status(ok_status(packet.head())),
                // LOCAL INFILE: the client sends the file, the server then answers OK or ERR.
                Some(0xFB) => self.infile = true,
                Some(_) => match column_count(packet.head(), self.cache_metadata) {
                    Some((columns, true)) => self.within = Within::Columns(columns),
                    // Definitions cached by the client: the EOF after them still comes.
                    Some((_, false)) if !self.deprecate_eof => self.within = Within::ColumnsEof,
                    Some((_, false)) => self.within = Within::Rows,
                    None => self.give_up(Opaque::Unfollowed("malformed column count")),
                },
                None => self.give_up(Opaque::Unfollowed("empty reply")),
            },
            (Within::Start, Reply::OnePacket) => self.answered(),
            (Within::Start, Reply::Status) => match first {
                Some(0x00) => self.closing_status(ok_status(packet.head())),
                Some(0xFE) if packet.len < 9 => self.closing_status(eof_status(packet.head())),
                _ => self.give_up(Opaque::Unfollowed("unexpected reply")),
            },
            // Else a switch of authentication method or more data: the client answers.
            (Within::Start, Reply::Auth) => {
                if first == Some(0x00) {
                    self.closing_status(ok_status(packet.head()));
                }
            }
            (Within::Start, Reply::FieldList) | (Within::Rows, _) => {
                if self.closes_rows(packet) {
                    let status = match first {
                        Some(0xFE) if packet.len < 9 => eof_status(packet.head()),
                        _ => ok_status(packet.head()),
                    };
                    self.closing_status(status);
                } else if reply == Reply::FieldList {
                    self.within = Within::Rows;
                }
            }
            (Within::Start, Reply::Prepare) => {
                let head = packet.head();
                if first != Some(0x00) || head.len() < 9 {
                    return self.give_up(Opaque::Unfollowed("malformed prepare reply"));
                }
                let columns = u16::from_le_bytes([head[5], head[6]]) as u64;
                let params = u16::from_le_bytes([head[7], head[8]]) as u64;
                let eof = |n: u64| u64::from(n > 0 && !self.deprecate_eof);
                let definitions = params + eof(params) + columns + eof(columns);
                if definitions == 0 {
                    self.answered();
                } else {
                    self.within = Within::Skip(definitions);
                }
            }
            (Within::Skip(left), _) => match left {
                1 => self.answered(),
                _ => self.within = Within::Skip(left - 1),
            },
            (Within::Columns(left), _) => {
                self.within = match (left, self.deprecate_eof) {
                    (1, true) => Within::Rows,
                    (1, false) => Within::ColumnsEof,
                    _ => Within::Columns(left - 1),
                }
            }
            (Within::ColumnsEof, _) => {
                if first == Some(0xFE) && packet.len < 9 {
                    self.within = Within::Rows;
                } else {
                    self.give_up(Opaque::Unfollowed("no EOF after the columns"));
                }
            }
        }
    }
}

/// A length-encoded integer at the start of `bytes`, and the bytes after it.
fn lenenc(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    let width = match first {
        0..=0xFA => return Some((first as u64, rest)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let value = rest.get(..width)?;
    let mut le = [0u8; 8];
    le[..width].copy_from_slice(value);
    Some((u64::from_le_bytes(le), &rest[width..]))
}

/// The status flags of an OK packet (header 0x00 or 0xFE): after the affected rows and the
/// last insert id.
fn ok_status(head: &[u8]) -> Option<u16> {
    let (_, rest) = lenenc(head.get(1..)?)?;
    let (_, rest) = lenenc(rest)?;
    let status = rest.get(..2)?;
    Some(u16::from_le_bytes([status[0], status[1]]))
}

/// The status flags of an EOF packet: 0xFE, warnings (2), status (2).
fn eof_status(head: &[u8]) -> Option<u16> {
    let status = head.get(3..5)?;
    Some(u16::from_le_bytes([status[0], status[1]]))
}

/// A result set's column count, and whether definitions follow (with MariaDB's metadata
/// cache, a byte after the count says; the EOF that ends the definitions comes either way
/// unless `CLIENT_DEPRECATE_EOF`).
fn column_count(head: &[u8], cache_metadata: bool) -> Option<(u64, bool)> {
    let (count, rest) = lenenc(head)?;
    if count == 0 {
        return None;
    }
    let follows = match cache_metadata {
        true => *rest.first()? != 0,
        false => true,
    };
    Some((count, follows))
}

#[cfg(test)]
mod tests;
