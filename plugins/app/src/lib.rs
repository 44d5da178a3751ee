//! `app`: a failover action that runs the application (BioStar's server, or
//! the demo's writer) on the active node only. It is started when the node
//! becomes active and stopped when it stops being active (demotion, lease
//! lost, shutdown). Two ways, one per profile entry:
//!
//! - **service**: a long-running granted command the host supervises
//!   (`exec.start`/`exec.stop`): the host refuses to start it on a node that
//!   is not active, kills it with the node, and stops it whenever the node
//!   stops being active, whatever this plugin does;
//! - **commands**: granted commands run to completion (e.g. `systemctl start
//!   biostar2`, `systemctl stop biostar2`, `systemctl is-active biostar2`),
//!   for an application another supervisor runs.
//!
//! Settings:
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `service` | — | name of a command in this entry's `grants.exec`, run as a service |
//! | `start` | — | instead of `service`: a granted command that starts the application |
//! | `stop` | — | with `start` (required): a granted command that stops it |
//! | `check` | — | with `start` (optional): a granted command whose exit 0 means it runs |
//! | `stop_grace_ms` | 1000 | service: SIGTERM, then SIGKILL after this, 0..=60000 |
//! | `timeout_ms` | 30000 | commands: each is killed after this, 100..=600000 |

use standby_plugin_sdk::caps::exec;
use standby_plugin_sdk::{
    descriptor, ActionReport, Descriptor, Error, FailoverAction, NodeContext, Result, Settings,
};

/// The setting keys.
const KEYS: &[&str] = &[
    "service",
    "start",
    "stop",
    "check",
    "stop_grace_ms",
    "timeout_ms",
];

/// How the application is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A granted command the host supervises as a service.
    Service {
        /// The grant's name.
        name: String,
        /// SIGTERM, then SIGKILL after this many milliseconds.
        grace_ms: u32,
    },
    /// Granted commands run to completion.
    Commands {
        /// Starts the application.
        start: String,
        /// Stops it.
        stop: String,
        /// Exit 0 when it runs.
        check: Option<String>,
        /// Each command's time limit, milliseconds.
        timeout_ms: u32,
    },
}

impl Default for Mode {
    fn default() -> Self {
        Mode::Service {
            name: String::new(),
            grace_ms: 1000,
        }
    }
}

