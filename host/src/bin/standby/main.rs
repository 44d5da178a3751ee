//! `standby`: the command-line front of the host library. It parses
//! arguments, sets up logging, and calls the library; results go to stdout,
//! logs to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use standby_host::config;
use standby_host::node::{self, Node};
use standby_host::plugin::runtime::{PluginSource, RuntimeOptions};
use standby_host::plugin::{builtin, componentize, inspect, PluginRuntime};

mod admin;
mod demo;

/// Keeps an access-control server running through the loss of a site.
#[derive(Parser)]
#[command(name = "standby", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "STANDBY_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,standby_host=debug`).
    #[arg(long, global = true, default_value = "info", env = "STANDBY_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a profile (the profile describes both sites; --site says which this is).
    Run {
        /// The profile file.
        profile: PathBuf,
        /// Which site of the profile this process is.
        #[arg(long)]
        site: String,
        /// Override a profile key: --set store.journal=wal (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = config::parse_override)]
        overrides: Vec<(String, toml::Value)>,
    },
    /// Validate a profile (keys, types, plugin files, worlds, grants) and print the effective configuration.
    CheckConfig {
        /// The profile file.
        profile: PathBuf,
        /// Override a profile key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = config::parse_override)]
        overrides: Vec<(String, toml::Value)>,
    },
    /// Work with plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Simulated door devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Ask a running node for its role, epoch, lease, peer, witness, plugins,
    /// last copy and last failover timeline.
    Status {
        /// The profile file.
        profile: PathBuf,
        /// Which site to ask.
        #[arg(long)]
        site: String,
        /// Print the status as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Make a node active now: through the witness when the profile has one;
    /// without a witness only with --force (make sure the other node is down).
    Promote {
        /// The profile file.
        profile: PathBuf,
        /// Which site to promote.
        #[arg(long)]
        site: String,
        /// Promote without a witness.
        #[arg(long)]
        force: bool,
    },
    /// Run the whole failover on this machine: a witness, two sites on
    /// loopback, a DNS server and a fleet of devices; inject a fault into the
    /// active site and check that nothing was lost.
    Demo(demo::DemoArgs),
    /// Run the witness: the third-site service that grants one node at a
    /// time a lease with a new epoch (automatic failover needs one).
    Witness {
        /// Where nodes reach it (ip:port).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Where it keeps its epoch (witness.json, fsynced before every grant).
        #[arg(long)]
        data_dir: PathBuf,
        /// The pre-shared key file the nodes use too (at least 16 bytes).
        #[arg(long)]
        psk_file: PathBuf,
        /// Longest lease granted, ms; after a restart a recorded lease is
        /// honoured this long.
        #[arg(long, default_value_t = 10_000)]
        max_ttl_ms: u64,
    },
}

