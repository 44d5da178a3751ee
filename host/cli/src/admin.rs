//! `standby status`, `standby promote` and `standby devices list|set-servers`:
//! ask a running node over its admin endpoint (its owner-only Unix socket,
//! or with `--remote` its TCP port).

use std::path::PathBuf;

use anyhow::Result;

use standby_host::api::{render_status, render_timeline, AdminClient, AdminError};
use standby_host::config;

/// Which running node a command asks, and how.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NodeArgs {
    /// The profile file.
    profile: PathBuf,
    /// Which site to ask.
    #[arg(long)]
    site: String,
    /// Ask over the site's TCP admin endpoint (`admin_listen`; HTTPS with
    /// the profile's `admin_tls_cert` and `admin_token_file` when it names
    /// them) instead of its owner-only admin socket.
    #[arg(long)]
    remote: bool,
}

fn client(node: &NodeArgs) -> Result<AdminClient> {
    let loaded = config::load(&node.profile, &[])?;
    if node.remote {
        Ok(AdminClient::for_site_remote(&loaded, &node.site)?)
    } else {
        Ok(AdminClient::for_site(&loaded, &node.site)?)
    }
}

/// `standby status PROFILE --site NAME [--json] [--remote]`.
pub(crate) fn status(node: &NodeArgs, json: bool) -> Result<()> {
    let s = client(node)?.status()?;
    if json {
        println!("{s}");
    } else {
        print!("{}", render_status(&s));
    }
    Ok(())
}

/// `standby promote PROFILE --site NAME [--force] [--remote]`.
pub(crate) fn promote(node: &NodeArgs, force: bool) -> Result<()> {
    let site = &node.site;
    let client = client(node)?;
    if force {
        eprintln!(
            "standby promote --force: if no witness is configured, nothing stops the other node if it is still running; make sure it is down"
        );
    }
    match client.promote(force) {
        Ok(t) => {
            println!("{}", render_timeline(&t));
            Ok(())
        }
        Err(AdminError::Refused(why)) => Err(anyhow::anyhow!("{site} was not promoted: {why}")),
        Err(e) => Err(e.into()),
    }
}

/// `standby switchover PROFILE --to NAME`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SwitchoverArgs {
    /// The profile file.
    profile: PathBuf,
    /// The site to hand the service to (the command asks the other site,
    /// which must be the active one).
    #[arg(long)]
    to: String,
    /// Ask over the active site's TCP admin endpoint (HTTPS with the
    /// profile's `admin_tls_cert` and `admin_token_file`) instead of its
    /// owner-only admin socket.
    #[arg(long)]
    remote: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `standby switchover PROFILE --to NAME [--remote] [--json]`.
pub(crate) fn switchover(args: &SwitchoverArgs) -> Result<()> {
    let loaded = config::load(&args.profile, &[])?;
    let to = &args.to;
    let Some((from, _)) = loaded.other_site(to) else {
        let sites: Vec<&String> = loaded.profile.sites.keys().collect();
        anyhow::bail!("`{to}` is not a site of this profile (its sites: {sites:?})");
    };
    if !loaded.profile.sites.contains_key(to) {
        let sites: Vec<&String> = loaded.profile.sites.keys().collect();
        anyhow::bail!("`{to}` is not a site of this profile (its sites: {sites:?})");
    }
    let client = if args.remote {
        AdminClient::for_site_remote(&loaded, from)?
    } else {
        AdminClient::for_site(&loaded, from)?
    };
    eprintln!("switchover: asking {from} to hand the service over to {to}");
    let r = match client.switchover(to) {
        Ok(r) => r,
        Err(AdminError::Refused(why)) => {
            anyhow::bail!("the switchover from {from} to {to} did not happen: {why}")
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{r}");
        return Ok(());
    }
    println!(
        "switchover {from} -> {to}: epoch {} -> {}; handed over in {} ms; no active server for {} ms",
        r["epoch_before"],
        r["epoch_after"],
        r["handover_ms"],
        r["no_active_server_ms"]
    );
    println!("{}", render_timeline(&r["timeline"]));
    if r["epoch_after"].is_null() {
        anyhow::bail!("{to} did not announce itself active in time; `standby status` on both sites shows where they are")
    }
    Ok(())
}

/// `standby replication retry|skip PROFILE --site NAME [--remote]`.
pub(crate) fn replication(node: &NodeArgs, skip: bool) -> Result<()> {
    let site = &node.site;
    let what = if skip { "skip" } else { "retry" };
    let r = match client(node)?.replication(skip) {
        Ok(r) => r,
        Err(AdminError::Refused(why)) => {
            return Err(anyhow::anyhow!("{site}: replication {what} refused: {why}"))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(file) = r["set_aside"].as_str() {
        println!("set the failing change aside in {file}");
    }
    match r["stopped_again"].as_object() {
        Some(stop) => Err(anyhow::anyhow!(
            "{site}: the change stream stopped again at batch {}..{} (change {}): {}",
            stop["first_seq"],
            stop["last_seq"],
            stop["failed_seq"],
            stop["cause"].as_str().unwrap_or("?")
        )),
        None => {
            println!(
                "{site}: the change stream goes on, applied through change {}",
                r["applied_through"]
            );
            Ok(())
        }
    }
}

/// `standby devices list PROFILE --site NAME [--json] [--remote]`.
pub(crate) fn devices(node: &NodeArgs, json: bool) -> Result<()> {
    let site = &node.site;
    let answer = client(node)?.devices()?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let devices = answer["devices"].as_array().cloned().unwrap_or_default();
    println!("{} device(s) connected to {site}", devices.len());
    for d in devices {
        let servers: Vec<&str> = d["servers"]
            .as_array()
            .map(|s| s.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        println!(
            "  device {:<8} from {:<21} dialled {:<21} holds {:>6} event(s), last seen {} ms ago; servers: {}{}",
            d["device_id"],
            d["peer"].as_str().unwrap_or("?"),
            d["dialled"].as_str().unwrap_or("?"),
            d["events_held"],
            now_ms().saturating_sub(d["last_seen_ms"].as_u64().unwrap_or(0)),
            servers.join(", "),
            d["error"]
                .as_str()
                .map(|e| format!(" (list unreadable: {e})"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

/// `standby devices set-servers PROFILE --site NAME (--device ID | --all) LIST [--remote]`.
pub(crate) fn set_servers(node: &NodeArgs, device: Option<u32>, servers: &str) -> Result<()> {
    let site = &node.site;
    let devices = device.map(|d| vec![d]);
    let answer = match client(node)?.set_servers(devices.as_deref(), servers) {
        Ok(a) => a,
        Err(AdminError::Refused(why)) => {
            return Err(anyhow::anyhow!("the server list was not pushed: {why}"))
        }
        Err(e) => return Err(e.into()),
    };
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    let mut failed = 0;
    for r in &results {
        match r["error"].as_str() {
            None => println!(
                "device {}: stored {}",
                r["device_id"],
                r["stored"]
                    .as_array()
                    .map(|s| s
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            Some(e) => {
                failed += 1;
                println!("device {}: not changed: {e}", r["device_id"]);
            }
        }
    }
    if results.is_empty() {
        return Err(anyhow::anyhow!("no device is connected to {site}"));
    }
    if failed > 0 {
        return Err(anyhow::anyhow!(
            "{failed} of {} device(s) did not store the list",
            results.len()
        ));
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
