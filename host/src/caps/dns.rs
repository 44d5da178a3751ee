//! `dns`: RFC 2136 updates to granted servers. The grant (server and zone) is
//! checked on every call; the updates themselves arrive with DNS failover.

use crate::plugin::bindings::strategy::standby::plugin::dns::{Host, RecordType};
use crate::plugin::bindings::strategy::standby::plugin::types::Error as WitError;

use super::HostState;

impl HostState {
    fn dns_server(&self, server: &str, name: &str) -> Result<(), WitError> {
        let grant = self.grants.dns.get(server).ok_or_else(|| {
            WitError::AccessDenied(format!(
                "DNS server `{server}` is not granted to plugin {}",
                self.plugin
            ))
        })?;
        let name = name.trim_end_matches('.');
        let in_zone = grant.zones.iter().any(|z| {
            let z = z.trim_end_matches('.');
            name == z || name.ends_with(&format!(".{z}"))
        });
        if !in_zone {
            return Err(WitError::AccessDenied(format!(
                "{name} is outside the zones granted on `{server}` ({})",
                grant.zones.join(", ")
            )));
        }
        Err(WitError::Unavailable(
            "DNS updates are not available in this host version (they come with DNS failover)"
                .into(),
        ))
    }
}

impl Host for HostState {
    async fn replace(
        &mut self,
        server: String,
        name: String,
        _rtype: RecordType,
        _addresses: Vec<String>,
        _ttl: u32,
    ) -> Result<(), WitError> {
        self.dns_server(&server, &name)
    }

    async fn query(
        &mut self,
        server: String,
        name: String,
        _rtype: RecordType,
    ) -> Result<Vec<String>, WitError> {
        self.dns_server(&server, &name).map(|()| Vec::new())
    }
}
