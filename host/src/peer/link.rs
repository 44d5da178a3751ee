//! The running link to the other node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::auth::Psk;
use super::proto::{self, Frame, FrameError, PeerMsg};
use super::session::{self, Macs};
use crate::plugin::Role;

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
    /// Outgoing frames queued at most.
    pub queue: usize,
    /// A file transfer fails once the peer has confirmed no progress for this
    /// long (the receiver confirms every chunk it stores; a broken link is
    /// redialled and the transfer resumed meanwhile), and a message fails when
    /// the peer has not acknowledged it within this long. A whole transfer
    /// has no time limit: a large copy over a slow link finishes as long as
    /// it keeps moving. The profile's `cluster.transfer_stall_ms`.
    pub transfer_stall: Duration,
}

/// The default of [`PeerConfig::transfer_stall`]: 30 s.
pub const DEFAULT_TRANSFER_STALL: Duration = Duration::from_secs(30);

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
    #[error("{0}")]
    Io(String),
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
type ReceiptReply = (bool, u64, String, Option<String>);

/// The sender's side of one transfer, registered before the offer goes out so
/// that no answer can arrive unobserved.
struct Waiter {
    resume: Option<oneshot::Sender<u64>>,
    receipt: Option<oneshot::Sender<ReceiptReply>>,
    /// Every `Resume` from the receiver (the answer to the offer, then one
    /// per stored chunk) bumps this: the transfer is making progress.
    progress: watch::Sender<u64>,
}

struct Receiving {
    plugin: String,
    tag: String,
    name: String,
    size: u64,
    sha256: String,
    file: tokio::fs::File,
    path: PathBuf,
    next: u64,
    epoch: u64,
}

struct Inner {
    config: PeerConfig,
    local: watch::Receiver<(u64, Role)>,
    state: Mutex<PeerState>,
    last_heard: Mutex<Option<Instant>>,
    out: Mutex<Option<mpsc::Sender<Frame>>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    messages: Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>,
    next_id: AtomicU64,
    /// Which connection owns `out` (a newer one replaces an older one).
    generation: AtomicU64,
    /// When each recent heartbeat was sent (for the round trip).
    beats_sent: Mutex<HashMap<u64, Instant>>,
    incoming: mpsc::Sender<Incoming>,
    heard: watch::Sender<u64>,
}

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

