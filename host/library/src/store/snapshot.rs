//! Consistent copies of the live database, and integrity checks.
//!
//! In WAL mode a snapshot is a copy of the main file, taken while it holds
//! exactly one transaction's state and cannot change (pinned, see
//! [`super::pinned`]): the kernel copies it (hashed beside the copy, see
//! [`super::copy`]) while writers go on into the WAL. The copy's header says rollback
//! journal (bytes 18 and 19 set to 1, as `PRAGMA journal_mode = DELETE`
//! sets them): a standalone file without `-wal` or `-shm`.
//!
//! When the WAL cannot be written back whole (a reader older than that
//! moment holds part of it) or the write lock is not free within a second
//! (a freeze holds it), and in the rollback-exclusive mode, the snapshot is
//! SQLite's online backup, in one step.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::copy::{copy_cached, create, hash_file};
use super::marks::DeviceMark;
use super::pinned::{PinnedSnapshot, STANDALONE_HEADER};
use super::stamp::FileStamp;
use super::{io_err, StoreError};

/// How a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMethod {
    /// The main file copied by the kernel under a pinned read transaction.
    FileCopy,
    /// SQLite's online backup API.
    OnlineBackup,
}

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
    /// SHA-256 of the copy as written (hex).
    pub sha256: String,
    /// The copy's stamp once synced: `sha256` holds while the file keeps it.
    pub stamp: FileStamp,
    /// How it was taken.
    pub method: SnapshotMethod,
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

/// The WAL-mode snapshot of the database at `path` as a copy of its main
/// file (see the module's notes). `Ok(None)`: the main file could not be
/// pinned in one transaction's state; nothing was written.
pub(super) fn copy_main_file(
    path: &Path,
    busy_timeout: Duration,
    dest: &Path,
) -> Result<Option<SnapshotStats>, StoreError> {
    let started = Instant::now();
    let Some(pinned) = PinnedSnapshot::pin(path, busy_timeout)? else {
        return Ok(None);
    };
    let (len, pages, taken_at_ms) = (pinned.len(), pinned.pages(), pinned.taken_at_ms());
    let out = create(dest).map_err(io_err("creating", dest))?;
    let standalone = |f: &File| {
        STANDALONE_HEADER
            .iter()
            .try_for_each(|(at, byte)| f.write_all_at(&[*byte], *at))
    };
    let sha256 = copy_cached(pinned.file(), &out, len, standalone)
        .map_err(io_err("copying the database to", dest))?;
    // The copy is done: the main file may change again.
    pinned.release()?;
    let stamp = FileStamp::of(&out).map_err(io_err("reading", dest))?;
    Ok(Some(SnapshotStats {
        size: len,
        pages,
        duration_ms: started.elapsed().as_millis() as u64,
        taken_at_ms,
        sha256,
        stamp,
        method: SnapshotMethod::FileCopy,
    }))
}

/// Copy everything `src` can see into a new database file at `dest` with
/// SQLite's online backup, in one step, so the copy is one consistent read
/// transaction; then sync and hash it.
pub(super) fn backup(src: &Connection, dest: &Path) -> Result<SnapshotStats, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: dest.to_path_buf(),
        error: source,
    };
    let started = Instant::now();
    let taken_at_ms = super::unix_ms();
    drop(create(dest).map_err(io_err("creating", dest))?);
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
    let file = File::open(dest).map_err(io_err("opening", dest))?;
    file.sync_all().map_err(io_err("syncing", dest))?;
    let (size, sha256) = hash_file(&file).map_err(io_err("reading", dest))?;
    let stamp = FileStamp::of(&file).map_err(io_err("reading", dest))?;
    Ok(SnapshotStats {
        size,
        pages,
        duration_ms: started.elapsed().as_millis() as u64,
        taken_at_ms,
        sha256,
        stamp,
        method: SnapshotMethod::OnlineBackup,
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

/// The per-device contiguous watermarks recorded in the database at `path`,
/// opened read-only.
pub(crate) fn device_marks(path: &Path) -> Result<Vec<DeviceMark>, StoreError> {
    let conn = open_read_only(path)?;
    super::marks::read_device_marks(&conn).map_err(|error| StoreError::Sqlite {
        path: path.to_path_buf(),
        error,
    })
}