impl Mode {
    /// Check the settings; errors are `invalid-argument` naming the key.
    pub fn parse(settings: &Settings) -> Result<Self> {
        let unknown = settings.unknown_keys(KEYS);
        if !unknown.is_empty() {
            return Err(invalid(format!(
                "unknown setting(s) {}; known: {}",
                unknown.join(", "),
                KEYS.join(", ")
            )));
        }
        let name = |key: &str| -> Result<Option<String>> {
            match settings.text_opt(key)? {
                Some(t) if t.trim().is_empty() => {
                    Err(invalid(format!("setting `{key}` must not be empty")))
                }
                other => Ok(other.map(|t| String::from(t.trim()))),
            }
        };
        let grace_ms = settings.integer("stop_grace_ms", 1000, 0, 60_000)? as u32;
        let timeout_ms = settings.integer("timeout_ms", 30_000, 100, 600_000)? as u32;
        match (name("service")?, name("start")?, name("stop")?) {
            (Some(service), None, None) => {
                if settings.text_opt("check")?.is_some() {
                    return Err(invalid(String::from(
                        "setting `check` goes with `start`/`stop`; a service is checked by the host",
                    )));
                }
                Ok(Mode::Service {
                    name: service,
                    grace_ms,
                })
            }
            (None, Some(start), Some(stop)) => Ok(Mode::Commands {
                start,
                stop,
                check: name("check")?,
                timeout_ms,
            }),
            (None, Some(_), None) => Err(invalid(String::from(
                "setting `stop` is required with `start`: the application must be stoppable",
            ))),
            (Some(_), _, _) => Err(invalid(String::from(
                "set either `service` or `start` and `stop`, not both",
            ))),
            (None, _, _) => Err(invalid(String::from(
                "setting `service` (a granted command run as a service) or `start` and `stop` \
                 (granted commands) is required",
            ))),
        }
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// The host calls the plugin makes (a trait so tests can stand in).
pub trait Backend {
    /// `exec.start`.
    fn start(&mut self, name: &str) -> Result<u32>;
    /// `exec.stop`.
    fn stop(&mut self, name: &str, grace_ms: u32) -> Result<exec::ServiceState>;
    /// `exec.service`.
    fn service(&mut self, name: &str) -> Result<exec::ServiceState>;
    /// `exec.run`.
    fn run(&mut self, name: &str, timeout_ms: u32) -> Result<exec::Output>;
}

/// The real host.
pub struct Host;

impl Backend for Host {
    fn start(&mut self, name: &str) -> Result<u32> {
        exec::start(name, &[])
    }
    fn stop(&mut self, name: &str, grace_ms: u32) -> Result<exec::ServiceState> {
        exec::stop(name, grace_ms)
    }
    fn service(&mut self, name: &str) -> Result<exec::ServiceState> {
        exec::service(name)
    }
    fn run(&mut self, name: &str, timeout_ms: u32) -> Result<exec::Output> {
        exec::run(name, &[], timeout_ms)
    }
}

/// The plugin.
#[derive(Debug, Default)]
pub struct App {
    mode: Mode,
}

fn detail(key: &str, value: impl ToString) -> (String, String) {
    (String::from(key), value.to_string())
}

fn exit(state: &exec::ServiceState) -> String {
    match state.last_exit {
        Some(code) => format!("exit code {code}"),
        None if state.starts == 0 => String::from("never started"),
        None => String::from("killed by a signal"),
    }
}

/// Run a granted command; an error unless it exits 0.
fn run_ok(host: &mut impl Backend, name: &str, timeout_ms: u32) -> Result<String> {
    let out = host.run(name, timeout_ms)?;
    if out.timed_out {
        return Err(Error::Unavailable(format!(
            "`{name}` did not finish within {timeout_ms} ms"
        )));
    }
    match out.code {
        Some(0) => Ok(format!("`{name}` exit 0 in {} ms", out.duration_ms)),
        code => Err(Error::Other(format!(
            "`{name}` failed ({}): {}",
            code.map_or(String::from("killed"), |c| format!("exit {c}")),
            out.stderr.trim()
        ))),
    }
}

impl App {
    /// The checked settings.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// `activate` against `host`.
    pub fn activate_with(&self, host: &mut impl Backend) -> Result<ActionReport> {
        match &self.mode {
            Mode::Service { name, .. } => {
                let pid = host.start(name)?;
                Ok(ActionReport {
                    summary: format!("started `{name}` (pid {pid})"),
                    details: vec![detail("service", name), detail("pid", pid)],
                })
            }
            Mode::Commands {
                start, timeout_ms, ..
            } => Ok(ActionReport {
                summary: run_ok(host, start, *timeout_ms)?,
                details: vec![detail("command", start)],
            }),
        }
    }

    /// `deactivate` against `host`.
    pub fn deactivate_with(&self, host: &mut impl Backend) -> Result<ActionReport> {
        match &self.mode {
            Mode::Service { name, grace_ms } => {
                let state = host.stop(name, *grace_ms)?;
                Ok(ActionReport {
                    summary: format!("stopped `{name}` ({})", exit(&state)),
                    details: vec![detail("service", name), detail("starts", state.starts)],
                })
            }
            Mode::Commands {
                stop, timeout_ms, ..
            } => Ok(ActionReport {
                summary: run_ok(host, stop, *timeout_ms)?,
                details: vec![detail("command", stop)],
            }),
        }
    }

    /// `verify` against `host`.
    pub fn verify_with(&self, host: &mut impl Backend) -> Result<ActionReport> {
        match &self.mode {
            Mode::Service { name, .. } => {
                let state = host.service(name)?;
                if !state.running {
                    return Err(Error::Unavailable(format!(
                        "`{name}` is not running ({}; started {} times)",
                        exit(&state),
                        state.starts
                    )));
                }
                Ok(ActionReport {
                    summary: format!(
                        "`{name}` running (pid {}, up {} ms)",
                        state.pid.unwrap_or_default(),
                        state.uptime_ms
                    ),
                    details: vec![detail("service", name)],
                })
            }
            Mode::Commands {
                check: Some(check),
                timeout_ms,
                ..
            } => Ok(ActionReport {
                summary: run_ok(host, check, *timeout_ms)?,
                details: vec![detail("command", check)],
            }),
            Mode::Commands { check: None, .. } => Ok(ActionReport {
                summary: String::from("no `check` command set; nothing to verify"),
                details: Vec::new(),
            }),
        }
    }
}

impl FailoverAction for App {
    fn describe(&self) -> Descriptor {
        descriptor(
            "app",
            env!("CARGO_PKG_VERSION"),
            "runs the application on the active node only (started on promote, stopped on demote)",
        )
    }

    fn configure(&mut self, settings: &Settings) -> Result<()> {
        self.mode = Mode::parse(settings)?;
        Ok(())
    }

    fn activate(&mut self, _ctx: &NodeContext) -> Result<ActionReport> {
        self.activate_with(&mut Host)
    }

    fn deactivate(&mut self, _ctx: &NodeContext) -> Result<ActionReport> {
        self.deactivate_with(&mut Host)
    }

    fn verify(&mut self, _ctx: &NodeContext) -> Result<ActionReport> {
        self.verify_with(&mut Host)
    }
}

#[cfg(feature = "export")]
standby_plugin_sdk::export_action!(App);

#[cfg(test)]
mod tests;
