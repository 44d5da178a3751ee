//! The device link, modelled on BioStar 2's "Device to Server" mode: devices
//! dial the server and keep the link alive.
//!
//! - [`frame`] and [`codec`]: the 36-byte-header packet format and messages.
//! - [`messages`]: the MessagePack payloads.
//! - [`gateway`]: the server side (in the host).
//! - [`agent`]: the device side, a library with no dependency on the rest of
//!   the host; [`fleet`] runs many agents in one process.
//! - [`tls`]: rustls set-up for both ends.
//!
//! The wire protocol is written down in docs/protocol.md.

pub mod agent;
pub mod codec;
pub mod fleet;
pub mod frame;
pub mod gateway;
pub mod messages;
pub mod tls;
