//! Services: long-running granted commands the host supervises for a plugin
//! (the application on the active node). A service is started only while
//! the node is active, dies with the node (the kernel kills it when the
//! thread that started it ends, and that thread lives until the service
//! exits or the node does), and is stopped by the node whenever it stops
//! being active or shuts down, whatever the plugin does.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tokio::sync::watch;

/// Who the node is, as a service sees it in its environment.
#[derive(Debug, Clone)]
pub(crate) struct ServiceEnv {
    /// `STANDBY_NODE`.
    pub(crate) node_id: String,
    /// `STANDBY_SITE`.
    pub(crate) site: String,
    /// `STANDBY_DATA_DIR`; services log under `DATA_DIR/services/`.
    pub(crate) data_dir: PathBuf,
    /// `STANDBY_DB`.
    pub(crate) db: PathBuf,
}

/// Why a service could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ServiceError {
    /// The node is not active.
    #[error("the node is {0}, not active: services run on the active node only")]
    NotActive(crate::role::Role),
    /// Its log could not be opened.
    #[error("opening the service log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("starting `{name}` ({program}): {source}")]
    Start {
        /// The grant's name.
        name: String,
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One service's state.
#[derive(Debug, Default)]
struct Entry {
    pid: Option<u32>,
    started: Option<Instant>,
    last_exit: Option<i32>,
    starts: u32,
    /// The exit status once it has exited (`None` while it runs).
    exited: Option<watch::Receiver<Option<ExitStatus>>>,
}

/// What a service is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServiceState {
    /// Whether it is running.
    pub(crate) running: bool,
    /// Its process id while running.
    pub(crate) pid: Option<u32>,
    /// Since it was started.
    pub(crate) uptime: Duration,
    /// Its last exit code (`None`: killed by a signal, or never ended).
    pub(crate) last_exit: Option<i32>,
    /// Starts since the node started.
    pub(crate) starts: u32,
}

/// The node's services, by (plugin, grant name).
#[derive(Debug, Default)]
pub(crate) struct Supervisor {
    env: OnceLock<ServiceEnv>,
    entries: Mutex<BTreeMap<(String, String), Entry>>,
}

impl Entry {
    /// Take note of an exit, if it has happened.
    fn refresh(&mut self) {
        let status = self.exited.as_ref().and_then(|rx| *rx.borrow());
        if let Some(status) = status {
            self.last_exit = status.code();
            self.pid = None;
            self.exited = None;
        }
    }

    fn state(&mut self) -> ServiceState {
        self.refresh();
        ServiceState {
            running: self.pid.is_some(),
            pid: self.pid,
            uptime: self.started.map(|s| s.elapsed()).unwrap_or_default(),
            last_exit: self.last_exit,
            starts: self.starts,
        }
    }
}

