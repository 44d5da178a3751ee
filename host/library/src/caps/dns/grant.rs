//! The `dns` grant: DNS servers by name, each with the TSIG key that signs
//! updates and the zones the plugin may change.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::super::grant_error::GrantError;
use crate::wit::strategy::standby::plugin::types::Error as WitError;

/// One DNS server of the `dns` grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsServerGrant {
    /// Address of the primary server that takes RFC 2136 updates.
    pub server: SocketAddr,
    /// TSIG key name.
    pub key_name: String,
    /// File holding the TSIG secret (a BIND `key` clause or the base64 secret alone).
    pub key_file: PathBuf,
    /// TSIG algorithm.
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// Zones the plugin may change.
    pub zones: Vec<String>,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_string()
}

/// What is wrong with a `dns` grant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DnsProblem {
    /// A server lists no zone.
    #[error("must list at least one zone")]
    NoZone,
}

/// Whether the profile grants `dns` at all.
pub(crate) fn granted(grant: &BTreeMap<String, DnsServerGrant>) -> bool {
    !grant.is_empty()
}

/// Every server lists a zone.
pub(crate) fn validate(grant: &BTreeMap<String, DnsServerGrant>) -> Result<(), GrantError> {
    for (name, dns) in grant {
        if dns.zones.is_empty() {
            return Err(GrantError::new(
                format!("dns.{name}.zones"),
                DnsProblem::NoZone,
            ));
        }
    }
    Ok(())
}

/// Key files relative to `base_dir` (the profile's folder).
pub(crate) fn resolve(
    grant: &BTreeMap<String, DnsServerGrant>,
    base_dir: &Path,
) -> BTreeMap<String, DnsServerGrant> {
    grant
        .iter()
        .map(|(name, g)| {
            let mut g = g.clone();
            g.key_file = base_dir.join(&g.key_file);
            (name.clone(), g)
        })
        .collect()
}

/// The call-time check: `server` is granted to `plugin` and `name` lies in
/// one of its zones; the grant and the most specific zone holding `name`.
pub(crate) fn server<'a>(
    grant: &'a BTreeMap<String, DnsServerGrant>,
    server: &str,
    name: &str,
    plugin: &str,
) -> Result<(&'a DnsServerGrant, String), WitError> {
    let g = grant.get(server).ok_or_else(|| {
        WitError::AccessDenied(format!(
            "DNS server `{server}` is not granted to plugin {plugin}"
        ))
    })?;
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let zone = g
        .zones
        .iter()
        .map(|z| z.trim_end_matches('.'))
        .filter(|z| {
            let z = z.to_ascii_lowercase();
            name == z || name.ends_with(&format!(".{z}"))
        })
        .max_by_key(|z| z.len())
        .ok_or_else(|| {
            WitError::AccessDenied(format!(
                "{name} is outside the zones granted on `{server}` ({})",
                g.zones.join(", ")
            ))
        })?;
    Ok((g, zone.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn grant(zones: &[&str]) -> BTreeMap<String, DnsServerGrant> {
        let mut g = BTreeMap::new();
        g.insert(
            "primary".to_string(),
            DnsServerGrant {
                server: "127.0.0.1:53".parse().unwrap(),
                key_name: "k".into(),
                key_file: "k.key".into(),
                algorithm: default_tsig_algorithm(),
                zones: zones.iter().map(|z| z.to_string()).collect(),
            },
        );
        g
    }

    #[test]
    fn names_must_lie_in_a_granted_zone_of_a_granted_server() {
        let g = grant(&["site.test", "a.site.test."]);
        assert!(validate(&g).is_ok());
        let (_, zone) = server(&g, "primary", "www.a.site.test", "p").unwrap();
        assert_eq!(zone, "a.site.test", "the most specific zone");
        assert!(matches!(
            server(&g, "primary", "www.other.test", "p"),
            Err(WitError::AccessDenied(_))
        ));
        assert!(matches!(
            server(&g, "secondary", "www.site.test", "p"),
            Err(WitError::AccessDenied(_))
        ));
        assert_eq!(validate(&grant(&[])).unwrap_err().key, "dns.primary.zones");
        let resolved = resolve(&g, Path::new("/etc/standby"));
        assert_eq!(
            resolved["primary"].key_file,
            PathBuf::from("/etc/standby/k.key")
        );
    }
}
