//! `exec`: run only the commands the profile names, with a timeout. The
//! grant and its call-time check are in [`grant`].

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::wit::strategy::standby::plugin::exec::{Host, Output};
use crate::wit::strategy::standby::plugin::types::Error as WitError;

use super::HostState;

pub(crate) mod grant;

const MAX_OUTPUT: usize = 65_536;

fn text(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_OUTPUT)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Add `exec`'s host functions to `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    crate::wit::strategy::standby::plugin::exec::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(linker, |s| s)
}

impl Host for HostState {
    async fn run(
        &mut self,
        name: String,
        args: Vec<String>,
        timeout_ms: u32,
    ) -> Result<Output, WitError> {
        let (program, fixed) =
            grant::command(&self.grants.granted.exec, &name, &args, &self.plugin)
                .map_err(|e| self.denied("exec", e))?;
        let started = Instant::now();
        let child = tokio::process::Command::new(program)
            .args(fixed)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| WitError::Other(format!("starting `{name}` ({program}): {e}")))?;
        tracing::info!(plugin = &*self.plugin, command = %name, "running granted command");
        let limit = Duration::from_millis(u64::from(timeout_ms.max(1)));
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(Ok(out)) => Ok(Output {
                code: out.status.code(),
                stdout: text(&out.stdout),
                stderr: text(&out.stderr),
                duration_ms: started.elapsed().as_millis() as u64,
                timed_out: false,
            }),
            Ok(Err(e)) => Err(WitError::Other(format!("waiting for `{name}`: {e}"))),
            Err(_) => Ok(Output {
                code: None,
                stdout: String::new(),
                stderr: String::new(),
                duration_ms: started.elapsed().as_millis() as u64,
                timed_out: true,
            }),
        }
    }
}