fn now_ms() -> u64 {
    crate::store::unix_ms()
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
        });
        let link = Self { inner };
        tokio::spawn(accept_loop(link.inner.clone(), listener));
        if link.inner.config.node_id < link.inner.config.peer_node_id {
            tokio::spawn(dial_loop(link.inner.clone()));
        }
        tokio::spawn(heartbeat_loop(link.inner.clone()));
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

    fn sender(&self) -> Result<mpsc::Sender<Frame>, PeerError> {
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
            self.send(PeerMsg::Message {
                id,
                plugin: plugin.into(),
                kind: kind.into(),
                body,
            })
            .await?;
            rx.await.map_err(|_| PeerError::Down)
        };
        let result = match tokio::time::timeout(stall, sent_and_acked).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(reason))) => Err(PeerError::Refused(reason)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PeerError::Stalled {
                after: stall,
                last: format!("message `{kind}` not acknowledged"),
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
    pub async fn send_file(
        &self,
        plugin: &str,
        path: &Path,
        name: &str,
        tag: &str,
    ) -> Result<Receipt, PeerError> {
        let started = Instant::now();
        let (size, sha256) = hash_file(path)
            .await
            .map_err(|e| PeerError::Io(format!("{}: {e}", path.display())))?;
        let id = u64::from_str_radix(&sha256[..15], 16).unwrap_or(0) ^ u64::from(name.len() as u32);
        let stall = self.inner.config.transfer_stall;
        // When the peer last confirmed anything about this transfer (counting
        // from the start, and across redials).
        let mut progressed = Instant::now();
        let mut resumed_from = 0;
        loop {
            let attempt = self
                .try_send_file(id, plugin, path, name, tag, size, &sha256, &mut progressed)
                .await;
            let e = match attempt {
                Ok((bytes, got, have)) => {
                    resumed_from = resumed_from.max(have);
                    return Ok(Receipt {
                        bytes,
                        sha256: got,
                        duration_ms: started.elapsed().as_millis() as u64,
                        resumed_from,
                    });
                }
                Err(e @ (PeerError::Refused(_) | PeerError::Io(_) | PeerError::Stalled { .. })) => {
                    return Err(e)
                }
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
    /// peer's copy stops, wait for the receipt; fails with
    /// [`PeerError::Stalled`] when the peer confirms nothing for the stall
    /// bound since `progressed` (which every confirmation moves on).
    #[allow(clippy::too_many_arguments)]
    async fn try_send_file(
        &self,
        id: u64,
        plugin: &str,
        path: &Path,
        name: &str,
        tag: &str,
        size: u64,
        sha256: &str,
        progressed: &mut Instant,
    ) -> Result<(u64, String, u64), PeerError> {
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
        let transfer = async {
            self.send(PeerMsg::Offer {
                id,
                plugin: plugin.into(),
                tag: tag.into(),
                name: name.into(),
                size,
                sha256: sha256.into(),
            })
            .await?;
            let have = resume_rx.await.map_err(|_| PeerError::Down)?;
            if have == u64::MAX {
                return Err(PeerError::Refused("the peer refused the offer".into()));
            }
            let mut file = tokio::fs::File::open(path)
                .await
                .map_err(|e| PeerError::Io(e.to_string()))?;
            file.seek(std::io::SeekFrom::Start(have))
                .await
                .map_err(|e| PeerError::Io(e.to_string()))?;
            let mut offset = have;
            let mut buf = vec![0u8; self.inner.config.chunk];
            while offset < size {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| PeerError::Io(e.to_string()))?;
                if n == 0 {
                    return Err(PeerError::Io(format!(
                        "{} shrank while it was being sent",
                        path.display()
                    )));
                }
                self.send(PeerMsg::Chunk {
                    id,
                    offset,
                    data: buf[..n].to_vec(),
                })
                .await?;
                offset += n as u64;
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

async fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
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

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            match accept_handshake(&inner, stream).await {
                Ok((stream, peer_id, macs)) => run_connection(inner, stream, peer_id, macs).await,
                Err(e) => tracing::warn!(%addr, error = %e, "peer connection refused"),
            }
        });
    }
}

async fn dial_loop(inner: Arc<Inner>) {
    loop {
        let connected = inner
            .out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !connected {
            match TcpStream::connect(inner.config.peer).await {
                Ok(stream) => match dial_handshake(&inner, stream).await {
                    Ok((stream, peer_id, macs)) => {
                        run_connection(inner.clone(), stream, peer_id, macs).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(peer = %inner.config.peer, error = %e, "peer handshake failed")
                    }
                },
                Err(e) => {
                    tracing::trace!(peer = %inner.config.peer, error = %e, "peer not reachable")
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn dial_handshake(
    inner: &Inner,
    mut stream: TcpStream,
) -> Result<(TcpStream, String, Macs), FrameError> {
    let c = &inner.config;
    let (peer, macs) =
        session::dial(&mut stream, &c.psk, &c.node_id, Some(&c.peer_node_id)).await?;
    Ok((stream, peer, macs))
}

async fn accept_handshake(
    inner: &Inner,
    mut stream: TcpStream,
) -> Result<(TcpStream, String, Macs), FrameError> {
    let c = &inner.config;
    let (peer, macs) =
        session::accept(&mut stream, &c.psk, &c.node_id, Some(&c.peer_node_id)).await?;
    Ok((stream, peer, macs))
}

async fn heartbeat_loop(inner: Arc<Inner>) {
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(inner.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let out = inner.out.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(out) = out {
            seq += 1;
            let (epoch, role) = *inner.local.borrow();
            {
                let mut sent = inner.beats_sent.lock().unwrap_or_else(|p| p.into_inner());
                sent.retain(|s, _| *s + 50 > seq);
                sent.insert(seq, Instant::now());
            }
            let _ = out.try_send(Frame {
                epoch,
                msg: PeerMsg::Heartbeat {
                    seq,
                    role,
                    sent_ms: now_ms(),
                },
            });
        }
    }
}

async fn run_connection(
    inner: Arc<Inner>,
    stream: TcpStream,
    peer_id: String,
    (mut out_mac, mut in_mac): Macs,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Frame>(inner.config.queue);
    let generation = inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
    *inner.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
    {
        let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        s.connected = true;
        s.node_id = Some(peer_id.clone());
    }
    tracing::info!(peer = %peer_id, "peer link up");
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if let Err(e) = proto::write_frame(&mut wr, &mut out_mac, &frame).await {
                tracing::debug!(error = %e, "peer write failed");
                break;
            }
        }
    });
    let mut receiving: HashMap<u64, Receiving> = HashMap::new();
    loop {
        let read = tokio::time::timeout(
            inner.config.dead_after,
            proto::read_frame(&mut rd, &mut in_mac),
        );
        let frame: Frame = match read.await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::info!(peer = %peer_id, reason = %e, "peer link down");
                break;
            }
            Err(_) => {
                tracing::info!(peer = %peer_id, silent_for = ?inner.config.dead_after, "peer link down: the peer went silent");
                break;
            }
        };
        if inner.generation.load(Ordering::SeqCst) != generation {
            tracing::info!(peer = %peer_id, "a newer connection replaced this one");
            break;
        }
        *inner.last_heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        inner.heard.send_modify(|n| *n += 1);
        let (my_epoch, _) = *inner.local.borrow();
        {
            let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            s.last_heard_ms = Some(now_ms());
            s.epoch = s.epoch.max(frame.epoch);
        }
        let lower = frame.epoch < my_epoch;
        let reply = |msg| Frame {
            epoch: my_epoch,
            msg,
        };
        match frame.msg {
            PeerMsg::Heartbeat { seq, role, .. } => {
                {
                    let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                    s.role = Some(role);
                    s.epoch = frame.epoch;
                }
                let _ = tx.try_send(reply(PeerMsg::HeartbeatAck { seq }));
            }
            PeerMsg::HeartbeatAck { seq } => {
                let sent = inner
                    .beats_sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&seq);
                if let Some(at) = sent {
                    inner.state.lock().unwrap_or_else(|p| p.into_inner()).rtt_ms =
                        Some(at.elapsed().as_millis() as u32);
                }
            }
            PeerMsg::Offer { id, .. } | PeerMsg::Chunk { id, .. } if lower => {
                refuse_lower(&inner, &tx, my_epoch, frame.epoch).await;
                receiving.remove(&id);
            }
            PeerMsg::Message { id, .. } if lower => {
                refuse_lower(&inner, &tx, my_epoch, frame.epoch).await;
                let _ = tx
                    .send(reply(PeerMsg::MessageAck {
                        id,
                        error: Some(format!("epoch {} is lower than {my_epoch}", frame.epoch)),
                    }))
                    .await;
            }
            PeerMsg::Offer {
                id,
                plugin,
                tag,
                name,
                size,
                sha256,
            } => {
                let path = inner
                    .config
                    .staging
                    .join(format!("incoming-{id:016x}.part"));
                let have = match tokio::fs::metadata(&path).await {
                    Ok(m) if m.len() <= size => m.len(),
                    _ => 0,
                };
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(&path)
                    .await;
                match file {
                    Ok(mut file) => {
                        let _ = file.set_len(have).await;
                        let _ = file.seek(std::io::SeekFrom::Start(have)).await;
                        receiving.insert(
                            id,
                            Receiving {
                                plugin,
                                tag,
                                name,
                                size,
                                sha256,
                                file,
                                path,
                                next: have,
                                epoch: frame.epoch,
                            },
                        );
                        let _ = tx.send(reply(PeerMsg::Resume { id, have })).await;
                        if have == size {
                            finish(&inner, &tx, my_epoch, id, &mut receiving).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot stage an incoming file");
                        let _ = tx.send(reply(PeerMsg::Resume { id, have: u64::MAX })).await;
                    }
                }
            }
            PeerMsg::Chunk { id, offset, data } => {
                let Some(r) = receiving.get_mut(&id) else {
                    continue;
                };
                if offset != r.next {
                    tracing::warn!(
                        id,
                        offset,
                        expected = r.next,
                        "out-of-order chunk; dropping the transfer"
                    );
                    receiving.remove(&id);
                    continue;
                }
                if let Err(e) = r.file.write_all(&data).await {
                    tracing::error!(error = %e, "cannot write an incoming file");
                    receiving.remove(&id);
                    continue;
                }
                r.next += data.len() as u64;
                // Confirm the progress (the sender's stall bound counts from
                // it). Never wait for room: a full queue drops this one and
                // the next chunk confirms more.
                let _ = tx.try_send(reply(PeerMsg::Resume { id, have: r.next }));
                if r.next >= r.size {
                    finish(&inner, &tx, my_epoch, id, &mut receiving).await;
                }
            }
            PeerMsg::Resume { id, have } => {
                // The answer to an offer, then one per stored chunk: each is
                // progress (an older sender ignores the later ones).
                let mut waiters = inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(w) = waiters.get_mut(&id) {
                    w.progress.send_replace(have);
                    if let Some(r) = w.resume.take() {
                        let _ = r.send(have);
                    }
                }
            }
            PeerMsg::Receipt {
                id,
                ok,
                bytes,
                sha256,
                error,
            } => {
                let w = inner
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(w) = w.and_then(|w| w.receipt) {
                    let _ = w.send((ok, bytes, sha256, error));
                }
            }
            PeerMsg::Message {
                id,
                plugin,
                kind,
                body,
            } => {
                let delivered = inner
                    .incoming
                    .send(Incoming::Message {
                        plugin,
                        kind,
                        body,
                        epoch: frame.epoch,
                    })
                    .await;
                let error = delivered
                    .err()
                    .map(|_| "the node is shutting down".to_string());
                let _ = tx.send(reply(PeerMsg::MessageAck { id, error })).await;
            }
            PeerMsg::MessageAck { id, error } => {
                if let Some(w) = inner
                    .messages
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id)
                {
                    let _ = w.send(error);
                }
            }
            PeerMsg::Refused { reason } => {
                tracing::warn!(peer = %peer_id, %reason, "the peer refused our data");
                let waiters: Vec<(u64, Waiter)> = inner
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain()
                    .collect();
                for (_, w) in waiters {
                    if let Some(r) = w.resume {
                        let _ = r.send(u64::MAX);
                    }
                    if let Some(r) = w.receipt {
                        let _ = r.send((false, 0, String::new(), Some(reason.clone())));
                    }
                }
            }
        }
    }
    writer.abort();
    if inner.generation.load(Ordering::SeqCst) != generation {
        // A newer connection owns the link now.
        return;
    }
    *inner.out.lock().unwrap_or_else(|p| p.into_inner()) = None;
    inner
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .connected = false;
    // Senders waiting on this connection retry on the next one.
    inner
        .waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    inner
        .messages
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
}

async fn refuse_lower(inner: &Inner, tx: &mpsc::Sender<Frame>, mine: u64, theirs: u64) {
    inner
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .refused_lower_epoch += 1;
    tracing::warn!(mine, theirs, "refusing data from a lower epoch");
    let _ = tx
        .send(Frame {
            epoch: mine,
            msg: PeerMsg::Refused {
                reason: format!("your epoch {theirs} is lower than this node's {mine}"),
            },
        })
        .await;
}

/// A transfer has all its bytes: sync, check, hand over, and send the receipt.
async fn finish(
    inner: &Inner,
    tx: &mpsc::Sender<Frame>,
    my_epoch: u64,
    id: u64,
    receiving: &mut HashMap<u64, Receiving>,
) {
    let Some(mut r) = receiving.remove(&id) else {
        return;
    };
    let _ = r.file.flush().await;
    let _ = r.file.sync_all().await;
    drop(r.file);
    let (ok, bytes, sha, error) = match hash_file(&r.path).await {
        Ok((size, sha)) if size == r.size && sha == r.sha256 => (true, size, sha, None),
        Ok((size, sha)) => {
            let _ = tokio::fs::remove_file(&r.path).await;
            (
                false,
                size,
                sha.clone(),
                Some(format!(
                    "checksum mismatch: offered {}, stored {sha}",
                    r.sha256
                )),
            )
        }
        Err(e) => (false, 0, String::new(), Some(e.to_string())),
    };
    if ok {
        let done = r.path.with_extension("done");
        if tokio::fs::rename(&r.path, &done).await.is_ok() {
            let _ = inner
                .incoming
                .send(Incoming::File {
                    plugin: r.plugin,
                    path: done,
                    name: r.name,
                    tag: r.tag,
                    size: bytes,
                    sha256: sha.clone(),
                    epoch: r.epoch,
                })
                .await;
        }
    }
    let _ = tx
        .send(Frame {
            epoch: my_epoch,
            msg: PeerMsg::Receipt {
                id,
                ok,
                bytes,
                sha256: sha,
                error,
            },
        })
        .await;
}
