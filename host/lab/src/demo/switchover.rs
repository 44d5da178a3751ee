//! The demo's planned switchover (`--fault switchover`): A is asked through
//! its admin socket (the operator's channel) to hand the service over to B,
//! with the devices and the application writing; afterwards A is B's
//! standby, and the check holds it to losing nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;
use standby_host::api::{AdminClient, AdminError};

/// Ask site A (`onsite`) to hand the service over to B (`dr`); its report.
pub(super) async fn request(profile: &Path) -> Result<Value> {
    let profile = profile.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let loaded = standby_host::config::load(&profile, &[])
            .with_context(|| format!("loading {}", profile.display()))?;
        let client = AdminClient::for_site(&loaded, "onsite")?;
        match client.switchover("dr") {
            Ok(report) => Ok(report),
            Err(AdminError::Refused(why)) => anyhow::bail!("the switchover did not happen: {why}"),
            Err(e) => Err(e.into()),
        }
    })
    .await
    .context("the switchover request's thread")?
}

/// A consistent copy of A's database now (read-only, `VACUUM INTO`): A
/// keeps running as B's standby, so its live files are not copied as they
/// are.
pub(super) fn copy_a(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("onsite").join("biostar2.db");
    let dest = dir.join("a-at-switchover.db");
    let _ = std::fs::remove_file(&dest);
    let conn =
        rusqlite::Connection::open_with_flags(&src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
    conn.execute("VACUUM INTO ?1", [dest.to_string_lossy()])
        .ok()?;
    Some(dest)
}

/// One line on what the switchover did, from its report.
pub(super) fn summary(report: &Value) -> String {
    format!(
        "switchover done: epoch {} -> {}, handed over in {} ms, no active server for {} ms",
        report["epoch_before"],
        report["epoch_after"],
        report["handover_ms"],
        report["no_active_server_ms"]
    )
}
