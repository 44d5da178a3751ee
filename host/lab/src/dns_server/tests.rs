//! Unit tests of the built-in DNS server's names and TSIG time checks.

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use standby_host::dns::update::parse_name;
use standby_host::dns::TsigKey;

use super::state::{owner_in, State, BADTIME};

#[test]
fn record_names_are_relative_unless_in_the_zone() {
    let zone = parse_name("site.test").unwrap();
    let www = parse_name("www.site.test.").unwrap();
    assert_eq!(owner_in(&zone, "www").unwrap(), www);
    assert_eq!(owner_in(&zone, "WWW.site.test").unwrap(), www);
    assert_eq!(owner_in(&zone, "@").unwrap(), zone);
    assert!(owner_in(&zone, "www.other.test.").is_err());
}

/// Found by the `dns_server` fuzz target: a request correctly signed at a
/// time before the fudge (a client whose clock is near 1970) made
/// hickory's `time - fudge` overflow, a panic with overflow checks.
#[test]
fn request_signed_near_the_epoch_is_badtime() {
    use hickory_proto::op::Query;

    let key = TsigKey::new("k", "hmac-sha256", b"0123456789abcdef".to_vec()).unwrap();
    let records = [("w", Ipv4Addr::new(192, 0, 2, 1))];
    let state = State::new("z.", &key, &records, 60).unwrap();
    let mut request = Message::new();
    request
        .set_id(7)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(parse_name("w.z").unwrap(), RecordType::A));
    request.finalize(&key.signer().unwrap(), 128).unwrap();
    let peer = SocketAddr::from(([192, 0, 2, 53], 53));
    let answer = state
        .handle(&request.to_vec().unwrap(), peer, true)
        .unwrap();
    let answer = Message::from_vec(&answer).unwrap();
    assert_eq!(answer.response_code(), ResponseCode::NotAuth);
    let tsig = answer.signature().iter().find_map(|r| match r.data() {
        RData::DNSSEC(DNSSECRData::TSIG(t)) => Some(t),
        _ => None,
    });
    assert_eq!(
        tsig.and_then(standby_host::dns::update::tsig_error),
        Some(BADTIME)
    );
}

#[test]
fn a_signed_request_sent_again_inside_its_window_is_refused_as_a_replay() {
    use hickory_proto::op::Query;

    let key = TsigKey::new("k", "hmac-sha256", b"0123456789abcdef".to_vec()).unwrap();
    let records = [("w", Ipv4Addr::new(192, 0, 2, 1))];
    let state = State::new("z.", &key, &records, 60).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let signed = |id: u16| {
        let mut request = Message::new();
        request
            .set_id(id)
            .set_op_code(OpCode::Query)
            .add_query(Query::query(parse_name("w.z").unwrap(), RecordType::A));
        request.finalize(&key.signer().unwrap(), now).unwrap();
        request.to_vec().unwrap()
    };
    let peer = SocketAddr::from(([192, 0, 2, 53], 53));
    let code = |packet: &[u8]| {
        Message::from_vec(&state.handle(packet, peer, true).unwrap())
            .unwrap()
            .response_code()
    };
    let first = signed(7);
    assert_eq!(code(&first), ResponseCode::NoError);
    assert_eq!(
        code(&first),
        ResponseCode::NotAuth,
        "the replay was answered"
    );
    // Another request, signed afresh, is fine.
    assert_eq!(code(&signed(8)), ResponseCode::NoError);
}
