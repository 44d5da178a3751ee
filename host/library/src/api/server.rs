//! The admin endpoint's server side (see the module above for its routes):
//! a Unix socket only the node's user can reach, which takes every call, and
//! an optional TCP listener: read-only on loopback, or HTTPS where the
//! operators' token admits every call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::caller::{Caller, TcpAccess};
use super::token::AdminToken;
use crate::node::handle::{CommandError, NodeHandle};

/// Connections served at once, per listener; more are closed at once, so
/// admin traffic cannot take the file descriptors the gateway needs.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request's head.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection may stay open (a promotion may run the fencing
/// command and every plugin's on-promote).
pub(crate) const CONNECTION_LIMIT: Duration = Duration::from_secs(600);
/// The largest request head or body accepted.
pub(crate) const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminServeError {
    /// The socket's folder could not be made owner-only.
    #[error("admin socket folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process answers on the socket already.
    #[error("admin socket {0} is in use: is another node of this site running?")]
    InUse(PathBuf),
    /// The socket could not be bound or made owner-only.
    #[error("admin socket {path}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("admin endpoint: {0}")]
    Tls(#[source] standby_device::tls::TlsError),
    /// The TLS private key file is readable by others.
    #[error("admin endpoint: admin_tls_key {0}")]
    KeyFile(#[source] crate::secret_file::SecretFileError),
    /// The operators' token could not be read.
    #[error("admin endpoint: {0}")]
    Token(#[source] super::token::TokenError),
    /// The TCP listener could not be bound.
    #[error("admin endpoint on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The TCP admin endpoint as the profile sets it.
#[derive(Debug, Clone)]
pub(crate) struct TcpEndpoint {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Speak HTTPS with this configuration.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Admit every call from holders of this token (set only with `tls`);
    /// without it the endpoint is read-only.
    pub(crate) token: Option<AdminToken>,
}

/// A running admin endpoint; it stops (and removes its socket) when dropped.
#[derive(Debug)]
pub struct AdminServer {
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl AdminServer {
    /// The Unix socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Where its read-only TCP listener is, if it has one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Serve the admin endpoint of the node behind `node` on the Unix socket
/// `socket` (every call) and, when given, on `tcp`.
pub(crate) async fn serve(
    socket: &Path,
    tcp: Option<TcpEndpoint>,
    node: NodeHandle,
) -> Result<AdminServer, AdminServeError> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/promote", post(promote))
        .route("/switchover", post(switchover))
        .route("/replication/{decision}", post(replication))
        .route("/devices", get(devices))
        .route("/devices/servers", post(set_servers))
        .layer(axum::middleware::from_fn(admit))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(node);
    let unix = bind_socket(socket).await?;
    let mut tasks = vec![tokio::spawn(accept_unix(unix, app.clone()))];
    tracing::info!(socket = %socket.display(), "admin endpoint listening (owner only)");
    let tcp = match tcp {
        Some(endpoint) => {
            let addr = endpoint.addr;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AdminServeError::Listen { addr, source })?;
            let addr = listener
                .local_addr()
                .map_err(|source| AdminServeError::Listen { addr, source })?;
            let mode = match (&endpoint.tls, &endpoint.token) {
                (Some(_), Some(_)) => "HTTPS, every call with the operators' token",
                (Some(_), None) => "HTTPS, read-only",
                (None, _) => "read-only",
            };
            tasks.push(tokio::spawn(accept_tcp(listener, app, endpoint)));
            tracing::info!(%addr, "admin endpoint listening ({mode})");
            Some(addr)
        }
        None => None,
    };
    Ok(AdminServer {
        socket: socket.to_path_buf(),
        tcp,
        tasks,
    })
}

/// Make the socket's folder owner-only, clear a stale socket, bind, and make
/// the socket owner-only. The folder's mode is what keeps other users out
/// from the first instant; the socket's is a second lock.
async fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, AdminServeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        let folder = |source| AdminServeError::Folder {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(folder)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(folder)?;
    }
    let socket_err = |source| AdminServeError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(AdminServeError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(socket_err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(socket_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(socket_err)?;
    Ok(listener)
}

async fn accept_unix(listener: tokio::net::UnixListener, app: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let caller = match stream.peer_cred() {
            Ok(c) => Caller::Local {
                uid: c.uid(),
                pid: c.pid(),
            },
            Err(_) => Caller::Unknown,
        };
        let Some(slot) = take_slot(&slots, &caller) else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            serve_connection(stream, caller, app, None).await;
            drop(slot);
        });
    }
}

async fn accept_tcp(listener: tokio::net::TcpListener, app: Router, endpoint: TcpEndpoint) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tls = endpoint.tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let caller = Caller::Tcp {
            addr,
            access: TcpAccess::ReadOnly,
        };
        let Some(slot) = take_slot(&slots, &caller) else {
            continue;
        };
        let (app, tls, token) = (app.clone(), tls.clone(), endpoint.token.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, caller, app, token).await,
                // The TLS handshake counts against the header timeout.
                Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, caller, app, token).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "admin endpoint: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%addr, "admin endpoint: TLS handshake timed out"),
                },
            }
            drop(slot);
        });
    }
}

