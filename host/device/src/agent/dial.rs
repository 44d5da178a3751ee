//! Dialling a server: connect (from a source address, over TLS when the
//! endpoint asks), handshake, authenticate with the device's credential, and
//! check that the server is the active one at an epoch not below one seen.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

use super::endpoint::{Endpoint, Host};
use super::error::LinkError;
use super::resolver::ResolveError;
use super::Shared;
use crate::auth::{self, Credential, Transcript};
use crate::codec::{DeviceCodec, Message};
use crate::frame::{command, status};
use crate::messages::{self as msg, PayloadError, ServerRole};

pub(super) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Why dialling failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum DialError {
    /// The endpoint's name did not resolve in time.
    #[error("unreachable: resolving {0} timed out")]
    ResolveTimeout(String),
    /// The endpoint's name did not resolve.
    #[error("unreachable: {0}")]
    Resolve(#[from] ResolveError),
    /// The name resolved to no address.
    #[error("unreachable: no address")]
    NoAddress,
    /// The last address tried refused or failed the connection.
    #[error("unreachable: {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The last address tried did not accept in time.
    #[error("unreachable: {0}: connect timed out")]
    ConnectTimeout(SocketAddr),
    /// The endpoint asks for TLS and the device has no trust configured.
    #[error("refused: no TLS trust configured")]
    NoTlsTrust,
    /// The endpoint's name is not a valid TLS server name.
    #[error("refused: {0}")]
    ServerName(#[source] rustls::pki_types::InvalidDnsNameError),
    /// The TLS handshake did not finish in time.
    #[error("unreachable: TLS handshake timed out")]
    TlsTimeout,
    /// The TLS handshake failed (e.g. the certificate is not trusted).
    #[error("refused: TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The server did not answer the handshake in time.
    #[error("unreachable: no handshake reply in time")]
    HandshakeTimeout,
    /// The link failed during the handshake.
    #[error("unreachable: {0}")]
    Link(#[source] LinkError),
    /// The server refused the handshake, saying why.
    #[error("refused: {0}")]
    Refused(String),
    /// The server did not prove it knows the device's key (a server of
    /// another enrolment key, or an impostor).
    #[error("refused: the server could not prove it knows this device's key (generation {0})")]
    ServerProof(u32),
    /// The server took the handshake of a device with a credential without
    /// challenging it: it cannot have proved who it is.
    #[error("refused: the server did not ask this device to authenticate")]
    Unchallenged,
    /// The server challenged a device that has no credential.
    #[error("refused: the server asks for authentication and this device has no credential")]
    NoCredential,
    /// A challenge did not decode.
    #[error("refused: {0}")]
    Challenge(#[source] PayloadError),
    /// The server's welcome did not decode.
    #[error("refused: {0}")]
    Welcome(#[source] PayloadError),
    /// The server presents an epoch lower than one already seen.
    #[error("server presents epoch {server}, lower than {seen} already seen")]
    LowerEpoch { server: u64, seen: u64 },
    /// The server is not active.
    #[error("server is {0:?}, not active")]
    Inactive(ServerRole),
}

pub(super) struct Conn {
    rd: tokio::io::ReadHalf<Box<dyn Stream>>,
    wr: tokio::io::WriteHalf<Box<dyn Stream>>,
    codec: DeviceCodec,
    inbuf: BytesMut,
    outbuf: BytesMut,
    device_id: u32,
    next_seq: u32,
}

impl Conn {
    pub(super) async fn next(&mut self) -> Result<Message, LinkError> {
        loop {
            if let Some(m) = self.codec.decode(&mut self.inbuf)? {
                return Ok(m);
            }
            if self.rd.read_buf(&mut self.inbuf).await? == 0 {
                return self
                    .codec
                    .decode_eof(&mut self.inbuf)?
                    .ok_or(LinkError::Closed);
            }
        }
    }

    pub(super) async fn send(&mut self, m: Message) -> Result<(), LinkError> {
        self.outbuf.clear();
        self.codec.encode(m, &mut self.outbuf)?;
        self.wr.write_all(&self.outbuf).await?;
        if self.outbuf.capacity() > 64 << 10 {
            self.outbuf = BytesMut::new();
        }
        Ok(())
    }

    /// Send a request with a fresh sequence; returns the sequence.
    pub(super) async fn request(
        &mut self,
        command: u16,
        payload: Vec<u8>,
    ) -> Result<u32, LinkError> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        self.send(Message::request(self.device_id, command, seq, payload))
            .await?;
        Ok(seq)
    }

    /// The response to request `seq` of `command` (anything else the server
    /// sends before it is dropped: nothing else is expected yet).
    async fn reply_to(&mut self, command: u16, seq: u32) -> Result<Message, LinkError> {
        loop {
            let m = self.next().await?;
            if m.response && m.command == command && m.sequence == seq {
                return Ok(m);
            }
        }
    }
}

/// Open a TCP connection to `to`, from `source` when one is configured.
async fn connect(source: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(to).await;
    };
    let socket = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// Resolve (if a name), connect, TLS, handshake (and authenticate, with a
/// credential), and check the server.
pub(super) async fn dial(
    shared: &Shared,
    endpoint: &Endpoint,
    index: usize,
) -> Result<(Conn, msg::Welcome), DialError> {
    let cfg = &shared.config;
    let deadline = Instant::now() + cfg.connect_timeout;
    let addrs: Vec<IpAddr> = match &endpoint.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => tokio::time::timeout_at(deadline, cfg.resolver.resolve(name))
            .await
            .map_err(|_| DialError::ResolveTimeout(name.clone()))??,
    };
    let mut tcp = None;
    let mut last = DialError::NoAddress;
    for ip in addrs {
        match tokio::time::timeout_at(
            deadline,
            connect(cfg.source, SocketAddr::new(ip, endpoint.port)),
        )
        .await
        {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(source)) => {
                last = DialError::Connect {
                    addr: SocketAddr::new(ip, endpoint.port),
                    source,
                }
            }
            Err(_) => last = DialError::ConnectTimeout(SocketAddr::new(ip, endpoint.port)),
        }
    }
    let Some(tcp) = tcp else { return Err(last) };
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Stream> = if endpoint.tls {
        let tls = cfg.tls.clone().ok_or(DialError::NoTlsTrust)?;
        let name = match &endpoint.host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(n) => ServerName::try_from(n.clone()).map_err(DialError::ServerName)?,
        };
        let s = tokio::time::timeout_at(
            deadline,
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
        )
        .await
        .map_err(|_| DialError::TlsTimeout)?
        .map_err(DialError::Tls)?;
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    let (rd, wr) = tokio::io::split(stream);
    let mut conn = Conn {
        rd,
        wr,
        codec: DeviceCodec::new(cfg.limits),
        inbuf: BytesMut::with_capacity(256),
        outbuf: BytesMut::new(),
        device_id: cfg.device_id,
        next_seq: 1,
    };
    let credential = shared.credential();
    let device_nonce = auth::nonce();
    let hello = {
        let log = shared.lock_log();
        msg::Hello {
            model: cfg.model.clone(),
            firmware: cfg.firmware.clone(),
            incarnation: log.incarnation(),
            last_seq: log.last_seq(),
            endpoint: index.min(255) as u8,
            max_epoch: log.max_epoch(),
            durable: log.durable(),
            auth: credential.as_ref().map(|c| msg::HelloAuth {
                generation: c.generation,
                nonce: device_nonce.to_vec(),
            }),
        }
    };
    let reply = tokio::time::timeout_at(
        deadline,
        handshake(
            &mut conn,
            msg::encode(&hello),
            credential.as_deref(),
            &device_nonce,
        ),
    )
    .await
    .map_err(|_| DialError::HandshakeTimeout)??;
    if reply.code != status::OK {
        let reason = msg::decode::<msg::Refusal>("refusal", &reply.payload)
            .map(|r| r.reason)
            .unwrap_or_else(|_| format!("status {}", reply.code));
        return Err(DialError::Refused(reason));
    }
    let welcome: msg::Welcome =
        msg::decode("welcome", &reply.payload).map_err(DialError::Welcome)?;
    let seen = shared.max_epoch();
    if welcome.epoch < seen {
        return Err(DialError::LowerEpoch {
            server: welcome.epoch,
            seen,
        });
    }
    if welcome.role != ServerRole::Active {
        return Err(DialError::Inactive(welcome.role));
    }
    shared.raise_epoch(welcome.epoch);
    Ok((conn, welcome))
}

/// HANDSHAKE, and with a credential the challenge and AUTHENTICATE: the
/// server's final answer (its welcome, or a refusal).
async fn handshake(
    conn: &mut Conn,
    hello: Vec<u8>,
    credential: Option<&Credential>,
    device_nonce: &[u8],
) -> Result<Message, DialError> {
    let seq = conn
        .request(command::HANDSHAKE, hello.clone())
        .await
        .map_err(DialError::Link)?;
    let reply = conn
        .reply_to(command::HANDSHAKE, seq)
        .await
        .map_err(DialError::Link)?;
    let c = match (credential, reply.code) {
        (Some(c), status::CHALLENGE) => c,
        (None, status::CHALLENGE) => return Err(DialError::NoCredential),
        (Some(_), status::OK) => return Err(DialError::Unchallenged),
        _ => return Ok(reply),
    };
    let challenge: msg::Challenge =
        msg::decode("challenge", &reply.payload).map_err(DialError::Challenge)?;
    let transcript = Transcript::new(
        c.device_id,
        c.generation,
        &hello,
        device_nonce,
        &challenge.nonce,
    );
    if !transcript.is_server_proof(c.key(), &challenge.proof) {
        return Err(DialError::ServerProof(c.generation));
    }
    let proof = msg::Authenticate {
        proof: transcript.device_proof(c.key()).to_vec(),
    };
    let seq = conn
        .request(command::AUTHENTICATE, msg::encode(&proof))
        .await
        .map_err(DialError::Link)?;
    conn.codec.set_mac(transcript.device_mac(c.key()));
    conn.reply_to(command::AUTHENTICATE, seq)
        .await
        .map_err(DialError::Link)
}

/// Does `endpoint` answer (TCP, and TLS if it is a TLS endpoint)?
pub(super) async fn probe(
    endpoint: &Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    resolver: Arc<dyn super::Resolve>,
    timeout: Duration,
) -> bool {
    let attempt = async {
        let ip = match &endpoint.host {
            Host::Ip(ip) => *ip,
            Host::Name(n) => *resolver.resolve(n).await.ok()?.first()?,
        };
        let tcp = TcpStream::connect(SocketAddr::new(ip, endpoint.port))
            .await
            .ok()?;
        if endpoint.tls {
            let name = match &endpoint.host {
                Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
                Host::Name(n) => ServerName::try_from(n.clone()).ok()?,
            };
            tokio_rustls::TlsConnector::from(tls?)
                .connect(name, tcp)
                .await
                .ok()?;
        }
        Some(())
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(())))
}
