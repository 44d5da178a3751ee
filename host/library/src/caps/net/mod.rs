//! `net`: service addresses. The grant is checked on every call; the address
//! moves themselves arrive with the case 0 address mode.

use crate::wit::strategy::standby::plugin::net::Host;
use crate::wit::strategy::standby::plugin::types::Error as WitError;

use super::HostState;

pub(crate) mod grant;

impl HostState {
    fn net_pair(&self, interface: &str, address: &str) -> Result<(), WitError> {
        grant::check(
            self.grants.granted.net.as_ref(),
            interface,
            address,
            &self.plugin,
        )
        .map_err(|e| self.denied("net", e))?;
        Err(WitError::Unavailable(
            "address moves are not available in this host version (they come with the case 0 address mode)".into(),
        ))
    }
}

/// Functions of `net` the WIT declares but this host does not implement
/// yet (marked so in the WIT): a plugin that imports one is refused at load.
pub(crate) const NOT_IMPLEMENTED: &[&str] =
    &["add-address", "remove-address", "has-address", "announce"];

/// Add `net`'s host functions to `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    crate::wit::strategy::standby::plugin::net::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(linker, |s| s)
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
