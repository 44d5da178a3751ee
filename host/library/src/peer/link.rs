//! The running link to the other node.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::connection;
use super::outgoing::Outgoing;
use super::proto::{Frame, PeerMsg};
use super::source::{RunningHash, Source};
use super::state::{
    hash_file, Incoming, Inner, KnownDigest, PeerConfig, PeerError, PeerState, Receipt, Waiter,
};
use crate::role::Role;
use crate::store::{FileStamp, PinnedSnapshot};

/// The link to the peer.
#[derive(Clone)]
pub struct PeerLink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("peer", &self.inner.config.peer)
            .finish_non_exhaustive()
    }
}

impl PeerLink {
    /// Start listening and dialling. `local` gives this node's (epoch, role)
    /// as they change; what the peer sends for plugins goes to `incoming`.
    pub async fn start(
        config: PeerConfig,
        local: watch::Receiver<(u64, Role)>,
        incoming: mpsc::Sender<Incoming>,
    ) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(&config.staging).await?;
        let listener = TcpListener::bind(config.listen).await?;
        let inner = Arc::new(Inner {
            config,
            local,
            state: Mutex::new(PeerState::default()),
            last_heard: Mutex::new(None),
            out: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            messages: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            beats_sent: Mutex::new(HashMap::new()),
            incoming,
            heard: watch::channel(0).0,
            part_locks: Mutex::new(HashMap::new()),
        });
        let link = Self { inner };
        tokio::spawn(connection::accept_loop(link.inner.clone(), listener));
        if link.inner.config.node_id < link.inner.config.peer_node_id {
            tokio::spawn(connection::dial_loop(link.inner.clone()));
        }
        tokio::spawn(connection::heartbeat_loop(link.inner.clone()));
        tokio::spawn(super::sweep::sweep_loop(Arc::downgrade(&link.inner)));
        Ok(link)
    }

    /// The link now.
    pub fn state(&self) -> PeerState {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Time since the last frame from the peer (none yet: `None`).
    pub fn silence(&self) -> Option<Duration> {
        self.inner
            .last_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    /// A receiver that changes whenever a frame arrives from the peer.
    pub fn heard(&self) -> watch::Receiver<u64> {
        self.inner.heard.subscribe()
    }

    fn sender(&self) -> Result<Outgoing, PeerError> {
        self.inner
            .out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(PeerError::Down)
    }

    async fn send(&self, msg: PeerMsg) -> Result<(), PeerError> {
        let epoch = self.inner.local.borrow().0;
        self.sender()?
            .send(Frame { epoch, msg })
            .await
            .map_err(|_| PeerError::Down)
    }

    /// Send a small message to the peer's plugin instance `plugin`; fails
    /// with [`PeerError::Stalled`] when the peer has not acknowledged it
    /// within [`PeerConfig::transfer_stall`].
    pub async fn send_message(
        &self,
        plugin: &str,
        kind: &str,
        body: Vec<u8>,
    ) -> Result<(), PeerError> {
        self.send_acknowledged(&format!("message `{kind}`"), |id| PeerMsg::Message {
            id,
            plugin: plugin.into(),
            kind: kind.into(),
            body,
        })
        .await
    }

    /// Send an encoded change batch to the peer's plugin instance `plugin`;
    /// returns once the peer holds it (bounded like [`Self::send_message`]).
    pub(crate) async fn send_batch(&self, plugin: &str, body: Vec<u8>) -> Result<(), PeerError> {
        self.send_acknowledged("change batch", |id| PeerMsg::Batch {
            id,
            plugin: plugin.into(),
            body,
        })
        .await
    }

    /// Ask the peer to become active: this node (`from`, its site name)
    /// has handed the service over. Returns once the peer's node has the
    /// request (bounded like [`Self::send_message`]).
    pub(crate) async fn send_take_over(&self, from: &str) -> Result<(), PeerError> {
        self.send_acknowledged("take-over request", |id| PeerMsg::TakeOver {
            id,
            from: from.into(),
        })
        .await
    }

    /// Send what `make` builds with a fresh id and wait for its
    /// acknowledgement.
    async fn send_acknowledged(
        &self,
        what: &str,
        make: impl FnOnce(u64) -> PeerMsg,
    ) -> Result<(), PeerError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let stall = self.inner.config.transfer_stall;
        // Queueing behind a transfer on a stalled link counts as waiting too.
        let sent_and_acked = async {
            self.send(make(id)).await?;
            rx.await.map_err(|_| PeerError::Down)
        };
        let result = match tokio::time::timeout(stall, sent_and_acked).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(reason))) => Err(PeerError::Refused(reason)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PeerError::Stalled {
                after: stall,
                last: format!("{what} not acknowledged"),
            }),
        };
        self.inner
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        result
    }

    /// The peer's node id, as configured (the link refuses any other).
    pub fn peer_node_id(&self) -> &str {
        &self.inner.config.peer_node_id
    }

    /// Stream a file to the peer's plugin instance `plugin`; returns once the
    /// peer stored it whole and its checksum matched. A broken link is
    /// retried, resuming where the peer's copy stops. The transfer fails with
    /// [`PeerError::Stalled`] once the peer has confirmed no progress for
    /// [`PeerConfig::transfer_stall`]; however long it takes as a whole, a
    /// transfer that keeps moving is never cut off.
    ///
    /// The offer carries the file's SHA-256: `known` when the file still has
    /// the stamp it names (no second read of the file), computed from the
    /// file otherwise. The peer checks what it stored against it.
    pub async fn send_file(
        &self,
        plugin: &str,
        path: &Path,
        name: &str,
        tag: &str,
        known: Option<&KnownDigest>,
    ) -> Result<Receipt, PeerError> {
        let started = Instant::now();
        let (size, sha256) = checksum(path, known).await.map_err(|e| io_error(path, e))?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_error(path, e))?;
        let source = Source::File {
            file: Arc::new(file.into_std().await),
            path: path.to_path_buf(),
        };
        let id = transfer_id(&sha256, name);
        let transfer = Transfer {
            id,
            plugin,
            name,
            tag,
            size,
            source: &source,
            checksum: Checksum::Known(sha256),
        };
        self.transfer(&transfer, started).await
    }

    /// Stream a snapshot of the live database, `pinned`, to the peer's
    /// plugin instance `plugin` as a file named `name`, read straight from
    /// the database (no copy on this node's disk) and hashed as it is read;
    /// its SHA-256 follows its last bytes, and the peer checks what it
    /// stored against it. The pin holds (writers go on into the WAL, which
    /// cannot be checkpointed past it) until the peer has stored the whole
    /// snapshot or the transfer fails, as [`PeerLink::send_file`] does. The
    /// peer's receipt, and the SHA-256 this node read.
    pub async fn send_snapshot(
        &self,
        plugin: &str,
        pinned: PinnedSnapshot,
        name: &str,
        tag: &str,
    ) -> Result<(Receipt, String), PeerError> {
        let started = Instant::now();
        let size = pinned.len();
        let source = Source::Pinned(Arc::new(pinned));
        // A stream is not offered again later: an id of its own.
        let id = rand::random::<u64>();
        let transfer = Transfer {
            id,
            plugin,
            name,
            tag,
            size,
            source: &source,
            checksum: Checksum::Running(Arc::new(Mutex::new(RunningHash::new(size)))),
        };
        let receipt = self.transfer(&transfer, started).await?;
        let sent = transfer
            .checksum
            .known()
            .ok_or_else(|| PeerError::Shrank(source.path().to_path_buf()))?;
        Ok((receipt, sent))
    }

    /// Send `t` until the peer has it, retrying over new connections while
    /// the stall bound allows.
    async fn transfer(&self, t: &Transfer<'_>, started: Instant) -> Result<Receipt, PeerError> {
        let stall = self.inner.config.transfer_stall;
        // When the peer last confirmed anything about this transfer (counting
        // from the start, and across redials).
        let mut progressed = Instant::now();
        let mut resumed_from = 0;
        loop {
            let e = match self.try_transfer(t, &mut progressed).await {
                Ok((bytes, got, have)) => {
                    resumed_from = resumed_from.max(have);
                    return Ok(Receipt {
                        bytes,
                        sha256: got,
                        duration_ms: started.elapsed().as_millis() as u64,
                        resumed_from,
                    });
                }
                Err(
                    e @ (PeerError::Refused(_)
                    | PeerError::Io { .. }
                    | PeerError::Shrank(_)
                    | PeerError::Stalled { .. }),
                ) => return Err(e),
                Err(e) => e,
            };
            if progressed.elapsed() + Duration::from_millis(200) >= stall {
                return Err(PeerError::Stalled {
                    after: stall,
                    last: e.to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One attempt over the current connection: offer, stream from where the
    /// peer's copy stops (then a stream's checksum), wait for the receipt;
    /// fails with [`PeerError::Stalled`] when the peer confirms nothing for
    /// the stall bound since `progressed` (which every confirmation moves
    /// on).
    async fn try_transfer(
        &self,
        t: &Transfer<'_>,
        progressed: &mut Instant,
    ) -> Result<(u64, String, u64), PeerError> {
        let id = t.id;
        let (resume_tx, resume_rx) = oneshot::channel();
        let (receipt_tx, receipt_rx) = oneshot::channel();
        let (progress_tx, mut progress_rx) = watch::channel(0u64);
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Waiter {
                    resume: Some(resume_tx),
                    receipt: Some(receipt_tx),
                    progress: progress_tx,
                },
            );
        let stall = self.inner.config.transfer_stall;
        let path = t.source.path();
        let transfer = async {
            let offered = t.checksum.known();
            self.send(PeerMsg::Offer {
                id,
                plugin: t.plugin.into(),
                tag: t.tag.into(),
                name: t.name.into(),
                size: t.size,
                sha256: offered.clone(),
            })
            .await?;
            let have = resume_rx.await.map_err(|_| PeerError::Down)?;
            if have == u64::MAX {
                return Err(PeerError::Refused("the peer refused the offer".into()));
            }
            let chunk = self.inner.config.chunk.max(1) as u64;
            let mut offset = have;
            while offset < t.size {
                let want = (t.size - offset).min(chunk) as usize;
                let data = t
                    .source
                    .read(offset, want, t.checksum.running())
                    .await
                    .map_err(|e| io_error(path, e))?;
                if data.is_empty() {
                    return Err(PeerError::Shrank(path.to_path_buf()));
                }
                let n = data.len() as u64;
                self.send(PeerMsg::Chunk { id, offset, data }).await?;
                offset += n;
            }
            if offered.is_none() {
                // Every byte was read (now or by an earlier attempt).
                let sha256 = t
                    .checksum
                    .known()
                    .ok_or_else(|| PeerError::Shrank(path.to_path_buf()))?;
                self.send(PeerMsg::Checksum { id, sha256 }).await?;
            }
            match receipt_rx.await {
                Ok((true, bytes, got, _)) => Ok((bytes, got, have)),
                Ok((false, _, _, err)) => Err(PeerError::Refused(
                    err.unwrap_or_else(|| "the peer rejected the file".into()),
                )),
                Err(_) => Err(PeerError::Down),
            }
        };
        let watchdog = async {
            loop {
                let left = stall.saturating_sub(progressed.elapsed());
                if left.is_zero() {
                    return PeerError::Stalled {
                        after: stall,
                        last: String::from("the peer stopped confirming chunks"),
                    };
                }
                match tokio::time::timeout(left, progress_rx.changed()).await {
                    Ok(Ok(())) => *progressed = Instant::now(),
                    // The connection ended (its waiters are dropped): the
                    // transfer sees that and returns.
                    Ok(Err(_)) => std::future::pending::<()>().await,
                    Err(_) => {}
                }
            }
        };
        let result = tokio::select! {
            r = transfer => r,
            e = watchdog => Err(e),
        };
        if result.is_err() {
            self.inner
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
        result
    }
}

/// One transfer: what it is, where its bytes come from, its checksum.
struct Transfer<'a> {
    id: u64,
    plugin: &'a str,
    name: &'a str,
    tag: &'a str,
    size: u64,
    source: &'a Source,
    checksum: Checksum,
}

/// A transfer's SHA-256.
enum Checksum {
    /// Known before the first byte is sent.
    Known(String),
    /// Computed as the bytes are read (a stream).
    Running(Arc<Mutex<RunningHash>>),
}

impl Checksum {
    /// The checksum, when known by now.
    fn known(&self) -> Option<String> {
        match self {
            Checksum::Known(sha) => Some(sha.clone()),
            Checksum::Running(h) => h
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .digest()
                .map(str::to_string),
        }
    }

    /// What the reads feed, for a checksum computed as they go.
    fn running(&self) -> Option<Arc<Mutex<RunningHash>>> {
        match self {
            Checksum::Known(_) => None,
            Checksum::Running(h) => Some(h.clone()),
        }
    }
}

/// A transfer's id: the same for the same file under the same name, so that
/// a later offer of it resumes what the peer stored of an earlier one.
pub(super) fn transfer_id(sha256: &str, name: &str) -> u64 {
    // The whole name counts: two files of the same contents sent at once
    // under names of the same length must not share a transfer.
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(sha256.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The size and SHA-256 to offer for the file at `path`: `known`'s checksum
/// when the file has its stamp, the file's own otherwise.
async fn checksum(path: &Path, known: Option<&KnownDigest>) -> std::io::Result<(u64, String)> {
    if let Some(known) = known {
        let at = path.to_path_buf();
        let stamp = tokio::task::spawn_blocking(move || FileStamp::of_path(&at))
            .await
            .map_err(std::io::Error::other)??;
        if stamp == known.stamp {
            return Ok((stamp.len, known.sha256.clone()));
        }
        tracing::debug!(file = %path.display(), "changed since its checksum was made; reading it again");
    }
    hash_file(path).await
}

/// A failure of the local file `path`.
fn io_error(path: &Path, e: std::io::Error) -> PeerError {
    PeerError::Io {
        path: path.to_path_buf(),
        source: std::sync::Arc::new(e),
    }
}
