//! Fuzz the device-link decoder: arbitrary bytes, fed in arbitrary chunks,
//! must give messages or a clean error, never a panic or a runaway buffer;
//! with the second-highest bit of the first byte set, through a codec whose
//! link is authenticated (every message's tag checked and stripped).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use standby_device::codec::{CodecLimits, DeviceCodec};
use standby_device::messages;
use tokio_util::codec::Decoder;

/// Make the packets in `bytes` well-formed enough to pass the start code,
/// version and checksum, so the fuzzer reaches message assembly and payloads.
fn fix_packets(bytes: &mut [u8]) {
    let mut at = 0;
    while bytes.len() >= at + 36 {
        bytes[at..at + 4].copy_from_slice(b"{{<<");
        bytes[at + 12] = 1;
        let room = (bytes.len() - at - 36) as u32;
        let len = u32::from_le_bytes([bytes[at + 24], bytes[at + 25], bytes[at + 26], bytes[at + 27]]) % (room + 1);
        bytes[at + 24..at + 28].copy_from_slice(&len.to_le_bytes());
        let end = at + 36 + len as usize;
        let sum = crc32c::crc32c_append(crc32c::crc32c(&bytes[at + 8..at + 36]), &bytes[at + 36..end]);
        bytes[at + 4..at + 8].copy_from_slice(&sum.to_le_bytes());
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => return,
    };
    let split = (first & 0x3f) as usize + 1;
    let mut owned = rest.to_vec();
    if first & 0x80 != 0 {
        fix_packets(&mut owned);
    }
    let bytes = &owned[..];
    let mut codec = DeviceCodec::new(CodecLimits {
        max_packet_payload: 4096,
        max_message: 16 << 10,
        split_at: 1024,
    });
    if first & 0x40 != 0 {
        let t = standby_device::auth::Transcript::new(1, 1, b"hello", &[1; 16], &[2; 16]);
        codec.set_mac(t.server_mac(&[7; 32]));
    }
    let mut buf = BytesMut::new();
    for chunk in bytes.chunks(split) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => {
                    // Payload decoders must not panic either.
                    let _ = messages::decode::<messages::Hello>("hello", &m.payload);
                    let _ = messages::decode::<messages::Events>("events", &m.payload);
                    let _ = messages::decode::<messages::ServerList>("list", &m.payload);
                    let _ = messages::decode::<messages::Challenge>("challenge", &m.payload);
                    let _ = messages::decode::<messages::Authenticate>("authenticate", &m.payload);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= 4096 + 36 + split, "buffer grew past one packet");
    }
    let _ = codec.decode_eof(&mut buf);
});
