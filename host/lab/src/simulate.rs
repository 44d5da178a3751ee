//! `standby devices simulate`: a fleet of simulated devices, separate from
//! any server, until its duration passes or SIGTERM/Ctrl-C; then it drains
//! and prints a summary. Progress goes to stderr once a second, the summary
//! and (now and then) every device's status to files.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use standby_device::agent::{AgentConfig, Backoff, FailAction, FailBack};

use crate::fleet::{self, Fleet, FleetConfig};

/// How the fleet runs (the flags of `standby devices simulate`).
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Number of devices.
    pub count: usize,
    /// Server endpoints in priority order: `host:port[/tls],...`.
    pub endpoints: String,
    /// Access events per second across the whole fleet.
    pub event_rate: f64,
    /// Where each device keeps its log (`DIR/<id>.log`, `.audit`, `.state`).
    pub data_dir: PathBuf,
    /// DNS server the fleet asks for domain endpoints.
    pub resolver: Option<SocketAddr>,
    /// Local addresses to dial from, used in turn by the devices.
    pub source_ips: Vec<IpAddr>,
    /// CA certificate (PEM) trusted for `/tls` endpoints.
    pub ca: Option<PathBuf>,
    /// Device credentials (`standby devices enroll --out`): every device
    /// authenticates with its own.
    pub credentials: Option<PathBuf>,
    /// Id of the first device.
    pub first_id: u32,
    /// Keep-alive interval, ms.
    pub keepalive_ms: u64,
    /// Dead-link timeout, ms.
    pub dead_link_ms: u64,
    /// Connect + handshake timeout, ms.
    pub connect_timeout_ms: u64,
    /// First reconnect delay scale, ms (jittered, doubling).
    pub backoff_initial_ms: u64,
    /// Largest reconnect delay, ms.
    pub backoff_max_ms: u64,
    /// Return to a higher-priority server once it has answered for this
    /// long, ms (None: stay).
    pub fail_back_hold_ms: Option<u64>,
    /// What server-dependent requests do without a server.
    pub fail_action: FailAction,
    /// Stop generating after this many seconds (None: run until signalled).
    pub duration: Option<f64>,
    /// After stopping, wait at most this long for every event to be
    /// acknowledged, seconds.
    pub drain_secs: f64,
    /// Write every device's status (JSON) here every `status_every` seconds
    /// and when the fleet stops.
    pub status_file: Option<PathBuf>,
    /// Seconds between writes of the status file.
    pub status_every: u32,
    /// Write the fleet's summary (JSON) here once a second and at the end.
    pub summary_file: Option<PathBuf>,
    /// Print the summary as one JSON line on stdout.
    pub json: bool,
}

/// The device configuration every simulated device shares.
fn agent_config(o: &SimulateOptions) -> Result<AgentConfig> {
    let endpoints = fleet::parse_endpoints(&o.endpoints)?;
    let mut agent = AgentConfig::new(0, endpoints, &o.data_dir);
    agent.keepalive = Duration::from_millis(o.keepalive_ms);
    agent.dead_link = Duration::from_millis(o.dead_link_ms);
    agent.connect_timeout = Duration::from_millis(o.connect_timeout_ms);
    agent.request_timeout = Duration::from_millis(o.connect_timeout_ms);
    agent.backoff = Backoff::new(
        Duration::from_millis(o.backoff_initial_ms),
        Duration::from_millis(o.backoff_max_ms),
    )?;
    if let Some(hold) = o.fail_back_hold_ms {
        agent.fail_back = FailBack::Return {
            hold_down: Duration::from_millis(hold),
            probe_every: Duration::from_millis((hold / 4).clamp(50, 1_000)),
        };
    }
    agent.fail_action = o.fail_action;
    if let Some(ca) = &o.ca {
        agent.tls = Some(standby_device::tls::client_config(ca)?);
    }
    agent.log = fleet::simulated_log();
    agent.validate()?;
    Ok(agent)
}

/// Run the fleet until a `shutdown()` future resolves (or `duration`
/// passes), then drain and print the summary; a second `shutdown()` cuts the
/// drain short.
pub async fn run<F>(o: SimulateOptions, shutdown: impl Fn() -> F) -> Result<()>
where
    F: std::future::Future<Output = ()>,
{
    let config = FleetConfig {
        count: o.count,
        first_id: o.first_id,
        event_rate: o.event_rate,
        data_dir: o.data_dir.clone(),
        resolver: o.resolver,
        sources: o.source_ips.clone(),
        agent: agent_config(&o)?,
        credentials: match &o.credentials {
            Some(path) => Some(
                standby_device::auth::load_credentials(path)?
                    .into_iter()
                    .map(|c| (c.device_id, c))
                    .collect(),
            ),
            None => None,
        },
    };
    let mut fleet = Fleet::start(&config).context("starting the fleet")?;
    fleet.generate(config.event_rate);
    tracing::info!(devices = o.count, endpoints = %o.endpoints, rate = o.event_rate, "fleet started");

    let stop = shutdown();
    tokio::pin!(stop);
    let duration = async {
        match o.duration {
            Some(d) => tokio::time::sleep(Duration::from_secs_f64(d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(duration);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut duration => break,
            _ = tick.tick() => {
                let full = ticks % o.status_every.max(1) == 0;
                ticks = ticks.wrapping_add(1);
                report(&fleet, &o, full);
            }
        }
    }
    fleet.stop_generating();
    tracing::info!("stopped generating; draining");
    let drained = tokio::select! {
        d = fleet.drain(Duration::from_secs_f64(o.drain_secs)) => d,
        _ = shutdown() => false,
    };
    report(&fleet, &o, true);
    let summary = fleet.summary();
    if !drained {
        tracing::warn!(
            acked = summary.events_acked,
            logged = summary.events_logged,
            "not every event was acknowledged before the drain limit"
        );
    }
    if o.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "devices {} connected {} | access events {} | log entries {} acked {} pending {} | reconnects {} | requests answered {} failed {} (longest degraded {} ms)",
            summary.devices,
            summary.connected,
            summary.access_events,
            summary.events_logged,
            summary.events_acked,
            summary.events_pending,
            summary.reconnects,
            summary.requests_answered,
            summary.requests_failed,
            summary.longest_degraded_ms
        );
    }
    fleet.shutdown().await;
    Ok(())
}

/// Progress on stderr, the summary to the summary file, and (when `full`)
/// every device's status to the status file.
fn report(fleet: &Fleet, o: &SimulateOptions, full: bool) {
    let s = fleet.summary();
    eprintln!(
        "connected {}/{} | events {} acked {} | reconnects {} | failed requests {}",
        s.connected, s.devices, s.events_logged, s.events_acked, s.reconnects, s.requests_failed
    );
    if let Some(path) = &o.summary_file {
        write_atomically(path, &serde_json::json!({ "summary": s }));
    }
    if let (Some(path), true) = (&o.status_file, full) {
        let body = serde_json::json!({ "summary": s, "devices": fleet.statuses() });
        write_atomically(path, &body);
    }
}

/// Replace `path` with `body` (written aside, then renamed over it).
fn write_atomically(path: &Path, body: &serde_json::Value) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, body.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .is_err()
    {
        tracing::warn!(file = %path.display(), "cannot write the status file");
    }
}
