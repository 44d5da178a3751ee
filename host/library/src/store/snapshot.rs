//! Consistent copies with SQLite's online backup API, and integrity checks.

use std::path::Path;
use std::time::Instant;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// What a snapshot copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Size of the copy in bytes.
    pub size: u64,
    /// Pages copied.
    pub pages: u64,
    /// How long the copy took, in milliseconds.
    pub duration_ms: u64,
    /// When the copy began: every transaction committed before it is in the copy.
    pub taken_at_ms: u64,
}

/// Outcome of `PRAGMA integrity_check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    /// SQLite answered `ok`.
    pub ok: bool,
    /// Up to 20 problems SQLite reported.
    pub problems: Vec<String>,
    /// Pages in the file.
    pub page_count: u64,
}

/// Copy everything `src` can see into a new database file at `dest`, in one
/// step, so the copy is one consistent read transaction.
pub(super) fn backup(src: &Connection, dest: &Path) -> Result<SnapshotStats, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: dest.to_path_buf(),
        error: source,
    };
    let started = Instant::now();
    let taken_at_ms = super::unix_ms();
    let mut out = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    let pages = {
        let backup = Backup::new(src, &mut out).map_err(err)?;
        loop {
            match backup.step(-1).map_err(err)? {
                StepResult::Done => break,
                // Busy or locked: the source is being checkpointed; try again.
                StepResult::More | StepResult::Busy | StepResult::Locked => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        backup.progress().pagecount as u64
    };
    // The copy is a standalone file: no WAL, fully synced.
    out.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .map_err(err)?;
    out.close().map_err(|(_, e)| err(e))?;
    let file = std::fs::File::open(dest).map_err(|source| StoreError::Io {
        what: "opening",
        path: dest.to_path_buf(),
        error: source,
    })?;
    file.sync_all().map_err(|source| StoreError::Io {
        what: "syncing",
        path: dest.to_path_buf(),
        error: source,
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(SnapshotStats {
        size,
        pages,
        duration_ms: started.elapsed().as_millis() as u64,
        taken_at_ms,
    })
}

/// Open `path` read-only, never following a symlink in its last component.
fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .map_err(|error| StoreError::Sqlite {
        path: path.to_path_buf(),
        error,
    })
}

/// Open `path` read-only (never following a symlink in its last component) and
/// run `PRAGMA integrity_check`.
pub fn integrity_check(path: &Path) -> Result<IntegrityReport, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        error: source,
    };
    let conn = open_read_only(path)?;
    let lines: Vec<String> = (|| {
        let mut stmt = conn.prepare("PRAGMA integrity_check(20)")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    })()
    .map_err(err)?;
    let page_count: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(err)?;
    let ok = lines.len() == 1 && lines[0] == "ok";
    Ok(IntegrityReport {
        ok,
        problems: if ok { Vec::new() } else { lines },
        page_count: page_count as u64,
    })
}

/// What a database holds for one device incarnation: every event up to
/// `contiguous` is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct DeviceMark {
    /// The device.
    pub device_id: u32,
    /// Its log incarnation.
    pub incarnation: u64,
    /// The contiguous watermark.
    pub contiguous: u64,
}

/// The per-device contiguous watermarks recorded in the database at `path`,
/// opened read-only.
pub(crate) fn device_marks(path: &Path) -> Result<Vec<DeviceMark>, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        error: source,
    };
    let conn = open_read_only(path)?;
    let mut stmt = conn
        .prepare("SELECT device_id, incarnation, contiguous FROM device_logs")
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(DeviceMark {
                device_id: r.get(0)?,
                incarnation: r.get::<_, i64>(1)? as u64,
                contiguous: r.get::<_, i64>(2)? as u64,
            })
        })
        .map_err(err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
}
