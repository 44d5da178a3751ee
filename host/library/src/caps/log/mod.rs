//! `log`: plugin log lines go to the host's tracing output, tagged with the
//! plugin: each line cut at 4 KiB, and the instance's lines within its byte
//! budget (see [`super::output`]); what goes over is counted in its health.

use crate::wit::strategy::standby::plugin::log::{Host, Level};

use super::output::LogAdmit;
use super::HostState;

const MAX_LINE: usize = 4096;

/// Add `log`'s host functions to `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    crate::wit::strategy::standby::plugin::log::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(linker, |s| s)
}

impl Host for HostState {
    fn write(&mut self, level: Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [truncated]");
        }
        let plugin = &*self.plugin;
        match self.output.admit_log(message.len()) {
            LogAdmit::Drop => return,
            LogAdmit::WriteAfterDropping(n) => tracing::warn!(
                target: "plugin",
                plugin,
                "{n} log lines dropped: over the instance's budget of 64 KiB/s (256 KiB in a burst)"
            ),
            LogAdmit::Write => {}
        }
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }
}
