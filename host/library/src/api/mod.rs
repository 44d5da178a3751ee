//! The admin endpoint: a small HTTP server on loopback that `standby status`
//! and `standby promote` talk to, its client, and how its answers read for
//! people.
//!
//! - `GET /status`: the node's [`NodeStatus`](crate::failover::NodeStatus) as JSON;
//! - `POST /promote?force=true|false`: become active; the promotion's
//!   timeline as JSON, or `409` with `{"error": ...}`.

mod client;
mod render;
mod server;

pub use client::{AdminClient, AdminError};
pub use render::{render_status, render_timeline};
pub(crate) use server::serve;
pub use server::AdminServer;
