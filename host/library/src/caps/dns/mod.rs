//! `dns`: RFC 2136 updates to granted servers, signed with the grant's TSIG
//! key, and direct queries. The grant (server and zone) is checked on every
//! call; the protocol work is in [`crate::dns::update`].

use std::net::IpAddr;

use crate::dns::{AddressType, DnsClient, DnsError, TsigKey};
use crate::wit::strategy::standby::plugin::dns::{Host, RecordType};
use crate::wit::strategy::standby::plugin::types::Error as WitError;

use super::HostState;

pub(crate) mod grant;

use grant::DnsServerGrant;

fn address_type(rtype: RecordType) -> AddressType {
    match rtype {
        RecordType::A => AddressType::A,
        RecordType::Aaaa => AddressType::Aaaa,
    }
}

/// The WIT error for a DNS error: unavailable when the server cannot be
/// reached, access-denied when it refuses (REFUSED, NOTAUTH, bad TSIG).
fn wit_error(e: DnsError) -> WitError {
    let text = e.to_string();
    match e {
        DnsError::Timeout { .. } | DnsError::Unreachable { .. } => WitError::Unavailable(text),
        DnsError::Refused { .. } | DnsError::BadResponseSignature { .. } => {
            WitError::AccessDenied(text)
        }
        DnsError::InvalidArgument(_) | DnsError::Encode { .. } => WitError::InvalidArgument(text),
        DnsError::Rcode { .. }
        | DnsError::Protocol { .. }
        | DnsError::KeyFile { .. }
        | DnsError::Key { .. }
        | DnsError::Listen { .. } => WitError::Other(text),
    }
}

impl HostState {
    /// The grant for `server` and the granted zone holding `name` (the most
    /// specific one), or access-denied.
    fn dns_server(&self, server: &str, name: &str) -> Result<(&DnsServerGrant, String), WitError> {
        grant::server(&self.grants.granted.dns, server, name, &self.plugin)
            .map_err(|e| self.denied("dns", e))
    }
}

/// Add `dns`'s host functions to `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    crate::wit::strategy::standby::plugin::dns::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(linker, |s| s)
}

impl Host for HostState {
    async fn replace(
        &mut self,
        server: String,
        name: String,
        rtype: RecordType,
        addresses: Vec<String>,
        ttl: u32,
    ) -> Result<(), WitError> {
        let (grant, zone) = self.dns_server(&server, &name)?;
        let rtype = address_type(rtype);
        let ips = addresses
            .iter()
            .map(|a| {
                a.trim().parse::<IpAddr>().map_err(|_| {
                    WitError::InvalidArgument(format!(
                        "addresses: `{a}` is not an IP address (for {name} {rtype})"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key =
            TsigKey::load(&grant.key_file, &grant.key_name, &grant.algorithm).map_err(wit_error)?;
        DnsClient::new(grant.server)
            .replace(&key, &zone, &name, rtype, &ips, ttl)
            .await
            .map_err(wit_error)?;
        tracing::info!(
            plugin = %self.plugin,
            server = %grant.server,
            %name,
            %rtype,
            ?addresses,
            ttl,
            "DNS records replaced"
        );
        Ok(())
    }

    async fn query(
        &mut self,
        server: String,
        name: String,
        rtype: RecordType,
    ) -> Result<Vec<String>, WitError> {
        let (grant, _zone) = self.dns_server(&server, &name)?;
        let ips = DnsClient::new(grant.server)
            .query(&name, address_type(rtype))
            .await
            .map_err(wit_error)?;
        Ok(ips.iter().map(ToString::to_string).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    #[test]
    fn dns_errors_map_to_wit_errors() {
        let server = SocketAddr::from(([127, 0, 0, 1], 53));
        let subject = "update of www.site.test. A".to_string();
        let timeout = DnsError::Timeout {
            server,
            subject: subject.clone(),
            timeout: Duration::from_secs(2),
            attempts: 2,
        };
        assert!(
            matches!(wit_error(timeout), WitError::Unavailable(t) if t.contains("127.0.0.1:53"))
        );
        let refused = DnsError::Refused {
            server,
            subject: subject.clone(),
            rcode: "NOTAUTH".into(),
        };
        assert!(
            matches!(wit_error(refused), WitError::AccessDenied(t) if t.contains("www.site.test"))
        );
        let servfail = DnsError::Rcode {
            server,
            subject,
            rcode: "SERVFAIL".into(),
        };
        assert!(matches!(wit_error(servfail), WitError::Other(_)));
        assert!(matches!(
            wit_error(DnsError::InvalidArgument("x".into())),
            WitError::InvalidArgument(_)
        ));
    }
}
