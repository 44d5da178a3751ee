//! A fleet of simulated devices in one process: many agents with their own
//! logs, an access-event generator that also makes server-matching requests,
//! progress, and a summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use standby_device::agent::{
    Agent, AgentConfig, AgentError, AgentStatus, DnsResolver, Endpoint, LinkPhase, LogOptions,
    ServerAnswer,
};
use standby_device::auth::Credential;
use standby_device::frame::event_code;

/// How a fleet runs.
#[derive(Clone)]
pub struct FleetConfig {
    /// Number of devices.
    pub count: usize,
    /// Id of the first device (the others follow).
    pub first_id: u32,
    /// Access events per second across the whole fleet.
    pub event_rate: f64,
    /// Where each device keeps its log (`DIR/<id>.log`, `.audit`, `.state`).
    pub data_dir: PathBuf,
    /// DNS server for domain endpoints (the system resolver otherwise).
    pub resolver: Option<SocketAddr>,
    /// Local addresses the devices dial from, device i from entry i mod n
    /// (one address holds at most ~28,000 links to one server port; the
    /// system's choice when empty).
    pub sources: Vec<std::net::IpAddr>,
    /// Settings shared by every agent (its id and data dir are set per device).
    pub agent: AgentConfig,
    /// Each device's credential, by device id (none: devices connect without).
    pub credentials: Option<std::collections::HashMap<u32, Credential>>,
}

/// Fleet-wide figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSummary {
    /// Devices.
    pub devices: usize,
    /// Devices connected now.
    pub connected: usize,
    /// Devices connected per server node id.
    pub by_server: std::collections::BTreeMap<String, usize>,
    /// Access events generated.
    pub access_events: u64,
    /// Log entries (access and link events) across the fleet.
    pub events_logged: u64,
    /// Log entries the servers acknowledged (sum of contiguous watermarks).
    pub events_acked: u64,
    /// Log entries still kept (not yet durable at DR).
    pub events_pending: u64,
    /// Links lost.
    pub reconnects: u64,
    /// Server-dependent requests answered.
    pub requests_answered: u64,
    /// Server-dependent requests that failed (fail action applied).
    pub requests_failed: u64,
    /// Longest stretch any device's requests failed, ms.
    pub longest_degraded_ms: u64,
    /// Servers refused for a lower epoch.
    pub refused_lower_epoch: u64,
    /// Events dropped from full logs before they were durable.
    pub dropped_undurable: u64,
}

/// A running fleet.
pub struct Fleet {
    agents: Arc<Vec<Agent>>,
    access_events: Arc<AtomicU64>,
    /// Access events started (asking the server) but not yet logged.
    in_flight: Arc<AtomicU64>,
    generator: Option<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Start every agent (their logs are opened or created under `data_dir`).
    pub fn start(config: &FleetConfig) -> Result<Self, AgentError> {
        let resolver: Option<Arc<dyn standby_device::agent::Resolve>> = config
            .resolver
            .map(|a| DnsResolver::new(a) as Arc<dyn standby_device::agent::Resolve>);
        let mut agents = Vec::with_capacity(config.count);
        for i in 0..config.count {
            let mut c = config.agent.clone();
            c.device_id = config.first_id + i as u32;
            c.data_dir = config.data_dir.clone();
            if !config.sources.is_empty() {
                c.source = Some(config.sources[i % config.sources.len()]);
            }
            if let Some(r) = &resolver {
                c.resolver = r.clone();
            }
            if let Some(credentials) = &config.credentials {
                let credential = credentials.get(&c.device_id).ok_or_else(|| {
                    AgentError::Config(format!(
                        "the credentials hold none for device {}",
                        c.device_id
                    ))
                })?;
                c.credential = Some(credential.clone());
            }
            let (agent, _) = Agent::start(c)?;
            agents.push(agent);
        }
        Ok(Self {
            agents: Arc::new(agents),
            access_events: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(AtomicU64::new(0)),
            generator: None,
        })
    }

