//! `exec`: run only the commands the profile names, with a timeout.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::plugin::bindings::strategy::standby::plugin::exec::{Host, Output};
use crate::plugin::bindings::strategy::standby::plugin::types::Error as WitError;

use super::HostState;

const MAX_OUTPUT: usize = 65_536;

fn text(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_OUTPUT)];
    String::from_utf8_lossy(cut).into_owned()
}

impl Host for HostState {
    async fn run(
        &mut self,
        name: String,
        args: Vec<String>,
        timeout_ms: u32,
    ) -> Result<Output, WitError> {
        let grant = self.grants.exec.get(&name).ok_or_else(|| {
            WitError::AccessDenied(format!(
                "command `{name}` is not granted to plugin {}",
                self.plugin
            ))
        })?;
        if !args.is_empty() && !grant.extra_args {
            return Err(WitError::AccessDenied(format!(
                "command `{name}` takes no extra arguments (grant `extra_args = true` to allow)"
            )));
        }
        let (program, fixed) = grant.command.split_first().ok_or_else(|| {
            WitError::InvalidArgument(format!("command `{name}` is empty in the profile"))
        })?;
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
