//! The server side of the device link: listeners (plain and TLS), handshake,
//! accept filter, keep-alive, idempotent event ingest acknowledged after
//! commit, server matching, global anti-passback, a registry of connected
//! devices and admin operations on them. Closed on a standby node, open on the
//! active one.

#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the operators' device operations are not exposed by the admin endpoint yet; the gateway's tests use them"
    )
)]
mod admin;
mod auth;
mod conn;
mod credentials;
mod link;
mod rate;
mod registry;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::AckGate;
use crate::role::Role;
use crate::store::{GroupWriter, Store};
use standby_device::codec::{Budget, CodecLimits};

pub(crate) use admin::{DeviceReport, SetServersResult};
pub(crate) use credentials::{DeviceAuth, Policy};
pub(crate) use registry::DeviceInfo;

/// Which devices may connect.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AcceptFilter {
    /// Any device id.
    #[default]
    All,
    /// Only these device ids.
    Only(BTreeSet<u32>),
}

impl AcceptFilter {
    /// Whether `device_id` may connect.
    pub(crate) fn accepts(&self, device_id: u32) -> bool {
        match self {
            AcceptFilter::All => true,
            AcceptFilter::Only(ids) => ids.contains(&device_id),
        }
    }
}

/// How the gateway runs.
#[derive(Clone)]
pub(crate) struct GatewayConfig {
    /// This node's id (sent in every handshake reply).
    pub node_id: String,
    /// Plain TCP listener (BioStar's device port is 51212).
    pub listen: Option<SocketAddr>,
    /// TLS listener (51213) and its server configuration.
    pub tls_listen: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// Allow the plain listener on a non-loopback address.
    pub allow_plain_remote: bool,
    /// Which devices may connect.
    pub accept: AcceptFilter,
    /// Keep-alive interval devices should use.
    pub keepalive: Duration,
    /// A link with no frame for this long is dropped.
    pub dead_link: Duration,
    /// How long a new connection may take to send its handshake.
    pub handshake_timeout: Duration,
    /// How long an admin request waits for the device's answer.
    pub admin_timeout: Duration,
    /// Frame and message size limits once a device's handshake is done
    /// (before it, [`CodecLimits::HANDSHAKE`]).
    pub limits: CodecLimits,
    /// Bytes of unfinished messages all connections may hold together
    /// beyond each one's [`BUFFER_ALLOWANCE`].
    pub buffer_budget: usize,
    /// Largest payload of one event; a batch holding a larger one is refused.
    pub max_event_payload: usize,
    /// Events a device may send a second on average.
    pub event_rate: u32,
    /// Events a device may send at once (its bucket's size).
    pub event_burst: u32,
    /// How devices authenticate.
    pub auth: DeviceAuth,
}

/// What each connection may hold of unfinished messages without charging
/// the shared budget: an ordinary event batch fits.
pub(crate) const BUFFER_ALLOWANCE: usize = 64 << 10;

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("tls_listen", &self.tls_listen.as_ref().map(|(a, _)| a))
            .field("accept", &self.accept)
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    /// Defaults for `node_id`: no listeners yet, SDK-like timings.
    pub(crate) fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            listen: None,
            tls_listen: None,
            allow_plain_remote: false,
            accept: AcceptFilter::All,
            keepalive: Duration::from_secs(10),
            dead_link: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(3),
            admin_timeout: Duration::from_secs(5),
            limits: CodecLimits::default(),
            buffer_budget: 64 << 20,
            max_event_payload: 4 << 10,
            event_rate: 1_000,
            event_burst: 200_000,
            auth: DeviceAuth::off(),
        }
    }
}

/// Who the server is on the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    /// Node id.
    pub node_id: String,
    /// Role.
    pub role: Role,
    /// Epoch.
    pub epoch: u64,
}

/// Where the DR-durable watermark comes from.
pub(crate) trait Durability: Send + Sync {
    /// The DR-durable watermark of a device incarnation whose local contiguous
    /// watermark is `local`.
    fn durable(&self, device_id: u32, incarnation: u64, local: u64) -> u64;
}

/// Without replication, an event is as durable as the local commit.
#[derive(Debug, Default)]
pub(crate) struct LocalCommit;

impl Durability for LocalCommit {
    fn durable(&self, _device_id: u32, _incarnation: u64, local: u64) -> u64 {
        local
    }
}

/// DR-durable watermarks confirmed by replication: a device incarnation's
/// events are safe at the other site up to the mark recorded here (0 until
/// replication confirms anything).
#[derive(Debug, Default)]
pub(crate) struct ReplicatedMarks {
    marks: Mutex<std::collections::HashMap<(u32, u64), u64>>,
}

impl ReplicatedMarks {
    /// The other site now holds every event of the incarnation up to `mark`.
    pub(crate) fn advance(&self, device_id: u32, incarnation: u64, mark: u64) {
        let mut m = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry((device_id, incarnation)).or_default();
        *e = (*e).max(mark);
    }
}

