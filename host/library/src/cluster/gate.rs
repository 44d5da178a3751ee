//! The acknowledgement gate: whether this node may acknowledge device
//! events right now. The lease keeper moves its deadline forward on every
//! renewal (the lease's end minus the safety margin); the gateway checks it
//! after each commit and before each acknowledgement, on the monotonic
//! clock, so a node whose renewals stall stops acknowledging on time even if
//! no task gets to run to close it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A deadline on the monotonic clock, readable without locks.
#[derive(Debug)]
pub(crate) struct AckGate {
    base: Instant,
    /// Nanoseconds after `base` until which acknowledging is allowed;
    /// `u64::MAX` for always (no lease in use), 0 for never.
    until_ns: AtomicU64,
    /// The last deadline given to [`AckGate::open_until`] (0: none yet).
    last_deadline_ns: AtomicU64,
    /// Held shut whatever the deadline says (a switchover in progress):
    /// renewals do not open it.
    held: AtomicBool,
}

impl AckGate {
    /// A gate that is always open (a node without a witness: the operator
    /// decides who is active).
    pub(crate) fn always_open() -> Self {
        Self {
            base: Instant::now(),
            until_ns: AtomicU64::new(u64::MAX),
            last_deadline_ns: AtomicU64::new(0),
            held: AtomicBool::new(false),
        }
    }

    /// A gate that is closed until [`AckGate::open_until`].
    pub(crate) fn closed() -> Self {
        Self {
            base: Instant::now(),
            until_ns: AtomicU64::new(0),
            last_deadline_ns: AtomicU64::new(0),
            held: AtomicBool::new(false),
        }
    }

    /// Allow acknowledging until `deadline`.
    pub(crate) fn open_until(&self, deadline: Instant) {
        let ns = deadline
            .saturating_duration_since(self.base)
            .as_nanos()
            .min(u128::from(u64::MAX - 1)) as u64;
        self.until_ns.store(ns, Ordering::SeqCst);
        self.last_deadline_ns.store(ns, Ordering::SeqCst);
    }

    /// The last deadline it was opened until, even after it closed (when
    /// acknowledging stopped at the latest).
    pub(crate) fn last_deadline(&self) -> Option<Instant> {
        match self.last_deadline_ns.load(Ordering::SeqCst) {
            0 => None,
            ns => Some(self.base + std::time::Duration::from_nanos(ns)),
        }
    }

    /// Allow acknowledging with no deadline (a node without a witness that
    /// becomes active again after it stopped).
    pub(crate) fn open_always(&self) {
        self.until_ns.store(u64::MAX, Ordering::SeqCst);
    }

    /// Stop acknowledging now.
    pub(crate) fn close(&self) {
        self.until_ns.store(0, Ordering::SeqCst);
    }

    /// Stop acknowledging until [`AckGate::unhold`], whatever the lease's
    /// renewals say.
    pub(crate) fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// End [`AckGate::hold`]: the deadline decides again.
    pub(crate) fn unhold(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    /// Whether acknowledging is allowed now.
    pub(crate) fn is_open(&self) -> bool {
        if self.held.load(Ordering::SeqCst) {
            return false;
        }
        let until = self.until_ns.load(Ordering::SeqCst);
        until == u64::MAX || (self.base.elapsed().as_nanos() as u64) < until
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_gate_shuts_by_itself_at_its_deadline() {
        let g = AckGate::closed();
        assert!(!g.is_open());
        g.open_until(Instant::now() + Duration::from_millis(50));
        assert!(g.is_open());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!g.is_open(), "no renewal: closed without anyone closing it");
        g.open_until(Instant::now() + Duration::from_secs(10));
        g.close();
        assert!(!g.is_open());
        assert!(AckGate::always_open().is_open());
    }

    #[test]
    fn a_held_gate_stays_shut_through_renewals_until_it_is_unheld() {
        let g = AckGate::always_open();
        g.hold();
        assert!(!g.is_open());
        g.open_until(Instant::now() + Duration::from_secs(10));
        assert!(!g.is_open(), "a renewal does not open a held gate");
        g.unhold();
        assert!(g.is_open());
    }
}
