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
mod allocator;
mod args;
mod enrol;

use args::{DemoArgs, SimulateArgs};

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
    /// The change stream (case 3) on a standby: go on after it stopped at a
    /// batch that could not be applied (`standby status` shows it).
    #[command(subcommand)]
    Replication(ReplicationCommand),
    /// Ask a running node for its role, epoch, lease, peer, witness, plugins,
    /// last copy and last failover timeline.
    Status {
        /// Which node.
        #[command(flatten)]
        node: admin::NodeArgs,
        /// Print the status as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Make a node active now: through the witness when the profile has one;
    /// without a witness only with --force (make sure the other node is down).
    Promote {
        /// Which node.
        #[command(flatten)]
        node: admin::NodeArgs,
        /// Promote without a witness.
        #[arg(long)]
        force: bool,
    },
    /// Move the service to the other site on purpose, losing nothing: the
    /// active site stops acknowledging devices, holds the application's
    /// writes, hands the rest of the data over, and once the other site has
    /// confirmed it holds all of it, gives it the lease. If the other site
    /// does not confirm within `[cluster] switchover_timeout_ms`, nothing is
    /// handed over and the active site goes on.
    Switchover(admin::SwitchoverArgs),
    /// Run the whole failover on this machine: a witness, two sites on
    /// loopback, a DNS server and a fleet of devices; inject a fault into the
    /// active site and check that nothing was lost.
    Demo(DemoArgs),
    /// The demo's application: adds and changes users in the node's
    /// database (STANDBY_DB, set by the node that runs it as a service on the
    /// active site) and logs every commit to STANDBY_DATA_DIR/app-writes.log.
    DemoWriter {
        /// The demo's working directory: the writer writes only to a
        /// database inside it.
        #[arg(long)]
        workdir: PathBuf,
        /// Writes (one transaction each) per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
    },
    /// Run the witness: the third-site service that grants one node at a
    /// time a lease with a new epoch (automatic failover needs one).
    Witness {
        /// Where nodes reach it (ip:port).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Where it keeps its epoch (witness.json, fsynced before every grant).
        #[arg(long)]
        data_dir: PathBuf,
        /// The pre-shared key file the nodes use too: base64 of at least 32
        /// bytes, owner-only (`standby keygen FILE` makes one).
        #[arg(long)]
        psk_file: PathBuf,
        /// Longest lease granted, ms; after a restart a recorded lease is
        /// honoured this long.
        #[arg(long, default_value_t = 10_000)]
        max_ttl_ms: u64,
    },
    /// Make a cluster key: 32 random bytes, base64, in a new owner-only
    /// (0600) file, for `[cluster] psk_file` and `standby witness --psk-file`.
    Keygen {
        /// The key file to write.
        file: PathBuf,
        /// Replace the file if it exists (the nodes and the witness must
        /// then all be given the new key).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ReplicationCommand {
    /// Apply the stopped batch again (after fixing its cause).
    Retry {
        /// Which node (the standby).
        #[command(flatten)]
        node: admin::NodeArgs,
    },
    /// Set the change that failed aside in a file under the node's
    /// set-aside/ directory (with its batch, for the record) and apply the
    /// rest of the batch.
    Skip {
        /// Which node (the standby).
        #[command(flatten)]
        node: admin::NodeArgs,
    },
}

#[derive(Subcommand)]
enum DevicesCommand {
    /// Run a fleet of simulated devices (separate from any server) until
    /// --duration passes or SIGTERM/Ctrl-C; then drain and print a summary.
    Simulate(Box<SimulateArgs>),
    /// Show each device connected to a running node: its address, the
    /// server entry it dialled, its prioritized server list, when it was
    /// last heard and the events it still holds.
    List {
        /// Which node.
        #[command(flatten)]
        node: admin::NodeArgs,
        /// Print one JSON object `{"devices": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Push a new prioritized server list to connected devices; each device
    /// stores it and says what it stored.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["device", "all"])))]
    SetServers {
        /// Which node.
        #[command(flatten)]
        node: admin::NodeArgs,
        /// One device.
        #[arg(long)]
        device: Option<u32>,
        /// Every device connected to the site.
        #[arg(long)]
        all: bool,
        /// The list: host:port[/tls] entries separated by commas, first
        /// tried first (as `devices simulate --endpoints`).
        servers: String,
    },
    /// Issue device credentials: the next key generation of each device,
    /// written to --out (owner-only) and recorded in the profile's register
    /// (`devices.auth.register`). Creates the enrolment key
    /// (`devices.auth.key_file`) if it is missing. Enrolling a device again
    /// rotates its key; the older generation stays valid until it expires
    /// or is revoked.
    Enroll {
        /// The profile file.
        profile: PathBuf,
        /// Devices: ids and ranges, e.g. `5` or `1-100,205`.
        #[arg(long)]
        device: String,
        /// Where to write the credentials (a JSON file the devices, or
        /// `devices simulate --credentials`, read).
        #[arg(long)]
        out: PathBuf,
        /// Days the credentials are valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Revoke device credentials: nodes refuse them at the next handshake
    /// and close links that use them within a second.
    Revoke {
        /// The profile file.
        profile: PathBuf,
        /// Devices: ids and ranges, e.g. `5` or `1-100,205`.
        #[arg(long)]
        device: String,
        /// Only this key generation (default: every generation).
        #[arg(long)]
        generation: Option<u32>,
    },
    /// List the credentials in the profile's register: issued, expires,
    /// revoked.
    Credentials {
        /// The profile file.
        profile: PathBuf,
        /// Print one JSON object `{"credentials": [...], "summary": {...}}`.
        #[arg(long)]
        json: bool,
    },
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
    allocator::return_large_blocks_to_the_system();
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log) {
        eprintln!("standby: {}", report(&e));
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
            eprintln!("standby: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: the library's
/// errors name their cause in their own message and also keep it as their
/// source, so a cause whose text is already there is not repeated.
fn report(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
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
        Command::Devices(DevicesCommand::Simulate(args)) => {
            standby_lab::simulate::run((*args).into(), shutdown_signal).await
        }
        Command::Devices(DevicesCommand::List { node, json }) => {
            tokio::task::spawn_blocking(move || admin::devices(&node, json)).await?
        }
        Command::Devices(DevicesCommand::SetServers {
            node,
            device,
            all: _,
            servers,
        }) => {
            tokio::task::spawn_blocking(move || admin::set_servers(&node, device, &servers)).await?
        }
        Command::Devices(DevicesCommand::Enroll {
            profile,
            device,
            out,
            days,
            force,
        }) => enrol::enroll(&profile, &device, &out, days, force),
        Command::Devices(DevicesCommand::Revoke {
            profile,
            device,
            generation,
        }) => enrol::revoke(&profile, &device, generation),
        Command::Devices(DevicesCommand::Credentials { profile, json }) => {
            enrol::list(&profile, json)
        }
        Command::Witness {
            listen,
            data_dir,
            psk_file,
            max_ttl_ms,
        } => witness(listen, data_dir, psk_file, max_ttl_ms).await,
        Command::Status { node, json } => {
            tokio::task::spawn_blocking(move || admin::status(&node, json)).await?
        }
        Command::Replication(ReplicationCommand::Retry { node }) => {
            tokio::task::spawn_blocking(move || admin::replication(&node, false)).await?
        }
        Command::Replication(ReplicationCommand::Skip { node }) => {
            tokio::task::spawn_blocking(move || admin::replication(&node, true)).await?
        }
        Command::Switchover(args) => {
            tokio::task::spawn_blocking(move || admin::switchover(&args)).await?
        }
        Command::Promote { node, force } => {
            tokio::task::spawn_blocking(move || admin::promote(&node, force)).await?
        }
        Command::Demo(args) => demo(args).await,
        Command::DemoWriter { workdir, rate } => {
            let options = standby_lab::app_writer::WriterOptions::from_env(&workdir, rate)?;
            match tokio::task::spawn_blocking(move || standby_lab::app_writer::run(&options))
                .await?? {}
        }
        Command::Keygen { file, force } => keygen(&file, force),
    }
}

/// `standby keygen FILE [--force]`.
fn keygen(file: &std::path::Path, force: bool) -> Result<()> {
    standby_host::secret_file::write_secret(
        file,
        &format!("{}\n", standby_host::peer::Psk::generate()),
        force,
    )
    .with_context(|| {
        if file.exists() && !force {
            format!(
                "{} exists; keep it, or replace it with --force",
                file.display()
            )
        } else {
            format!("writing {}", file.display())
        }
    })?;
    eprintln!(
        "wrote a {}-byte key to {} (owner only); give the same file to both nodes and the witness",
        standby_host::peer::MIN_KEY_LEN,
        file.display()
    );
    Ok(())
}

async fn run(profile: PathBuf, site: String, overrides: Vec<(String, toml::Value)>) -> Result<()> {
    let loaded = config::load(&profile, &overrides)?;
    let node = Node::builder(loaded).site(site).start().await?;
    node.run_until(shutdown_signal()).await?;
    Ok(())
}

/// `standby demo`: the one-line JSON report is the last line on stdout. On
/// SIGTERM or Ctrl-C the run is dropped, which kills and reaps every process
/// it started.
async fn demo(args: DemoArgs) -> Result<()> {
    let json = args.json;
    let outcome = tokio::select! {
        outcome = standby_lab::demo::run(args.into()) => outcome?,
        _ = shutdown_signal() => anyhow::bail!("stopped by a signal; every process the demo started is stopped"),
    };
    if json {
        println!("{}", serde_json::to_string(&outcome)?);
    }
    Ok(())
}

/// Wait for SIGTERM or Ctrl-C.
async fn shutdown_signal() {
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

#[cfg(test)]
mod tests {

    /// An error like the library's: its cause in its message and as its source.
    #[derive(Debug)]
    struct Unreadable {
        source: std::io::Error,
    }

    impl std::fmt::Display for Unreadable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read the profile: {}", self.source)
        }
    }

    impl std::error::Error for Unreadable {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_is_said_once_and_a_cause_not_yet_said_is_added() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Unreadable { source: io }).context("checking p.toml");
        assert_eq!(
            super::report(&e),
            "checking p.toml: cannot read the profile: no such file"
        );
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io).context("opening the store");
        assert_eq!(super::report(&e), "opening the store: no such file");
    }
}
