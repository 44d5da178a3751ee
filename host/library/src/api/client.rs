//! The admin endpoint's client: what `standby status`, `standby promote`,
//! the demo and the tests use to ask a running node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::token::{AdminToken, TokenError};
use crate::config::{ConfigError, LoadedProfile};

/// Why a node could not be asked, or refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The profile has no admin address for the site.
    #[error("site `{site}` of {profile} has no `admin_listen`, so it cannot be asked")]
    NoAdminAddress {
        /// The site.
        site: String,
        /// The profile file.
        profile: String,
    },
    /// The profile could not be read.
    #[error(transparent)]
    Profile(#[from] ConfigError),
    /// Nothing answered at the address (the node is not running?), or its
    /// TLS handshake failed (a certificate that is not the one trusted?).
    #[error("asking the node at {addr} (is it running?): {source}")]
    Unreachable {
        /// Where it was asked.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The admin socket could not be used: the node is not running, or this
    /// user is not the node's.
    #[error("asking the node at {} ({}): {source}", path.display(), socket_hint(source))]
    SocketUnreachable {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate to trust could not be read.
    #[error(transparent)]
    Tls(#[from] standby_device::tls::TlsError),
    /// The operators' token could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The node answered with something that is not the JSON it should be.
    #[error("reading the answer of the node at {at}: {source}")]
    BadAnswer {
        /// Where it was asked.
        at: String,
        /// Why the answer did not parse.
        #[source]
        source: std::io::Error,
    },
    /// The node refused the request and said why.
    #[error("{0}")]
    Refused(String),
}

/// What an admin socket error most likely means.
fn socket_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "only the node's own user (or root) may use its admin socket"
        }
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            "is the node running?"
        }
        _ => "is the node running?",
    }
}

/// Where a client asks.
#[derive(Debug, Clone)]
enum Target {
    /// The node's owner-only admin socket: every call.
    Socket(PathBuf),
    /// The read-only TCP listener.
    Tcp(SocketAddr),
    /// The TCP listener over TLS, with the operators' token when given.
    Tls {
        /// Where it listens.
        addr: SocketAddr,
        /// Trusting the endpoint's certificate.
        config: std::sync::Arc<rustls::ClientConfig>,
        /// Sent as `Authorization: Bearer`.
        token: Option<AdminToken>,
    },
}

/// A client of one node's admin endpoint.
#[derive(Debug, Clone)]
pub struct AdminClient {
    target: Target,
}

/// How long a status may take to come back.
const STATUS_WAIT: Duration = Duration::from_secs(10);
/// How long a device listing or a server-list push may take (each device
/// is asked at once; the gateway waits for each at most its admin timeout).
const DEVICES_WAIT: Duration = Duration::from_secs(30);
/// How long a promotion may take to come back (it may run the fencing
/// command and every plugin's on-promote).
const PROMOTE_WAIT: Duration = Duration::from_secs(600);