/// A connection slot, if one is free (otherwise the connection is closed at
/// once, by dropping it).
fn take_slot(slots: &Arc<Semaphore>, caller: &Caller) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let slot = slots.clone().try_acquire_owned().ok();
    if slot.is_none() {
        tracing::debug!(%caller, "admin endpoint: every connection slot is taken; closing");
    }
    slot
}

/// Serve one connection's one request. On a TCP endpoint with a token, the
/// request's `Authorization` header decides what the caller may do.
async fn serve_connection<S>(stream: S, caller: Caller, app: Router, token: Option<AdminToken>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        let caller = match (&caller, &token) {
            (Caller::Tcp { addr, .. }, Some(token)) => {
                let header = request
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                let access = if token.admits(header) {
                    TcpAccess::Token
                } else {
                    TcpAccess::Refused
                };
                Caller::Tcp {
                    addr: *addr,
                    access,
                }
            }
            _ => caller.clone(),
        };
        request.extensions_mut().insert(caller);
        app.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_LIMIT, connection).await;
}

/// Who may do what, for every route in one place and before any handler
/// runs: a caller without a valid token (where one is wanted) gets `401`,
/// and a state-changing call (every `POST`) from a caller that may not
/// change state gets `403`; both refusals of a state-changing call are
/// logged with the caller.
async fn admit(request: Request<axum::body::Body>, next: axum::middleware::Next) -> Response {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Unknown);
    let changes_state = request.method() == axum::http::Method::POST;
    let call = request.uri().path().trim_start_matches('/').to_string();
    let target = request.uri().to_string();
    if caller.unauthenticated() {
        if changes_state {
            tracing::warn!(%caller, %target, "admin: {call} refused (no valid operator token)");
        }
        return unauthorized();
    }
    if changes_state && !caller.may_change_state() {
        tracing::warn!(%caller, %target, "admin: {call} refused (not through the admin socket)");
        return error(StatusCode::FORBIDDEN, String::from(READ_ONLY));
    }
    next.run(request).await
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