#[derive(Subcommand)]
enum DevicesCommand {
    /// Run a fleet of simulated devices (separate from any server) until
    /// --duration passes or SIGTERM/Ctrl-C; then drain and print a summary.
    Simulate(SimulateArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
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

#[derive(Clone, Copy, ValueEnum)]
enum FailActionArg {
    /// No door open.
    None,
    /// Open, log as unverified.
    Soft,
    /// Deny as a violation.
    Hard,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List the plugins built into this binary.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a component's world, imports and exports, and the grants it needs.
    Inspect {
        /// A component file, or builtin:NAME.
        path: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Wrap a core wasm module built with the plugin SDK into a component.
    Componentize {
        /// The core module (`target/wasm32-unknown-unknown/release/NAME.wasm`).
        core: PathBuf,
        /// Where to write the component.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn init_logging(format: LogFormat, filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad log filter `{filter}`"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log) {
        eprintln!("standby: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("standby: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("standby: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run {
            profile,
            site,
            overrides,
        } => run(profile, site, overrides).await,
        Command::CheckConfig { profile, overrides } => check_config(profile, overrides).await,
        Command::Plugin(p) => plugin(p).await,
        Command::Devices(DevicesCommand::Simulate(args)) => simulate(args).await,
        Command::Witness {
            listen,
            data_dir,
            psk_file,
            max_ttl_ms,
        } => witness(listen, data_dir, psk_file, max_ttl_ms).await,
        Command::Status {
            profile,
            site,
            json,
        } => tokio::task::spawn_blocking(move || admin::status(&profile, &site, json)).await?,
        Command::Promote {
            profile,
            site,
            force,
        } => tokio::task::spawn_blocking(move || admin::promote(&profile, &site, force)).await?,
        Command::Demo(args) => demo::run(args).await,
    }
}

async fn run(profile: PathBuf, site: String, overrides: Vec<(String, toml::Value)>) -> Result<()> {
    let loaded = config::load(&profile, &overrides)?;
    let node = Node::builder(loaded).site(site).start().await?;
    node.run_until(shutdown_signal()).await?;
    Ok(())
}

/// Wait for SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn witness(
    listen: std::net::SocketAddr,
    data_dir: PathBuf,
    psk_file: PathBuf,
    max_ttl_ms: u64,
) -> Result<()> {
    use standby_host::cluster::{Witness, WitnessConfig};
    let psk = standby_host::peer::Psk::from_file(&psk_file)?;
    let mut config = WitnessConfig::new(listen, data_dir, psk);
    config.max_ttl = std::time::Duration::from_millis(max_ttl_ms);
    let witness = Witness::start(config).await?;
    let (state, _) = witness.state().await;
    eprintln!(
        "standby witness: listening on {} (epoch {})",
        witness.local_addr(),
        state.epoch
    );
    shutdown_signal().await;
    Ok(())
}

async fn check_config(profile: PathBuf, overrides: Vec<(String, toml::Value)>) -> Result<()> {
    let loaded = config::load(&profile, &overrides)?;
    let runtime = PluginRuntime::new(RuntimeOptions {
        cache_dir: None,
        ..loaded.profile.plugins.clone()
    })?;
    let checks = node::check_plugins(&loaded, &runtime).await?;
    let effective =
        toml::to_string_pretty(&loaded.profile).context("rendering the effective configuration")?;
    println!("# effective configuration of {}", loaded.file.display());
    println!("{effective}");
    for c in &checks {
        let grants: Vec<&str> = c
            .capabilities
            .iter()
            .map(String::as_str)
            .filter(|c| *c != "log" && *c != "clock")
            .collect();
        println!(
            "# {} `{}` ({}): {}, uses {}",
            c.key,
            c.name,
            c.source,
            c.world,
            if grants.is_empty() {
                "no grants".to_string()
            } else {
                grants.join(", ")
            }
        );
    }
    eprintln!(
        "profile OK: {} ({} plugins checked)",
        loaded.file.display(),
        checks.len()
    );
    Ok(())
}

async fn plugin(command: PluginCommand) -> Result<()> {
    match command {
        PluginCommand::List { json } => {
            let runtime = PluginRuntime::new(RuntimeOptions::default())?;
            let mut rows = Vec::new();
            for name in builtin::names() {
                let (d, shape) = runtime
                    .probe(name, &PluginSource::Builtin(name.to_string()), None)
                    .await?;
                rows.push(serde_json::json!({
                    "name": format!("builtin:{name}"),
                    "version": d.version,
                    "world": shape.world.map(|w| w.name()),
                    "summary": d.summary,
                }));
            }
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for r in rows {
                    println!(
                        "{:<24} {:<22} {}",
                        r["name"].as_str().unwrap_or_default(),
                        r["world"].as_str().unwrap_or_default(),
                        r["summary"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        PluginCommand::Inspect { path, json } => {
            let runtime = Arc::new(PluginRuntime::new(RuntimeOptions::default())?);
            let bytes = match path.strip_prefix("builtin:") {
                Some(name) => builtin::get(name)
                    .with_context(|| {
                        format!(
                            "there is no built-in plugin `{name}` (built in: {})",
                            builtin::names().join(", ")
                        )
                    })?
                    .to_vec(),
                None => std::fs::read(&path).with_context(|| format!("cannot read {path}"))?,
            };
            let report = inspect::inspect(&runtime, &path, &bytes)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
        PluginCommand::Componentize { core, output } => {
            let bytes =
                std::fs::read(&core).with_context(|| format!("cannot read {}", core.display()))?;
            let component =
                componentize::componentize(&bytes).with_context(|| core.display().to_string())?;
            std::fs::write(&output, component)
                .with_context(|| format!("cannot write {}", output.display()))?;
            Ok(())
        }
    }
}

async fn simulate(args: SimulateArgs) -> Result<()> {
    use standby_host::device::agent::{AgentConfig, Backoff, FailAction, FailBack};
    use standby_host::device::fleet::{self, Fleet, FleetConfig};
    use std::time::Duration;

    let endpoints = fleet::parse_endpoints(&args.endpoints)?;
    let mut agent = AgentConfig::new(0, endpoints, &args.data_dir);
    agent.keepalive = Duration::from_millis(args.keepalive_ms);
    agent.dead_link = Duration::from_millis(args.dead_link_ms);
    agent.connect_timeout = Duration::from_millis(args.connect_timeout_ms);
    agent.request_timeout = Duration::from_millis(args.connect_timeout_ms);
    agent.backoff = Backoff {
        initial: Duration::from_millis(args.backoff_initial_ms),
        max: Duration::from_millis(args.backoff_max_ms),
        ..Backoff::default()
    };
    if let Some(hold) = args.fail_back_hold_ms {
        agent.fail_back = FailBack::Return {
            hold_down: Duration::from_millis(hold),
            probe_every: Duration::from_millis((hold / 4).clamp(50, 1_000)),
        };
    }
    agent.fail_action = match args.fail_action {
        FailActionArg::None => FailAction::None,
        FailActionArg::Soft => FailAction::Soft,
        FailActionArg::Hard => FailAction::Hard,
    };
    if let Some(ca) = &args.ca {
        agent.tls = Some(standby_host::device::tls::client_config(ca)?);
    }
    agent.log = fleet::simulated_log();
    agent.validate()?;
    let config = FleetConfig {
        count: args.count,
        first_id: args.first_id,
        event_rate: args.event_rate,
        data_dir: args.data_dir.clone(),
        resolver: args.resolver,
        sources: args.source_ips.clone(),
        agent,
    };
    let mut fleet = Fleet::start(&config).context("starting the fleet")?;
    fleet.generate(config.event_rate);
    tracing::info!(devices = args.count, endpoints = %args.endpoints, rate = args.event_rate, "fleet started");

    let stop = async {
        match args.duration {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(d)) => {}
                    _ = shutdown_signal() => {}
                }
            }
            None => shutdown_signal().await,
        }
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let full = ticks % args.status_every.max(1) == 0;
                ticks = ticks.wrapping_add(1);
                report(&fleet, &args, full);
            }
        }
    }
    fleet.stop_generating();
    tracing::info!("stopped generating; draining");
    let drained = tokio::select! {
        d = fleet.drain(Duration::from_secs_f64(args.drain_secs)) => d,
        _ = shutdown_signal() => false,
    };
    report(&fleet, &args, true);
    let summary = fleet.summary();
    if !drained {
        tracing::warn!(
            acked = summary.events_acked,
            logged = summary.events_logged,
            "not every event was acknowledged before the drain limit"
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "devices {} connected {} | access events {} | log entries {} acked {} pending {} | reconnects {} | requests answered {} failed {} (longest degraded {} ms)",
            summary.devices,
            summary.connected,
            summary.access_events,
            summary.events_logged,
            summary.events_acked,
            summary.events_pending,
            summary.reconnects,
            summary.requests_answered,
            summary.requests_failed,
            summary.longest_degraded_ms
        );
    }
    fleet.shutdown().await;
    Ok(())
}

/// Progress on stderr, the summary to the summary file, and (when `full`)
/// every device's status to the status file.
fn report(fleet: &standby_host::device::fleet::Fleet, args: &SimulateArgs, full: bool) {
    let s = fleet.summary();
    eprintln!(
        "connected {}/{} | events {} acked {} | reconnects {} | failed requests {}",
        s.connected, s.devices, s.events_logged, s.events_acked, s.reconnects, s.requests_failed
    );
    if let Some(path) = &args.summary_file {
        write_atomically(path, &serde_json::json!({ "summary": s }));
    }
    if let (Some(path), true) = (&args.status_file, full) {
        let body = serde_json::json!({ "summary": s, "devices": fleet.statuses() });
        write_atomically(path, &body);
    }
}

/// Replace `path` with `body` (written aside, then renamed over it).
fn write_atomically(path: &std::path::Path, body: &serde_json::Value) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, body.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .is_err()
    {
        tracing::warn!(file = %path.display(), "cannot write the status file");
    }
}
