//! Frames between the two nodes (and between a node and the witness).
//!
//! On the wire: `u32 length | MessagePack body sealed with AES-256-GCM
//! | 16-byte tag` (see [`super::cipher`]); the handshake messages go before
//! the keys are set up, as `u32 length | MessagePack`.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::AuthError;
use super::cipher::{CipherError, FrameCipher, TAG_LEN};
use crate::role::Role;

/// Largest frame accepted (a file chunk plus headroom).
pub(crate) const MAX_FRAME: usize = 2 << 20;

/// Largest message accepted before authentication (hello, reply, confirm):
/// a stranger cannot make a node allocate more.
pub(crate) const MAX_PLAIN: usize = 4 << 10;

/// Every frame carries the sender's epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Frame {
    /// Sender's epoch when it sent the frame.
    pub epoch: u64,
    /// What it says.
    pub msg: PeerMsg,
}

/// What nodes say to each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum PeerMsg {
    /// Liveness, both ways, every heartbeat interval.
    Heartbeat {
        /// Counts up per sender.
        seq: u64,
        /// Sender's role.
        role: Role,
        /// Sender's wall clock (for display only).
        sent_ms: u64,
    },
    /// Answer to a heartbeat (for round-trip time).
    HeartbeatAck {
        /// The heartbeat's seq.
        seq: u64,
    },
    /// A file is coming.
    Offer {
        /// Transfer id (the same for a resumed transfer).
        id: u64,
        /// The plugin instance it is for.
        plugin: String,
        /// The sender's tag.
        tag: String,
        /// File name to store it under.
        name: String,
        /// Size in bytes.
        size: u64,
        /// SHA-256, hex; None: a stream whose checksum follows its last
        /// bytes (in a `Checksum` frame, which may overtake chunks).
        sha256: Option<String>,
    },
    /// The receiver has `have` bytes of the transfer already; send the rest.
    /// Sent in answer to an offer, and again as chunks are stored (every few
    /// MiB, at least every 100 ms while they come) to confirm progress (the
    /// sender's stall bound counts from the last one).
    Resume {
        /// Transfer id.
        id: u64,
        /// Bytes already stored.
        have: u64,
    },
    /// Part of a file.
    Chunk {
        /// Transfer id.
        id: u64,
        /// Offset of `data` in the file.
        offset: u64,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The SHA-256 of a streamed transfer (offered without one), once the
    /// sender has read every byte of it.
    Checksum {
        /// Transfer id.
        id: u64,
        /// SHA-256, hex.
        sha256: String,
    },
    /// The receiver stored and checked the whole file (or failed).
    Receipt {
        /// Transfer id.
        id: u64,
        /// Whether the file arrived whole with the announced checksum.
        ok: bool,
        /// Bytes stored.
        bytes: u64,
        /// SHA-256 computed by the receiver, hex.
        sha256: String,
        /// Why not, when `ok` is false.
        error: Option<String>,
    },
    /// A small message for the peer's plugin instance of the same name.
    Message {
        /// Message id, echoed by the ack.
        id: u64,
        /// Plugin instance.
        plugin: String,
        /// Kind.
        kind: String,
        /// Body.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// A batch of captured changes for the peer's plugin instance of the
    /// same name (acknowledged with [`PeerMsg::MessageAck`] once the peer
    /// holds it).
    Batch {
        /// Message id, echoed by the ack.
        id: u64,
        /// Plugin instance.
        plugin: String,
        /// The batch, encoded.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// A planned switchover: the sender (active until now) has handed its
    /// data over, given its lease back and asks this node to become active
    /// (acknowledged with [`PeerMsg::MessageAck`] once the node has it).
    TakeOver {
        /// Message id, echoed by the ack.
        id: u64,
        /// The sender's site name.
        from: String,
    },
    /// The message was delivered (or refused).
    MessageAck {
        /// Message id.
        id: u64,
        /// Refusal reason, if refused.
        error: Option<String>,
    },
    /// Data refused because it came from a lower epoch.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A frame I/O failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FrameError {
    /// The socket failed or closed.
    #[error("peer link: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be encoded.
    #[error("peer link: malformed frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A frame's body does not decode.
    #[error("peer link: malformed frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A frame announces more bytes than allowed.
    #[error("peer link: malformed frame: frame of {len} bytes is over {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame is shorter than its tag.
    #[error("peer link: malformed frame: frame shorter than its tag")]
    Short,
    /// The handshake did not finish in time.
    #[error("peer link: malformed frame: handshake timed out")]
    HandshakeTimeout,
    /// A frame could not be sealed or did not open.
    #[error(transparent)]
    Cipher(#[from] CipherError),
    /// Authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Write a plain (pre-authentication) message.
pub(crate) async fn write_plain<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    let body = rmp_serde::to_vec_named(value).map_err(FrameError::from)?;
    w.write_all(&(body.len() as u32).to_le_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

async fn read_body<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLong { len, max });
    }
    // Read into the vector's spare room (nothing to zero first).
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let left = (len - body.len()) as u64;
        if (&mut *r).take(left).read_buf(&mut body).await? == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(body)
}

/// Read a plain (pre-authentication) message.
pub(crate) async fn read_plain<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    r: &mut R,
) -> Result<T, FrameError> {
    let body = read_body(r, MAX_PLAIN).await?;
    rmp_serde::from_slice(&body).map_err(FrameError::from)
}

/// Write an encrypted frame.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    cipher: &mut FrameCipher,
    value: &T,
) -> Result<(), FrameError> {
    write_frame_with(w, cipher, value, &mut Vec::new()).await
}

/// [`write_frame`], built in `out` (cleared first; a writer that keeps it
/// between frames allocates once, not once per frame).
pub(crate) async fn write_frame_with<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    cipher: &mut FrameCipher,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    // One buffer, one write: length, sealed body, tag.
    out.clear();
    out.extend_from_slice(&[0u8; 4]);
    rmp_serde::encode::write_named(out, value).map_err(FrameError::from)?;
    let tag = cipher.seal(&mut out[4..])?;
    out.extend_from_slice(&tag);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    w.write_all(out).await?;
    Ok(())
}

/// Read an encrypted frame.
pub(crate) async fn read_frame<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    r: &mut R,
    cipher: &mut FrameCipher,
) -> Result<T, FrameError> {
    let mut body = read_body(r, MAX_FRAME + TAG_LEN).await?;
    if body.len() < TAG_LEN {
        return Err(FrameError::Short);
    }
    let data = cipher.open(&mut body)?;
    rmp_serde::from_slice(data).map_err(FrameError::from)
}