async fn promote(
    State(node): State<NodeHandle>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<PromoteQuery>,
) -> Response {
    tracing::warn!(%caller, force = q.force, "admin: promote requested");
    match node.promote(q.force).await {
        Ok(timeline) => {
            tracing::warn!(%caller, completed = timeline.completed, "admin: promote answered");
            Json(timeline).into_response()
        }
        Err(e @ CommandError::Refused(_)) => {
            tracing::warn!(%caller, error = %e, "admin: promote refused");
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e @ CommandError::Stopping) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The query of `POST /switchover`.
#[derive(Debug, serde::Deserialize)]
struct SwitchoverQuery {
    to: String,
}

/// `POST /switchover?to=SITE`: hand the service over to the other site.
async fn switchover(
    State(node): State<NodeHandle>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SwitchoverQuery>,
) -> Response {
    use crate::failover::SwitchoverError;
    use crate::node::handle::SwitchoverCommandError as E;
    tracing::warn!(%caller, to = %q.to, "admin: switchover requested");
    match node.switchover(q.to).await {
        Ok(report) => {
            tracing::warn!(%caller, epoch_after = ?report.epoch_after, handover_ms = report.handover_ms, "admin: switchover done");
            Json(report).into_response()
        }
        Err(E::Switchover(SwitchoverError::Abandoned(t))) => {
            tracing::warn!(%caller, "admin: switchover abandoned");
            let message = SwitchoverError::Abandoned(t.clone()).to_string();
            (
                StatusCode::CONFLICT,
                Json(serde_json::json!({ "error": message, "timeline": t })),
            )
                .into_response()
        }
        Err(e @ E::Switchover(_)) => {
            tracing::warn!(%caller, error = %e, "admin: switchover refused");
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e @ E::Stopping) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `POST /replication/retry` or `/replication/skip`: the operator's
/// decision on a stopped change stream.
async fn replication(
    State(node): State<NodeHandle>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(decision): axum::extract::Path<String>,
) -> Response {
    use crate::caps::stream::{Decision, StreamError};
    use crate::node::handle::StreamCommandError;
    let decision = match decision.as_str() {
        "retry" => Decision::Retry,
        "skip" => Decision::Skip,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no replication decision `{other}`: retry or skip"),
            )
        }
    };
    tracing::warn!(%caller, ?decision, "admin: replication decision requested");
    match node.resolve_stream(decision).await {
        Ok(r) => {
            tracing::warn!(%caller, ?decision, applied_through = r.applied_through, stopped_again = r.stopped_again.is_some(), "admin: replication decision carried out");
            Json(r).into_response()
        }
        Err(
            e @ (StreamCommandError::Active
            | StreamCommandError::Stream(
                StreamError::NotStopped | StreamError::NoFailedChange(_),
            )),
        ) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ StreamCommandError::Stopping) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn devices(State(node): State<NodeHandle>) -> Response {
    match node.devices().await {
        Some(devices) => Json(serde_json::json!({ "devices": devices })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            String::from("this site has no device gateway"),
        ),
    }
}

/// The body of `POST /devices/servers`.
#[derive(Debug, serde::Deserialize)]
struct SetServers {
    /// The devices; absent or null: every connected device.
    #[serde(default)]
    devices: Option<Vec<u32>>,
    /// The new list, as `devices simulate --endpoints` takes it.
    servers: String,
}

async fn set_servers(
    State(node): State<NodeHandle>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    let request: SetServers = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the request body: {e}")),
    };
    let endpoints = match standby_device::agent::Endpoint::parse_list(&request.servers) {
        Ok(list) if !list.is_empty() && list.len() <= 255 => list,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                "`{}` names no server: give 1 to 255 entries, host:port[/tls] separated by commas",
                request.servers
            ),
            )
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`{}`: {e}", request.servers),
            )
        }
    };
    tracing::warn!(%caller, devices = ?request.devices, servers = %request.servers, "admin: set-servers requested");
    let wire = endpoints.iter().map(|e| e.to_wire()).collect();
    match node.set_servers(request.devices, wire).await {
        Some(results) => Json(serde_json::json!({ "results": results })).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            String::from("this site has no device gateway"),
        ),
    }
}

/// What a read-only endpoint answers a state-changing call.
const READ_ONLY: &str = "this endpoint is read-only: state-changing calls go through the node's admin socket (as the node's user), or over TLS with the operators' token (admin_token_file)";

/// `401`: this endpoint wants the operators' token.
fn unauthorized() -> Response {
    let mut answer = error(
        StatusCode::UNAUTHORIZED,
        String::from("a valid operator token is needed (Authorization: Bearer; `standby status|promote --remote` sends the profile's admin_token_file)"),
    );
    answer.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    answer
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}
