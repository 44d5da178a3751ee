//! The node-to-node link: mutual authentication with a pre-shared key and a
//! MAC on every frame, heartbeats both ways, bounded queues, files streamed in
//! chunks (resumable, checksummed), small messages for plugins. Every frame
//! carries the sender's epoch; data from a lower epoch than this node's is
//! refused (a returning old active can never install an old snapshot over the
//! live database).

pub mod auth;
mod link;
pub mod proto;
pub mod session;

pub use auth::Psk;
pub use link::{
    Incoming, PeerConfig, PeerError, PeerLink, PeerState, Receipt, DEFAULT_TRANSFER_STALL,
};
