//! What `standby status` shows: role, epoch, lease, peer and witness health,
//! plugin health, the last copy and the last failover timeline.

use std::time::Duration;

use serde::Serialize;

use super::Timeline;
use crate::cluster::Transition;
use crate::node::core::Core;
use crate::peer::PeerState;
use crate::plugin::{Health, PromoteReport, StrategyStatus};
use crate::role::Role;

/// How long `status` waits for each strategy's own status.
const STRATEGY_STATUS_WAIT: Duration = Duration::from_millis(500);

/// A node's status.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Node id.
    pub node_id: String,
    /// Site name.
    pub site: String,
    /// Role now.
    pub role: Role,
    /// Epoch now.
    pub epoch: u64,
    /// How roles are decided: `witness` (automatic failover), `manual` (a
    /// cluster without a witness), or `static` (no cluster).
    pub mode: String,
    /// Whether the node acknowledges device events now.
    pub acknowledging: bool,
    /// The held lease, if active under a witness.
    pub lease: Option<LeaseStatus>,
    /// The peer link.
    pub peer: Option<PeerState>,
    /// The witness, asked now.
    pub witness: Option<WitnessStatus>,
    /// The device gateway.
    pub gateway: Option<GatewayStatus>,
    /// Plugin instances' health.
    pub plugins: Vec<Health>,
    /// Each strategy's own status (last copy, lag).
    pub strategies: Vec<NamedStrategyStatus>,
    /// The change stream stopped at a batch this node could not apply
    /// (`standby replication retry|skip`).
    pub change_stream_stopped: Option<crate::caps::stream::StreamStopped>,
    /// A plugin holds the database frozen (writes wait).
    pub database_frozen: bool,
    /// What was set aside in `DATA_DIR/set-aside/` (summaries of databases
    /// set aside, files of skipped changes), oldest first.
    pub set_aside: Vec<String>,
    /// What the strategies restored from at the last promotion.
    pub promoted_from: Vec<NamedPromoteReport>,
    /// The last promotion's timeline.
    pub last_failover: Option<Timeline>,
    /// The last demotion's timeline.
    pub last_demotion: Option<Timeline>,
    /// Role transitions, oldest first.
    pub transitions: Vec<Transition>,
}

/// The held lease.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    /// Its epoch.
    pub epoch: u64,
    /// Time left before the node stops acknowledging (lease end minus margin), ms.
    pub acknowledging_for_ms: u64,
}

/// The witness as the node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct WitnessStatus {
    /// Its address.
    pub addr: String,
    /// It answered now.
    pub reachable: bool,
    /// Its epoch.
    pub epoch: Option<u64>,
    /// Who holds the lease.
    pub holder: Option<String>,
    /// How long the holder's lease still runs, ms.
    pub remaining_ms: Option<u64>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The device gateway.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    /// Accepting devices now.
    pub open: bool,
    /// The plain listener.
    pub listen: Option<String>,
    /// Devices connected now.
    pub devices: usize,
    /// Events newly stored since start.
    pub events_stored: u64,
    /// How devices authenticate, and the credentials expiring soon.
    pub device_auth: crate::enrolment::DeviceAuthStatus,
}

/// A strategy's status with its instance name.
#[derive(Debug, Clone, Serialize)]
pub struct NamedStrategyStatus {
    /// Instance name.
    pub name: String,
    /// The status, or why it could not be had.
    pub status: StrategyStatusAnswer,
}

/// What a strategy answered when asked for its status (in JSON `{"Ok": ...}`
/// or `{"Err": "why"}`).
#[derive(Debug, Clone, Serialize)]
pub enum StrategyStatusAnswer {
    /// Its status.
    Ok(StrategyStatus),
    /// Why it could not be had: the call failed, or the instance was busy.
    Err(String),
}

/// A strategy's promotion report with its instance name.
#[derive(Debug, Clone, Serialize)]
pub struct NamedPromoteReport {
    /// Instance name.
    pub name: String,
    /// The report.
    pub report: PromoteReport,
}

