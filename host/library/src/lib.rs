//! standby: failover and disaster recovery for an access-control server whose
//! data lives in one SQLite file. This is the library other products embed.
//!
//! - [`node`]: run one node of a profile ([`node::Node`]), or check a
//!   profile's plugins;
//! - [`config`]: profiles (one TOML file for both sites), loaded in layers;
//! - [`api`]: the admin endpoint's client (status, promote) and how its
//!   answers read;
//! - [`failover`]: what a node reports: its status and failover timelines;
//! - [`cluster`]: the witness (the third-site lease service);
//! - [`store`]: the database (`biostar2.db`): events, snapshots, checks;
//! - [`plugin`]: the `Strategy` and `FailoverAction` traits, the WebAssembly
//!   plugin runtime, built-in plugins, inspection; [`caps`]: what a loaded
//!   plugin may use (its grants and the host's services);
//! - [`dns`]: RFC 2136 updates signed with TSIG, and TSIG keys;
//! - [`peer`]: the node keys of the peer link;
//! - [`enrolment`]: device credentials: the enrolment key and the register
//!   of issued keys (`standby devices enroll|revoke`).
//!
//! The device link (protocol and agent) is the crate `standby-device`; the
//! gateway that serves it lives here, inside the node.

pub mod api;
pub mod caps;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod enrolment;
pub mod failover;
pub(crate) mod gateway;
pub mod node;
pub mod peer;
pub mod plugin;
pub(crate) mod role;
pub mod secret_file;
pub mod store;
pub(crate) mod wit;

/// Not part of the API: internals the project's own benchmarks measure
/// directly (the peer link's transfer) and its fuzz targets drive (the peer
/// link's decoders). No stability promise.
#[doc(hidden)]
pub mod internals {
    pub use crate::peer::fuzzing::peer_decoders;
    pub use crate::peer::link::PeerLink;
    pub use crate::peer::state::{Incoming, KnownDigest, PeerConfig};
}
