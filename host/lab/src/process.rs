//! The process harness: the `standby` binary started as a child process with
//! its stderr in a log file, signalled (SIGKILL for a crash, SIGSTOP for a
//! hang, SIGCONT, SIGTERM), stopped, and its log read. The demo and the tests
//! start every process through it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// A child process could not be started, signalled or waited for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// Its log file could not be created.
    #[error("creating the log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("starting the {name} ({exe}): {source}")]
    Start {
        /// What it is.
        name: String,
        /// The program.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It has exited, so it cannot be signalled.
    #[error("the {name} has already exited")]
    Exited {
        /// What it is.
        name: String,
    },
    /// The signal could not be sent.
    #[error("signal {signal:?} to the {name} (pid {pid}): {source}")]
    Signal {
        /// What it is.
        name: String,
        /// Its process id.
        pid: u32,
        /// The signal.
        signal: Signal,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It did not exit in time.
    #[error("the {name} did not finish within {limit:?}")]
    Timeout {
        /// What it is.
        name: String,
        /// How long it was given.
        limit: Duration,
    },
}

/// The `standby` binary children are started from.
#[derive(Debug, Clone)]
pub struct Standby {
    exe: PathBuf,
}

impl Standby {
    /// The binary at `exe` (tests: `env!("CARGO_BIN_EXE_standby")`).
    pub fn at(exe: impl Into<PathBuf>) -> Self {
        Self { exe: exe.into() }
    }

    /// The program running now (the demo starts its children from itself).
    pub fn this_program() -> std::io::Result<Self> {
        Ok(Self::at(std::env::current_exe()?))
    }

    /// The binary.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// A command for `standby ARGS` without the caller's `STANDBY_LOG`.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args).env_remove("STANDBY_LOG");
        cmd
    }

    /// Run `standby ARGS` to its end: whether it succeeded, its stdout and
    /// its stderr.
    pub fn run<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[S],
    ) -> Result<(bool, String, String), ProcessError> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ProcessError::Start {
                name: "standby".into(),
                exe: self.exe.clone(),
                source,
            })?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Start `standby ARGS` as the child `name`: its log filter
    /// (`STANDBY_LOG`) is `log_filter`, its stderr goes to `log`, and its
    /// stdout is kept for [`Process::output`] when `capture` is set.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        &self,
        name: &str,
        args: &[S],
        log: &Path,
        log_filter: &str,
        capture: bool,
    ) -> Result<Process, ProcessError> {
        self.spawn_in(name, args, log, log_filter, capture, false)
    }

    /// [`Standby::spawn`] as the leader of a process group of its own: a
    /// site. Everything it starts (its application) stays in the group, and
    /// signals go to the whole group, so a fault hits the site as a whole.
    pub fn spawn_site<S: AsRef<std::ffi::OsStr>>(
        &self,
        name: &str,
        args: &[S],
        log: &Path,
        log_filter: &str,
    ) -> Result<Process, ProcessError> {
        self.spawn_in(name, args, log, log_filter, false, true)
    }

    fn spawn_in<S: AsRef<std::ffi::OsStr>>(
        &self,
        name: &str,
        args: &[S],
        log: &Path,
        log_filter: &str,
        capture: bool,
        group: bool,
    ) -> Result<Process, ProcessError> {
        let err = std::fs::File::create(log).map_err(|source| ProcessError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let mut command = self.command(args);
        if group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let mut child = command
            .env("STANDBY_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(if capture {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(err)
            .spawn()
            .map_err(|source| ProcessError::Start {
                name: name.into(),
                exe: self.exe.clone(),
                source,
            })?;
        // Read stdout as it comes, so a chatty child never blocks on a full pipe.
        let stdout = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = out.read_to_string(&mut text);
                text
            })
        });
        Ok(Process {
            name: name.into(),
            log: log.to_path_buf(),
            child,
            stdout,
            group,
        })
    }
}

/// A running child process; dropping it kills it (after SIGCONT, so a hung
/// one dies too) and reaps it.
#[derive(Debug)]
pub struct Process {
    name: String,
    log: PathBuf,
    child: Child,
    stdout: Option<JoinHandle<String>>,
    /// It leads a process group of its own: signals go to the group.
    group: bool,
}

