//! The demo's child processes: started from this same binary, their stderr in
//! a log file, killed or hung on demand.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
pub use rustix::process::Signal;
use tokio::process::{Child as TokioChild, Command};

/// One child process of the demo.
pub struct Child {
    /// What it is, for messages.
    pub name: String,
    /// Its stderr.
    pub log: PathBuf,
    child: TokioChild,
}

impl Child {
    /// Start `standby ARGS` logging at `log_filter`, stderr to `log`, stdout
    /// piped when `capture`.
    pub fn spawn(
        name: &str,
        args: &[String],
        log: &Path,
        capture: bool,
        log_filter: &str,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("finding this program")?;
        let err =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(exe)
            .args(args)
            .env("STANDBY_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(if capture {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        Ok(Self {
            name: name.into(),
            log: log.to_path_buf(),
            child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<i32> {
        self.child.id().map(|p| p as i32)
    }

    /// Send a signal (SIGKILL, SIGSTOP, SIGCONT, SIGTERM).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("the {} has already exited", self.name))?;
        let pid = rustix::process::Pid::from_raw(pid)
            .with_context(|| format!("the {} has no valid pid", self.name))?;
        rustix::process::kill_process(pid, signal)
            .with_context(|| format!("signal {signal:?} to the {} ({pid:?})", self.name))
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stop it: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: std::time::Duration) {
        if !self.running() {
            return;
        }
        let _ = self.signal(Signal::CONT);
        let _ = self.signal(Signal::TERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Wait for it to exit and return its stdout.
    pub async fn output(self, limit: std::time::Duration) -> Result<String> {
        let name = self.name.clone();
        let out = tokio::time::timeout(limit, self.child.wait_with_output())
            .await
            .with_context(|| format!("the {name} did not finish within {limit:?}"))??;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of its log, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
