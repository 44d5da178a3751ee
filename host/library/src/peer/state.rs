//! The peer link's types, and the state its API, its connections and its
//! loops share.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use super::auth::Psk;
use super::outgoing::Outgoing;
use crate::role::Role;

/// How the link runs.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// This node's id.
    pub node_id: String,
    /// Where this node accepts the peer.
    pub listen: SocketAddr,
    /// The peer's id.
    pub peer_node_id: String,
    /// Where the peer accepts.
    pub peer: SocketAddr,
    /// The shared key.
    pub psk: Psk,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// A connection with no frame for this long is dropped and redialled
    /// (a hung peer keeps its socket open).
    pub dead_after: Duration,
    /// Size of file chunks.
    pub chunk: usize,
    /// Where incoming files are staged (host-private).
    pub staging: PathBuf,
    /// Outgoing frames other than file chunks queued at most (chunks wait in
    /// a lane of their own, behind these: see `outgoing`).
    pub queue: usize,
    /// A file transfer fails once the peer has confirmed no progress for this
    /// long (the receiver confirms what it stores as it goes; a broken link is
    /// redialled and the transfer resumed meanwhile), and a message fails when
    /// the peer has not acknowledged it within this long. A whole transfer
    /// has no time limit: a large copy over a slow link finishes as long as
    /// it keeps moving. The profile's `cluster.transfer_stall_ms`.
    pub transfer_stall: Duration,
}

/// The default of [`PeerConfig::transfer_stall`]: 30 s.
pub(crate) const DEFAULT_TRANSFER_STALL: Duration = Duration::from_secs(30);

impl PeerConfig {
    /// Defaults for a pair.
    pub fn new(
        node_id: &str,
        listen: SocketAddr,
        peer_node_id: &str,
        peer: SocketAddr,
        psk: Psk,
        staging: PathBuf,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            listen,
            peer_node_id: peer_node_id.into(),
            peer,
            psk,
            heartbeat: Duration::from_millis(100),
            dead_after: Duration::from_secs(2),
            chunk: 256 << 10,
            staging,
            queue: 64,
            transfer_stall: DEFAULT_TRANSFER_STALL,
        }
    }
}

/// Something the peer sent for a plugin.
#[derive(Debug)]
pub enum Incoming {
    /// A whole, checked file, staged at `path` (the receiver moves it).
    File {
        /// Plugin instance.
        plugin: String,
        /// Staged file.
        path: PathBuf,
        /// Name the sender gave it.
        name: String,
        /// Sender's tag.
        tag: String,
        /// Size.
        size: u64,
        /// SHA-256, hex.
        sha256: String,
        /// Sender's epoch.
        epoch: u64,
    },
    /// A batch of captured changes, encoded.
    Batch {
        /// Plugin instance.
        plugin: String,
        /// The batch.
        body: Vec<u8>,
        /// Sender's epoch.
        epoch: u64,
    },
    /// The peer handed the service over (a planned switchover): become
    /// active.
    TakeOver {
        /// The peer's site name.
        from: String,
        /// Sender's epoch.
        epoch: u64,
    },
    /// A small message.
    Message {
        /// Plugin instance.
        plugin: String,
        /// Kind.
        kind: String,
        /// Body.
        body: Vec<u8>,
        /// Sender's epoch.
        epoch: u64,
    },
}

/// What the peer confirmed about a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// Bytes stored.
    pub bytes: u64,
    /// SHA-256 the peer computed.
    pub sha256: String,
    /// From the offer to the receipt.
    pub duration_ms: u64,
    /// Bytes skipped because the peer already had them (a resumed transfer).
    pub resumed_from: u64,
}

