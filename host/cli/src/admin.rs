//! `standby status` and `standby promote`: ask a running node over its admin
//! endpoint (its owner-only Unix socket, or with `--remote` its TCP port).

use std::path::Path;

use anyhow::Result;

use standby_host::api::{render_status, render_timeline, AdminClient, AdminError};
use standby_host::config;

fn client(profile: &Path, site: &str, remote: bool) -> Result<AdminClient> {
    let loaded = config::load(profile, &[])?;
    if remote {
        Ok(AdminClient::for_site_remote(&loaded, site)?)
    } else {
        Ok(AdminClient::for_site(&loaded, site)?)
    }
}

/// `standby status PROFILE --site NAME [--json] [--remote]`.
pub(crate) fn status(profile: &Path, site: &str, json: bool, remote: bool) -> Result<()> {
    let s = client(profile, site, remote)?.status()?;
    if json {
        println!("{s}");
    } else {
        print!("{}", render_status(&s));
    }
    Ok(())
}

/// `standby promote PROFILE --site NAME [--force] [--remote]`.
pub(crate) fn promote(profile: &Path, site: &str, force: bool, remote: bool) -> Result<()> {
    let client = client(profile, site, remote)?;
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
