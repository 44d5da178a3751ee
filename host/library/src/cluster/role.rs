//! The role of a node as an explicit state machine. Every transition is
//! checked, logged and kept with its reason; an event that does not apply to
//! the current role is an error that changes nothing.
//!
//! ```text
//! standby --peer suspected--> candidate --lease won (higher epoch)--> active
//!    ^                           |                                   |  |
//!    |                     lease denied /                            |  lease lost / higher epoch seen
//!    |                  promotion abandoned  <-- promotion abandoned -+  |
//!    |                           v           (a plugin step ran out)    v
//!    +------------------------ standby <------------ rejoin -------- fenced
//!                                 ^
//!                                 +--- handed over (planned switchover) --- active
//! ```

use serde::Serialize;

use crate::role::Role;

/// Why a role changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The role before.
    pub from: Role,
    /// The role after.
    pub to: Role,
    /// The epoch after.
    pub epoch: u64,
    /// Wall-clock time, Unix ms.
    pub at_ms: u64,
    /// What caused it, for people.
    pub reason: String,
}

/// An event that does not apply to the current role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} does not apply to a {role:?} node")]
pub(crate) struct RoleError {
    /// The role when it happened.
    pub role: Role,
    /// The event.
    pub event: &'static str,
}

/// Transitions kept (the oldest are dropped first).
pub(crate) const HISTORY: usize = 64;

/// A node's role and epoch.
#[derive(Debug, Clone)]
pub(crate) struct RoleMachine {
    role: Role,
    epoch: u64,
    history: Vec<Transition>,
}

impl RoleMachine {
    /// Start in `role` at `epoch` (a node starts as standby or fenced; only
    /// a won lease or a forced promotion makes it active).
    pub(crate) fn new(role: Role, epoch: u64) -> Self {
        Self {
            role,
            epoch,
            history: Vec::new(),
        }
    }

    /// The role now.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The epoch now.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The transitions so far, oldest first.
    pub(crate) fn history(&self) -> &[Transition] {
        &self.history
    }

    fn go(&mut self, to: Role, epoch: u64, reason: String) {
        let t = Transition {
            from: self.role,
            to,
            epoch,
            at_ms: crate::store::unix_ms(),
            reason,
        };
        tracing::info!(from = ?t.from, to = ?t.to, epoch, reason = %t.reason, "role change");
        self.role = to;
        self.epoch = epoch;
        if self.history.len() == HISTORY {
            self.history.remove(0);
        }
        self.history.push(t);
    }

    fn wrong(&self, event: &'static str) -> RoleError {
        RoleError {
            role: self.role,
            event,
        }
    }

    /// The failure detector suspects the active peer: try for the lease.
    pub(crate) fn suspect_peer(&mut self, reason: &str) -> Result<(), RoleError> {
        match self.role {
            Role::Standby => {
                self.go(
                    Role::Candidate,
                    self.epoch,
                    format!("peer suspected: {reason}"),
                );
                Ok(())
            }
            _ => Err(self.wrong("suspecting the peer")),
        }
    }

    /// The witness granted the lease at `epoch` (or an operator forced the
    /// promotion): become active. The epoch must be above every epoch seen.
    pub(crate) fn won_lease(&mut self, epoch: u64, reason: &str) -> Result<(), RoleError> {
        match self.role {
            Role::Candidate if epoch > self.epoch => {
                self.go(Role::Active, epoch, reason.to_string());
                Ok(())
            }
            Role::Candidate => Err(self.wrong("a lease at an epoch not above the current one")),
            _ => Err(self.wrong("winning the lease")),
        }
    }

    /// The witness denied the lease (the peer still holds it): back to standby.
    pub(crate) fn lost_election(&mut self, reason: &str) -> Result<(), RoleError> {
        match self.role {
            Role::Candidate => {
                self.go(Role::Standby, self.epoch, format!("lease denied: {reason}"));
                Ok(())
            }
            _ => Err(self.wrong("losing the election")),
        }
    }

    /// The lease was won but the promotion was abandoned, before the node
    /// became active (a required fencing command failed) or before its
    /// gateway opened (a plugin step ran out of time and the profile says
    /// abandon): back to standby, at the same epoch.
    pub(crate) fn abandon(&mut self, reason: &str) -> Result<(), RoleError> {
        match self.role {
            Role::Candidate | Role::Active => {
                self.go(
                    Role::Standby,
                    self.epoch,
                    format!("promotion abandoned: {reason}"),
                );
                Ok(())
            }
            _ => Err(self.wrong("abandoning a promotion")),
        }
    }

    /// The active node's lease ran out (or could not be renewed in time):
    /// stop acting at once.
    pub(crate) fn lost_lease(&mut self, reason: &str) -> Result<(), RoleError> {
        match self.role {
            Role::Active => {
                self.go(Role::Fenced, self.epoch, format!("lease lost: {reason}"));
                Ok(())
            }
            _ => Err(self.wrong("losing the lease")),
        }
    }

