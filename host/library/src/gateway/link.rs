//! The framed link of one device connection: messages in and out through
//! the device codec, and why a connection ends.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use standby_device::codec::{CodecError, DeviceCodec, Message};
use standby_device::messages::{self as msg, PayloadError};

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum End {
    Eof,
    Frame(CodecError),
    DeadLink,
    Closing,
    Replaced,
    Invalid(crate::enrolment::Invalid),
    Protocol(Violation),
    Write(std::io::Error),
}

/// A device that broke the protocol (its connection is closed).
#[derive(Debug, thiserror::Error)]
pub(super) enum Violation {
    /// The first message was not a handshake.
    #[error("first message was {0:#06x}")]
    NotHandshake(u16),
    /// A payload did not decode.
    #[error(transparent)]
    BadPayload(#[from] PayloadError),
    /// A frame named another device than the link's.
    #[error("frame for device {frame} on the link of device {link}")]
    WrongDevice { frame: u32, link: u32 },
    /// A command a device may not send.
    #[error("command {0:#06x} is not a device request")]
    NotARequest(u16),
    /// A reply could not be encoded (it exceeds the frame limits).
    #[error("cannot encode a reply: {0}")]
    Encode(#[source] CodecError),
}

pub(super) struct Link<R, W> {
    pub(super) rd: R,
    pub(super) wr: W,
    pub(super) codec: DeviceCodec,
    pub(super) inbuf: BytesMut,
    pub(super) outbuf: BytesMut,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Link<R, W> {
    pub(super) async fn next(&mut self) -> Result<Message, End> {
        loop {
            match self.codec.decode(&mut self.inbuf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(End::Frame(e)),
            }
            match self.rd.read_buf(&mut self.inbuf).await {
                Ok(0) => {
                    return match self.codec.decode_eof(&mut self.inbuf) {
                        Ok(Some(m)) => Ok(m),
                        Ok(None) => Err(End::Eof),
                        Err(e) => Err(End::Frame(e)),
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(End::Frame(CodecError::Io(e))),
            }
        }
    }

    pub(super) async fn send(&mut self, m: Message) -> Result<(), End> {
        self.outbuf.clear();
        self.codec
            .encode(m, &mut self.outbuf)
            .map_err(|e| End::Protocol(Violation::Encode(e)))?;
        self.wr.write_all(&self.outbuf).await.map_err(End::Write)?;
        if self.outbuf.capacity() > 64 << 10 {
            self.outbuf = BytesMut::new();
        }
        Ok(())
    }
}

pub(super) fn refusal(reason: impl Into<String>) -> Vec<u8> {
    msg::encode(&msg::Refusal {
        reason: reason.into(),
    })
}
