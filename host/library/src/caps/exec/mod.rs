//! `exec`: run only the commands the profile names, with a timeout, or as a
//! service the host supervises ([`service`]). The grant and its call-time
//! check are in [`grant`].

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::role::Role;
use crate::wit::strategy::standby::plugin::exec::{Host, Output, ServiceState};
use crate::wit::strategy::standby::plugin::types::Error as WitError;

use super::HostState;

pub(crate) mod grant;
pub(crate) mod service;

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

    async fn start(&mut self, name: String, args: Vec<String>) -> Result<u32, WitError> {
        let (program, fixed) =
            grant::command(&self.grants.granted.exec, &name, &args, &self.plugin)
                .map_err(|e| self.denied("exec", e))?;
        let role = self.services.role();
        if role != Role::Active {
            return Err(WitError::Conflict(
                service::ServiceError::NotActive(role).to_string(),
            ));
        }
        let epoch = self.services.epoch();
        self.services
            .supervisor
            .start((&self.plugin, &name), (program, fixed, &args), epoch)
            .map_err(|e| WitError::Other(e.to_string()))
    }

    async fn stop(&mut self, name: String, grace_ms: u32) -> Result<ServiceState, WitError> {
        grant::command(&self.grants.granted.exec, &name, &[], &self.plugin)
            .map_err(|e| self.denied("exec", e))?;
        let grace = Duration::from_millis(u64::from(grace_ms));
        let s = self
            .services
            .supervisor
            .stop(&self.plugin, &name, grace)
            .await;
        Ok(wit_state(s))
    }

    async fn service(&mut self, name: String) -> Result<ServiceState, WitError> {
        grant::command(&self.grants.granted.exec, &name, &[], &self.plugin)
            .map_err(|e| self.denied("exec", e))?;
        Ok(wit_state(
            self.services.supervisor.state(&self.plugin, &name),
        ))
    }
}

fn wit_state(s: service::ServiceState) -> ServiceState {
    ServiceState {
        running: s.running,
        pid: s.pid,
        uptime_ms: s.uptime.as_millis() as u64,
        last_exit: s.last_exit,
        starts: s.starts,
    }
}