impl Durability for ReplicatedMarks {
    fn durable(&self, device_id: u32, incarnation: u64, local: u64) -> u64 {
        let m = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(device_id, incarnation))
            .copied()
            .unwrap_or(0)
            .min(local)
    }
}

/// A gateway failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum GatewayError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        error: std::io::Error,
    },
    /// Plain TCP on a non-loopback address without explicit permission.
    #[error("plain (unencrypted) device listener on non-loopback address {0}: use TLS, or set allow_plain_remote")]
    PlainRemote(SocketAddr),
    /// No listener configured.
    #[error("no device listener is configured")]
    NoListener,
    /// The database writer could not start.
    #[error("cannot start the database writer: {0}")]
    Writer(#[source] crate::store::StoreError),
}

/// Counters, for status and benchmarks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Connections closed for a framing error.
    pub frame_errors: AtomicU64,
    /// Events newly stored.
    pub events_stored: AtomicU64,
    /// Events received again (duplicates).
    pub events_duplicate: AtomicU64,
    /// Server-matching and anti-passback requests answered.
    pub requests: AtomicU64,
    /// Connections closed because the shared buffer budget was spent.
    pub over_budget: AtomicU64,
    /// Event batches refused because their device was over its rate.
    pub rate_limited: AtomicU64,
    /// Handshakes refused for want of a valid credential or proof.
    pub auth_refused: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct StatsSnapshot {
    /// Connections accepted.
    pub accepted: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Connections closed for a framing error.
    pub frame_errors: u64,
    /// Events newly stored.
    pub events_stored: u64,
    /// Events received again.
    pub events_duplicate: u64,
    /// Server-dependent requests answered.
    pub requests: u64,
    /// Devices connected now.
    pub connected: u64,
    /// Connections closed because the shared buffer budget was spent.
    pub over_budget: u64,
    /// Bytes of unfinished messages charged to the shared budget now.
    pub buffered: u64,
    /// Event batches refused because their device was over its rate.
    pub rate_limited: u64,
    /// Handshakes refused for want of a valid credential or proof.
    pub auth_refused: u64,
}

pub(crate) struct Shared {
    pub config: GatewayConfig,
    pub store: Arc<Store>,
    /// Handshakes and event batches, committed in groups.
    pub writer: GroupWriter,
    pub identity: watch::Sender<Identity>,
    pub durability: Arc<dyn Durability>,
    /// Whether acknowledging is allowed now (the lease's deadline).
    pub gate: Arc<AckGate>,
    pub registry: registry::Registry,
    pub stats: Stats,
    /// Closing the gateway sends `true`: every connection ends.
    pub closing: watch::Sender<bool>,
    /// What every connection's unfinished messages draw on.
    pub budget: Arc<Budget>,
    /// Each device's event rate.
    pub rates: rate::EventRates,
    /// The credential policy and register.
    pub credentials: credentials::Credentials,
}

struct Listening {
    tasks: Vec<JoinHandle<()>>,
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
}

/// The device gateway of one node.
pub(crate) struct Gateway {
    shared: Arc<Shared>,
    listening: Mutex<Option<Listening>>,
}

impl Gateway {
    /// A closed gateway for `config`, storing into `store` (through a
    /// group-commit writer thread started here), that acknowledges whenever
    /// its role is active.
    #[cfg(test)]
    pub(crate) fn new(
        config: GatewayConfig,
        store: Arc<Store>,
        role: Role,
        epoch: u64,
    ) -> Result<Self, GatewayError> {
        let writer = GroupWriter::start(store.clone()).map_err(GatewayError::Writer)?;
        Ok(Self::assemble(
            config,
            store,
            writer,
            Arc::new(AckGate::always_open()),
            role,
            epoch,
        ))
    }

    /// A closed gateway that acknowledges events only while `gate` (the
    /// lease's deadline) is open. Its writer commits only while the gate is
    /// open, too: a node stopped in the middle of a group commit rolls it
    /// back when it resumes past its lease instead of storing events nobody
    /// will acknowledge.
    pub(crate) fn with_lease_gate(
        config: GatewayConfig,
        store: Arc<Store>,
        role: Role,
        epoch: u64,
        gate: Arc<AckGate>,
    ) -> Result<Self, GatewayError> {
        let open = gate.clone();
        let writer = GroupWriter::start_guarded(store.clone(), Arc::new(move || open.is_open()))
            .map_err(GatewayError::Writer)?;
        Ok(Self::assemble(config, store, writer, gate, role, epoch))
    }

