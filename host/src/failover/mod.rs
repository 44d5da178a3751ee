//! The promote and demote sequences, their timelines, and the node's status.

pub(crate) mod control;
pub mod status;
pub mod timeline;

pub use status::NodeStatus;
pub use timeline::{Step, Timeline, TimelineBuilder};
