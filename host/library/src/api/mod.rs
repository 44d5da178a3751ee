//! The admin endpoint: a small HTTP server that `standby status` and
//! `standby promote` talk to, its client, and how its answers read for
//! people. It listens on an owner-only Unix socket under the site's data
//! directory (every call; the caller's uid and pid are logged) and, when the
//! profile sets `admin_listen`, on a TCP port: read-only on loopback, or,
//! with `admin_tls_cert`/`admin_tls_key` and `admin_token_file`, HTTPS
//! where every call needs the operators' token (`401` without it).
//!
//! - `GET /status`: the node's [`NodeStatus`](crate::failover::NodeStatus) as JSON;
//! - `POST /promote?force=true|false`: become active; the promotion's
//!   timeline as JSON, `409` with `{"error": ...}` when the node refuses,
//!   `403` on a read-only TCP port, `401` without a valid token where one is
//!   wanted (both before anything reaches the node's control loop).

mod caller;
mod client;
mod render;
mod server;
mod token;

pub use client::{AdminClient, AdminError};
pub use render::{render_status, render_timeline};
pub(crate) use server::{serve, TcpEndpoint};
pub use server::{AdminServeError, AdminServer};
pub use token::{AdminToken, TokenError, MIN_TOKEN_LEN};
