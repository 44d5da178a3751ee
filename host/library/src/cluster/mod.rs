//! Who may be active: leases from a witness on a third site, with epochs the
//! witness hands out and persists. A node acts as active only while it holds
//! a lease it has measured on its own monotonic clock, minus a safety margin;
//! the witness grants the lease to another node only after the old one has
//! expired on the witness's clock, which starts later. So two nodes are never
//! active at overlapping epochs, whatever fails.

pub(crate) mod detector;
pub(crate) mod gate;
pub(crate) mod keeper;
pub(crate) mod lease;
pub(crate) mod proto;
pub(crate) mod role;
mod witness;

pub(crate) use detector::{DetectorSettings, PeerWatch, Suspicion};
pub(crate) use gate::AckGate;
pub(crate) use keeper::{hold, LeaseEnd, LeaseSettings};
pub(crate) use lease::{Lease, LeaseError, WitnessClient};
pub(crate) use role::RoleMachine;
pub use role::Transition;
pub use witness::{Witness, WitnessConfig, WitnessError, WitnessState};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
