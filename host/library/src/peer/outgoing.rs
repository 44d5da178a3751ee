//! Where a connection's outgoing frames wait before the writer seals and
//! sends them: file chunks in a lane of their own, everything else
//! (heartbeats and their answers, messages, batches, offers, progress,
//! receipts, take-overs) in a lane the writer always empties first. So a
//! message, a heartbeat or a confirmation never waits behind a file's
//! queued chunks, and a connection that receives files while it sends one
//! answers at once instead of queueing its answers behind its own chunks.
//!
//! Below the queues, the socket keeps at most [`UNSENT_LOW_WATER`] bytes it
//! has not sent yet (`TCP_NOTSENT_LOWAT`) instead of megabytes: a frame
//! that jumps the queue is not stuck behind chunks already handed to the
//! kernel either.

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::proto::{Frame, PeerMsg};

/// File chunks queued at most (of `PeerConfig::chunk` bytes each).
pub(super) const CHUNKS_QUEUED: usize = 16;

/// Bytes the socket holds that it has not sent yet, at most, before a write
/// waits (a frame being written may go past it).
pub(super) const UNSENT_LOW_WATER: u32 = 512 << 10;

/// The sending half: where frames are queued.
#[derive(Debug, Clone)]
pub(super) struct Outgoing {
    control: mpsc::Sender<Frame>,
    chunks: mpsc::Sender<Frame>,
}

/// The connection's writer is gone: nothing queued now is sent.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the peer connection is gone")]
pub(super) struct ConnectionGone;

/// The writer's half.
pub(super) struct OutgoingRx {
    control: mpsc::Receiver<Frame>,
    chunks: mpsc::Receiver<Frame>,
}

/// Queues for one connection: `control` frames other than chunks at most.
pub(super) fn outgoing(control: usize) -> (Outgoing, OutgoingRx) {
    let (control_tx, control_rx) = mpsc::channel(control.max(1));
    let (chunks_tx, chunks_rx) = mpsc::channel(CHUNKS_QUEUED);
    (
        Outgoing {
            control: control_tx,
            chunks: chunks_tx,
        },
        OutgoingRx {
            control: control_rx,
            chunks: chunks_rx,
        },
    )
}

impl Outgoing {
    fn lane(&self, frame: &Frame) -> &mpsc::Sender<Frame> {
        match frame.msg {
            PeerMsg::Chunk { .. } => &self.chunks,
            _ => &self.control,
        }
    }

    /// Queue `frame`, waiting for room in its lane.
    pub(super) async fn send(&self, frame: Frame) -> Result<(), ConnectionGone> {
        self.lane(&frame)
            .send(frame)
            .await
            .map_err(|_| ConnectionGone)
    }

    /// Queue `frame` if its lane has room now; whether it was queued.
    pub(super) fn try_send(&self, frame: Frame) -> bool {
        self.lane(&frame).try_send(frame).is_ok()
    }
}

impl OutgoingRx {
    /// The next frame to write: any control frame before any chunk; None
    /// once every sender is gone.
    pub(super) async fn next(&mut self) -> Option<Frame> {
        tokio::select! {
            biased;
            Some(frame) = self.control.recv() => Some(frame),
            Some(frame) = self.chunks.recv() => Some(frame),
            else => None,
        }
    }
}

/// Keep at most [`UNSENT_LOW_WATER`] unsent bytes in `stream`'s send buffer.
/// Advice: where the system refuses it, frames still go out, only later
/// behind a fuller buffer.
pub(super) fn limit_unsent(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT_LOW_WATER) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT refused; frames may wait behind sent chunks");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn frame(msg: PeerMsg) -> Frame {
        Frame { epoch: 1, msg }
    }

    #[tokio::test]
    async fn a_control_frame_goes_before_chunks_queued_ahead_of_it() {
        let (tx, mut rx) = outgoing(4);
        for offset in 0..3 {
            tx.send(frame(PeerMsg::Chunk {
                id: 1,
                offset,
                data: vec![0; 8],
            }))
            .await
            .unwrap();
        }
        tx.send(frame(PeerMsg::HeartbeatAck { seq: 7 }))
            .await
            .unwrap();
        assert!(matches!(
            rx.next().await.unwrap().msg,
            PeerMsg::HeartbeatAck { seq: 7 }
        ));
        for want in 0..3 {
            match rx.next().await.unwrap().msg {
                PeerMsg::Chunk { offset, .. } => assert_eq!(offset, want),
                other => panic!("{other:?}"),
            }
        }
        drop(tx);
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn a_full_chunk_lane_leaves_room_for_control_frames() {
        let (tx, _rx) = outgoing(2);
        for offset in 0..CHUNKS_QUEUED as u64 {
            assert!(tx.try_send(frame(PeerMsg::Chunk {
                id: 1,
                offset,
                data: Vec::new(),
            })));
        }
        assert!(!tx.try_send(frame(PeerMsg::Chunk {
            id: 1,
            offset: 99,
            data: Vec::new(),
        })));
        assert!(tx.try_send(frame(PeerMsg::HeartbeatAck { seq: 1 })));
    }
}
