//! Messages on the device link: packets assembled into messages (and split
//! again on the way out), as a `tokio_util` codec.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::auth::{BadTag, LinkMac, TAG_LEN};
use super::frame::{self, FrameError, Header, Packet, FLAG_MORE, FLAG_RESPONSE};

/// One whole message (one or more packets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Device id.
    pub device_id: u32,
    /// Command.
    pub command: u16,
    /// Sequence (a response echoes its request's).
    pub sequence: u32,
    /// True for a response.
    pub response: bool,
    /// Option or status code.
    pub code: u16,
    /// First parameter.
    pub param1: u32,
    /// Second parameter.
    pub param2: u32,
    /// The assembled payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// A request.
    pub fn request(device_id: u32, command: u16, sequence: u32, payload: Vec<u8>) -> Self {
        Self {
            device_id,
            command,
            sequence,
            response: false,
            code: 0,
            param1: 0,
            param2: 0,
            payload,
        }
    }

    /// The response to `self` with `code` and `payload`.
    pub fn reply(&self, code: u16, payload: Vec<u8>) -> Self {
        Self {
            device_id: self.device_id,
            command: self.command,
            sequence: self.sequence,
            response: true,
            code,
            param1: 0,
            param2: 0,
            payload,
        }
    }

    /// With parameters set.
    pub fn with_params(mut self, param1: u32, param2: u32) -> Self {
        self.param1 = param1;
        self.param2 = param2;
        self
    }
}

/// Limits of a codec.
#[derive(Debug, Clone, Copy)]
pub struct CodecLimits {
    /// Largest payload of one packet accepted.
    pub max_packet_payload: u32,
    /// Largest assembled message accepted.
    pub max_message: usize,
    /// Payload size at which outgoing messages are split.
    pub split_at: usize,
}

impl Default for CodecLimits {
    fn default() -> Self {
        Self {
            max_packet_payload: frame::DEFAULT_MAX_PAYLOAD,
            max_message: 16 << 20,
            split_at: 64 << 10,
        }
    }
}

impl CodecLimits {
    /// What a server takes before a device has finished its handshake: a
    /// handshake is a few hundred bytes, so nothing above 4 KiB.
    pub const HANDSHAKE: CodecLimits = CodecLimits {
        max_packet_payload: 4 << 10,
        max_message: 4 << 10,
        split_at: 64 << 10,
    };
}

/// Bytes that the codecs sharing it hold for messages not yet complete
/// (received but undecoded bytes, and the parts of multi-packet messages),
/// bounded in total. Each codec holds up to [`Budget::allowance`] without
/// charging it, so a flood of unfinished messages cannot stop a device's
/// ordinary messages; beyond that it charges the budget, and a codec that
/// would overdraw it fails ([`CodecError::OverBudget`]).
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    allowance: usize,
    used: AtomicUsize,
}

