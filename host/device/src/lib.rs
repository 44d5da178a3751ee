//! The device link of standby, modelled on BioStar 2's "Device to Server"
//! mode: devices dial the server and keep the link alive.
//!
//! Both ends share the wire protocol; firmware teams embed the agent:
//!
//! - [`frame`] and [`codec`]: the 36-byte-header packet format and messages
//!   ([`START_CODE`] opens every packet).
//! - [`messages`]: the MessagePack payloads.
//! - [`tls`]: rustls set-up for both ends.
//! - [`auth`]: device credentials, the challenge-response that proves a
//!   device's key, and the MAC on every message of an authenticated link.
//! - [`backoff`]: the jittered, validated backoff every retry in standby uses.
//! - [`agent`]: the device side: dial in priority order, keep the link alive,
//!   log every event until the server says it is safe at the DR site,
//!   re-send what a new server lacks ([`Agent`]).
//!
//! With default features this crate uses no database, no WebAssembly runtime
//! and no HTTP stack; the feature `resolver` adds a DNS resolver that asks one
//! server directly (the fleet simulator and the tests use it). The server
//! side (the gateway) lives in the host library. The wire protocol is written
//! down in docs/protocol.md.

pub mod agent;
pub mod auth;
pub mod backoff;
pub mod codec;
pub mod frame;
pub mod messages;
pub mod tls;

pub use agent::Agent;
pub use backoff::Backoff;
pub use frame::START_CODE;
