//! Seeding the standby from a snapshot: when the change log no longer holds
//! (or never held) what the standby needs next, the active node sends it a
//! snapshot of the database instead (streamed from the live database, no
//! copy on the active node's disk); the standby checks and installs it,
//! and the host makes it applied through the snapshot's newest change. The
//! standby says `seeded` with that position and the stream goes on from it.
//! An empty standby is seeded the same way.

use standby_plugin_sdk::caps::{db, files, peer};
use standby_plugin_sdk::{Error, ReceivedFile, Result};

/// Tag of a seed file.
pub const TAG: &str = "seed";
/// How long the active node waits for `seeded` before it seeds again.
pub const WAIT_MS: u64 = 120_000;

/// Active: send a snapshot of the live database; its size.
pub fn send(now: u64) -> Result<u64> {
    let sent = peer::send_snapshot(&format!("seed-{now}.db"), TAG)?;
    if sent.receipt.sha256 != sent.sha256 {
        return Err(Error::Other(format!(
            "the peer stored the seed with checksum {}, not {}",
            sent.receipt.sha256, sent.sha256
        )));
    }
    Ok(sent.size)
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
    // The host checked the bytes end to end (the sender's SHA-256 against
    // what this node stored) before it handed the file over.
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