impl AdminClient {
    /// A client of the read-only TCP endpoint at `addr` (status only).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            target: Target::Tcp(addr),
        }
    }

    /// A client of the node's admin socket at `path` (every call).
    pub fn socket(path: impl Into<PathBuf>) -> Self {
        Self {
            target: Target::Socket(path.into()),
        }
    }

    /// A client of the TCP admin endpoint at `addr` over TLS, trusting the
    /// certificate(s) in `cert` (the endpoint's own, or its CA), sending
    /// `token` when given.
    pub fn tls(
        addr: SocketAddr,
        cert: &Path,
        token: Option<AdminToken>,
    ) -> Result<Self, AdminError> {
        let config = standby_device::tls::client_config(cert)?;
        Ok(Self {
            target: Target::Tls {
                addr,
                config,
                token,
            },
        })
    }

    /// A client of `site`'s admin socket, as `profile` places it.
    pub fn for_site(profile: &LoadedProfile, site: &str) -> Result<Self, AdminError> {
        let s = profile.site(site)?;
        Ok(Self::socket(profile.admin_socket(s)))
    }

    /// A client of `site`'s TCP admin endpoint, as `profile` sets it: over
    /// TLS with the operators' token when the profile names them, plain
    /// (read-only) otherwise.
    pub fn for_site_remote(profile: &LoadedProfile, site: &str) -> Result<Self, AdminError> {
        let s = profile.site(site)?;
        let addr = s.admin_listen.ok_or_else(|| AdminError::NoAdminAddress {
            site: site.to_string(),
            profile: profile.file.display().to_string(),
        })?;
        match &s.admin_tls_cert {
            Some(cert) => {
                let token = match &s.admin_token_file {
                    Some(path) => Some(AdminToken::from_file(&profile.base_dir.join(path))?),
                    None => None,
                };
                Self::tls(addr, &profile.base_dir.join(cert), token)
            }
            None => Ok(Self::new(addr)),
        }
    }

    /// `GET /status`: the node's status as JSON (blocking).
    pub fn status(&self) -> Result<Value, AdminError> {
        self.call("GET", "/status", None, STATUS_WAIT)
    }

    /// `GET /devices`: every connected device with its server list, as
    /// `{"devices": [...]}` (blocking).
    pub fn devices(&self) -> Result<Value, AdminError> {
        self.call("GET", "/devices", None, DEVICES_WAIT)
    }

    /// `POST /devices/servers`: push the server list `servers` (the syntax
    /// of `devices simulate --endpoints`) to `devices`, or to every
    /// connected device when None; `{"results": [...]}`, one per device
    /// (blocking).
    pub fn set_servers(&self, devices: Option<&[u32]>, servers: &str) -> Result<Value, AdminError> {
        let body = serde_json::json!({ "devices": devices, "servers": servers }).to_string();
        self.call(
            "POST",
            "/devices/servers",
            Some(body.as_bytes()),
            DEVICES_WAIT,
        )
    }

    /// `POST /replication/retry` or `/replication/skip`: what the decision
    /// on the stopped change stream did (blocking).
    pub fn replication(&self, skip: bool) -> Result<Value, AdminError> {
        let decision = if skip { "skip" } else { "retry" };
        self.call(
            "POST",
            &format!("/replication/{decision}"),
            None,
            PROMOTE_WAIT,
        )
    }

    /// `POST /switchover?to=SITE`: what the switchover did as JSON, or why
    /// it was refused or abandoned (blocking).
    pub fn switchover(&self, to: &str) -> Result<Value, AdminError> {
        let to: String = url_encode(to);
        self.call("POST", &format!("/switchover?to={to}"), None, PROMOTE_WAIT)
    }

    /// `POST /promote`: the promotion's timeline as JSON, or why the node
    /// refused (blocking).
    pub fn promote(&self, force: bool) -> Result<Value, AdminError> {
        self.call(
            "POST",
            &format!("/promote?force={force}"),
            None,
            PROMOTE_WAIT,
        )
    }

    /// One request over this client's transport: the JSON answer on 200,
    /// the node's refusal otherwise.
    fn call(
        &self,
        method: &str,
        target: &str,
        body: Option<&[u8]>,
        wait: Duration,
    ) -> Result<Value, AdminError> {
        let raw = match &self.target {
            Target::Socket(path) => {
                let io = |source| AdminError::SocketUnreachable {
                    path: path.to_path_buf(),
                    source,
                };
                let stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
                stream.set_read_timeout(Some(wait)).map_err(io)?;
                stream.set_write_timeout(Some(WRITE_WAIT)).map_err(io)?;
                exchange(stream, method, target, None, body).map_err(io)?
            }
            Target::Tcp(addr) => {
                let io = |source| AdminError::Unreachable {
                    addr: *addr,
                    source,
                };
                let stream = tcp(*addr, wait).map_err(io)?;
                exchange(stream, method, target, None, body).map_err(io)?
            }
            Target::Tls {
                addr,
                config,
                token,
            } => {
                let io = |source| AdminError::Unreachable {
                    addr: *addr,
                    source,
                };
                let stream = tcp(*addr, wait).map_err(io)?;
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let connection = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| io(std::io::Error::other(e)))?;
                let stream = rustls::StreamOwned::new(connection, stream);
                let header = token
                    .as_ref()
                    .map(|t| format!("Authorization: {}\r\n", t.header()));
                exchange(stream, method, target, header.as_deref(), body).map_err(io)?
            }
        };
        let (code, body) = parse_answer(&raw, &self.at())?;
        self.answer(code, &body)
    }

    fn at(&self) -> String {
        match &self.target {
            Target::Socket(p) => p.display().to_string(),
            Target::Tcp(a) | Target::Tls { addr: a, .. } => a.to_string(),
        }
    }

    fn json(&self, parsed: std::io::Result<Value>) -> Result<Value, AdminError> {
        parsed.map_err(|source| AdminError::BadAnswer {
            at: self.at(),
            source,
        })
    }

    /// A status code and body: the JSON on 200, the refusal otherwise.
    fn answer(&self, code: u16, body: &[u8]) -> Result<Value, AdminError> {
        let value = self.json(serde_json::from_slice(body).map_err(std::io::Error::from))?;
        if code == 200 {
            Ok(value)
        } else {
            Err(refusal(&value))
        }
    }
}

fn refusal(body: &Value) -> AdminError {
    AdminError::Refused(
        body["error"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string(),
    )
}

/// How long sending a request may take.
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// A TCP connection to `addr` whose reads wait at most `wait`.
fn tcp(addr: SocketAddr, wait: Duration) -> std::io::Result<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect_timeout(&addr, WRITE_WAIT)?;
    stream.set_read_timeout(Some(wait))?;
    stream.set_write_timeout(Some(WRITE_WAIT))?;
    Ok(stream)
}

/// Send one request with `Connection: close` and read the answer until the
/// other side closes (a TLS peer that closes without notice is taken as
/// done).
fn exchange<S: std::io::Read + std::io::Write>(
    mut stream: S,
    method: &str,
    target: &str,
    extra_header: Option<&str>,
    body: Option<&[u8]>,
) -> std::io::Result<Vec<u8>> {
    let body = body.unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: standby\r\n{}{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n",
        extra_header.unwrap_or(""),
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
    }
}

/// An HTTP/1.1 answer's status code and body.
fn parse_answer(raw: &[u8], at: &str) -> Result<(u16, Vec<u8>), AdminError> {
    let bad = |what: &str| AdminError::BadAnswer {
        at: at.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(bad("the answer ended inside its head")),
        Err(e) => return Err(bad(&format!("not an HTTP answer: {e}"))),
    };
    let code = response.code.unwrap_or(0);
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let body = &raw[head..];
    match length {
        Some(n) if body.len() >= n => Ok((code, body[..n].to_vec())),
        Some(_) => Err(bad("the answer is shorter than its Content-Length")),
        None => Err(bad("the answer has no Content-Length")),
    }
}

/// `text` as a URL query value (site names are short words; anything else
/// is percent-encoded).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
