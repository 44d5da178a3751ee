//! The error a capability's grant check gives: the key and what is wrong. A
//! leaf: every capability's grant module and the grants table use it.

/// A grant that makes no sense: the key it is at (under the entry's
/// `grants`) and what is wrong, as its capability says.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct GrantError {
    /// The key, e.g. `files.snapshots` or `peer.inbox`.
    pub key: String,
    /// What is wrong.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl GrantError {
    /// A problem at `key`.
    pub(crate) fn new(
        key: impl Into<String>,
        problem: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            key: key.into(),
            source: Box::new(problem),
        }
    }
}
