//! The lab: what runs standby's demo and its end-to-end tests, outside the
//! library embedders link.
//!
//! - [`process`]: the process harness (the `standby` binary as a child,
//!   faults as signals), used by the demo and the tests alike;
//! - [`demo`]: `standby demo`, as phases a test can call one by one;
//! - [`simulate`] and [`fleet`]: `standby devices simulate`, many device
//!   agents in one process;
//! - [`dns_server`]: a small authoritative DNS server taking signed updates;
//! - [`audit`]: the independent checker (devices' own logs against a
//!   database opened read-only), and [`app_audit`] (the application
//!   writer's log of commits against one);
//! - [`app_writer`]: the demo's application (`standby demo-writer`);
//! - [`ports`] and [`proxy`] (from the testkit crate): listening ports that
//!   no outgoing connection can take, and a link that can be cut, delayed or
//!   throttled;
//! - for tests: [`cluster`] (a witness and two sites as processes),
//!   [`server`] (one-site gateways as processes), [`bind`] (a real BIND 9),
//!   [`fixtures`] (repository fixtures, prerequisites, polling),
//!   [`credentials`] (device credentials issued as `devices enroll` does).

pub mod app_audit;
pub mod app_writer;
pub mod audit;
pub mod bind;
pub mod cluster;
pub mod credentials;
pub mod demo;
pub mod dns_server;
pub mod fixtures;
pub mod fleet;
pub mod process;
pub mod server;
pub mod simulate;

pub use standby_testkit::{ports, proxy};