impl Budget {
    /// A budget of `limit` bytes in all, each codec holding `allowance`
    /// bytes free of charge.
    pub fn new(limit: usize, allowance: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            allowance,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What each codec holds free of charge.
    pub fn allowance(&self) -> usize {
        self.allowance
    }

    fn charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn refund(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The header fields a message's tag covers, in a fixed layout.
fn tag_header(m: &Message) -> [u8; 21] {
    let mut h = [0u8; 21];
    h[0..4].copy_from_slice(&m.device_id.to_be_bytes());
    h[4..6].copy_from_slice(&m.command.to_be_bytes());
    h[6..10].copy_from_slice(&m.sequence.to_be_bytes());
    h[10] = u8::from(m.response);
    h[11..13].copy_from_slice(&m.code.to_be_bytes());
    h[13..17].copy_from_slice(&m.param1.to_be_bytes());
    h[17..21].copy_from_slice(&m.param2.to_be_bytes());
    h
}

/// Encoder and decoder of [`Message`]s.
#[derive(Debug, Default)]
pub struct DeviceCodec {
    limits: CodecLimits,
    partial: Option<(Header, Vec<u8>)>,
    budget: Option<Arc<Budget>>,
    /// What this codec has charged to `budget`.
    charged: usize,
    /// Tags on every message once the link is authenticated.
    mac: Option<LinkMac>,
}

impl DeviceCodec {
    /// A codec with the given limits.
    pub fn new(limits: CodecLimits) -> Self {
        Self {
            limits,
            partial: None,
            budget: None,
            charged: 0,
            mac: None,
        }
    }

    /// A codec whose held bytes count against `budget`.
    pub fn with_budget(limits: CodecLimits, budget: Arc<Budget>) -> Self {
        Self {
            limits,
            partial: None,
            budget: Some(budget),
            charged: 0,
            mac: None,
        }
    }

    /// From now on, tag every message sent and check (and strip) the tag of
    /// every message received: the link is authenticated.
    pub fn set_mac(&mut self, mac: LinkMac) {
        self.mac = Some(mac);
    }

    /// Whether messages are tagged.
    pub fn is_authenticated(&self) -> bool {
        self.mac.is_some()
    }

    /// Change the limits (a server raises them once a device's handshake
    /// is done).
    pub fn set_limits(&mut self, limits: CodecLimits) {
        self.limits = limits;
    }

    /// Charge the budget for what this codec holds now (`buffered` bytes
    /// received but not decoded, plus any unfinished message), or refund
    /// what it no longer holds.
    fn account(&mut self, buffered: usize) -> Result<(), CodecError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let partial = self.partial.as_ref().map_or(0, |(_, body)| body.len());
        let owed = (buffered + partial).saturating_sub(budget.allowance);
        if owed > self.charged {
            if !budget.charge(owed - self.charged) {
                return Err(CodecError::OverBudget {
                    holding: buffered + partial,
                    limit: budget.limit,
                });
            }
        } else {
            budget.refund(self.charged - owed);
        }
        self.charged = owed;
        Ok(())
    }
}

impl Drop for DeviceCodec {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.refund(self.charged);
        }
    }
}

impl Decoder for DeviceCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        let decoded = self.decode_one(src);
        self.account(src.len())?;
        let mut decoded = decoded?;
        if let (Some(mac), Some(m)) = (&mut self.mac, &mut decoded) {
            let bad = |index| BadTag {
                index,
                command: m.command,
            };
            let Some(body_len) = m.payload.len().checked_sub(TAG_LEN) else {
                return Err(bad(mac.received_count()).into());
            };
            let (body, tag) = m.payload.split_at(body_len);
            mac.open(&tag_header(m), body, tag).map_err(bad)?;
            m.payload.truncate(body_len);
        }
        Ok(decoded)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        if let Some(m) = self.decode(src)? {
            return Ok(Some(m));
        }
        frame::decode_eof(src, self.limits.max_packet_payload)?;
        if let Some((h, _)) = &self.partial {
            return Err(FrameError::Truncated {
                have: h.index as usize + 1,
                need: h.total as usize,
            }
            .into());
        }
        Ok(None)
    }
}

impl DeviceCodec {
    /// The next whole message in `src`, if there is one.
    fn decode_one(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        loop {
            let Some(packet) = frame::decode(src, self.limits.max_packet_payload)? else {
                return Ok(None);
            };
            let h = packet.header;
            let mut body = match self.partial.take() {
                None if h.index == 0 => packet.payload,
                None => {
                    return Err(FrameError::BadFragment(format!(
                        "packet {} of {} without its first",
                        h.index, h.total
                    ))
                    .into())
                }
                Some((first, mut body)) => {
                    let next = first.index.wrapping_add(1);
                    if h.command != first.command
                        || h.sequence != first.sequence
                        || h.total != first.total
                        || h.index != next
                    {
                        return Err(FrameError::BadFragment(format!(
                            "packet {} of {} (command {:#06x}, sequence {}) does not continue packet {} of {} (command {:#06x}, sequence {})",
                            h.index, h.total, h.command, h.sequence, first.index, first.total, first.command, first.sequence
                        ))
                        .into());
                    }
                    body.extend_from_slice(&packet.payload);
                    body
                }
            };
            if body.len() > self.limits.max_message {
                return Err(FrameError::PayloadTooLarge {
                    size: body.len() as u32,
                    max: self.limits.max_message as u32,
                }
                .into());
            }
            if h.flags & FLAG_MORE != 0 {
                let header = Header {
                    index: h.index,
                    ..h
                };
                self.partial = Some((header, std::mem::take(&mut body)));
                continue;
            }
            return Ok(Some(Message {
                device_id: h.device_id,
                command: h.command,
                sequence: h.sequence,
                response: h.flags & FLAG_RESPONSE != 0,
                code: h.code,
                param1: h.param1,
                param2: h.param2,
                payload: body,
            }));
        }
    }
}