/// A link failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// No authenticated link to the peer.
    #[error("the peer link is down")]
    Down,
    /// The peer refused (a lower epoch, a failed check).
    #[error("the peer refused: {0}")]
    Refused(String),
    /// Nothing came back in time.
    #[error("the peer did not answer within {0:?}")]
    Timeout(Duration),
    /// The peer confirmed no progress of a transfer (or did not acknowledge
    /// a message) within the stall bound, `cluster.transfer_stall_ms`.
    #[error("no progress from the peer for {} ms (cluster.transfer_stall_ms); last: {last}", .after.as_millis())]
    Stalled {
        /// The stall bound that ran out.
        after: Duration,
        /// What was last seen going wrong (or what was being waited for).
        last: String,
    },
    /// A local file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (shared: the error is cloned to every waiter).
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The file changed size while it was sent.
    #[error("{} shrank while it was being sent", .0.display())]
    Shrank(PathBuf),
}

/// The link as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerState {
    /// An authenticated connection is up.
    pub connected: bool,
    /// The peer's node id (once authenticated).
    pub node_id: Option<String>,
    /// The peer's last announced epoch.
    pub epoch: u64,
    /// The peer's last announced role.
    pub role: Option<Role>,
    /// Wall-clock ms of the last frame from the peer.
    pub last_heard_ms: Option<u64>,
    /// Last heartbeat round trip.
    pub rtt_ms: Option<u32>,
    /// Frames refused for a lower epoch.
    pub refused_lower_epoch: u64,
}

/// What the receiver said about a transfer: ok, bytes, checksum, error.
pub(super) type ReceiptReply = (bool, u64, String, Option<String>);

/// The sender's side of one transfer, registered before the offer goes out so
/// that no answer can arrive unobserved.
pub(super) struct Waiter {
    pub(super) resume: Option<oneshot::Sender<u64>>,
    pub(super) receipt: Option<oneshot::Sender<ReceiptReply>>,
    /// Every `Resume` from the receiver (the answer to the offer, then one
    /// every few stored MiB) bumps this: the transfer is making progress.
    pub(super) progress: watch::Sender<u64>,
}

/// The locks of transfers being received, by id: the writer of a
/// transfer's `.part` file holds its lock.
pub(super) type PartLocks = Mutex<HashMap<u64, std::sync::Arc<tokio::sync::Mutex<()>>>>;

/// The link's state, shared by its API, its connection and its loops.
pub(super) struct Inner {
    pub(super) config: PeerConfig,
    pub(super) local: watch::Receiver<(u64, Role)>,
    pub(super) state: Mutex<PeerState>,
    pub(super) last_heard: Mutex<Option<Instant>>,
    pub(super) out: Mutex<Option<Outgoing>>,
    pub(super) waiters: Mutex<HashMap<u64, Waiter>>,
    pub(super) messages: Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>,
    pub(super) next_id: AtomicU64,
    /// Which connection owns `out` (a newer one replaces an older one).
    pub(super) generation: AtomicU64,
    /// When each recent heartbeat was sent (for the round trip).
    pub(super) beats_sent: Mutex<HashMap<u64, Instant>>,
    pub(super) incoming: mpsc::Sender<Incoming>,
    pub(super) heard: watch::Sender<u64>,
    /// One lock per transfer being received: the writer of its `.part` file
    /// holds it.
    pub(super) part_locks: PartLocks,
}

pub(super) fn now_ms() -> u64 {
    crate::store::unix_ms()
}

/// A file's SHA-256 known before it is sent (computed when the file was
/// written, e.g. by a snapshot), with the stamp the file had then. The
/// sender offers it instead of reading the whole file once more for its
/// checksum, but only while the file it opens still has that stamp. The
/// receiver checks what it stored against it either way: a file changed
/// since is refused, never taken for the one the checksum was made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDigest {
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// The file's stamp when the checksum was made.
    pub stamp: crate::store::FileStamp,
}

/// A file's size and SHA-256 (hex), read on a blocking thread.
pub(super) async fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        Ok((size, hex::encode(h.finalize())))
    })
    .await
    .map_err(std::io::Error::other)?
}
