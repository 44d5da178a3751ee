//! Framing of the device link: a 36-byte header followed by a payload.
//!
//! ```text
//! off size field
//!   0    4 start code, the bytes "{{<<"
//!   4    4 checksum: CRC-32C (Castagnoli) of bytes 8..36 and the payload
//!   8    4 device id
//!  12    1 protocol version (1)
//!  13    1 flags: bit 0 encrypted (unused: TLS encrypts the link; refused),
//!                bit 1 response, bit 2 more-to-come (multi-packet message)
//!  14    2 command
//!  16    4 sequence: requests count up per sender; a response echoes it
//!  20    1 index of this packet in its message (0-based)
//!  21    1 total packets in the message (>= 1)
//!  22    2 code: option on a request, status on a response (0 = ok)
//!  24    4 payload size in bytes
//!  28    4 param1
//!  32    4 param2
//! ```
//!
//! All integers are little-endian. Decoding is strict: each kind of damage is a
//! distinct [`FrameError`], and any error closes only the connection it came on.

use bytes::{Buf, BufMut, BytesMut};

/// The first four bytes of every packet.
pub const START_CODE: [u8; 4] = *b"{{<<";
/// Header length in bytes.
pub const HEADER_LEN: usize = 36;
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Default largest payload of one packet.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

/// The most a decoder reserves ahead of bytes that have not arrived.
pub const READ_AHEAD: usize = 64 << 10;

/// Header flag: payload encrypted at the packet level (not used; refused).
pub const FLAG_ENCRYPTED: u8 = 0b001;
/// Header flag: this packet answers a request with the same sequence.
pub const FLAG_RESPONSE: u8 = 0b010;
/// Header flag: more packets of the same message follow.
pub const FLAG_MORE: u8 = 0b100;

/// Commands (the `command` field).
pub mod command {
    /// Device introduces itself; server answers with its identity and watermark.
    pub const HANDSHAKE: u16 = 0x0010;
    /// Keep-alive; the other side answers with the response flag.
    pub const KEEP_ALIVE: u16 = 0x0011;
    /// Device proves its key after the server's challenge; the server
    /// answers with its welcome (see [`crate::auth`]).
    pub const AUTHENTICATE: u16 = 0x0012;
    /// Server asks the device to re-upload events: param1 = last event id
    /// (re-send after it), param2 = count (0 = all).
    pub const GET_LOG: u16 = 0x0200;
    /// Server reads the device's server list.
    pub const GET_SERVER_LIST: u16 = 0x0300;
    /// Server replaces the device's server list.
    pub const SET_SERVER_LIST: u16 = 0x0301;
    /// Device uploads events; server acknowledges after commit.
    pub const NOTIFY_EVENT: u16 = 0x2000;
    /// Server matching: verify a credential for a user.
    pub const SERVER_VERIFY: u16 = 0x2010;
    /// Server matching: identify the user holding a credential.
    pub const SERVER_IDENTIFY: u16 = 0x2011;
    /// Global anti-passback check.
    pub const CHECK_APB_VIOLATION: u16 = 0x2012;

    /// Every command this build understands.
    pub const ALL: [u16; 10] = [
        HANDSHAKE,
        KEEP_ALIVE,
        AUTHENTICATE,
        GET_LOG,
        GET_SERVER_LIST,
        SET_SERVER_LIST,
        NOTIFY_EVENT,
        SERVER_VERIFY,
        SERVER_IDENTIFY,
        CHECK_APB_VIOLATION,
    ];
}

/// Response codes (the `code` field of a response).
pub mod status {
    /// Success.
    pub const OK: u16 = 0;
    /// The request was malformed.
    pub const BAD_REQUEST: u16 = 1;
    /// The device is not accepted by this server.
    pub const NOT_ACCEPTED: u16 = 2;
    /// The server is not active (standby or fenced).
    pub const NOT_ACTIVE: u16 = 3;
    /// The server could not store or look up (database error).
    pub const SERVER_ERROR: u16 = 4;
    /// The device refused a request (e.g. a server list from a server that is
    /// not active at its current epoch).
    pub const REFUSED: u16 = 5;
    /// The device sends events faster than the server takes from it;
    /// `param1` of the reply says how many milliseconds to wait.
    pub const RATE_LIMITED: u16 = 6;
    /// The device did not prove who it is: no credential where one is
    /// required, a key that is unknown, revoked or expired, or a wrong proof.
    /// The server closes the link.
    pub const NOT_AUTHENTICATED: u16 = 7;
    /// The answer to a HANDSHAKE that offered a key: the server's nonce and
    /// proof; the device goes on with AUTHENTICATE (see [`crate::auth`]).
    pub const CHALLENGE: u16 = 8;
}

/// Event codes with a fixed meaning.
pub mod event_code {
    /// Access granted.
    pub const ACCESS_GRANTED: u16 = 0x1000;
    /// Access denied.
    pub const ACCESS_DENIED: u16 = 0x1100;
    /// Link to a server established.
    pub const TCP_CONNECTED: u16 = 0x3B00;
    /// Link to a server lost.
    pub const TCP_DISCONNECTED: u16 = 0x3C00;
}

/// A decoded packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Device id.
    pub device_id: u32,
    /// Flags.
    pub flags: u8,
    /// Command.
    pub command: u16,
    /// Sequence.
    pub sequence: u32,
    /// Packet index within the message.
    pub index: u8,
    /// Packets in the message.
    pub total: u8,
    /// Option (request) or status (response).
    pub code: u16,
    /// Payload length.
    pub payload_len: u32,
    /// First parameter.
    pub param1: u32,
    /// Second parameter.
    pub param2: u32,
}

