//! Name resolution for domain endpoints, asked on every connection attempt.
//! Neither resolver keeps an answer beyond its record's TTL: the system one
//! keeps nothing, the DNS one honours TTLs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

/// A name could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot resolve {name}: {reason}")]
pub struct ResolveError {
    /// The name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Resolves domain names to addresses.
#[async_trait]
pub trait Resolve: Send + Sync {
    /// The addresses of `name` now.
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError>;
}

/// The operating system's resolver (getaddrinfo), asked every time.
#[derive(Debug, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let addrs = tokio::net::lookup_host((name, 0))
            .await
            .map_err(|e| ResolveError {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}

/// How long an answer is shared with lookups of the same name that were
/// waiting for it (many simulated devices share one resolver; each real
/// device has its own).
const SHARE_ANSWER_FOR: Duration = Duration::from_millis(100);

/// The last answer for one name, and a lock that lets one lookup run at a time.
type Flight =
    Arc<tokio::sync::Mutex<Option<(std::time::Instant, Result<Vec<IpAddr>, ResolveError>)>>>;

/// Asks one DNS server (the device's configured DNS server) directly.
/// Concurrent lookups of the same name wait for one query and share its
/// answer, so a fleet of simulated devices sharing this resolver sends one
/// query per name at a time rather than thousands at once.
pub struct DnsResolver {
    server: SocketAddr,
    inner: TokioResolver,
    flights: std::sync::Mutex<std::collections::HashMap<String, Flight>>,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver")
            .field("server", &self.server)
            .finish()
    }
}

impl DnsResolver {
    /// A resolver that asks `server` (UDP, then TCP) and nobody else.
    pub fn new(server: SocketAddr) -> Arc<Self> {
        let group = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_millis(500);
        opts.attempts = 2;
        opts.ndots = 0;
        opts.edns0 = false;
        let inner = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Arc::new(Self {
            server,
            inner,
            flights: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let lookup = self
            .inner
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| ResolveError {
                name: name.to_string(),
                reason: format!("{e} (server {})", self.server),
            })?;
        Ok(lookup.iter().collect())
    }
}

#[async_trait]
impl Resolve for DnsResolver {
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let flight = self
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_ascii_lowercase())
            .or_default()
            .clone();
        let mut last = flight.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < SHARE_ANSWER_FOR {
                return answer.clone();
            }
        }
        let answer = self.lookup(name).await;
        *last = Some((std::time::Instant::now(), answer.clone()));
        answer
    }
}
