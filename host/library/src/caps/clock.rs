//! `clock`: wall-clock and monotonic time.

use crate::plugin::bindings::strategy::standby::plugin::clock::Host;

use super::HostState;

impl Host for HostState {
    fn now(&mut self) -> u64 {
        crate::store::unix_ms()
    }

    fn monotonic_ms(&mut self) -> u64 {
        self.services.started.elapsed().as_millis() as u64
    }
}
