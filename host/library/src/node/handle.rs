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
