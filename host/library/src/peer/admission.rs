//! Which inbound connections the peer and witness listeners take: a bounded
//! number still proving themselves (in total, and from any one address),
//! and a bounded number of authenticated sessions. A connection over a bound
//! is closed at once, so a flood costs no file descriptors and no memory
//! beyond its own accept, and one flooding address cannot take every
//! handshake slot from a node that must reconnect.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections in their handshake at once.
    pub(crate) handshakes: usize,
    /// Connections in their handshake at once from one address.
    pub(crate) handshakes_per_address: usize,
    /// Authenticated sessions at once.
    pub(crate) sessions: usize,
}

/// What the witness takes: two nodes need one session each, and a few more
/// while a dropped connection is replaced.
pub(crate) const WITNESS_LIMITS: Limits = Limits {
    handshakes: 32,
    handshakes_per_address: 4,
    sessions: 16,
};

/// What a node's peer listener takes: one peer, which may reconnect.
pub(crate) const PEER_LIMITS: Limits = Limits {
    handshakes: 16,
    handshakes_per_address: 4,
    sessions: 4,
};

/// Admission state of one listener.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Limits,
    handshakes: Arc<Semaphore>,
    sessions: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A connection admitted to its handshake; the slot is freed when dropped.
#[derive(Debug)]
pub(crate) struct HandshakeSlot {
    _permit: OwnedSemaphorePermit,
    address: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.address);
            }
        }
    }
}

/// An authenticated session's slot; freed when dropped.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// A listener bounded by `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            handshakes: Arc::new(Semaphore::new(limits.handshakes)),
            sessions: Arc::new(Semaphore::new(limits.sessions)),
            per_address: Arc::default(),
        }
    }

    /// A handshake slot for a connection from `address`, or None when the
    /// listener or that address has too many handshakes running.
    pub(crate) fn handshake(&self, address: IpAddr) -> Option<HandshakeSlot> {
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&address).copied().unwrap_or(0) >= self.limits.handshakes_per_address {
            return None;
        }
        let permit = self.handshakes.clone().try_acquire_owned().ok()?;
        *map.entry(address).or_insert(0) += 1;
        Some(HandshakeSlot {
            _permit: permit,
            address,
            per_address: self.per_address.clone(),
        })
    }

    /// A session slot for a connection that has authenticated, or None when
    /// the listener has its most sessions.
    pub(crate) fn session(&self) -> Option<SessionSlot> {
        self.sessions
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| SessionSlot { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const LIMITS: Limits = Limits {
        handshakes: 3,
        handshakes_per_address: 2,
        sessions: 1,
    };

    #[test]
    fn one_address_cannot_take_every_handshake_slot_and_slots_come_back() {
        let a = Admission::new(LIMITS);
        let flood: IpAddr = "10.0.0.1".parse().unwrap();
        let node: IpAddr = "10.0.0.2".parse().unwrap();
        let f1 = a.handshake(flood).unwrap();
        let _f2 = a.handshake(flood).unwrap();
        assert!(a.handshake(flood).is_none(), "a third from one address");
        let n1 = a.handshake(node).unwrap();
        assert!(a.handshake(node).is_none(), "over the listener's total");
        drop(f1);
        assert!(a.handshake(flood).is_some(), "a slot came back");
        drop(n1);
    }

    #[test]
    fn sessions_are_bounded_and_come_back() {
        let a = Admission::new(LIMITS);
        let s = a.session().unwrap();
        assert!(a.session().is_none());
        drop(s);
        assert!(a.session().is_some());
    }
}