    fn assemble(
        config: GatewayConfig,
        store: Arc<Store>,
        writer: GroupWriter,
        gate: Arc<AckGate>,
        role: Role,
        epoch: u64,
    ) -> Self {
        let identity = Identity {
            node_id: config.node_id.clone(),
            role,
            epoch,
        };
        let buffer_budget = config.buffer_budget;
        let (event_rate, event_burst) = (config.event_rate, config.event_burst);
        let credentials = credentials::Credentials::new(config.auth.clone());
        Self {
            shared: Arc::new(Shared {
                config,
                store,
                writer,
                identity: watch::channel(identity).0,
                durability: Arc::new(LocalCommit),
                gate,
                registry: registry::Registry::default(),
                stats: Stats::default(),
                closing: watch::channel(false).0,
                budget: Budget::new(buffer_budget, BUFFER_ALLOWANCE),
                rates: rate::EventRates::new(event_rate, event_burst),
                credentials,
            }),
            listening: Mutex::new(None),
        }
    }

    /// Use another source of DR-durable watermarks (before opening).
    pub(crate) fn with_durability(mut self, durability: Arc<dyn Durability>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.durability = durability;
        }
        self
    }

    /// Set the role and epoch presented to devices.
    pub(crate) fn set_identity(&self, role: Role, epoch: u64) {
        self.shared.identity.send_modify(|i| {
            i.role = role;
            i.epoch = epoch;
        });
    }

    /// Bind the listeners and accept devices. Opening an open gateway does nothing.
    pub(crate) async fn open(&self) -> Result<(), GatewayError> {
        if self.lock().is_some() {
            return Ok(());
        }
        let cfg = &self.shared.config;
        if cfg.listen.is_none() && cfg.tls_listen.is_none() {
            return Err(GatewayError::NoListener);
        }
        let _ = self.shared.closing.send(false);
        let mut listening = Listening {
            tasks: Vec::new(),
            plain: None,
            tls: None,
        };
        if let Some(addr) = cfg.listen {
            if !addr.ip().is_loopback() && !cfg.allow_plain_remote {
                return Err(GatewayError::PlainRemote(addr));
            }
            let l = bind(addr)?;
            listening.plain = l.local_addr().ok();
            listening
                .tasks
                .push(tokio::spawn(accept_loop(self.shared.clone(), l, None)));
        }
        if let Some((addr, tls)) = &cfg.tls_listen {
            let l = bind(*addr)?;
            listening.tls = l.local_addr().ok();
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            listening.tasks.push(tokio::spawn(accept_loop(
                self.shared.clone(),
                l,
                Some(acceptor),
            )));
        }
        if cfg.auth.register.is_some() {
            listening
                .tasks
                .push(tokio::spawn(credentials::watch(self.shared.clone())));
        }
        tracing::info!(plain = ?listening.plain, tls = ?listening.tls, "device gateway open");
        *self.lock() = Some(listening);
        Ok(())
    }

    /// Stop listening and drop every device link. Closing a closed gateway does nothing.
    pub(crate) async fn close(&self) {
        let Some(listening) = self.lock().take() else {
            return;
        };
        for t in &listening.tasks {
            t.abort();
        }
        let _ = self.shared.closing.send(true);
        // Wait until every connection task has left the registry.
        for _ in 0..200 {
            if self.shared.registry.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!("device gateway closed");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Listening>> {
        self.listening.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the gateway accepts devices now.
    pub(crate) fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    /// The bound plain address, while open.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.lock().as_ref().and_then(|l| l.plain)
    }

    /// The connected devices.
    pub(crate) fn devices(&self) -> Vec<DeviceInfo> {
        self.shared.registry.list()
    }

    /// Device authentication: policy, register, links without a credential.
    pub(crate) fn auth_status(&self) -> crate::enrolment::DeviceAuthStatus {
        credentials::status(&self.shared)
    }

    /// Counters.
    pub(crate) fn stats(&self) -> StatsSnapshot {
        let s = &self.shared.stats;
        StatsSnapshot {
            accepted: s.accepted.load(Ordering::Relaxed),
            handshakes: s.handshakes.load(Ordering::Relaxed),
            frame_errors: s.frame_errors.load(Ordering::Relaxed),
            events_stored: s.events_stored.load(Ordering::Relaxed),
            events_duplicate: s.events_duplicate.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            connected: self.shared.registry.len() as u64,
            over_budget: s.over_budget.load(Ordering::Relaxed),
            buffered: self.shared.budget.used() as u64,
            rate_limited: s.rate_limited.load(Ordering::Relaxed),
            auth_refused: s.auth_refused.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(l) = self.lock().take() {
            for t in l.tasks {
                t.abort();
            }
        }
        let _ = self.shared.closing.send(true);
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    let err = |error| GatewayError::Bind { addr, error };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(4096).map_err(err)
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => conn::serve(shared, stream, peer, false).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                shared.config.handshake_timeout,
                                acceptor.accept(stream),
                            )
                            .await;
                            match handshake {
                                Ok(Ok(s)) => conn::serve(shared, s, peer, true).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
