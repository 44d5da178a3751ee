//! What the control loop owns: the role machine, the lease it holds, and the
//! record of its last sequences. Nothing else writes them; everything else
//! (status, the plugins' context, the peer link, the gateway) reads what the
//! loop last published.

use std::sync::Arc;

use tokio::sync::watch;

use super::timeline::Timeline;
use crate::caps::Services;
use crate::cluster::role::{RoleError, Transition};
use crate::cluster::{Lease, RoleMachine};
use crate::gateway::Gateway;
use crate::plugin::PromoteReport;
use crate::role::Role;

/// What the control loop last published: read by the status, the node's
/// accessors and the plugins' context, never written outside the loop.
#[derive(Debug, Clone)]
pub(crate) struct ControlView {
    /// The node's role.
    pub(crate) role: Role,
    /// The node's epoch.
    pub(crate) epoch: u64,
    /// The role machine's recent transitions, oldest first.
    pub(crate) transitions: Vec<Transition>,
    /// The lease the node holds, if any.
    pub(crate) lease: Option<Lease>,
    /// What each strategy restored from at the last promotion.
    pub(crate) promoted_from: Vec<(String, PromoteReport)>,
    /// The last promotion, step by step.
    pub(crate) last_failover: Option<Timeline>,
    /// The last demotion, step by step.
    pub(crate) last_demotion: Option<Timeline>,
}

/// The control loop's state. Every change goes through a method that
/// publishes the result.
pub(crate) struct ControlState {
    machine: RoleMachine,
    lease: Option<Lease>,
    promoted_from: Vec<(String, PromoteReport)>,
    last_failover: Option<Timeline>,
    last_demotion: Option<Timeline>,
    /// This node's (epoch, role), as the peer link announces it.
    local: watch::Sender<(u64, Role)>,
    /// The capabilities, told the role (plugins' calls depend on it).
    services: Arc<Services>,
    /// The gateway, told the role and epoch (devices see them).
    gateway: Option<Arc<Gateway>>,
    view: watch::Sender<ControlView>,
}

impl ControlState {
    /// A node starting as the machine says, which has told `services`, the
    /// `gateway` and `local` (what the peer link announces) that role and
    /// epoch already. Returns the receiving end of what the loop publishes.
    pub(crate) fn new(
        machine: RoleMachine,
        local: watch::Sender<(u64, Role)>,
        services: Arc<Services>,
        gateway: Option<Arc<Gateway>>,
    ) -> (Self, watch::Receiver<ControlView>) {
        let (view, view_rx) = watch::channel(ControlView {
            role: machine.role(),
            epoch: machine.epoch(),
            transitions: machine.history().to_vec(),
            lease: None,
            promoted_from: Vec::new(),
            last_failover: None,
            last_demotion: None,
        });
        let state = Self {
            machine,
            lease: None,
            promoted_from: Vec::new(),
            last_failover: None,
            last_demotion: None,
            local,
            services,
            gateway,
            view,
        };
        (state, view_rx)
    }

    /// The role now.
    pub(crate) fn role(&self) -> Role {
        self.machine.role()
    }

    /// The epoch now.
    pub(crate) fn epoch(&self) -> u64 {
        self.machine.epoch()
    }

    /// Apply one event to the role machine and publish the result.
    pub(crate) fn change<T>(
        &mut self,
        event: impl FnOnce(&mut RoleMachine) -> Result<T, RoleError>,
    ) -> Result<T, RoleError> {
        let out = event(&mut self.machine);
        self.publish();
        out
    }

    /// Record an epoch seen elsewhere (it only ever raises this node's).
    pub(crate) fn saw_epoch(&mut self, epoch: u64, from: &str) {
        self.machine.saw_epoch(epoch, from);
        self.publish();
    }

    /// Hold `lease` (or none).
    pub(crate) fn set_lease(&mut self, lease: Option<Lease>) {
        self.lease = lease;
        self.publish();
    }

    /// Take the held lease, if any.
    pub(crate) fn take_lease(&mut self) -> Option<Lease> {
        let lease = self.lease.take();
        self.publish();
        lease
    }

    /// Record what the strategies restored from at a promotion.
    pub(crate) fn set_promoted_from(&mut self, reports: Vec<(String, PromoteReport)>) {
        self.promoted_from = reports;
        self.publish();
    }

    /// Record the last promotion.
    pub(crate) fn set_last_failover(&mut self, t: Timeline) {
        self.last_failover = Some(t);
        self.publish();
    }

    /// Record the last demotion.
    pub(crate) fn set_last_demotion(&mut self, t: Timeline) {
        self.last_demotion = Some(t);
        self.publish();
    }

    /// Tell the capabilities, the gateway and the peer the role and epoch
    /// when they changed, and publish the whole view.
    fn publish(&self) {
        let (role, epoch) = (self.machine.role(), self.machine.epoch());
        let changed = self.local.send_if_modified(|now| {
            let changed = *now != (epoch, role);
            *now = (epoch, role);
            changed
        });
        if changed {
            self.services.set_epoch(epoch);
            self.services.set_role(role);
            if let Some(g) = &self.gateway {
                g.set_identity(role, epoch);
            }
        }
        self.view.send_replace(ControlView {
            role,
            epoch,
            transitions: self.machine.history().to_vec(),
            lease: self.lease,
            promoted_from: self.promoted_from.clone(),
            last_failover: self.last_failover.clone(),
            last_demotion: self.last_demotion.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A control state with what it publishes to.
    struct Fixture {
        state: ControlState,
        view: watch::Receiver<ControlView>,
        local: watch::Receiver<(u64, Role)>,
        services: Arc<Services>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let services = Services::new(None, dir.path().join("staging")).unwrap();
        let (local, mut local_rx) = watch::channel((3, Role::Standby));
        local_rx.mark_unchanged();
        let (state, view) = ControlState::new(
            RoleMachine::new(Role::Standby, 3),
            local,
            services.clone(),
            None,
        );
        Fixture {
            state,
            view,
            local: local_rx,
            services,
            _dir: dir,
        }
    }

    #[test]
    fn every_change_is_published_to_the_view_the_peer_and_the_capabilities() {
        let Fixture {
            mut state,
            view,
            mut local,
            services,
            _dir,
        } = fixture();
        state.change(|m| m.suspect_peer("silence")).unwrap();
        state.change(|m| m.won_lease(4, "lease")).unwrap();
        let v = view.borrow().clone();
        assert_eq!((v.role, v.epoch), (Role::Active, 4));
        assert_eq!(v.transitions.len(), 2, "{:?}", v.transitions);
        assert_eq!(*local.borrow_and_update(), (4, Role::Active));
        assert_eq!(services.role(), Role::Active);

        let t =
            super::super::timeline::TimelineBuilder::begin("promotion", "x", 4, None).finish(true);
        state.set_last_failover(t);
        assert!(view.borrow().last_failover.is_some());
    }

    #[test]
    fn a_refused_event_changes_nothing_and_does_not_wake_the_peer_link() {
        let Fixture {
            mut state,
            view,
            local,
            services,
            _dir,
        } = fixture();
        assert!(state.change(|m| m.won_lease(9, "no")).is_err());
        let v = view.borrow().clone();
        assert_eq!((v.role, v.epoch), (Role::Standby, 3));
        assert!(
            !local.has_changed().unwrap(),
            "the peer link was woken for nothing"
        );
        assert_eq!(services.role(), Role::Standby);
    }
}
