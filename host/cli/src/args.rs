//! The options of `standby demo` and `standby devices simulate`, as flags;
//! the lab runs them.

use std::path::PathBuf;

use clap::ValueEnum;
use standby_device::agent::FailAction;
use standby_lab::demo::{DemoOptions, DemoProfile, Fault};
use standby_lab::simulate::SimulateOptions;

/// Options of `standby demo`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DemoArgs {
    /// The deployment case to run.
    #[arg(long, value_enum, default_value_t = ProfileArg::Case3)]
    profile: ProfileArg,
    /// Simulated devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Access events per second across the fleet.
    #[arg(long, default_value_t = 200.0)]
    event_rate: f64,
    /// Seconds of normal running before the fault, counted once every device
    /// is connected to site A.
    #[arg(long, default_value_t = 8.0)]
    kill_after: f64,
    /// The fault injected into site A.
    #[arg(long, value_enum, default_value_t = FaultArg::Kill)]
    fault: FaultArg,
    /// Seconds the devices keep generating after the fault.
    #[arg(long, default_value_t = 8.0)]
    run_after: f64,
    /// Print the outcome as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Keep the working directory (logs, databases, device logs) and print its path.
    #[arg(long)]
    keep: bool,
    /// Log filter of the child processes (their logs stay in the working
    /// directory), e.g. `info,standby_device::agent=debug`.
    #[arg(long, default_value = "info")]
    child_log: String,
    /// Device authentication: `on` enrols every device and they prove
    /// their keys; `off` runs the profile with `devices.auth.mode = "off"`
    /// (to compare the cost).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    device_auth: Switch,
    /// Writes per second of the application (the demo's writer, which adds
    /// and changes users on the active site); 0 runs without it.
    #[arg(long, default_value_t = 100.0)]
    app_write_rate: f64,
}

/// On or off.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// The deployment cases the demo can run.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum ProfileArg {
    /// Case 1: scheduled verified copies, DNS failover.
    Case1,
    /// Case 3: change data capture in real time, DNS failover.
    Case3,
}

/// The fault injected into site A.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum FaultArg {
    /// SIGKILL: the process is gone, its sockets reset.
    Kill,
    /// SIGSTOP: the process hangs with its sockets open; only keep-alives tell.
    Hang,
    /// Not a fault: a planned switchover to B (`standby switchover`) under
    /// the same load; nothing may be lost.
    Switchover,
}

impl From<DemoArgs> for DemoOptions {
    fn from(a: DemoArgs) -> Self {
        Self {
            profile: match a.profile {
                ProfileArg::Case1 => DemoProfile::Case1,
                ProfileArg::Case3 => DemoProfile::Case3,
            },
            devices: a.devices,
            event_rate: a.event_rate,
            kill_after: a.kill_after,
            fault: match a.fault {
                FaultArg::Kill => Fault::Kill,
                FaultArg::Hang => Fault::Hang,
                FaultArg::Switchover => Fault::Switchover,
            },
            run_after: a.run_after,
            keep: a.keep,
            child_log: a.child_log,
            device_auth: a.device_auth == Switch::On,
            app_write_rate: a.app_write_rate,
        }
    }
}

/// Options of `standby devices simulate`.
// The doc comments are clap's help text, not HTML (`DIR/<id>.log`).
#[allow(rustdoc::invalid_html_tags)]
#[derive(clap::Args, Debug)]
pub(crate) struct SimulateArgs {
    /// Number of devices.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Server endpoints in priority order: host:port[/tls],...
    #[arg(long)]
    endpoints: String,
    /// Access events per second across the whole fleet.
    #[arg(long, default_value_t = 10.0)]
    event_rate: f64,
    /// Where each device keeps its log (DIR/<id>.log, .audit, .state).
    #[arg(long)]
    data_dir: PathBuf,
    /// DNS server (ip:port) the fleet asks for domain endpoints.
    #[arg(long)]
    resolver: Option<std::net::SocketAddr>,
    /// Local addresses to dial from, comma-separated, used in turn by the
    /// devices (e.g. 127.0.1.1,127.0.1.2 on loopback: one address holds at
    /// most ~28,000 links to one server port).
    #[arg(long, value_delimiter = ',')]
    source_ips: Vec<std::net::IpAddr>,
    /// CA certificate (PEM) trusted for /tls endpoints.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Device credentials (`standby devices enroll --out FILE`): each
    /// device authenticates with its own (without: none does).
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Id of the first device.
    #[arg(long, default_value_t = 1)]
    first_id: u32,
    /// Keep-alive interval, ms.
    #[arg(long, default_value_t = 10_000)]
    keepalive_ms: u64,
    /// Dead-link timeout, ms.
    #[arg(long, default_value_t = 30_000)]
    dead_link_ms: u64,
    /// Connect + handshake timeout, ms.
    #[arg(long, default_value_t = 3_000)]
    connect_timeout_ms: u64,
    /// First reconnect delay scale, ms (jittered, doubling).
    #[arg(long, default_value_t = 200)]
    backoff_initial_ms: u64,
    /// Largest reconnect delay, ms.
    #[arg(long, default_value_t = 5_000)]
    backoff_max_ms: u64,
    /// Return to a higher-priority server once it has answered for this long, ms (default: stay).
    #[arg(long)]
    fail_back_hold_ms: Option<u64>,
    /// What server-dependent requests do without a server.
    #[arg(long, value_enum, default_value_t = FailActionArg::None)]
    fail_action: FailActionArg,
    /// Stop generating after this many seconds (default: run until signalled).
    #[arg(long)]
    duration: Option<f64>,
    /// After stopping, wait at most this long for every event to be acknowledged.
    #[arg(long, default_value_t = 10.0)]
    drain_secs: f64,
    /// Write every device's status (JSON) to this file every
    /// `--status-every` seconds and when the fleet stops.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Seconds between writes of the status file (with 10,000 devices each
    /// write costs a few tens of milliseconds of CPU).
    #[arg(long, default_value_t = 1)]
    status_every: u32,
    /// Write the fleet's summary (JSON, no per-device detail) to this file
    /// once a second and when the fleet stops.
    #[arg(long)]
    summary_file: Option<PathBuf>,
    /// Print the summary as one JSON line on stdout.
    #[arg(long)]
    json: bool,
}

/// What server-dependent requests do without a server.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum FailActionArg {
    /// No door open.
    None,
    /// Open, log as unverified.
    Soft,
    /// Deny as a violation.
    Hard,
}

impl From<SimulateArgs> for SimulateOptions {
    fn from(a: SimulateArgs) -> Self {
        Self {
            count: a.count,
            endpoints: a.endpoints,
            event_rate: a.event_rate,
            data_dir: a.data_dir,
            resolver: a.resolver,
            source_ips: a.source_ips,
            ca: a.ca,
            credentials: a.credentials,
            first_id: a.first_id,
            keepalive_ms: a.keepalive_ms,
            dead_link_ms: a.dead_link_ms,
            connect_timeout_ms: a.connect_timeout_ms,
            backoff_initial_ms: a.backoff_initial_ms,
            backoff_max_ms: a.backoff_max_ms,
            fail_back_hold_ms: a.fail_back_hold_ms,
            fail_action: match a.fail_action {
                FailActionArg::None => FailAction::None,
                FailActionArg::Soft => FailAction::Soft,
                FailActionArg::Hard => FailAction::Hard,
            },
            duration: a.duration,
            drain_secs: a.drain_secs,
            status_file: a.status_file,
            status_every: a.status_every,
            summary_file: a.summary_file,
            json: a.json,
        }
    }
}
