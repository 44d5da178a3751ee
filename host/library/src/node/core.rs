//! What a running node shares between its control loop, its admin endpoint,
//! its status and its plugins' capabilities: [`Core`], the resolved cluster
//! settings, the commands the admin endpoint sends the control loop, and
//! where each strategy's received files land.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::caps::Services;
use crate::cluster::{AckGate, DetectorSettings, Lease, LeaseSettings, RoleMachine, WitnessClient};
use crate::failover::Timeline;
use crate::gateway::{Gateway, ReplicatedMarks};
use crate::peer::PeerLink;
use crate::plugin::{FailoverAction, PluginRuntime, PromoteReport, Strategy};
use crate::role::{NodeContext, Role};
use crate::store::Store;

/// Where a strategy's received files land: its `peer` grant's inbox root.
pub(crate) struct Inbox {
    pub(crate) strategy: Arc<dyn Strategy>,
    /// The root's name, as the plugin knows it.
    pub(crate) root: String,
    /// The root's directory.
    pub(crate) dir: PathBuf,
}

/// What the admin endpoint asks of the control loop.
pub(crate) enum Command {
    /// Become active now (`standby promote`).
    Promote {
        /// Promote without a witness (the operator vouches that the other
        /// node is down).
        force: bool,
        /// The promotion's timeline, or why it did not happen.
        reply: oneshot::Sender<Result<Timeline, crate::failover::PromoteError>>,
    },
}

/// The resolved `[cluster]` settings.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    pub(crate) detector: DetectorSettings,
    pub(crate) lease: LeaseSettings,
    pub(crate) startup_grace: Duration,
    pub(crate) fence_command: Vec<String>,
    pub(crate) fence_timeout: Duration,
    pub(crate) fence_required: bool,
    /// The site starts as `active` in the profile: it competes for the lease
    /// at once instead of waiting out the startup grace.
    pub(crate) prefer_active: bool,
}

/// Everything a running node shares between its control loop, its admin
/// endpoint and its plugins' capabilities.
pub(crate) struct Core {
    pub(crate) node_id: String,
    pub(crate) site: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) machine: Mutex<RoleMachine>,
    /// This node's (epoch, role), as the peer link announces it.
    pub(crate) local: watch::Sender<(u64, Role)>,
    pub(crate) runtime: Arc<PluginRuntime>,
    pub(crate) services: Arc<Services>,
    pub(crate) store: Arc<Store>,
    pub(crate) strategies: Vec<Arc<dyn Strategy>>,
    pub(crate) actions: Vec<Arc<dyn FailoverAction>>,
    pub(crate) gateway: Option<Arc<Gateway>>,
    pub(crate) gate: Arc<AckGate>,
    pub(crate) marks: Option<Arc<ReplicatedMarks>>,
    pub(crate) peer: Option<PeerLink>,
    pub(crate) witness: Option<Arc<WitnessClient>>,
    pub(crate) settings: Option<ClusterSettings>,
    pub(crate) inboxes: BTreeMap<String, Inbox>,
    pub(crate) last_failover: Mutex<Option<Timeline>>,
    pub(crate) last_demotion: Mutex<Option<Timeline>>,
    pub(crate) promoted_from: Mutex<Vec<(String, PromoteReport)>>,
    pub(crate) lease: Mutex<Option<Lease>>,
    pub(crate) commands: mpsc::Sender<Command>,
}

impl Core {
    pub(crate) fn role(&self) -> Role {
        self.lock_machine().role()
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.lock_machine().epoch()
    }

    pub(crate) fn lock_machine(&self) -> std::sync::MutexGuard<'_, RoleMachine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn context(&self) -> NodeContext {
        let (role, epoch) = {
            let m = self.lock_machine();
            (m.role(), m.epoch())
        };
        NodeContext {
            node_id: self.node_id.clone(),
            site: self.site.clone(),
            role,
            epoch,
            now_ms: crate::store::unix_ms(),
        }
    }

    /// Tell the capabilities, the gateway and the peer what the machine says now.
    pub(crate) fn publish(&self) {
        let (role, epoch) = {
            let m = self.lock_machine();
            (m.role(), m.epoch())
        };
        self.services.set_role(role);
        if let Some(g) = &self.gateway {
            g.set_identity(role, epoch);
        }
        self.local.send_replace((epoch, role));
    }
}
