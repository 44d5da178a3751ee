//! Name resolution for domain endpoints, asked on every connection attempt.
//! Neither resolver keeps an answer beyond its record's TTL: the system one
//! keeps nothing, the DNS one (feature `resolver`) honours TTLs.

use std::net::IpAddr;

use async_trait::async_trait;

#[cfg(feature = "resolver")]
mod dns;
#[cfg(feature = "resolver")]
pub use dns::DnsResolver;

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
