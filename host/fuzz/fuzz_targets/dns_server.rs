//! Fuzz the built-in DNS server's packet handling: arbitrary packets (queries,
//! RFC 2136 updates, anything) against a zone with one A record and a TSIG
//! key must get an answer or silence, never a panic.
//!
//! An input is a run of packets, each `ctl [len_hi len_lo] bytes`: with
//! `ctl & 0x40` a big-endian length follows, else the packet takes the rest.
//! With `ctl & 0x80` the bytes are parsed as a message and signed with the
//! server's key (or, with `ctl & 0x20`, a wrong secret) so the fuzzer gets
//! past TSIG verification into updates and signed answers; `ctl & 0x10` signs
//! at a time taken from the packet's first four bytes instead of now (BADTIME
//! and friends). The first packet's `ctl & 0x08` picks UDP (size limits) over
//! TCP. Packets go to one server in turn, so updates are seen by later
//! queries.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::Message;
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;
use standby_lab::dns_server::answer_packets;
use standby_host::dns::TsigKey;

/// Short names, so that raw packets hit the zone and key by chance too.
const ZONE: &str = "z.";
const KEY_NAME: &str = "k";
const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-sec";
const MAX_PACKETS: usize = 8;

/// `bytes` as a message signed with the key, or as they are when they do not
/// parse or cannot be signed.
fn sign(ctl: u8, bytes: &[u8]) -> Vec<u8> {
    let (time, bytes) = match (ctl & 0x10 != 0, bytes) {
        (true, [a, b, c, d, rest @ ..]) => (u32::from_be_bytes([*a, *b, *c, *d]), rest),
        _ => (
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(0),
            bytes,
        ),
    };
    let Ok(mut message) = Message::from_vec(bytes) else {
        return bytes.to_vec();
    };
    message.take_signature();
    let secret = if ctl & 0x20 != 0 {
        b"wrong".as_slice()
    } else {
        SECRET
    };
    let Ok(name) = Name::from_ascii(KEY_NAME) else {
        return bytes.to_vec();
    };
    let Ok(signer) = TSigner::new(secret.to_vec(), TsigAlgorithm::HmacSha256, name, 300) else {
        return bytes.to_vec();
    };
    if message.finalize(&signer, time).is_err() {
        return bytes.to_vec();
    }
    message.to_vec().unwrap_or_else(|_| bytes.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let mut packets = Vec::new();
    let mut udp = false;
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        if packets.is_empty() {
            udp = ctl & 0x08 != 0;
        }
        let (bytes, tail) = match (ctl & 0x40 != 0, tail) {
            (true, [hi, lo, tail @ ..]) => {
                tail.split_at(usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len()))
            }
            _ => (tail, &[][..]),
        };
        packets.push(if ctl & 0x80 != 0 {
            sign(ctl, bytes)
        } else {
            bytes.to_vec()
        });
        rest = tail;
        if packets.len() == MAX_PACKETS {
            break;
        }
    }
    let key = match TsigKey::new(KEY_NAME, "hmac-sha256", SECRET.to_vec()) {
        Ok(key) => key,
        Err(_) => return,
    };
    let packets: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    let records = [("w", Ipv4Addr::new(192, 0, 2, 1))];
    let Ok(answers) = answer_packets(ZONE, &key, &records, 60, &packets, udp) else {
        return;
    };
    for answer in answers.into_iter().flatten() {
        // What the server sends must be a DNS response a client can read.
        let parsed = Message::from_vec(&answer);
        assert!(
            parsed.is_ok(),
            "unreadable answer: {parsed:?} {answer:02x?}"
        );
        assert!(answer[2] & 0x80 != 0, "answer without QR: {answer:02x?}");
    }
});
