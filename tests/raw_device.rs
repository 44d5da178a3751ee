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

/// A HANDSHAKE payload, offering `auth` when given.
fn hello(auth: Option<messages::HelloAuth>) -> Vec<u8> {
    messages::encode(&messages::Hello {
        model: "raw".into(),
        firmware: "0".into(),
        incarnation: 1,
        last_seq: 0,
        endpoint: 0,
        max_epoch: 0,
        durable: 0,
        auth,
    })
}

/// A HANDSHAKE request from `device`, without a credential.
pub(crate) fn hello_frame(device: u32) -> Vec<u8> {
    encode(Message::request(device, command::HANDSHAKE, 1, hello(None)))
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

/// A connection that went through the authenticated handshake: every
/// message it sends is sealed, every one it receives is checked (its codec
/// holds the link's MAC).
pub(crate) struct AuthedLink {
    pub(crate) stream: TcpStream,
    codec: DeviceCodec,
    buf: bytes::BytesMut,
    next_seq: u32,
    device_id: u32,
}

impl AuthedLink {
    /// The bytes of `m` sealed as this link's next message (sent or not).
    pub(crate) fn seal(&mut self, m: Message) -> Vec<u8> {
        use tokio_util::codec::Encoder;
        let mut b = bytes::BytesMut::new();
        self.codec.encode(m, &mut b).unwrap();
        b.to_vec()
    }

    /// Send a request, sealed; returns its sequence.
    pub(crate) fn send(&mut self, command: u16, payload: Vec<u8>) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = self.seal(Message::request(self.device_id, command, seq, payload));
        self.stream.write_all(&bytes).unwrap();
        seq
    }

    /// The next message, checked (`None`: the server closed the link).
    pub(crate) fn recv(&mut self) -> Option<Message> {
        use tokio_util::codec::Decoder;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(m) = self
                .codec
                .decode(&mut self.buf)
                .expect("a server message fails its tag")
            {
                return Some(m);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the server closed the link within `limit`.
    pub(crate) fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    }
}

/// One whole message from `s` (plain codec), or `None` at its end; the
/// bytes it took are left in `raw`.
fn read_one(s: &mut TcpStream, buf: &mut bytes::BytesMut, raw: &mut Vec<u8>) -> Option<Message> {
    use tokio_util::codec::Decoder;
    let mut codec = DeviceCodec::default();
    let mut chunk = [0u8; 4096];
    loop {
        let before = buf.clone();
        if let Some(m) = codec.decode(buf).unwrap() {
            raw.clear();
            raw.extend_from_slice(&before[..before.len() - buf.len()]);
            return Some(m);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Connect to `addr` and authenticate with `credential` (a real key, or a
/// forged one): the link and the welcome, or the server's refusal.
pub(crate) fn authenticate(
    addr: std::net::SocketAddr,
    credential: &standby_device::auth::Credential,
) -> Result<(AuthedLink, Message), Message> {
    try_authenticate(addr, credential).expect("no answer from the server within 5 s")
}

/// [`authenticate`], or None when the server answered nothing within 5 s
/// or closed the link (a server under attack may).
pub(crate) fn try_authenticate(
    addr: std::net::SocketAddr,
    credential: &standby_device::auth::Credential,
) -> Option<Result<(AuthedLink, Message), Message>> {
    use standby_device::auth::{nonce, Transcript};
    use standby_device::frame::status;
    use tokio_util::codec::Decoder;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let device_nonce = nonce();
    let hello = hello(Some(messages::HelloAuth {
        generation: credential.generation,
        nonce: device_nonce.to_vec(),
    }));
    let id = credential.device_id;
    stream
        .write_all(&encode(Message::request(
            id,
            command::HANDSHAKE,
            1,
            hello.clone(),
        )))
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut raw = Vec::new();
    let reply = read_one(&mut stream, &mut buf, &mut raw)?;
    if reply.code != status::CHALLENGE {
        return Some(Err(reply));
    }
    let challenge: messages::Challenge = messages::decode("challenge", &reply.payload).unwrap();
    let t = Transcript::new(
        id,
        credential.generation,
        &hello,
        &device_nonce,
        &challenge.nonce,
    );
    let proof = messages::encode(&messages::Authenticate {
        proof: t.device_proof(credential.key()).to_vec(),
    });
    stream
        .write_all(&encode(Message::request(
            id,
            command::AUTHENTICATE,
            2,
            proof,
        )))
        .unwrap();
    // A refusal comes unsealed (the server could not check the proof); the
    // welcome sealed.
    let answer = read_one(&mut stream, &mut buf, &mut raw)?;
    if answer.code != status::OK {
        return Some(Err(answer));
    }
    let mut codec = DeviceCodec::default();
    codec.set_mac(t.device_mac(credential.key()));
    let welcome = codec
        .decode(&mut bytes::BytesMut::from(&raw[..]))
        .expect("the welcome fails its tag")
        .expect("a whole welcome");
    Some(Ok((
        AuthedLink {
            stream,
            codec,
            buf,
            next_seq: 3,
            device_id: id,
        },
        welcome,
    )))
}
