//! The device side of the link, as a library: a door device that dials its
//! servers in priority order, keeps the link alive, logs every event locally
//! until the server says it is safe at the DR site, re-sends what a new server
//! lacks, and applies a fail action to server-dependent requests while no
//! server answers. No dependency on the rest of the host.

mod dial;
pub mod endpoint;
mod error;
mod link;
pub mod log;
pub mod reconnect;
pub mod resolver;
mod status;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::auth::Credential;
use super::codec::CodecLimits;
use super::messages::{ApbResult, MatchResult};
use error::LinkError;
pub use status::{AgentStatus, LinkPhase, ServerInfo};

pub use crate::backoff::Backoff;
pub use endpoint::{Endpoint, Host};
pub use log::{EventLog, LogOptions, Opened};
#[cfg(feature = "resolver")]
pub use resolver::DnsResolver;
pub use resolver::{Resolve, ResolveError, SystemResolver};

/// Wall-clock Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Return to a higher-priority server once it is back?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailBack {
    /// Stay on the server that answered.
    Stay,
    /// Return once a higher-priority endpoint has answered probes for `hold_down`.
    Return {
        /// How long it must keep answering.
        hold_down: Duration,
        /// How often to probe it.
        probe_every: Duration,
    },
}

/// What a server-dependent request does when no server answers (as BioStar's
/// global anti-passback fail action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailAction {
    /// No door open: the request fails closed.
    #[default]
    None,
    /// Open, and log the pass as unverified.
    Soft,
    /// Deny, and log it as a violation.
    Hard,
}

/// How an agent behaves.
#[derive(Clone)]
pub struct AgentConfig {
    /// Device id.
    pub device_id: u32,
    /// Model string sent at handshake.
    pub model: String,
    /// Firmware string sent at handshake.
    pub firmware: String,
    /// Server endpoints (ordered by [`endpoint::order`] on start).
    pub endpoints: Vec<Endpoint>,
    /// Resolves domain endpoints on every attempt.
    pub resolver: Arc<dyn Resolve>,
    /// TLS trust for `/tls` endpoints.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Local address to dial from (a device with several interfaces, or a
    /// simulated fleet spreading its links over loopback addresses); the
    /// system's choice when None.
    pub source: Option<std::net::IpAddr>,
    /// Limit on TCP connect plus handshake (the SDK's connect response timeout is 3 s).
    pub connect_timeout: Duration,
    /// Keep-alive interval.
    pub keepalive: Duration,
    /// No frame for this long: the link is dead (the SDK default is 30 s).
    pub dead_link: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Fail-back policy.
    pub fail_back: FailBack,
    /// Fail action for server-dependent requests without a server.
    pub fail_action: FailAction,
    /// How long a server-dependent request waits for its answer.
    pub request_timeout: Duration,
    /// Most events per upload.
    pub batch: usize,
    /// Where the log and state files live.
    pub data_dir: PathBuf,
    /// How the log is kept.
    pub log: LogOptions,
    /// Frame limits.
    pub limits: CodecLimits,
    /// The device's credential: with it the device proves who it is at
    /// every handshake and the link carries a MAC on every message; without
    /// it the device connects only to servers that admit devices without
    /// one (`devices.auth.mode` "migrate" or "off").
    pub credential: Option<Credential>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("device_id", &self.device_id)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// SDK-like defaults for `device_id` with its endpoints and data directory.
    pub fn new(device_id: u32, endpoints: Vec<Endpoint>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            device_id,
            model: "standby-sim".into(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            endpoints,
            resolver: Arc::new(SystemResolver),
            tls: None,
            source: None,
            connect_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(10),
            dead_link: Duration::from_secs(30),
            backoff: Backoff::default(),
            fail_back: FailBack::Stay,
            fail_action: FailAction::None,
            request_timeout: Duration::from_secs(3),
            batch: 256,
            data_dir: data_dir.into(),
            log: LogOptions::default(),
            limits: CodecLimits::default(),
            credential: None,
        }
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |m: String| Err(AgentError::Config(m));
        if self.endpoints.is_empty() {
            return bad("at least one server endpoint is needed".into());
        }
        if self.endpoints.len() > 255 {
            return bad("at most 255 server endpoints".into());
        }
        if self.endpoints.iter().any(|e| e.tls) && self.tls.is_none() {
            return bad("a /tls endpoint needs a TLS trust configuration (CA)".into());
        }
        if self.keepalive.is_zero() || self.dead_link <= self.keepalive {
            return bad(format!(
                "the dead-link timeout ({:?}) must be longer than the keep-alive interval ({:?})",
                self.dead_link, self.keepalive
            ));
        }
        if let Some(c) = &self.credential {
            if c.device_id != self.device_id {
                return bad(format!(
                    "the credential is device {}'s, not device {}'s",
                    c.device_id, self.device_id
                ));
            }
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() || self.batch == 0 {
            return bad("timeouts and the batch size must be above zero".into());
        }
        if let FailBack::Return {
            hold_down,
            probe_every,
        } = self.fail_back
        {
            if probe_every.is_zero() || hold_down < probe_every {
                return bad("fail-back: the hold-down must be at least one probe interval".into());
            }
        }
        Ok(())
    }
}

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Bad settings.
    #[error("agent configuration: {0}")]
    Config(String),
    /// The log or state file failed.
    #[error("device log: {0}")]
    Log(#[from] std::io::Error),
}

/// The answer to a server-dependent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAnswer<T> {
    /// The server answered.
    Answered(T),
    /// No server answered; the fail action was applied.
    Failed {
        /// What the device did.
        action: FailAction,
        /// Why no answer came.
        reason: String,
    },
}

