//! Plugins: the two host traits the rest of the host calls ([`Strategy`],
//! [`FailoverAction`]), the WebAssembly component runtime that implements them,
//! where plugins come from (built in, or a path), and inspection tools.
//!
//! No host code branches on a plugin's name: what a node does comes from what
//! its plugins do through these traits.

pub mod builtin;
pub mod componentize;
mod convert;
mod health;
pub mod inspect;
pub mod runtime;
mod shape;
mod spec;
pub mod types;
mod wasm;

use async_trait::async_trait;

pub use crate::caps::Capability;
pub use health::{FaultCause, Health, HealthState};
pub use runtime::{EngineFault, LoadError, PluginRuntime, RuntimeOptions};
pub use types::*;

/// Why a plugin call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The plugin ran and returned an error value.
    #[error("plugin {plugin}: {error}")]
    Returned {
        /// Plugin instance name.
        plugin: String,
        /// What it returned.
        #[source]
        error: CallError,
    },
    /// The call trapped, ran past its deadline or hit the memory cap; the
    /// instance is now disabled and will be re-instantiated after a backoff.
    #[error("plugin {plugin} failed and was disabled: {cause}")]
    Faulted {
        /// Plugin instance name.
        plugin: String,
        /// What happened.
        cause: FaultCause,
    },
    /// The call was stopped because the node is being promoted (a running
    /// tick or on-receive gives way to on-promote); not a fault.
    #[error("plugin {plugin}: {op} was stopped for a promotion")]
    Preempted {
        /// Plugin instance name.
        plugin: String,
        /// The call.
        op: &'static str,
    },
    /// The call ran out of its wall-clock limit and was stopped; the
    /// instance is made afresh for its next call (this is not a fault).
    #[error("plugin {plugin}: {op} did not finish within {limit_ms} ms and was stopped")]
    TimedOut {
        /// Plugin instance name.
        plugin: String,
        /// The call.
        op: &'static str,
        /// The limit.
        limit_ms: u64,
    },
    /// The instance is disabled after an earlier fault and its backoff has not
    /// elapsed (or re-instantiation failed).
    #[error("plugin {plugin} is disabled ({cause}); next attempt in {retry_in_ms} ms")]
    Disabled {
        /// Plugin instance name.
        plugin: String,
        /// The fault that disabled it.
        cause: FaultCause,
        /// Time until the next re-instantiation attempt.
        retry_in_ms: u64,
    },
}

impl PluginError {
    /// The plugin instance the error is about.
    pub fn plugin(&self) -> &str {
        match self {
            PluginError::Returned { plugin, .. }
            | PluginError::Faulted { plugin, .. }
            | PluginError::TimedOut { plugin, .. }
            | PluginError::Preempted { plugin, .. }
            | PluginError::Disabled { plugin, .. } => plugin,
        }
    }
}

/// A replication strategy, as the host sees it.
#[async_trait]
pub trait Strategy: Send + Sync {
    /// The instance name (from the profile).
    fn name(&self) -> &str;
    /// Current health of the instance.
    fn health(&self) -> Health;
    /// Name, version and summary.
    async fn describe(&self) -> Result<Descriptor, PluginError>;
    /// Periodic call on both nodes.
    async fn tick(&self, ctx: &NodeContext) -> Result<TickReport, PluginError>;
    /// The peer's plugin sent something.
    async fn on_receive(&self, ctx: &NodeContext, item: Received) -> Result<(), PluginError>;
    /// This node is becoming active.
    async fn on_promote(&self, ctx: &NodeContext) -> Result<PromoteReport, PluginError>;
    /// This node is no longer active.
    async fn on_demote(&self, ctx: &NodeContext) -> Result<(), PluginError>;
    /// Health and progress.
    async fn status(&self, ctx: &NodeContext) -> Result<StrategyStatus, PluginError>;
    /// A planned switchover on the active node, the database frozen: send
    /// the other node what it lacks (`first`: the first call of this
    /// switchover) and say whether it has confirmed holding all of it. A
    /// promotion or the switchover's time limit may stop it
    /// ([`Strategy::preempt`]).
    async fn handover(
        &self,
        ctx: &NodeContext,
        first: bool,
    ) -> Result<HandoverProgress, PluginError>;
    /// Stop a running `tick` or `on-receive` now, because the node is being
    /// promoted; what it had begun is dropped. The default does nothing.
    fn preempt(&self) {}
}

/// A failover action, as the host sees it.
#[async_trait]
pub trait FailoverAction: Send + Sync {
    /// The instance name (from the profile).
    fn name(&self) -> &str;
    /// Current health of the instance.
    fn health(&self) -> Health;
    /// Name, version and summary.
    async fn describe(&self) -> Result<Descriptor, PluginError>;
    /// Make devices reach this node.
    async fn activate(&self, ctx: &NodeContext) -> Result<ActionReport, PluginError>;
    /// Undo `activate` on this node.
    async fn deactivate(&self, ctx: &NodeContext) -> Result<ActionReport, PluginError>;
    /// Check that devices would reach this node.
    async fn verify(&self, ctx: &NodeContext) -> Result<ActionReport, PluginError>;
}
