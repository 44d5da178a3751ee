//! What the demo reads while it runs: the nodes' status over their admin
//! endpoints, the fleet's JSON files, and copies of databases.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;
use standby_host::api::AdminClient;

/// Ask a node's admin endpoint (blocking HTTP in a worker thread).
pub(super) async fn status(addr: SocketAddr) -> Option<Value> {
    tokio::task::spawn_blocking(move || AdminClient::new(addr).status().ok())
        .await
        .ok()
        .flatten()
}

/// Poll a node's status every 100 ms until `ok` holds.
pub(super) async fn wait_status(
    addr: SocketAddr,
    limit: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_status_every(addr, limit, Duration::from_millis(100), what, ok)
        .await
        .map(|(s, _)| s)
}

/// Poll a node's status every `every` until `ok` holds; the status, and the
/// moment (by this process's clock) the answer that satisfied `ok` arrived.
pub(super) async fn wait_status_every(
    addr: SocketAddr,
    limit: Duration,
    every: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<(Value, Instant)> {
    let until = Instant::now() + limit;
    loop {
        if let Some(s) = status(addr).await {
            if ok(&s) {
                return Ok((s, Instant::now()));
            }
        }
        if Instant::now() > until {
            bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A JSON file the fleet writes (None while it does not exist yet).
pub(super) fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// How many devices the fleet's summary has on `node`.
pub(super) fn on(summary: &Value, node: &str) -> usize {
    summary["summary"]["by_server"][node].as_u64().unwrap_or(0) as usize
}

pub(super) fn text(v: &Value) -> String {
    v.as_str()
        .map(String::from)
        .unwrap_or_else(|| v.to_string())
}

/// Copy a database with its WAL (the writer is stopped or gone).
pub(super) fn copy_database(src: &Path, dest: &Path) -> Option<PathBuf> {
    std::fs::copy(src, dest).ok()?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", src.display()));
        if from.exists() {
            let _ = std::fs::copy(&from, format!("{}{suffix}", dest.display()));
        }
    }
    Some(dest.to_path_buf())
}

/// Copy the snapshot B restored from (named in its promotion report) before
/// B's own schedule prunes it: the check counts what it lacked.
pub(super) fn keep_restored_copy(dir: &Path, restored_from: &str) -> Option<PathBuf> {
    let name = restored_from
        .split_whitespace()
        .find(|w| w.starts_with("biostar2-") && w.ends_with(".db"))?;
    let src = dir.join("dr").join("snapshots").join(name);
    let dest = dir.join("restored-copy.db");
    std::fs::copy(&src, &dest).ok()?;
    Some(dest)
}
