//! Name resolution for domain endpoints, asked on every connection attempt.
//! Neither resolver keeps an answer beyond its record's TTL: the system one
//! keeps nothing, the DNS one (feature `resolver`) honours TTLs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;

#[cfg(feature = "resolver")]
mod dns;
#[cfg(feature = "resolver")]
pub use dns::DnsResolver;

/// A name could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The lookup failed.
    #[error("cannot resolve {name}{}: {source}", server.map(|s| format!(" (server {s})")).unwrap_or_default())]
    Lookup {
        /// The name.
        name: String,
        /// The DNS server asked, when one was named.
        server: Option<SocketAddr>,
        /// What the resolver found.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The lookup was abandoned before it answered (the runtime is stopping).
    #[error("cannot resolve {name}: the lookup was abandoned")]
    Abandoned {
        /// The name.
        name: String,
    },
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
            .map_err(|e| ResolveError::Lookup {
                name: name.to_string(),
                server: None,
                source: Arc::new(e),
            })?;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}
