//! standby: failover and disaster recovery for an access-control server whose
//! data lives in one SQLite file.
//!
//! Subsystems are public modules so that other products can embed the host:
//! [`store`] (the database), [`plugin`] (the wasm plugin runtime and the
//! `Strategy` / `FailoverAction` traits), [`caps`] (the host side of each
//! capability), [`config`] (profiles), and [`node`] (one node of a profile).

pub mod api;
pub mod audit;
pub mod caps;
pub mod cluster;
pub mod config;
pub mod device;
pub mod dns;
pub mod failover;
pub mod node;
pub mod peer;
pub mod plugin;
pub mod ports;
pub mod store;
