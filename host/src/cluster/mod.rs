//! Who may be active: leases from a witness on a third site, with epochs the
//! witness hands out and persists. A node acts as active only while it holds
//! a lease it has measured on its own monotonic clock, minus a safety margin;
//! the witness grants the lease to another node only after the old one has
//! expired on the witness's clock, which starts later. So two nodes are never
//! active at overlapping epochs, whatever fails.

pub mod detector;
pub mod gate;
pub mod keeper;
pub mod lease;
pub mod proto;
pub mod role;
pub mod witness;

pub use detector::{DetectorError, DetectorSettings, PeerWatch, Suspicion};
pub use gate::AckGate;
pub use keeper::{hold, Keeper, LeaseEnd, LeaseSettings, LeaseSettingsError};
pub use lease::{Lease, LeaseError, WitnessClient, WitnessView};
pub use role::{RoleError, RoleMachine, Transition};
pub use witness::{Witness, WitnessConfig, WitnessError, WitnessState};
