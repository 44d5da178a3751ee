//! The witness: a small service on a third site that grants one node at a
//! time a time-bounded lease with a new epoch. It writes the epoch to disk
//! (and fsyncs it) before answering, so an epoch is never granted twice, even
//! across a crash of the witness. After a restart it treats the recorded
//! holder's lease as running for the longest lease it grants, because it
//! cannot know how much of it was left.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::proto::{Reply, Request};
use crate::peer::admission::{Admission, HandshakeSlot, WITNESS_LIMITS};
use crate::peer::proto::{read_frame, write_frame, FrameError};
use crate::peer::{session, Psk};

/// How a witness runs.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// Where nodes reach it.
    pub listen: SocketAddr,
    /// Where it keeps its state file (`witness.json`).
    pub data_dir: PathBuf,
    /// The key nodes authenticate with.
    pub psk: Psk,
    /// Its own id in handshakes.
    pub node_id: String,
    /// The longest lease granted (longer requests are cut to it); also how
    /// long a recorded lease is honoured after a restart.
    pub max_ttl: Duration,
}

impl WitnessConfig {
    /// Defaults: id `witness`, leases of at most 10 s.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, psk: Psk) -> Self {
        Self {
            listen,
            data_dir,
            psk,
            node_id: "witness".into(),
            max_ttl: Duration::from_secs(10),
        }
    }
}

/// The witness's durable state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessState {
    /// The highest epoch granted.
    pub epoch: u64,
    /// The node the last lease went to, until it released it.
    pub holder: Option<String>,
}

/// The witness could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// Its state file could not be read, written or synced.
    #[error("witness state {}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Its state file is there but unreadable: it will not guess an epoch.
    #[error("witness state {}: unreadable ({source}); refusing to guess an epoch", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// It could not listen.
    #[error("witness cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        error: std::io::Error,
    },
}

struct Live {
    state: WitnessState,
    /// When the holder's lease ends on this process's monotonic clock.
    expires: Option<Instant>,
    file: PathBuf,
}

impl Live {
    fn remaining(&self, now: Instant) -> Duration {
        self.expires
            .map(|e| e.saturating_duration_since(now))
            .unwrap_or_default()
    }

    fn holder_now(&self, now: Instant) -> Option<&str> {
        self.state
            .holder
            .as_deref()
            .filter(|_| self.remaining(now) > Duration::ZERO)
    }
}

