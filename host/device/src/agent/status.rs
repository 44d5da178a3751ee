//! What an agent reports about itself.

use serde::{Deserialize, Serialize};

use crate::messages::ServerRole;

/// The link as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkPhase {
    /// Waiting before the next attempt.
    Disconnected,
    /// Dialling or handshaking.
    Connecting,
    /// Up.
    Connected,
}

/// The server the link is up with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Node id.
    pub node_id: String,
    /// Role.
    pub role: ServerRole,
    /// Epoch.
    pub epoch: u64,
}

/// An agent's state, for status and the fleet simulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Device id.
    pub device_id: u32,
    /// Link phase.
    pub link: LinkPhase,
    /// Index (in priority order) of the endpoint in use or being dialled.
    pub endpoint: Option<usize>,
    /// That endpoint, as text.
    pub endpoint_addr: Option<String>,
    /// The server, when connected.
    pub server: Option<ServerInfo>,
    /// When the link came up (Unix ms).
    pub connected_since_ms: Option<u64>,
    /// Highest server epoch seen.
    pub max_epoch: u64,
    /// Log incarnation.
    pub incarnation: u64,
    /// Highest sequence logged.
    pub last_seq: u64,
    /// Server's contiguous watermark from the last ack.
    pub acked: u64,
    /// DR-durable watermark.
    pub durable: u64,
    /// Events kept in the log.
    pub pending: usize,
    /// Links established.
    pub connects: u64,
    /// Links lost.
    pub disconnects: u64,
    /// Servers refused for presenting a lower epoch.
    pub refused_lower_epoch: u64,
    /// Servers refused for not being active.
    pub refused_inactive: u64,
    /// Server-dependent requests that got no answer.
    pub failed_requests: u64,
    /// Event batches the server asked to be sent again later (over the
    /// device's event rate).
    pub throttled: u64,
    /// Server-dependent requests answered.
    pub answered_requests: u64,
    /// Longest stretch during which server-dependent requests failed, in ms.
    pub longest_degraded_ms: u64,
    /// Events dropped from a full log before they were durable.
    pub dropped_undurable: u64,
}