fn signal(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

impl Supervisor {
    /// Record who the node is (once, when the node is built).
    pub(crate) fn set_env(&self, env: ServiceEnv) {
        let _ = self.env.set(env);
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start `program fixed... args...` as the service `name` of `plugin`
    /// at `epoch`, unless it runs already; its process id.
    pub(crate) fn start(
        &self,
        key: (&str, &str),
        command: (&str, &[String], &[String]),
        epoch: u64,
    ) -> Result<u32, ServiceError> {
        let (plugin, name) = key;
        let (program, fixed, args) = command;
        let mut entries = self.entries();
        let entry = entries
            .entry((plugin.to_string(), name.to_string()))
            .or_default();
        entry.refresh();
        if let Some(pid) = entry.pid {
            return Ok(pid);
        }
        let mut cmd = Command::new(program);
        cmd.args(fixed).args(args).stdin(Stdio::null());
        if let Some(env) = self.env.get() {
            let dir = env.data_dir.join("services");
            let path = dir.join(format!("{name}.log"));
            let log = std::fs::create_dir_all(&dir)
                .and_then(|()| OpenOptions::new().create(true).append(true).open(&path))
                .map_err(|source| ServiceError::Log {
                    path: path.clone(),
                    source,
                })?;
            let err = log.try_clone().map_err(|source| ServiceError::Log {
                path: path.clone(),
                source,
            })?;
            cmd.stdout(log)
                .stderr(err)
                .env("STANDBY_NODE", &env.node_id)
                .env("STANDBY_SITE", &env.site)
                .env("STANDBY_DATA_DIR", &env.data_dir)
                .env("STANDBY_DB", &env.db);
        }
        cmd.env("STANDBY_EPOCH", epoch.to_string());
        die_with_the_node(&mut cmd);
        let (pid, exited) = spawn_and_wait(cmd).map_err(|source| ServiceError::Start {
            name: name.to_string(),
            program: program.to_string(),
            source,
        })?;
        entry.pid = Some(pid);
        entry.started = Some(Instant::now());
        entry.starts += 1;
        entry.exited = Some(exited);
        tracing::info!(plugin, service = name, pid, epoch, "service started");
        Ok(pid)
    }

    /// The state of service `name` of `plugin`.
    pub(crate) fn state(&self, plugin: &str, name: &str) -> ServiceState {
        self.entries()
            .entry((plugin.to_string(), name.to_string()))
            .or_default()
            .state()
    }

    /// Stop service `name` of `plugin`: SIGTERM, SIGKILL after `grace`;
    /// returns once it has exited.
    pub(crate) async fn stop(&self, plugin: &str, name: &str, grace: Duration) -> ServiceState {
        let running = {
            let mut entries = self.entries();
            let entry = entries
                .entry((plugin.to_string(), name.to_string()))
                .or_default();
            entry.refresh();
            entry.pid.zip(entry.exited.clone())
        };
        if let Some((pid, mut exited)) = running {
            signal(pid, Signal::CONT);
            signal(pid, Signal::TERM);
            let ended = tokio::time::timeout(grace, exited.wait_for(|s| s.is_some()))
                .await
                .is_ok();
            if !ended {
                tracing::warn!(
                    plugin,
                    service = name,
                    pid,
                    ?grace,
                    "service ignored SIGTERM; killing it"
                );
                signal(pid, Signal::KILL);
                let _ = exited.wait_for(|s| s.is_some()).await;
            }
            tracing::info!(plugin, service = name, pid, "service stopped");
        }
        self.state(plugin, name)
    }

    /// Stop every running service (the node stops being active or shuts
    /// down); how many were running.
    pub(crate) async fn stop_all(&self, grace: Duration) -> usize {
        let running: Vec<(String, String)> = self
            .entries()
            .iter_mut()
            .filter_map(|(k, e)| {
                e.refresh();
                e.pid.map(|_| k.clone())
            })
            .collect();
        for (plugin, name) in &running {
            self.stop(plugin, name, grace).await;
        }
        running.len()
    }
}

/// Have the kernel kill the child when the thread that started it ends:
/// a service never outlives its node.
#[allow(unsafe_code)]
fn die_with_the_node(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: between fork and exec only async-signal-safe system calls are
    // made (prctl and getppid), and nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                // The node died before the signal was armed.
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
            }
            Ok(())
        });
    }
}

/// Start `cmd` on a thread of its own that waits for it (the thread is the
/// child's parent for the death signal, so it must live as long as the
/// child); its pid and a receiver of its exit status.
fn spawn_and_wait(mut cmd: Command) -> std::io::Result<(u32, watch::Receiver<Option<ExitStatus>>)> {
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let (exit_tx, exit_rx) = watch::channel(None);
    std::thread::Builder::new()
        .name("standby-service".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = started_tx.send(Ok(child.id()));
                let status = child.wait().ok();
                let _ = exit_tx.send(Some(status.unwrap_or_else(killed)));
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
        })?;
    let pid = started_rx
        .recv()
        .map_err(|_| std::io::Error::other("the service thread ended early"))??;
    Ok((pid, exit_rx))
}

/// An exit status for a child that could not be waited for.
fn killed() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(9)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_service_runs_until_stopped_and_sigkill_follows_an_ignored_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::default();
        sup.set_env(ServiceEnv {
            node_id: "n".into(),
            site: "s".into(),
            data_dir: dir.path().into(),
            db: dir.path().join("db"),
        });
        let sleep = ["30".to_string()];
        let pid = sup
            .start(("p", "sleep"), ("sleep", &[], &sleep), 3)
            .unwrap();
        assert_eq!(
            sup.start(("p", "sleep"), ("sleep", &[], &sleep), 3)
                .unwrap(),
            pid
        );
        assert!(sup.state("p", "sleep").running);
        let s = sup.stop("p", "sleep", Duration::from_secs(5)).await;
        assert!(!s.running && s.starts == 1, "{s:?}");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

        // A service that ignores SIGTERM is killed after the grace.
        let trap = [
            "-c".to_string(),
            "trap '' TERM; echo \"$STANDBY_SITE $STANDBY_EPOCH\"; sleep 30 & wait".to_string(),
        ];
        sup.start(("p", "stubborn"), ("sh", &[], &trap), 7).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        assert_eq!(sup.stop_all(Duration::from_millis(300)).await, 1);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(!sup.state("p", "stubborn").running);
        let log = std::fs::read_to_string(dir.path().join("services/stubborn.log")).unwrap();
        assert_eq!(log.trim(), "s 7");
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let sup = Supervisor::default();
        let e = sup
            .start(("p", "x"), ("/nonexistent/app", &[], &[]), 1)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/app"), "{e}");
        assert!(!sup.state("p", "x").running);
    }
}