/// One packet: header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The header (its `payload_len` matches `payload`).
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Why bytes are not a valid packet. Each closes only its own connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The packet does not start with "{{<<".
    #[error("bad start code {0:02x?} (expected \"{{{{<<\")")]
    BadStartCode([u8; 4]),
    /// The checksum does not match the header and payload.
    #[error("bad checksum: header says {expected:#010x}, content gives {actual:#010x}")]
    BadChecksum {
        /// From the header.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// The payload is larger than this side accepts.
    #[error("payload of {size} bytes is over the maximum of {max}")]
    PayloadTooLarge {
        /// Announced size.
        size: u32,
        /// Configured maximum.
        max: u32,
    },
    /// The stream ended inside a packet.
    #[error("truncated packet: the connection closed after {have} of {need} bytes")]
    Truncated {
        /// Bytes received of the packet.
        have: usize,
        /// Bytes the packet needs.
        need: usize,
    },
    /// The command is not one this build knows.
    #[error("unknown command {0:#06x}")]
    UnknownCommand(u16),
    /// The protocol version is not one this build speaks.
    #[error("protocol version {0} is not supported (this build speaks {PROTOCOL_VERSION})")]
    WrongVersion(u8),
    /// A flag this build does not support is set.
    #[error("unsupported flags {0:#04x}")]
    UnsupportedFlags(u8),
    /// Multi-packet fields are inconsistent.
    #[error("bad multi-packet framing: {0}")]
    BadFragment(String),
}

/// CRC-32C of the header's bytes 8..36 and the payload.
fn checksum(header_tail: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_tail), payload)
}

impl Packet {
    /// Append this packet's bytes to `out`, computing size and checksum.
    pub fn encode_into(&self, out: &mut BytesMut) {
        let h = &self.header;
        let start = out.len();
        out.reserve(HEADER_LEN + self.payload.len());
        out.put_slice(&START_CODE);
        out.put_u32_le(0); // checksum, filled below
        out.put_u32_le(h.device_id);
        out.put_u8(PROTOCOL_VERSION);
        out.put_u8(h.flags);
        out.put_u16_le(h.command);
        out.put_u32_le(h.sequence);
        out.put_u8(h.index);
        out.put_u8(h.total);
        out.put_u16_le(h.code);
        out.put_u32_le(self.payload.len() as u32);
        out.put_u32_le(h.param1);
        out.put_u32_le(h.param2);
        out.put_slice(&self.payload);
        let sum = checksum(&out[start + 8..start + HEADER_LEN], &self.payload);
        out[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
    }

    /// The packet's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        self.encode_into(&mut b);
        b.to_vec()
    }
}

/// Decode one packet from the front of `buf` if it holds a whole one.
/// `Ok(None)` means more bytes are needed. Consumed bytes are removed.
pub fn decode(buf: &mut BytesMut, max_payload: u32) -> Result<Option<Packet>, FrameError> {
    let n = buf.len().min(4);
    if buf[..n] != START_CODE[..n] {
        let mut got = [0u8; 4];
        got[..n].copy_from_slice(&buf[..n]);
        return Err(FrameError::BadStartCode(got));
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut h = &buf[4..HEADER_LEN];
    let expected_sum = h.get_u32_le();
    let device_id = h.get_u32_le();
    let version = h.get_u8();
    let flags = h.get_u8();
    let command = h.get_u16_le();
    let sequence = h.get_u32_le();
    let index = h.get_u8();
    let total = h.get_u8();
    let code = h.get_u16_le();
    let payload_len = h.get_u32_le();
    let param1 = h.get_u32_le();
    let param2 = h.get_u32_le();
    if version != PROTOCOL_VERSION {
        return Err(FrameError::WrongVersion(version));
    }
    if payload_len > max_payload {
        return Err(FrameError::PayloadTooLarge {
            size: payload_len,
            max: max_payload,
        });
    }
    let need = HEADER_LEN + payload_len as usize;
    if buf.len() < need {
        // Room for what is coming, but never more than READ_AHEAD at once: a
        // header that announces a large payload costs only what the peer
        // really sends.
        buf.reserve((need - buf.len()).min(READ_AHEAD));
        return Ok(None);
    }
    let actual = checksum(&buf[8..HEADER_LEN], &buf[HEADER_LEN..need]);
    if actual != expected_sum {
        return Err(FrameError::BadChecksum {
            expected: expected_sum,
            actual,
        });
    }
    if !command::ALL.contains(&command) {
        return Err(FrameError::UnknownCommand(command));
    }
    if flags & !(FLAG_RESPONSE | FLAG_MORE) != 0 {
        return Err(FrameError::UnsupportedFlags(flags));
    }
    if total == 0 || index >= total {
        return Err(FrameError::BadFragment(format!(
            "packet {index} of {total}"
        )));
    }
    if (flags & FLAG_MORE != 0) != (index + 1 < total) {
        return Err(FrameError::BadFragment(format!(
            "more-to-come flag disagrees with packet {index} of {total}"
        )));
    }
    let packet = buf.split_to(need);
    Ok(Some(Packet {
        header: Header {
            device_id,
            flags,
            command,
            sequence,
            index,
            total,
            code,
            payload_len,
            param1,
            param2,
        },
        payload: packet[HEADER_LEN..].to_vec(),
    }))
}

/// What the stream ended with: an error if bytes of a partial packet remain.
pub fn decode_eof(buf: &BytesMut, max_payload: u32) -> Result<(), FrameError> {
    if buf.is_empty() {
        return Ok(());
    }
    let need = if buf.len() >= HEADER_LEN {
        let len = u32::from_le_bytes([buf[24], buf[25], buf[26], buf[27]]);
        HEADER_LEN + len.min(max_payload) as usize
    } else {
        HEADER_LEN
    };
    Err(FrameError::Truncated {
        have: buf.len(),
        need,
    })
}
