//! `standby demo`: the whole failover on one machine. A witness, site A
//! (127.0.0.1) and site B (127.0.0.2) run as child processes of the standby
//! binary with the case 3 profile (change data capture; or case 1, scheduled
//! copies); a built-in DNS server serves the service name; a fleet of
//! simulated devices (another child) dials A first and the name second; the
//! application (the demo's writer, adding and changing users) runs on the
//! active site as its node's service. Once every device is on A and
//! `kill_after` seconds have passed, site A as a whole (node and writer) is
//! killed (SIGKILL) or hung (SIGSTOP); B takes over and starts its writer;
//! the devices come back to B through DNS. Then the independent checker
//! compares every device's own log, and A's writer's log, with B's
//! database, opened read-only.
//!
//! The run is a sequence of phases that tests can call one by one:
//! [`Demo::start`], [`Demo::connect`], [`Demo::fault`], [`Demo::failover`],
//! [`Demo::drain`] and [`Demo::check`]; [`run`] calls them all.

mod app;
mod observe;
mod phases;
mod report;
mod setup;
mod switchover;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

pub use phases::Demo;
pub use report::Outcome;

/// How the demo runs (the flags of `standby demo`).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The deployment case to run.
    pub profile: DemoProfile,
    /// Simulated devices.
    pub devices: usize,
    /// Access events per second across the fleet.
    pub event_rate: f64,
    /// Seconds of normal running before the fault, counted once every device
    /// is connected to site A.
    pub kill_after: f64,
    /// The fault injected into site A.
    pub fault: Fault,
    /// Seconds the devices keep generating after the fault.
    pub run_after: f64,
    /// Keep the working directory and name it in the outcome.
    pub keep: bool,
    /// Log filter of the child processes (their logs stay in the working
    /// directory).
    pub child_log: String,
    /// Devices authenticate (enrolled, each with its own key). Off: the
    /// profile's `devices.auth.mode = "off"`, for comparing the cost.
    pub device_auth: bool,
    /// Writes per second of the application writer on the active site (0:
    /// no writer).
    pub app_write_rate: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            profile: DemoProfile::Case3,
            devices: 100,
            event_rate: 200.0,
            kill_after: 8.0,
            fault: Fault::Kill,
            run_after: 8.0,
            keep: false,
            device_auth: true,
            app_write_rate: 100.0,
            child_log: "info".into(),
        }
    }
}

/// The deployment cases the demo can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DemoProfile {
    /// Case 1: scheduled verified copies, DNS failover.
    Case1,
    /// Case 3: change data capture in real time, DNS failover.
    Case3,
}

/// The fault injected into site A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// SIGKILL: the process is gone, its sockets reset.
    Kill,
    /// SIGSTOP: the process hangs with its sockets open; only keep-alives tell.
    Hang,
    /// Not a fault: a planned switchover to B through A's admin socket
    /// (`standby switchover`); nothing may be lost.
    Switchover,
}

/// Progress lines on stderr, each with the time since the demo started.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    started: Instant,
}

impl Progress {
    /// Progress counted from now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    /// Say `text` on stderr.
    pub fn say(&self, text: impl AsRef<str>) {
        eprintln!(
            "[{:>6.2}s] {}",
            self.started.elapsed().as_secs_f64(),
            text.as_ref()
        );
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// Run the whole demo in a fresh working directory (kept with `keep`, or
/// when the run fails) and return its outcome.
pub async fn run(options: DemoOptions) -> Result<Outcome> {
    let progress = Progress::new();
    let tmp = tempfile::Builder::new()
        .prefix("standby-demo-")
        .tempdir()
        .context("creating the demo's working directory")?;
    let dir = tmp.path().to_path_buf();
    let result = run_in(&options, &dir, progress).await;
    if options.keep || result.is_err() {
        let kept = tmp.keep();
        eprintln!("standby demo: working directory kept at {}", kept.display());
    }
    result
}

/// Every phase in turn, in `dir`.
async fn run_in(options: &DemoOptions, dir: &Path, progress: Progress) -> Result<Outcome> {
    let mut demo = Demo::start(options.clone(), dir, progress).await?;
    demo.connect().await?;
    demo.fault().await?;
    demo.failover().await?;
    demo.drain().await?;
    let mut outcome = demo.check()?;
    outcome.dir = options.keep.then(|| PathBuf::from(dir));
    outcome.print_summary();
    Ok(outcome)
}
