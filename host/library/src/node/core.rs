//! What a running node's parts share: [`Core`] (its identity, its resources
//! and what the control loop last published), the resolved cluster
//! settings, the commands the admin endpoint sends the control loop, and
//! where each strategy's received files land.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::caps::Services;
use crate::cluster::{AckGate, DetectorSettings, LeaseSettings, WitnessClient};
use crate::failover::state::ControlView;
use crate::failover::Timeline;
use crate::gateway::{Gateway, ReplicatedMarks};
use crate::peer::PeerLink;
use crate::plugin::{FailoverAction, PluginRuntime, Strategy};
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
    /// Hand the service over to the other site (`standby switchover`).
    Switchover {
        /// The other site's name, as the operator gave it.
        to: String,
        /// What the switchover did, or why it did not happen.
        reply: oneshot::Sender<
            Result<crate::failover::SwitchoverReport, crate::failover::SwitchoverError>,
        >,
    },
    /// The other site handed the service over to this one: become active.
    TakeOver {
        /// The other site's name.
        from: String,
        /// Its epoch when it asked.
        epoch: u64,
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
    /// What a promotion does when a plugin step runs out of time.
    pub(crate) step_timeout: crate::config::StepTimeout,
    /// The site starts as `active` in the profile: it competes for the lease
    /// at once instead of waiting out the startup grace.
    pub(crate) prefer_active: bool,
    /// How long a switchover waits for the other node's confirmation.
    pub(crate) switchover_timeout: Duration,
}

/// What a running node's parts share: its identity, its resources, and
/// what the control loop last published. The control loop's own state (the
/// role machine, the lease, the last sequences) is not here: the loop owns
/// it and publishes a [`ControlView`].
pub(crate) struct Core {
    pub(crate) node_id: String,
    pub(crate) site: String,
    /// The other site's name, when the profile has two.
    pub(crate) peer_site: Option<String>,
    pub(crate) data_dir: PathBuf,
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
    /// What the control loop last published.
    pub(crate) control: watch::Receiver<ControlView>,
    /// Commands to the control loop (the peer's take-over request goes
    /// there too).
    pub(crate) commands: mpsc::Sender<Command>,
}

impl Core {
    /// The role the control loop last published.
    pub(crate) fn role(&self) -> Role {
        self.control.borrow().role
    }

    /// The epoch the control loop last published.
    pub(crate) fn epoch(&self) -> u64 {
        self.control.borrow().epoch
    }

    /// The context plugins see now.
    pub(crate) fn context(&self) -> NodeContext {
        let (role, epoch) = {
            let v = self.control.borrow();
            (v.role, v.epoch)
        };
        NodeContext {
            node_id: self.node_id.clone(),
            site: self.site.clone(),
            role,
            epoch,
            now_ms: crate::store::unix_ms(),
        }
    }
}