/// How often an exit is polled for.
const POLL: Duration = Duration::from_millis(20);

impl Process {
    /// What it is, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Send `signal` (to its whole process group when it leads one).
    pub fn signal(&mut self, signal: Signal) -> Result<(), ProcessError> {
        if !self.running() {
            return Err(ProcessError::Exited {
                name: self.name.clone(),
            });
        }
        let pid = self.pid();
        let signal_error = |source: std::io::Error| ProcessError::Signal {
            name: self.name.clone(),
            pid,
            signal,
            source,
        };
        let target = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| signal_error(std::io::ErrorKind::InvalidInput.into()))?;
        if self.group {
            rustix::process::kill_process_group(target, signal)
        } else {
            rustix::process::kill_process(target, signal)
        }
        .map_err(|e| signal_error(e.into()))
    }

    /// Send `signal` to this process alone, not its group.
    fn signal_leader(&mut self, signal: Signal) {
        if let Some(pid) = i32::try_from(self.pid())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Whether it is still running (a stopped process is running).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL (a crash; the whole group when it leads one), and reap it.
    pub fn kill(&mut self) {
        if self.running() {
            let _ = self.signal(Signal::CONT);
            if self.group {
                let _ = self.signal(Signal::KILL);
            }
            let _ = self.child.kill();
        } else if self.group {
            // Its group may outlive it (a child it started).
            let _ = self.group_signal_after_exit(Signal::KILL);
        }
        let _ = self.child.wait();
    }

    /// Signal the group of a leader that has exited (its pid names the group
    /// while any member lives).
    fn group_signal_after_exit(&self, signal: Signal) -> Option<()> {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)?;
        rustix::process::kill_process_group(pid, signal).ok()
    }

    /// Stop it: SIGCONT and SIGTERM (to it alone: a site's node stops its
    /// own application), then SIGKILL once `grace` has passed.
    pub async fn stop(&mut self, grace: Duration) {
        if !self.running() {
            self.kill();
            return;
        }
        let _ = self.signal(Signal::CONT);
        self.signal_leader(Signal::TERM);
        let until = Instant::now() + grace;
        while self.running() && Instant::now() < until {
            tokio::time::sleep(POLL).await;
        }
        self.kill();
    }

    /// Wait at most `limit` for it to exit by itself; its stdout (when
    /// captured).
    pub async fn output(mut self, limit: Duration) -> Result<String, ProcessError> {
        let until = Instant::now() + limit;
        while self.running() {
            if Instant::now() >= until {
                return Err(ProcessError::Timeout {
                    name: self.name.clone(),
                    limit,
                });
            }
            tokio::time::sleep(POLL).await;
        }
        let stdout = self.stdout.take();
        Ok(match stdout {
            Some(reader) => tokio::task::spawn_blocking(move || reader.join().unwrap_or_default())
                .await
                .unwrap_or_default(),
            None => String::new(),
        })
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How many files process `pid` has open (0 when it cannot be read).
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of process `pid` in KiB (`VmRSS`), 0 if it is gone.
pub fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sh() -> Standby {
        Standby::at("/bin/sh")
    }

    #[tokio::test]
    async fn a_child_is_signalled_stopped_and_its_output_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("child.log");
        let p = sh()
            .spawn(
                "echo",
                &["-c", "echo to-stderr >&2; echo to-stdout"],
                &log,
                "info",
                true,
            )
            .unwrap();
        assert_eq!(
            p.output(Duration::from_secs(10)).await.unwrap(),
            "to-stdout\n"
        );
        assert!(std::fs::read_to_string(&log).unwrap().contains("to-stderr"));

        let mut hung = sh()
            .spawn("sleeper", &["-c", "sleep 30"], &log, "info", false)
            .unwrap();
        hung.signal(Signal::STOP).unwrap();
        assert!(hung.running(), "a stopped process still runs");
        let started = Instant::now();
        hung.stop(Duration::from_millis(200)).await;
        assert!(!hung.running());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(
            hung.signal(Signal::TERM),
            Err(ProcessError::Exited { .. })
        ));
    }
}
