//! Messages on the device link: packets assembled into messages (and split
//! again on the way out), as a `tokio_util` codec.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

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

/// Encoder and decoder of [`Message`]s.
#[derive(Debug, Default)]
pub struct DeviceCodec {
    limits: CodecLimits,
    partial: Option<(Header, Vec<u8>)>,
}

impl DeviceCodec {
    /// A codec with the given limits.
    pub fn new(limits: CodecLimits) -> Self {
        Self {
            limits,
            partial: None,
        }
    }
}

impl Decoder for DeviceCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
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

impl Encoder<Message> for DeviceCodec {
    type Error = CodecError;

    fn encode(&mut self, m: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
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
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
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
