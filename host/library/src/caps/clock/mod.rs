//! `clock`: wall-clock and monotonic time.

use crate::wit::strategy::standby::plugin::clock::Host;

use super::HostState;

/// Add `clock`'s host functions to `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    crate::wit::strategy::standby::plugin::clock::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(linker, |s| s)
}

impl Host for HostState {
    fn now(&mut self) -> u64 {
        crate::store::unix_ms()
    }

    fn monotonic_ms(&mut self) -> u64 {
        self.services.started.elapsed().as_millis() as u64
    }
}
