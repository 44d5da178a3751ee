//! The admin endpoint's server side (see the module above for its routes).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::oneshot;

use crate::node::core::Command;
use crate::node::core::Core;

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

/// Serve the admin endpoint of `core` on `addr` (loopback).
pub(crate) async fn serve(addr: SocketAddr, core: Arc<Core>) -> std::io::Result<AdminServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/status", get(status))
        .route("/promote", post(promote))
        .with_state(core);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    });
    tracing::info!(%addr, "admin endpoint listening");
    Ok(AdminServer { addr, task })
}

async fn status(State(core): State<Arc<Core>>) -> Response {
    Json(crate::failover::status::collect(&core).await).into_response()
}

/// The query of `POST /promote`.
#[derive(Debug, serde::Deserialize)]
struct PromoteQuery {
    #[serde(default)]
    force: bool,
}

async fn promote(State(core): State<Arc<Core>>, Query(q): Query<PromoteQuery>) -> Response {
    let (reply, answer) = oneshot::channel();
    if core
        .commands
        .send(Command::Promote {
            force: q.force,
            reply,
        })
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping".into(),
        );
    }
    match answer.await {
        Ok(Ok(timeline)) => Json(timeline).into_response(),
        Ok(Err(why)) => error(StatusCode::CONFLICT, why.to_string()),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping".into(),
        ),
    }
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}
