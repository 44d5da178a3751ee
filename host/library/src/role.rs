//! Where a node stands: its role and the context plugins are called with.
//! A leaf: the peer link, the gateway, the cluster code and the plugins all
//! use it, and it uses nothing of the crate.

use serde::{Deserialize, Serialize};

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives replicated data; gateway closed.
    Standby,
    /// Trying to win the lease.
    Candidate,
    /// Holds the lease and serves devices.
    Active,
    /// Has seen a higher epoch; serves nothing.
    Fenced,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Standby => "standby",
            Role::Candidate => "candidate",
            Role::Active => "active",
            Role::Fenced => "fenced",
        })
    }
}

/// Where the node stands when the host calls a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeContext {
    /// This node's id.
    pub node_id: String,
    /// This node's site name.
    pub site: String,
    /// Current role.
    pub role: Role,
    /// Current epoch.
    pub epoch: u64,
    /// Wall-clock time of the call (Unix ms).
    pub now_ms: u64,
}
