//! The node's control loop, the promote and demote sequences, their
//! timelines, and the node's status.

pub(crate) mod control;
pub(crate) mod delivery;
pub(crate) mod promotion;
pub(crate) mod state;
pub mod status;
pub(crate) mod switchover;
pub mod timeline;

pub(crate) use promotion::PromoteError;
pub use status::NodeStatus;
pub(crate) use switchover::SwitchoverError;
pub use switchover::SwitchoverReport;
pub use timeline::{Step, Timeline};
