//! The node-to-node link: mutual authentication with a pre-shared key (a
//! password-authenticated key exchange) and every frame encrypted,
//! heartbeats both ways, bounded queues, files streamed in chunks
//! (resumable; the receiver hashes what it writes as it writes it and
//! checks it against the sender's checksum), small messages for plugins. Every frame
//! carries the sender's epoch; data from a lower epoch than this node's is
//! refused (a returning old active can never install an old snapshot over the
//! live database).

pub(crate) mod admission;
pub(crate) mod auth;
pub(crate) mod cipher;
mod connection;
pub(crate) mod fuzzing;
pub(crate) mod link;
mod outgoing;
pub(crate) mod proto;
mod receive;
mod redial;
pub(crate) mod session;
mod source;
pub(crate) mod state;
mod sweep;

pub use auth::{AuthError, Psk, MIN_KEY_LEN};
pub(crate) use link::PeerLink;
pub(crate) use state::{
    Incoming, KnownDigest, PeerConfig, PeerError, PeerState, DEFAULT_TRANSFER_STALL,
};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod fault_proxy;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod transfer_tests;
