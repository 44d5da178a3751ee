//! `net`: service addresses. The grant is checked on every call; the address
//! moves themselves arrive with the case 0 address mode.

use crate::plugin::bindings::strategy::standby::plugin::net::Host;
use crate::plugin::bindings::strategy::standby::plugin::types::Error as WitError;

use super::HostState;

impl HostState {
    fn net_pair(&self, interface: &str, address: &str) -> Result<(), WitError> {
        let granted = self.grants.net.as_ref().is_some_and(|g| {
            g.addresses
                .iter()
                .any(|a| a.interface == interface && a.address == address)
        });
        if granted {
            Err(WitError::Unavailable(
                "address moves are not available in this host version (they come with the case 0 address mode)".into(),
            ))
        } else {
            Err(WitError::AccessDenied(format!(
                "address {address} on {interface} is not granted to plugin {}",
                self.plugin
            )))
        }
    }
}

impl Host for HostState {
    async fn add_address(&mut self, interface: String, address: String) -> Result<(), WitError> {
        self.net_pair(&interface, &address)
    }

    async fn remove_address(&mut self, interface: String, address: String) -> Result<(), WitError> {
        self.net_pair(&interface, &address)
    }

    async fn has_address(&mut self, interface: String, address: String) -> Result<bool, WitError> {
        self.net_pair(&interface, &address).map(|()| false)
    }

    async fn announce(
        &mut self,
        interface: String,
        address: String,
        _count: u32,
    ) -> Result<(), WitError> {
        self.net_pair(&interface, &address)
    }
}
