//! The live database held in one transaction's state while something reads
//! it from start to end: a snapshot file is copied from it
//! ([`super::snapshot`]), and a snapshot streamed to the peer is read from
//! it directly, with no copy on this node's disk.
//!
//! How the main file is pinned (WAL mode): with the write lock held for a
//! moment (no commit can happen), the WAL is written back into the main
//! file (a passive checkpoint that must get through every frame), and a
//! read transaction begins on a connection of the pin's own; then the write
//! lock is let go. SQLite never writes into the main file a frame past the
//! end of a running reader's snapshot, and every frame up to it is there
//! already, so the main file stays that state while writers go on into the
//! WAL, until the read transaction ends.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::marks::{read_device_marks, DeviceMark};
use super::{io_err, JournalMode, Store, StoreError};

/// The main file of a WAL-mode database held in one transaction's state:
/// while this lives, writers go on into the WAL and the main file's first
/// [`PinnedSnapshot::len`] bytes do not change. Dropping it lets go.
pub struct PinnedSnapshot {
    /// The connection whose read transaction pins the main file.
    reader: Mutex<Connection>,
    file: File,
    path: PathBuf,
    len: u64,
    pages: u64,
    taken_at_ms: u64,
}

impl std::fmt::Debug for PinnedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedSnapshot")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

impl PinnedSnapshot {
    /// Pin the database at `path`; `Ok(None)` when it cannot be pinned in
    /// one transaction's state (the write lock not free within a second, a
    /// reader holding part of the WAL back, a main file shorter than the
    /// pages it should hold).
    pub(super) fn pin(path: &Path, busy_timeout: Duration) -> Result<Option<Self>, StoreError> {
        let sqlite = |error| StoreError::Sqlite {
            path: path.to_path_buf(),
            error,
        };
        let taken_at_ms = super::unix_ms();
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        reader.busy_timeout(busy_timeout).map_err(sqlite)?;
        let Some((pages, page_size)) =
            pin_checkpointed(path, &reader, busy_timeout).map_err(sqlite)?
        else {
            return Ok(None);
        };
        let len = pages * page_size;
        let file = File::open(path).map_err(io_err("opening", path))?;
        let file_len = file
            .metadata()
            .map_err(io_err("reading size of", path))?
            .len();
        if file_len < len {
            // Not what a checkpointed main file looks like.
            return Ok(None);
        }
        Ok(Some(Self {
            reader: Mutex::new(reader),
            file,
            path: path.to_path_buf(),
            len,
            pages,
            taken_at_ms,
        }))
    }

    /// Bytes of the snapshot.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the snapshot has no bytes (never, for a database).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pages of the snapshot.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// When it was pinned: every transaction committed before is in it.
    pub fn taken_at_ms(&self) -> u64 {
        self.taken_at_ms
    }

    /// The live database's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The main file (its first [`PinnedSnapshot::len`] bytes are the
    /// snapshot, but for the header's journal bytes, see
    /// [`PinnedSnapshot::read_at`]).
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Fill `buf` from `offset` (less only at the snapshot's end) with the
    /// bytes of the snapshot as a standalone file: the header says rollback
    /// journal (bytes 18 and 19 set to 1), so the copy needs no `-wal`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let want = (self.len.saturating_sub(offset)).min(buf.len() as u64) as usize;
        let buf = &mut buf[..want];
        self.file.read_exact_at(buf, offset)?;
        for (at, byte) in STANDALONE_HEADER {
            if let Some(i) = at.checked_sub(offset).filter(|i| *i < want as u64) {
                buf[i as usize] = byte;
            }
        }
        Ok(want)
    }

    /// The per-device watermarks the snapshot holds.
    pub(crate) fn device_marks(&self) -> Result<Vec<DeviceMark>, StoreError> {
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        read_device_marks(&reader).map_err(|error| StoreError::Sqlite {
            path: self.path.clone(),
            error,
        })
    }

    /// Let the main file go.
    pub(super) fn release(self) -> Result<(), StoreError> {
        let reader = self.reader.into_inner().unwrap_or_else(|p| p.into_inner());
        reader
            .execute_batch("COMMIT")
            .map_err(|error| StoreError::Sqlite {
                path: self.path.clone(),
                error,
            })
    }
}

/// The header bytes a standalone copy has in place of the live file's
/// (offset, value): file format write and read versions 1, rollback
/// journal (as `PRAGMA journal_mode = DELETE` sets them).
pub(super) const STANDALONE_HEADER: [(u64, u8); 2] = [(18, 1), (19, 1)];

impl Store {
    /// Pin the live database for a snapshot read straight from it (a
    /// snapshot streamed to the peer). `Ok(None)` when it cannot be pinned:
    /// not in WAL mode, frozen (the freeze holds the write lock), a reader
    /// holding the WAL back, the write lock not free within a second. The
    /// caller then takes a snapshot file ([`Store::snapshot_to`]).
    pub fn pin_snapshot(&self) -> Result<Option<PinnedSnapshot>, StoreError> {
        if self.options.journal != JournalMode::Wal || self.is_frozen() {
            return Ok(None);
        }
        PinnedSnapshot::pin(&self.path, self.options.busy_timeout)
    }
}

/// Longest wait for the write lock before a WAL-mode snapshot falls back to
/// the online backup (which needs no lock).
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Write the WAL back into the main file with no commit possible
/// meanwhile, and begin a read transaction on `reader` while that holds;
/// the database's page count and page size as that transaction sees them.
/// `None` (no transaction left open) when the write lock was not free
/// within [`LOCK_WAIT`] or a reader held part of the WAL back.
fn pin_checkpointed(
    path: &Path,
    reader: &Connection,
    busy_timeout: Duration,
) -> rusqlite::Result<Option<(u64, u64)>> {
    let locker = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    locker.busy_timeout(busy_timeout.min(LOCK_WAIT))?;
    match locker.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => {}
        Err(e) if is_busy(&e) => return Ok(None),
        Err(e) => return Err(e),
    }
    // No commit can happen now. A connection inside a transaction cannot
    // checkpoint, so the reader does it before it begins its own. Another
    // connection's checkpoint (a writer's automatic one) may be running: a
    // passive checkpoint does not wait for it, so try again until it ends.
    let until = Instant::now() + busy_timeout.min(LOCK_WAIT);
    loop {
        let (busy, log, done): (i64, i64, i64) =
            reader.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        if busy == 0 && done == log {
            break;
        }
        if busy == 0 || Instant::now() >= until {
            // A reader older than this moment holds frames back (or the
            // other checkpoint does not end).
            tracing::debug!(
                busy,
                frames = log,
                written = done,
                "the WAL could not be written back whole"
            );
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    reader.execute_batch("BEGIN")?;
    let pinned = (|| {
        reader.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        let pages: i64 = reader.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let size: i64 = reader.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok((pages as u64, size as u64))
    })();
    if pinned.is_err() {
        let _ = reader.execute_batch("ROLLBACK");
    }
    // Dropping the locker ends its transaction: writers go on, into the WAL.
    drop(locker);
    pinned.map(Some)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
