//! What the admin endpoint may do with a running node: send it commands,
//! read its status, list its devices and push them a server list. Nothing
//! else of the node is reachable through it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::core::{Command, Core};
use crate::failover::{NodeStatus, PromoteError, Timeline};
use crate::gateway::{DeviceReport, SetServersResult};
use standby_device::messages::WireEndpoint;

/// Why a command got no result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    /// The node is stopping; its control loop takes no more commands.
    #[error("the node is stopping")]
    Stopping,
    /// The control loop refused the promotion.
    #[error(transparent)]
    Refused(#[from] PromoteError),
}

/// Why a switchover got no report.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SwitchoverCommandError {
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopping,
    /// The switchover was refused or abandoned.
    #[error(transparent)]
    Switchover(#[from] crate::failover::SwitchoverError),
}

/// Why a decision on the change stream was not carried out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamCommandError {
    /// The node is active.
    #[error("this node is active: it applies no other site's changes, so there is no stream to go on with")]
    Active,
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopping,
    /// The decision failed.
    #[error(transparent)]
    Stream(#[from] crate::caps::stream::StreamError),
}

/// A narrow handle on a running node: commands in, status out.
#[derive(Clone)]
pub(crate) struct NodeHandle {
    core: Arc<Core>,
    commands: mpsc::Sender<Command>,
}

impl NodeHandle {
    /// A handle on the node that shares `core`, whose control loop takes
    /// `commands`.
    pub(crate) fn new(core: Arc<Core>, commands: mpsc::Sender<Command>) -> Self {
        Self { core, commands }
    }

    /// The node's status now.
    pub(crate) async fn status(&self) -> NodeStatus {
        crate::failover::status::collect(&self.core).await
    }

    /// Every connected device with its server list (None: no gateway).
    pub(crate) async fn devices(&self) -> Option<Vec<DeviceReport>> {
        match &self.core.gateway {
            Some(g) => Some(g.device_reports().await),
            None => None,
        }
    }

    /// Push `endpoints` to `devices` (all connected when None); None: no
    /// gateway.
    pub(crate) async fn set_servers(
        &self,
        devices: Option<Vec<u32>>,
        endpoints: Vec<WireEndpoint>,
    ) -> Option<Vec<SetServersResult>> {
        match &self.core.gateway {
            Some(g) => Some(g.set_servers(devices, endpoints).await),
            None => None,
        }
    }

    /// Carry out an operator's decision on a stopped change stream
    /// (refused on an active node: it applies no other site's changes).
    pub(crate) async fn resolve_stream(
        &self,
        decision: crate::caps::stream::Decision,
    ) -> Result<crate::caps::stream::Resolution, StreamCommandError> {
        if self.core.role() == crate::role::Role::Active {
            return Err(StreamCommandError::Active);
        }
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || {
            core.services
                .stream
                .resolve(decision, &core.store, &core.data_dir)
        })
        .await
        .map_err(|_| StreamCommandError::Stopping)?
        .map_err(StreamCommandError::Stream)
    }

    /// Ask the control loop to hand the service over to the site `to`.
    pub(crate) async fn switchover(
        &self,
        to: String,
    ) -> Result<crate::failover::SwitchoverReport, SwitchoverCommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Switchover { to, reply })
            .await
            .map_err(|_| SwitchoverCommandError::Stopping)?;
        Ok(answer
            .await
            .map_err(|_| SwitchoverCommandError::Stopping)??)
    }

    /// Ask the control loop to promote the node (`force`: without a
    /// witness); the promotion's timeline.
    pub(crate) async fn promote(&self, force: bool) -> Result<Timeline, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Promote { force, reply })
            .await
            .map_err(|_| CommandError::Stopping)?;
        Ok(answer.await.map_err(|_| CommandError::Stopping)??)
    }
}
