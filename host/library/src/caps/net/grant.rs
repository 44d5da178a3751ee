//! The `net` grant: the interface and address pairs a plugin may add,
//! remove and announce.

use serde::{Deserialize, Serialize};

use crate::wit::strategy::standby::plugin::types::Error as WitError;

/// One interface and address pair of the `net` grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetAddress {
    /// Network interface, e.g. `eth0`.
    pub interface: String,
    /// Address in CIDR form, e.g. `192.168.1.10/24`.
    pub address: String,
}

/// The `net` grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetGrant {
    /// The pairs the plugin may add, remove and announce.
    pub addresses: Vec<NetAddress>,
}

/// Whether the profile grants `net` at all.
pub(crate) fn granted(grant: &Option<NetGrant>) -> bool {
    grant.is_some()
}

/// The call-time check: the pair is granted to `plugin`.
pub(crate) fn check(
    grant: Option<&NetGrant>,
    interface: &str,
    address: &str,
    plugin: &str,
) -> Result<(), WitError> {
    let granted = grant.is_some_and(|g| {
        g.addresses
            .iter()
            .any(|a| a.interface == interface && a.address == address)
    });
    if granted {
        Ok(())
    } else {
        Err(WitError::AccessDenied(format!(
            "address {address} on {interface} is not granted to plugin {plugin}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_pairs_pass() {
        let g = NetGrant {
            addresses: vec![NetAddress {
                interface: "eth0".into(),
                address: "10.0.0.10/24".into(),
            }],
        };
        assert!(check(Some(&g), "eth0", "10.0.0.10/24", "p").is_ok());
        assert!(check(Some(&g), "eth1", "10.0.0.10/24", "p").is_err());
        assert!(check(None, "eth0", "10.0.0.10/24", "p").is_err());
        assert!(granted(&Some(g)) && !granted(&None));
    }
}
