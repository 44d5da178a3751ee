//! Host-side forms of the values that cross the plugin boundary. The rest of
//! the host uses these; each adapter (wasm now, native later) converts.

use serde::{Deserialize, Serialize};

pub use crate::role::{NodeContext, Role};

/// A plugin setting value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    /// String.
    Text(String),
    /// Integer.
    Integer(i64),
    /// Float.
    Number(f64),
    /// Boolean.
    Boolean(bool),
    /// List of strings.
    Texts(Vec<String>),
}

/// A flattened plugin setting (`schedule.every` for nested tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// Dotted key.
    pub key: String,
    /// Value.
    pub value: SettingValue,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Short name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// One-line summary.
    pub summary: String,
}

/// A failure a plugin (or a capability it called) reported as a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CallError {
    /// A grant was missing.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Something named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A bad argument or setting.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Temporarily unavailable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Conflicts with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A file relative to a granted root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Root name.
    pub root: String,
    /// Relative path.
    pub path: String,
}

/// A batch of captured changes held by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// Handle.
    pub id: u64,
    /// First sequence.
    pub first_seq: u64,
    /// Last sequence.
    pub last_seq: u64,
    /// Number of changes.
    pub count: u32,
    /// Encoded size.
    pub bytes: u64,
    /// Commit time of the oldest change.
    pub oldest_commit_ms: u64,
}

/// A file received from the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedFile {
    /// Where it was stored.
    pub file: FileRef,
    /// Sender's tag.
    pub tag: String,
    /// Size.
    pub size: u64,
    /// SHA-256 hex.
    pub sha256: String,
}

/// Something the peer's plugin sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Received {
    /// A file.
    File(ReceivedFile),
    /// A change batch.
    Batch(ChangeBatch),
    /// A control message: kind and body.
    Message(String, Vec<u8>),
}

/// What a strategy tick did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickReport {
    /// Call again within this many milliseconds.
    pub next_tick_ms: u32,
    /// One line on what happened.
    pub did: String,
}

/// What the data looked like at promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteReport {
    /// What the database was started from.
    pub restored_from: String,
    /// When that data was current.
    pub restored_at_ms: Option<u64>,
    /// Notes for the operator.
    pub note: String,
}

/// How far a planned switchover's hand-over has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverProgress {
    /// The other node confirmed it holds everything.
    pub done: bool,
    /// One line: what was sent, what is awaited.
    pub note: String,
}

/// A strategy's health and progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategyStatus {
    /// Replication works and is within its objective.
    pub healthy: bool,
    /// Last success (Unix ms).
    pub last_success_ms: Option<u64>,
    /// Size of the last copy.
    pub last_size: Option<u64>,
    /// How far behind the other site is.
    pub lag_ms: Option<u64>,
    /// One line.
    pub summary: String,
    /// Key/value details.
    pub details: Vec<(String, String)>,
}

/// What a failover action did or found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    /// One line.
    pub summary: String,
    /// Key/value details.
    pub details: Vec<(String, String)>,
}