    /// A planned switchover: the active node handed its data and its lease
    /// over to the other node and goes on as its standby (not fenced: it
    /// holds nothing the other lacks).
    pub(crate) fn handed_over(&mut self, reason: &str) -> Result<(), RoleError> {
        match self.role {
            Role::Active => {
                self.go(Role::Standby, self.epoch, format!("handed over: {reason}"));
                Ok(())
            }
            _ => Err(self.wrong("handing the service over")),
        }
    }

    /// Another node presented `epoch`. Above ours: an active or candidate
    /// node is fenced, a standby or fenced node adopts it. Not above: nothing.
    pub(crate) fn saw_epoch(&mut self, epoch: u64, from: &str) {
        if epoch <= self.epoch {
            return;
        }
        let reason = format!("{from} presented epoch {epoch}");
        match self.role {
            Role::Active | Role::Candidate => self.go(Role::Fenced, epoch, reason),
            Role::Standby | Role::Fenced => self.go(self.role, epoch, reason),
        }
    }

    /// A fenced node that has seen the newer epoch rejoins as standby.
    pub(crate) fn rejoin(&mut self, reason: &str) -> Result<(), RoleError> {
        match self.role {
            Role::Fenced => {
                self.go(Role::Standby, self.epoch, reason.to_string());
                Ok(())
            }
            _ => Err(self.wrong("rejoining")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_becomes_active_only_through_a_higher_epoch() {
        let mut m = RoleMachine::new(Role::Standby, 3);
        assert!(
            m.won_lease(4, "x").is_err(),
            "a standby cannot skip candidacy"
        );
        m.suspect_peer("no heartbeat for 400 ms").unwrap();
        assert_eq!(m.role(), Role::Candidate);
        assert!(m.won_lease(3, "stale").is_err());
        assert_eq!(m.role(), Role::Candidate);
        m.won_lease(4, "witness granted").unwrap();
        assert_eq!((m.role(), m.epoch()), (Role::Active, 4));
        let roles: Vec<_> = m.history().iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            roles,
            [
                (Role::Standby, Role::Candidate),
                (Role::Candidate, Role::Active)
            ]
        );
    }

    #[test]
    fn a_denied_candidate_returns_to_standby() {
        let mut m = RoleMachine::new(Role::Standby, 1);
        m.suspect_peer("silence").unwrap();
        m.lost_election("a holds the lease").unwrap();
        assert_eq!((m.role(), m.epoch()), (Role::Standby, 1));
        assert!(m.history()[1].reason.contains("a holds the lease"));
    }

    #[test]
    fn an_abandoned_promotion_returns_a_candidate_to_standby_without_being_active() {
        let mut m = RoleMachine::new(Role::Standby, 1);
        assert!(m.abandon("x").is_err(), "only a candidate abandons");
        m.suspect_peer("silence").unwrap();
        m.abandon("the fencing command failed").unwrap();
        assert_eq!((m.role(), m.epoch()), (Role::Standby, 1));
        assert!(m.history().iter().all(|t| t.to != Role::Active));
        assert_eq!(
            m.history()[1].reason,
            "promotion abandoned: the fencing command failed"
        );
        // A node that won the lease but whose promotion ran out of time
        // goes back to standby too, keeping the epoch it won; a fenced node
        // cannot abandon anything.
        m.suspect_peer("silence").unwrap();
        m.won_lease(2, "granted").unwrap();
        m.abandon("on-promote ran out of time").unwrap();
        assert_eq!((m.role(), m.epoch()), (Role::Standby, 2));
        m.suspect_peer("silence").unwrap();
        m.won_lease(3, "granted").unwrap();
        m.lost_lease("expired").unwrap();
        assert!(m.abandon("x").is_err());
    }

    #[test]
    fn an_active_node_is_fenced_by_a_lost_lease_or_a_higher_epoch_and_rejoins_as_standby() {
        let mut m = RoleMachine::new(Role::Standby, 1);
        m.suspect_peer("s").unwrap();
        m.won_lease(2, "w").unwrap();
        m.lost_lease("renewal unanswered").unwrap();
        assert_eq!(m.role(), Role::Fenced);
        assert!(m.suspect_peer("s").is_err());
        m.saw_epoch(5, "b");
        assert_eq!((m.role(), m.epoch()), (Role::Fenced, 5));
        m.rejoin("b is active at 5").unwrap();
        assert_eq!((m.role(), m.epoch()), (Role::Standby, 5));

        let mut active = RoleMachine::new(Role::Standby, 1);
        active.suspect_peer("s").unwrap();
        active.won_lease(2, "w").unwrap();
        active.saw_epoch(2, "b");
        assert_eq!(
            active.role(),
            Role::Active,
            "an equal epoch changes nothing"
        );
        active.saw_epoch(3, "b");
        assert_eq!((active.role(), active.epoch()), (Role::Fenced, 3));
    }

    #[test]
    fn wrong_events_change_nothing_and_say_why() {
        let mut m = RoleMachine::new(Role::Standby, 1);
        let err = m.lost_lease("x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "losing the lease does not apply to a Standby node"
        );
        assert!(m.rejoin("x").is_err());
        assert!(m.lost_election("x").is_err());
        assert_eq!((m.role(), m.epoch()), (Role::Standby, 1));
        assert!(m.history().is_empty());
    }
}