/// Gather a node's status (asks the witness and the strategies).
pub(crate) async fn collect(core: &Core) -> NodeStatus {
    // What the control loop last published, taken whole so that every
    // field comes from the same moment.
    let control = core.control.borrow().clone();
    let (role, epoch) = (control.role, control.epoch);
    let mode = match (&core.settings, &core.witness) {
        (Some(_), Some(_)) => "witness",
        (Some(_), None) => "manual",
        _ => "static",
    };
    let lease = control.lease.map(|l| LeaseStatus {
        epoch: l.epoch,
        acknowledging_for_ms: core
            .gate
            .last_deadline()
            .map(|d| {
                d.saturating_duration_since(std::time::Instant::now())
                    .as_millis() as u64
            })
            .unwrap_or(0),
    });
    let witness = match &core.witness {
        Some(w) => Some(
            match tokio::time::timeout(Duration::from_secs(1), w.query()).await {
                Ok(Ok(v)) => WitnessStatus {
                    addr: w.addr().to_string(),
                    reachable: true,
                    epoch: Some(v.epoch),
                    holder: v.holder,
                    remaining_ms: Some(v.remaining_ms),
                    error: None,
                },
                Ok(Err(e)) => unreachable_witness(w.addr(), e.to_string()),
                Err(_) => unreachable_witness(w.addr(), "no answer within 1 s".into()),
            },
        ),
        None => None,
    };
    let gateway = core.gateway.as_ref().map(|g| GatewayStatus {
        open: g.is_open(),
        listen: g.local_addr().map(|a| a.to_string()),
        devices: g.devices().len(),
        events_stored: g.stats().events_stored,
        device_auth: g.auth_status(),
    });
    let ctx = core.context();
    let mut strategies = Vec::new();
    for s in &core.strategies {
        // A plugin instance answers one call at a time: one busy shipping a
        // copy must not hold up the whole status.
        let status = match tokio::time::timeout(STRATEGY_STATUS_WAIT, s.status(&ctx)).await {
            Ok(Ok(status)) => StrategyStatusAnswer::Ok(status),
            Ok(Err(e)) => StrategyStatusAnswer::Err(e.to_string()),
            Err(_) => StrategyStatusAnswer::Err(format!(
                "busy: no answer within {STRATEGY_STATUS_WAIT:?} (the instance is in another call, e.g. shipping a copy)"
            )),
        };
        strategies.push(NamedStrategyStatus {
            name: s.name().to_string(),
            status,
        });
    }
    let promoted_from = control
        .promoted_from
        .into_iter()
        .map(|(name, report)| NamedPromoteReport { name, report })
        .collect();
    NodeStatus {
        node_id: core.node_id.clone(),
        site: core.site.clone(),
        role,
        epoch,
        mode: mode.into(),
        acknowledging: core.gate.is_open() && role == Role::Active,
        lease,
        peer: core.peer.as_ref().map(|p| p.state()),
        witness,
        gateway,
        plugins: core.runtime.health(),
        strategies,
        change_stream_stopped: core.services.stream.current(),
        database_frozen: core.services.freeze.is_frozen(),
        set_aside: set_aside(&core.data_dir),
        promoted_from,
        last_failover: control.last_failover,
        last_demotion: control.last_demotion,
        transitions: control.transitions,
    }
}

/// The summaries and set-aside changes in `data_dir/set-aside/`, by name.
fn set_aside(data_dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join(crate::store::SET_ASIDE_DIR))
        .map(|d| {
            d.flatten()
                .map(|e| e.path().display().to_string())
                .filter(|p| p.ends_with(".summary.json") || !p.ends_with(".db"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn unreachable_witness(addr: std::net::SocketAddr, error: String) -> WitnessStatus {
    WitnessStatus {
        addr: addr.to_string(),
        reachable: false,
        epoch: None,
        holder: None,
        remaining_ms: None,
        error: Some(error),
    }
}
