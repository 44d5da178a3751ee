//! Raw device frames for the tests that speak the wire protocol directly
//! (malformed, oversized or unfinished messages a real device never sends).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use standby_device::codec::{DeviceCodec, Message};
use standby_device::frame::command;
use standby_device::messages;

/// One message's bytes on the wire.
pub(crate) fn encode(m: Message) -> Vec<u8> {
    use tokio_util::codec::Encoder;
    let mut b = bytes::BytesMut::new();
    DeviceCodec::default().encode(m, &mut b).unwrap();
    b.to_vec()
}

/// A HANDSHAKE request from `device`.
pub(crate) fn hello_frame(device: u32) -> Vec<u8> {
    let hello = messages::Hello {
        model: "raw".into(),
        firmware: "0".into(),
        incarnation: 1,
        last_seq: 0,
        endpoint: 0,
        max_epoch: 0,
        durable: 0,
    };
    encode(Message::request(
        device,
        command::HANDSHAKE,
        1,
        messages::encode(&hello),
    ))
}

/// Send `frames` on a new connection and decode what comes back until
/// `want` messages arrived or the server closed.
pub(crate) fn exchange_raw(addr: std::net::SocketAddr, frames: &[u8], want: usize) -> Vec<Message> {
    use tokio_util::codec::Decoder;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(frames).unwrap();
    let mut codec = DeviceCodec::default();
    let mut buf = bytes::BytesMut::new();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while got.len() < want {
        while let Some(m) = codec.decode(&mut buf).unwrap() {
            got.push(m);
        }
        if got.len() >= want {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    got
}