impl Encoder<Message> for DeviceCodec {
    type Error = CodecError;

    fn encode(&mut self, mut m: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        if let Some(mac) = &mut self.mac {
            let tag = mac.seal(&tag_header(&m), &m.payload);
            m.payload.extend_from_slice(&tag);
        }
        let chunk = self.limits.split_at.max(1);
        let chunks: Vec<&[u8]> = if m.payload.is_empty() {
            vec![&[][..]]
        } else {
            m.payload.chunks(chunk).collect()
        };
        if chunks.len() > 255 {
            return Err(CodecError::TooLong(m.payload.len()));
        }
        let total = chunks.len() as u8;
        for (i, part) in chunks.into_iter().enumerate() {
            let mut flags = if m.response { FLAG_RESPONSE } else { 0 };
            if (i as u8) + 1 < total {
                flags |= FLAG_MORE;
            }
            Packet {
                header: Header {
                    device_id: m.device_id,
                    flags,
                    command: m.command,
                    sequence: m.sequence,
                    index: i as u8,
                    total,
                    code: m.code,
                    payload_len: part.len() as u32,
                    param1: m.param1,
                    param2: m.param2,
                },
                payload: part.to_vec(),
            }
            .encode_into(dst);
        }
        Ok(())
    }
}

/// A codec failure: a framing error from the peer, or I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The peer sent a malformed packet.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A message too long to send (over 255 packets).
    #[error("a message of {0} bytes needs more than 255 packets")]
    TooLong(usize),
    /// A message on an authenticated link fails its tag: altered, replayed,
    /// reordered or made up on the way.
    #[error(transparent)]
    BadTag(#[from] BadTag),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Holding more of an unfinished message would overdraw the budget
    /// every connection shares.
    #[error("this connection holds {holding} bytes of unfinished messages and the budget all connections share ({limit} bytes) is spent")]
    OverBudget {
        /// Bytes this codec holds.
        holding: usize,
        /// The shared bound.
        limit: usize,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            any::<u32>(),
            prop::sample::select(frame::command::ALL.to_vec()),
            any::<u32>(),
            any::<bool>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..5_000),
        )
            .prop_map(
                |(device_id, command, sequence, response, code, param1, param2, payload)| Message {
                    device_id,
                    command,
                    sequence,
                    response,
                    code,
                    param1,
                    param2,
                    payload,
                },
            )
    }

    /// The first `n` bytes of an encoded multi-packet message of `len`
    /// payload bytes from `device`.
    fn unfinished(device: u32, len: usize, n: usize) -> BytesMut {
        let mut codec = DeviceCodec::new(CodecLimits {
            split_at: 8 << 10,
            ..CodecLimits::default()
        });
        let mut buf = BytesMut::new();
        let m = Message::request(device, frame::command::NOTIFY_EVENT, 1, vec![7; len]);
        codec.encode(m, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn codecs_sharing_a_budget_hold_at_most_it_and_give_it_back_when_dropped() {
        let budget = Budget::new(20 << 10, 4 << 10);
        let mut a = DeviceCodec::with_budget(CodecLimits::default(), budget.clone());
        let mut b = DeviceCodec::with_budget(CodecLimits::default(), budget.clone());
        // Within the allowance: nothing charged.
        let mut small = unfinished(1, 64 << 10, 2 << 10);
        assert!(a.decode(&mut small).unwrap().is_none());
        assert_eq!(budget.used(), 0);
        // a holds about 16 KiB of an unfinished message: about 12 KiB
        // (what is over the allowance) charged.
        let mut big = unfinished(1, 64 << 10, 16 << 10);
        let mut a = DeviceCodec::with_budget(CodecLimits::default(), budget.clone());
        assert!(a.decode(&mut big).unwrap().is_none());
        let charged = budget.used();
        assert!((11 << 10..=12 << 10).contains(&charged), "{charged}");
        // b cannot hold another 16 KiB: 12 + 12 > 20.
        let mut big_b = unfinished(2, 64 << 10, 16 << 10);
        let e = b.decode(&mut big_b).unwrap_err();
        assert!(matches!(e, CodecError::OverBudget { .. }), "{e}");
        assert!(e.to_string().contains("budget"), "{e}");
        // ...until a is gone.
        drop(a);
        assert_eq!(budget.used(), 0);
        let mut b = DeviceCodec::with_budget(CodecLimits::default(), budget.clone());
        let mut big_b = unfinished(2, 64 << 10, 16 << 10);
        assert!(b.decode(&mut big_b).unwrap().is_none());
        assert_eq!(budget.used(), charged);
        // The rest of the message arrives: decoded, and what it held is
        // given back.
        let mut rest = unfinished(2, 64 << 10, usize::MAX);
        let _ = rest.split_to(16 << 10);
        big_b.unsplit(rest);
        let m = b.decode(&mut big_b).unwrap().unwrap();
        assert_eq!(m.payload.len(), 64 << 10);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_header_announcing_a_large_payload_reserves_little() {
        let mut codec = DeviceCodec::new(CodecLimits::default());
        let mut one_packet = DeviceCodec::new(CodecLimits {
            split_at: 1 << 20,
            ..CodecLimits::default()
        });
        let mut whole = BytesMut::new();
        one_packet
            .encode(
                Message::request(1, frame::command::NOTIFY_EVENT, 1, vec![7; 1 << 20]),
                &mut whole,
            )
            .unwrap();
        whole.truncate(frame::HEADER_LEN + 10);
        let mut buf = BytesMut::from(&whole[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= frame::HEADER_LEN + 10 + frame::READ_AHEAD,
            "reserved {} bytes for a header announcing 1 MiB",
            buf.capacity()
        );
    }

    #[test]
    fn the_handshake_limits_refuse_a_large_first_message() {
        let mut codec = DeviceCodec::new(CodecLimits::HANDSHAKE);
        let mut buf = unfinished(1, 64 << 10, 200);
        let e = codec.decode(&mut buf).unwrap_err();
        assert!(e.to_string().contains("4096"), "{e}");
        // A handshake-sized message passes.
        let mut codec = DeviceCodec::new(CodecLimits::HANDSHAKE);
        let mut buf = unfinished(1, 300, usize::MAX);
        assert!(codec.decode(&mut buf).unwrap().is_some());
    }

    proptest! {
        #[test]
        fn messages_round_trip(messages in prop::collection::vec(arb_message(), 1..5), split in 32usize..3000) {
            let limits = CodecLimits { split_at: split, ..CodecLimits::default() };
            let mut codec = DeviceCodec::new(limits);
            let mut buf = BytesMut::new();
            for m in &messages {
                codec.encode(m.clone(), &mut buf).unwrap();
            }
            let mut out = Vec::new();
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                out.push(m);
            }
            prop_assert_eq!(out, messages);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut codec = DeviceCodec::default();
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = codec.decode(&mut buf);
        }
    }

    fn one(command: u16, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        DeviceCodec::default()
            .encode(Message::request(9, command, 1, payload.to_vec()), &mut buf)
            .unwrap();
        buf
    }

    fn err(mut buf: BytesMut, max: u32) -> FrameError {
        match frame::decode(&mut buf, max) {
            Err(e) => e,
            Ok(p) => panic!("decoded {p:?}"),
        }
    }

    #[test]
    fn each_kind_of_damage_is_its_own_error() {
        let good = one(frame::command::KEEP_ALIVE, b"hello");
        let mut b = good.clone();
        b[0] = b'x';
        assert!(matches!(err(b, 1 << 20), FrameError::BadStartCode(_)));
        let mut b = good.clone();
        b[40] ^= 1;
        assert!(matches!(err(b, 1 << 20), FrameError::BadChecksum { .. }));
        assert!(matches!(
            err(good.clone(), 2),
            FrameError::PayloadTooLarge { size: 5, max: 2 }
        ));
        let mut b = good.clone();
        b[12] = 9;
        assert!(matches!(err(b, 1 << 20), FrameError::WrongVersion(9)));
        // An unknown command with a correct checksum.
        let mut raw = good.clone();
        raw[14..16].copy_from_slice(&0x7777u16.to_le_bytes());
        let sum = crc32c::crc32c_append(crc32c::crc32c(&raw[8..36]), &raw[36..]);
        raw[4..8].copy_from_slice(&sum.to_le_bytes());
        assert!(matches!(
            err(raw, 1 << 20),
            FrameError::UnknownCommand(0x7777)
        ));
        // Truncated at end of stream.
        let mut codec = DeviceCodec::default();
        let mut b = good.clone();
        b.truncate(30);
        assert!(matches!(
            codec.decode_eof(&mut b),
            Err(CodecError::Frame(FrameError::Truncated { have: 30, .. }))
        ));
    }
}