    /// Start generating `rate` access events per second across the fleet;
    /// each one first asks the server to identify the card (server matching).
    pub fn generate(&mut self, rate: f64) {
        if rate <= 0.0 || self.agents.is_empty() {
            return;
        }
        let agents = self.agents.clone();
        let counter = self.access_events.clone();
        let in_flight = self.in_flight.clone();
        self.generator = Some(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let tick = Duration::from_millis(10);
            let per_tick = rate * tick.as_secs_f64();
            let mut carry = 0.0;
            let mut timer = tokio::time::interval(tick);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                timer.tick().await;
                carry += per_tick;
                while carry >= 1.0 {
                    carry -= 1.0;
                    let i = rng.random_range(0..agents.len());
                    let user = rng.random_range(1..=500u32);
                    let agents = agents.clone();
                    let counter = counter.clone();
                    let in_flight = in_flight.clone();
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let agent = &agents[i];
                        let card = format!("card-{user}");
                        let (code, matched) = match agent.identify(&card).await {
                            ServerAnswer::Answered(m) if m.matched => {
                                (event_code::ACCESS_GRANTED, "server")
                            }
                            ServerAnswer::Answered(_) => (event_code::ACCESS_DENIED, "server"),
                            ServerAnswer::Failed { action, .. } => match action {
                                standby_device::agent::FailAction::Soft => {
                                    (event_code::ACCESS_GRANTED, "fail-soft")
                                }
                                _ => (event_code::ACCESS_DENIED, "fail-closed"),
                            },
                        };
                        #[derive(Serialize)]
                        struct Access<'a> {
                            card: &'a str,
                            decided_by: &'a str,
                            at_ms: u64,
                        }
                        let payload = standby_device::messages::encode(&Access {
                            card: &card,
                            decided_by: matched,
                            at_ms: standby_device::agent::unix_ms(),
                        });
                        if agent.record(code, Some(user.to_string()), payload).is_ok() {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        }));
    }

    /// Stop generating events.
    pub fn stop_generating(&mut self) {
        if let Some(g) = self.generator.take() {
            g.abort();
        }
    }

    /// Every agent's status.
    pub fn statuses(&self) -> Vec<AgentStatus> {
        self.agents.iter().map(Agent::status).collect()
    }

    /// Fleet-wide figures now.
    pub fn summary(&self) -> FleetSummary {
        let mut s = FleetSummary {
            devices: self.agents.len(),
            access_events: self.access_events.load(Ordering::Relaxed),
            ..FleetSummary::default()
        };
        for a in self.statuses() {
            if a.link == LinkPhase::Connected {
                s.connected += 1;
                if let Some(server) = &a.server {
                    *s.by_server.entry(server.node_id.clone()).or_default() += 1;
                }
            }
            s.events_logged += a.last_seq;
            s.events_acked += a.acked.min(a.last_seq);
            s.events_pending += a.pending as u64;
            s.reconnects += a.disconnects;
            s.requests_answered += a.answered_requests;
            s.requests_failed += a.failed_requests;
            s.longest_degraded_ms = s.longest_degraded_ms.max(a.longest_degraded_ms);
            s.refused_lower_epoch += a.refused_lower_epoch;
            s.dropped_undurable += a.dropped_undurable;
        }
        s
    }

    /// Wait until no access event is still being decided and every logged
    /// event is acknowledged, or `limit` passes.
    pub async fn drain(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            // Access events still asking the server will log an entry yet.
            let busy = self.in_flight.load(Ordering::SeqCst) > 0;
            let s = self.summary();
            if !busy && s.events_acked >= s.events_logged {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop every agent.
    pub async fn shutdown(mut self) {
        self.stop_generating();
        if let Ok(agents) = Arc::try_unwrap(self.agents) {
            for a in agents {
                a.shutdown().await;
            }
        }
    }
}

/// Log options for simulated devices: no fsync per event (the page cache
/// survives a simulator crash, which is what the tests inject), and an audit
/// file for independent checks.
pub fn simulated_log() -> LogOptions {
    LogOptions {
        fsync: false,
        audit: true,
        ..LogOptions::default()
    }
}

/// Endpoints from `host:port[/tls],...`.
pub fn parse_endpoints(
    text: &str,
) -> Result<Vec<Endpoint>, standby_device::agent::endpoint::EndpointError> {
    Endpoint::parse_list(text)
}
