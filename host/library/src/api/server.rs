//! The admin endpoint's server side (see the module above for its routes).

use std::net::SocketAddr;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::node::handle::{CommandError, NodeHandle};

/// A running admin endpoint; it stops when dropped.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve the admin endpoint of the node behind `node` on `addr` (loopback).
pub(crate) async fn serve(addr: SocketAddr, node: NodeHandle) -> std::io::Result<AdminServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/status", get(status))
        .route("/promote", post(promote))
        .with_state(node);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    });
    tracing::info!(%addr, "admin endpoint listening");
    Ok(AdminServer { addr, task })
}

async fn status(State(node): State<NodeHandle>) -> Response {
    Json(node.status().await).into_response()
}

/// The query of `POST /promote`.
#[derive(Debug, serde::Deserialize)]
struct PromoteQuery {
    #[serde(default)]
    force: bool,
}

async fn promote(State(node): State<NodeHandle>, Query(q): Query<PromoteQuery>) -> Response {
    match node.promote(q.force).await {
        Ok(timeline) => Json(timeline).into_response(),
        Err(e @ CommandError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ CommandError::Stopping) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}
