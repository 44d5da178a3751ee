//! Seeding the standby from a snapshot: when the change log no longer holds
//! (or never held) what the standby needs next, the active node sends it a
//! snapshot of the database instead; the standby checks and installs it,
//! and the host makes it applied through the snapshot's newest change. The
//! standby says `seeded` with that position and the stream goes on from it.
//! An empty standby is seeded the same way.

use standby_plugin_sdk::caps::{db, files, peer};
use standby_plugin_sdk::{Error, FileRef, ReceivedFile, Result};

/// The root snapshots are written to and received in (the peer's inbox).
pub const ROOT: &str = "inbox";
/// Tag of a seed file: `seed SHA256`.
pub const TAG: &str = "seed";
/// How long the active node waits for `seeded` before it seeds again.
pub const WAIT_MS: u64 = 120_000;

/// Active: take a snapshot and send it; its size.
pub fn send(now: u64) -> Result<u64> {
    let file = FileRef {
        root: String::from(ROOT),
        path: format!("seed-{now}.db"),
    };
    let info = db::snapshot(&file)?;
    let sent = peer::send_file(&file, &format!("{TAG} {}", info.sha256));
    let _ = files::remove(&file);
    let receipt = sent?;
    if receipt.sha256 != info.sha256 {
        return Err(Error::Other(format!(
            "the peer stored the seed with checksum {}, not {}",
            receipt.sha256, info.sha256
        )));
    }
    Ok(info.size)
}

/// Standby: check and install a received seed (moved into place: nothing
/// keeps it); the position it holds.
pub fn install(f: &ReceivedFile) -> Result<u64> {
    let result = check_and_install(f);
    if result.is_err() {
        // Refused before the install took the file: it is of no use.
        let _ = files::remove(&f.file);
    }
    result
}

fn check_and_install(f: &ReceivedFile) -> Result<u64> {
    let want = f.tag.strip_prefix(TAG).map(str::trim).unwrap_or_default();
    if want != f.sha256 {
        return Err(Error::InvalidArgument(format!(
            "seed {}: checksum {} is not the sender's {want}",
            f.file.path, f.sha256
        )));
    }
    let report = db::integrity_check(&f.file)?;
    if !report.ok {
        return Err(Error::InvalidArgument(format!(
            "seed {}: integrity check failed: {}",
            f.file.path,
            report.problems.join("; ")
        )));
    }
    db::install_moving(&f.file)?;
    db::applied_mark()
}
