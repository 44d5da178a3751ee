//! The admin endpoint: a small HTTP server that `standby status` and
//! `standby promote` talk to, its client, and how its answers read for
//! people. It listens on an owner-only Unix socket under the site's data
//! directory (every call; the caller's uid and pid are logged) and, when the
//! profile sets `admin_listen`, on a read-only TCP port on loopback.
//!
//! - `GET /status`: the node's [`NodeStatus`](crate::failover::NodeStatus) as JSON;
//! - `POST /promote?force=true|false`: become active; the promotion's
//!   timeline as JSON, `409` with `{"error": ...}` when the node refuses,
//!   `403` over TCP (before anything reaches the node's control loop).

mod caller;
mod client;
mod render;
mod server;

pub use client::{AdminClient, AdminError};
pub use render::{render_status, render_timeline};
pub(crate) use server::serve;
pub use server::{AdminServeError, AdminServer};
