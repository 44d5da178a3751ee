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
    }
}

async fn run(profile: PathBuf, site: String, overrides: Vec<(String, toml::Value)>) -> Result<()> {
    let loaded = config::load(&profile, &overrides)?;
    let node = Node::builder(loaded).site(site).start().await?;
    node.run_until(shutdown_signal()).await?;
    Ok(())
}

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