/// A running witness.
pub struct Witness {
    addr: SocketAddr,
    live: Arc<Mutex<Live>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness").field("addr", &self.addr).finish()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const STATE_FILE: &str = "witness.json";

impl Witness {
    /// Load the state and start serving.
    pub async fn start(config: WitnessConfig) -> Result<Self, WitnessError> {
        let file = config.data_dir.join(STATE_FILE);
        let state = load(&config.data_dir, &file)?;
        let expires = state.holder.as_ref().map(|h| {
            tracing::info!(holder = %h, epoch = state.epoch, honoured_for = ?config.max_ttl,
                "restarted with a recorded lease: treating it as held until it surely expired");
            Instant::now() + config.max_ttl
        });
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|error| WitnessError::Bind {
                    addr: config.listen,
                    error,
                })?;
        let addr = listener.local_addr().map_err(|error| WitnessError::Bind {
            addr: config.listen,
            error,
        })?;
        tracing::info!(%addr, epoch = state.epoch, "witness listening");
        let live = Arc::new(Mutex::new(Live {
            state,
            expires,
            file,
        }));
        let task = tokio::spawn(accept_loop(listener, Arc::new(config), live.clone()));
        Ok(Self { addr, live, task })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The durable state and the time left on the current lease.
    pub async fn state(&self) -> (WitnessState, Duration) {
        let live = self.live.lock().await;
        (live.state.clone(), live.remaining(Instant::now()))
    }
}

fn load(dir: &Path, file: &Path) -> Result<WitnessState, WitnessError> {
    let err = |source: std::io::Error| WitnessError::State {
        path: file.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| WitnessError::Unreadable {
            path: file.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WitnessState::default()),
        Err(e) => Err(err(e)),
    }
}

/// Write the state durably: temporary file, fsync, rename, fsync the directory.
fn persist(file: &Path, state: &WitnessState) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(state).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// [`persist`] off the async threads.
async fn record(file: &Path, state: &WitnessState) -> std::io::Result<()> {
    let (file, state) = (file.to_path_buf(), state.clone());
    tokio::task::spawn_blocking(move || persist(&file, &state))
        .await
        .map_err(std::io::Error::other)?
}

/// How long an authenticated session may stay silent before the witness
/// closes it (a node whose link was cut leaves a half-open connection; the
/// node's client opens a new one when it next asks).
const SESSION_IDLE: Duration = Duration::from_secs(120);

async fn accept_loop(listener: TcpListener, config: Arc<WitnessConfig>, live: Arc<Mutex<Live>>) {
    let admission = Arc::new(Admission::new(WITNESS_LIMITS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over a bound the connection is closed at once.
        let Some(handshake) = admission.handshake(peer.ip()) else {
            tracing::debug!(%peer, "too many connections proving themselves; closed");
            continue;
        };
        let (config, live, admission) = (config.clone(), live.clone(), admission.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(stream, handshake, &admission, &config, &live).await {
                tracing::info!(%peer, error = %e, "node connection ended");
            }
        });
    }
}

async fn serve(
    mut stream: TcpStream,
    handshake: HandshakeSlot,
    admission: &Admission,
    config: &WitnessConfig,
    live: &Mutex<Live>,
) -> Result<(), FrameError> {
    let (node, (mut out_cipher, mut in_cipher)) =
        session::accept(&mut stream, &config.psk, &config.node_id, None).await?;
    drop(handshake);
    let Some(_session) = admission.session() else {
        tracing::warn!(%node, "too many node sessions; closing this one");
        return Ok(());
    };
    tracing::debug!(%node, "node authenticated");
    let (mut rd, mut wr) = stream.into_split();
    loop {
        let request: Request =
            match tokio::time::timeout(SESSION_IDLE, read_frame(&mut rd, &mut in_cipher)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            };
        let received = Instant::now();
        let reply = handle(&node, request, received, config, live).await;
        write_frame(&mut wr, &mut out_cipher, &reply).await?;
    }
}

async fn handle(
    node: &str,
    request: Request,
    received: Instant,
    config: &WitnessConfig,
    live: &Mutex<Live>,
) -> Reply {
    let mut live = live.lock().await;
    let ttl = |ms: u64| Duration::from_millis(ms).min(config.max_ttl);
    let denied = |live: &Live, reason: String| Reply::Denied {
        reason,
        holder: live.holder_now(received).map(str::to_string),
        epoch: live.state.epoch,
        remaining_ms: live.remaining(received).as_millis() as u64,
    };
    match request {
        Request::Query => Reply::State {
            epoch: live.state.epoch,
            holder: live.holder_now(received).map(str::to_string),
            remaining_ms: live.remaining(received).as_millis() as u64,
        },
        Request::Acquire { ttl_ms } => {
            if ttl_ms == 0 {
                return denied(&live, "a lease of 0 ms".into());
            }
            if let Some(holder) = live.holder_now(received) {
                if holder != node {
                    let reason = format!("node {holder} holds the lease");
                    return denied(&live, reason);
                }
            }
            let next = WitnessState {
                epoch: live.state.epoch + 1,
                holder: Some(node.to_string()),
            };
            match record(&live.file, &next).await {
                Ok(()) => {
                    let ttl = ttl(ttl_ms);
                    live.state = next;
                    live.expires = Some(received + ttl);
                    tracing::info!(%node, epoch = live.state.epoch, ?ttl, "lease granted");
                    Reply::Granted {
                        epoch: live.state.epoch,
                        ttl_ms: ttl.as_millis() as u64,
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot record the new epoch; not granting");
                    denied(&live, "the witness cannot record the epoch".into())
                }
            }
        }
        Request::Renew { epoch, ttl_ms } => {
            let holds = live.holder_now(received) == Some(node) && live.state.epoch == epoch;
            if !holds {
                let reason = if live.state.epoch != epoch {
                    format!("epoch {epoch} was superseded by {}", live.state.epoch)
                } else {
                    "the lease expired".to_string()
                };
                return denied(&live, reason);
            }
            let ttl = ttl(ttl_ms);
            live.expires = Some(received + ttl);
            Reply::Granted {
                epoch,
                ttl_ms: ttl.as_millis() as u64,
            }
        }
        Request::Release { epoch } => {
            if live.state.holder.as_deref() == Some(node) && live.state.epoch == epoch {
                let next = WitnessState {
                    epoch,
                    holder: None,
                };
                if record(&live.file, &next).await.is_ok() {
                    live.state = next;
                    live.expires = None;
                    tracing::info!(%node, epoch, "lease released");
                }
            }
            Reply::Released {
                epoch: live.state.epoch,
            }
        }
    }
}