/// Persisted device settings: a pushed server list. `max_epoch` is what
/// older versions kept here; it is read once at start and moved into the
/// log, which keeps the highest epoch since.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DeviceState {
    max_epoch: u64,
    endpoints: Option<Vec<Endpoint>>,
}

fn state_path(dir: &Path, device_id: u32) -> PathBuf {
    dir.join(format!("{device_id}.state"))
}

fn load_state(dir: &Path, device_id: u32) -> DeviceState {
    std::fs::read(state_path(dir, device_id))
        .ok()
        .and_then(|b| rmp_serde::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_state(dir: &Path, device_id: u32, state: &DeviceState) -> std::io::Result<()> {
    let path = state_path(dir, device_id);
    let tmp = path.with_extension("state.tmp");
    std::fs::write(
        &tmp,
        rmp_serde::to_vec(state).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

/// A server-dependent request on its way to the link task.
pub(crate) struct Ask {
    pub command: u16,
    pub payload: Vec<u8>,
    pub reply: oneshot::Sender<Result<Vec<u8>, LinkError>>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub refused_lower_epoch: AtomicU64,
    pub refused_inactive: AtomicU64,
    pub failed_requests: AtomicU64,
    pub throttled: AtomicU64,
    pub answered_requests: AtomicU64,
    pub acked: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Degraded {
    since_ms: Option<u64>,
    longest_ms: u64,
}

/// What the link task reports about the link.
pub(crate) struct LinkView {
    phase: LinkPhase,
    endpoint: Option<usize>,
    server: Option<ServerInfo>,
    since_ms: Option<u64>,
}

pub(crate) struct Shared {
    pub config: AgentConfig,
    pub log: Mutex<EventLog>,
    pub wake: Notify,
    pub connected: AtomicBool,
    pub counters: Counters,
    pub state: Mutex<DeviceState>,
    pub endpoints: Mutex<Vec<Endpoint>>,
    pub view: Mutex<LinkView>,
    pub degraded: Mutex<Degraded>,
    pub asks: mpsc::Sender<Ask>,
    pub shutdown: Notify,
    pub credential: Mutex<Option<Arc<Credential>>>,
}

impl Shared {
    pub(crate) fn lock_log(&self) -> std::sync::MutexGuard<'_, EventLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_view(
        &self,
        phase: LinkPhase,
        endpoint: Option<usize>,
        server: Option<ServerInfo>,
    ) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let since_ms = match (phase, v.phase) {
            (LinkPhase::Connected, LinkPhase::Connected) => v.since_ms,
            (LinkPhase::Connected, _) => Some(unix_ms()),
            _ => None,
        };
        *v = LinkView {
            phase,
            endpoint,
            server,
            since_ms,
        };
        self.connected
            .store(phase == LinkPhase::Connected, Ordering::Release);
    }

    /// The credential the next handshake presents.
    pub(crate) fn credential(&self) -> Option<Arc<Credential>> {
        self.credential
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn endpoints(&self) -> Vec<Endpoint> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The highest epoch the device has accepted (kept by its log).
    pub(crate) fn max_epoch(&self) -> u64 {
        self.lock_log().max_epoch()
    }

    /// Remember that the device accepted a server at `epoch`, appended to
    /// the log before the device acts on it (one record, not a rewritten
    /// file: in a reconnection storm thousands of devices learn the new
    /// epoch at once).
    pub(crate) fn raise_epoch(&self, epoch: u64) {
        if let Err(e) = self.lock_log().raise_epoch(epoch) {
            tracing::warn!(device = self.config.device_id, error = %e, "cannot persist the highest epoch");
        }
    }

    pub(crate) fn replace_endpoints(&self, mut endpoints: Vec<Endpoint>) {
        endpoint::order(&mut endpoints);
        *self.endpoints.lock().unwrap_or_else(|p| p.into_inner()) = endpoints.clone();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.endpoints = Some(endpoints);
        if let Err(e) = save_state(&self.config.data_dir, self.config.device_id, &s) {
            tracing::warn!(device = self.config.device_id, error = %e, "cannot persist the server list");
        }
    }

    /// The link is up again to an active server: server-dependent requests
    /// would be answered from now on, so a degraded spell ends here (a
    /// device asks only now and then; waiting for its next request would
    /// count time it was not degraded).
    pub(crate) fn served_again(&self) {
        let now = unix_ms();
        let mut d = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = d.since_ms.take() {
            d.longest_ms = d.longest_ms.max(now.saturating_sub(since));
        }
    }

    fn request_outcome(&self, ok: bool) {
        let now = unix_ms();
        let mut d = self.degraded.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            self.counters
                .answered_requests
                .fetch_add(1, Ordering::Relaxed);
            if let Some(since) = d.since_ms.take() {
                d.longest_ms = d.longest_ms.max(now.saturating_sub(since));
            }
        } else {
            self.counters
                .failed_requests
                .fetch_add(1, Ordering::Relaxed);
            d.since_ms.get_or_insert(now);
        }
    }
}

/// A running device agent.
pub struct Agent {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Agent {
    /// Open the device's log and state and start dialling.
    pub fn start(config: AgentConfig) -> Result<(Self, Opened), AgentError> {
        config.validate()?;
        let (log, opened) = EventLog::open(&config.data_dir, config.device_id, config.log.clone())?;
        if let Opened::Reset(why) = &opened {
            tracing::warn!(
                device = config.device_id,
                "{why}; starting a new log incarnation"
            );
        }
        let state = load_state(&config.data_dir, config.device_id);
        // Older versions kept the epoch in the state file: move it into the
        // log (a no-op once it is there).
        let mut log = log;
        log.raise_epoch(state.max_epoch)?;
        let mut endpoints = state
            .endpoints
            .clone()
            .unwrap_or_else(|| config.endpoints.clone());
        endpoint::order(&mut endpoints);
        let (asks_tx, asks_rx) = mpsc::channel(64);
        let credential = config.credential.clone().map(Arc::new);
        let shared = Arc::new(Shared {
            config,
            log: Mutex::new(log),
            wake: Notify::new(),
            connected: AtomicBool::new(false),
            counters: Counters::default(),
            state: Mutex::new(state),
            endpoints: Mutex::new(endpoints),
            view: Mutex::new(LinkView {
                phase: LinkPhase::Connecting,
                endpoint: Some(0),
                server: None,
                since_ms: None,
            }),
            degraded: Mutex::new(Degraded::default()),
            asks: asks_tx,
            shutdown: Notify::new(),
            credential: Mutex::new(credential),
        });
        let task = tokio::spawn(link::run(shared.clone(), asks_rx));
        Ok((Self { shared, task }, opened))
    }

    /// Log an event (it is uploaded as soon as a server is up).
    pub fn record(
        &self,
        code: u16,
        user_id: Option<String>,
        payload: Vec<u8>,
    ) -> std::io::Result<u64> {
        let entry = self
            .shared
            .lock_log()
            .append(code, user_id, unix_ms(), payload)?;
        self.shared.wake.notify_one();
        Ok(entry.seq)
    }

    async fn ask(&self, command: u16, payload: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        if !self.shared.connected.load(Ordering::Acquire) {
            return Err(LinkError::NotConnected);
        }
        let (tx, rx) = oneshot::channel();
        self.shared
            .asks
            .send(Ask {
                command,
                payload,
                reply: tx,
            })
            .await
            .map_err(|_| LinkError::Stopped)?;
        match tokio::time::timeout(self.shared.config.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(LinkError::ClosedBeforeAnswer),
            Err(_) => Err(LinkError::Timeout(self.shared.config.request_timeout)),
        }
    }

    async fn server_request<T: serde::de::DeserializeOwned>(
        &self,
        command: u16,
        payload: Vec<u8>,
    ) -> ServerAnswer<T> {
        let answer = self
            .ask(command, payload)
            .await
            .and_then(|bytes| Ok(super::messages::decode::<T>("answer", &bytes)?));
        match answer {
            Ok(v) => {
                self.shared.request_outcome(true);
                ServerAnswer::Answered(v)
            }
            Err(reason) => {
                self.shared.request_outcome(false);
                ServerAnswer::Failed {
                    action: self.shared.config.fail_action,
                    reason: reason.to_string(),
                }
            }
        }
    }

    /// Server matching: is `credential` the credential of `user_id`?
    pub async fn verify(&self, user_id: &str, credential: &str) -> ServerAnswer<MatchResult> {
        let req = super::messages::Verify {
            user_id: user_id.into(),
            credential: credential.into(),
        };
        self.server_request(
            super::frame::command::SERVER_VERIFY,
            super::messages::encode(&req),
        )
        .await
    }

    /// Server matching: who holds `credential`?
    pub async fn identify(&self, credential: &str) -> ServerAnswer<MatchResult> {
        let req = super::messages::Identify {
            credential: credential.into(),
        };
        self.server_request(
            super::frame::command::SERVER_IDENTIFY,
            super::messages::encode(&req),
        )
        .await
    }

    /// Global anti-passback check for a pass through `zone`.
    pub async fn check_apb(
        &self,
        user_id: &str,
        zone: &str,
        entering: bool,
    ) -> ServerAnswer<ApbResult> {
        let req = super::messages::ApbCheck {
            user_id: user_id.into(),
            zone: zone.into(),
            direction: if entering {
                super::messages::Direction::In
            } else {
                super::messages::Direction::Out
            },
        };
        self.server_request(
            super::frame::command::CHECK_APB_VIOLATION,
            super::messages::encode(&req),
        )
        .await
    }

    /// The agent's state now.
    pub fn status(&self) -> AgentStatus {
        let s = &self.shared;
        let (link, endpoint, server, since) = {
            let v = s.view.lock().unwrap_or_else(|p| p.into_inner());
            (v.phase, v.endpoint, v.server.clone(), v.since_ms)
        };
        let endpoint_addr = endpoint.and_then(|i| s.endpoints().get(i).map(|e| e.to_string()));
        let log = s.lock_log();
        let degraded = s.degraded.lock().unwrap_or_else(|p| p.into_inner());
        let current = degraded
            .since_ms
            .map(|t| unix_ms().saturating_sub(t))
            .unwrap_or(0);
        AgentStatus {
            device_id: s.config.device_id,
            link,
            endpoint,
            endpoint_addr,
            server,
            connected_since_ms: since,
            max_epoch: log.max_epoch(),
            incarnation: log.incarnation(),
            last_seq: log.last_seq(),
            acked: s.counters.acked.load(Ordering::Relaxed),
            durable: log.durable(),
            pending: log.pending(),
            connects: s.counters.connects.load(Ordering::Relaxed),
            disconnects: s.counters.disconnects.load(Ordering::Relaxed),
            refused_lower_epoch: s.counters.refused_lower_epoch.load(Ordering::Relaxed),
            refused_inactive: s.counters.refused_inactive.load(Ordering::Relaxed),
            failed_requests: s.counters.failed_requests.load(Ordering::Relaxed),
            throttled: s.counters.throttled.load(Ordering::Relaxed),
            answered_requests: s.counters.answered_requests.load(Ordering::Relaxed),
            longest_degraded_ms: degraded.longest_ms.max(current),
            dropped_undurable: log.dropped_undurable(),
        }
    }

    /// The server list in use, in priority order.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.shared.endpoints()
    }

    /// Present `credential` from the next handshake on (a rotated key; the
    /// link up now stays up).
    pub fn set_credential(&self, credential: Credential) -> Result<(), AgentError> {
        if credential.device_id != self.shared.config.device_id {
            return Err(AgentError::Config(format!(
                "the credential is device {}'s, not device {}'s",
                credential.device_id, self.shared.config.device_id
            )));
        }
        *self
            .shared
            .credential
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(credential));
        Ok(())
    }

    /// Stop the agent (the link is closed; the log stays on disk).
    pub async fn shutdown(mut self) {
        self.shared.shutdown.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_epoch_an_older_version_kept_in_the_state_file_moves_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = DeviceState {
            max_epoch: 9,
            endpoints: None,
        };
        save_state(dir.path(), 1, &legacy).unwrap();
        let config = AgentConfig::new(
            1,
            vec![Endpoint::parse("127.0.0.1:1", 0).unwrap()],
            dir.path(),
        );
        let (agent, _) = Agent::start(config).unwrap();
        assert_eq!(agent.status().max_epoch, 9);
        agent.shutdown().await;
        let (log, _) = EventLog::open(dir.path(), 1, LogOptions::default()).unwrap();
        assert_eq!(log.max_epoch(), 9);
    }
}
