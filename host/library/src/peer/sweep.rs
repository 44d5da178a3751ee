//! Staged `.part` files of incoming transfers that nobody finishes: a sender
//! that gave up (its stall bound passed, it crashed, a streamed snapshot is
//! never offered again) leaves what it sent in the staging folder, up to a
//! whole database. A part no transfer has written for twice the stall bound
//! (at least 10 s) and whose lock nobody holds is removed, with its lock,
//! when the link starts and then every such interval.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::state::{Inner, PartLocks};

/// How long a part may go unwritten before it counts as abandoned.
pub(super) fn abandoned_after(transfer_stall: Duration) -> Duration {
    (transfer_stall * 2).max(Duration::from_secs(10))
}

/// Sweep the link's staging folder now and every [`abandoned_after`], for
/// as long as the link lives.
pub(super) async fn sweep_loop(inner: Weak<Inner>) {
    loop {
        let Some(link) = inner.upgrade() else {
            return;
        };
        let idle = abandoned_after(link.config.transfer_stall);
        let swept = {
            let link = link.clone();
            tokio::task::spawn_blocking(move || {
                sweep_abandoned(&link.config.staging, idle, &link.part_locks)
            })
            .await
            .unwrap_or_default()
        };
        for (path, bytes) in swept {
            tracing::info!(file = %path.display(), bytes, "removed an incoming transfer nobody finished");
        }
        drop(link);
        tokio::time::sleep(idle).await;
    }
}

/// Remove the `incoming-ID.part` files in `staging` that have not been
/// written for `idle` and whose transfer's lock nobody holds, and forget
/// every lock nobody holds; what was removed, with its size.
pub(super) fn sweep_abandoned(
    staging: &Path,
    idle: Duration,
    locks: &PartLocks,
) -> Vec<(PathBuf, u64)> {
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir(staging) else {
        return removed;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("incoming-"))
            .and_then(|n| n.strip_suffix(".part"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let unwritten = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default();
        if unwritten < idle {
            continue;
        }
        // Under the map's lock: an offer for this id either holds its lock
        // already (left alone) or comes after and finds no part.
        let mut locks = locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.get(&id).is_some_and(|l| Arc::strong_count(l) > 1) {
            continue;
        }
        locks.remove(&id);
        if std::fs::remove_file(entry.path()).is_ok() {
            removed.push((entry.path(), meta.len()));
        }
    }
    locks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|_, l| Arc::strong_count(l) > 1);
    removed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    fn part(dir: &Path, id: u64, age: Duration) -> PathBuf {
        let path = dir.join(format!("incoming-{id:016x}.part"));
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn only_parts_unwritten_for_long_and_unlocked_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let abandoned = part(dir.path(), 1, hour);
        let recent = part(dir.path(), 2, Duration::ZERO);
        let held = part(dir.path(), 3, hour);
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"not a transfer").unwrap();
        let locks: PartLocks = Mutex::new(HashMap::new());
        let holder = Arc::new(tokio::sync::Mutex::new(()));
        {
            let mut map = locks.lock().unwrap();
            map.insert(1, Arc::new(tokio::sync::Mutex::new(())));
            map.insert(3, holder.clone());
            // A lock left by a transfer that never staged a part.
            map.insert(9, Arc::new(tokio::sync::Mutex::new(())));
        }
        let removed = sweep_abandoned(dir.path(), Duration::from_secs(60), &locks);
        assert_eq!(removed, vec![(abandoned.clone(), 4096)]);
        assert!(!abandoned.exists());
        assert!(recent.exists() && held.exists() && other.exists());
        let mut left: Vec<u64> = locks.lock().unwrap().keys().copied().collect();
        left.sort();
        assert_eq!(left, vec![3]);
    }
}
