//! Snapshots of the live database and atomic installs of a copy in its
//! place. An install puts the copy next to the live file (copied, see
//! [`super::copy`], or moved there when the caller hands the file over), synced,
//! checked, and renames it over the live file, then syncs the directory:
//! the database is never a half-written file. A copy checked with
//! [`Store::check_copy`] and not changed since is not checked again: one
//! integrity check of what is installed, not two.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use super::copy::{copy_direct, create};
use super::snapshot::{self, integrity_check, IntegrityReport, SnapshotStats};
use super::stamp::FileStamp;
use super::{capture, io_err, open_writer, sibling, JournalMode, Store, StoreError};

/// Copies that passed their integrity check, by stamp (the newest few).
#[derive(Debug, Default)]
pub(super) struct Checked(Mutex<VecDeque<FileStamp>>);

/// Checked copies remembered at most.
const REMEMBERED: usize = 8;

impl Checked {
    fn remember(&self, stamp: FileStamp) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|s| *s != stamp);
        if all.len() >= REMEMBERED {
            all.pop_front();
        }
        all.push_back(stamp);
    }

    fn holds(&self, stamp: &FileStamp) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(stamp)
    }
}

impl Store {
    /// Take a consistent copy of the live database into `dest` (a new
    /// file), synced, with its SHA-256. In WAL mode writers keep running: the
    /// main file is copied while a read transaction pins it
    /// (falling back to SQLite's online backup when it cannot be pinned);
    /// either way the copy holds exactly the transactions committed before
    /// it began. In the rollback-exclusive mode the online backup runs
    /// through the writer connection. On failure `dest` is removed.
    pub fn snapshot_to(&self, dest: &Path) -> Result<SnapshotStats, StoreError> {
        let taken = match self.options.journal {
            // Frozen: nothing can be written, but the pin would wait for the
            // write lock the freeze holds; the online backup does not.
            JournalMode::Wal if self.is_frozen() => self.backup_to(dest),
            JournalMode::Wal => {
                match snapshot::copy_main_file(&self.path, self.options.busy_timeout, dest) {
                    Ok(Some(stats)) => Ok(stats),
                    Ok(None) => self.backup_to(dest),
                    Err(e) => Err(e),
                }
            }
            JournalMode::RollbackExclusive => {
                let guard = self.lock();
                let conn = guard.as_ref().ok_or_else(|| StoreError::Detached {
                    path: self.path.clone(),
                })?;
                snapshot::backup(conn, dest)
            }
        };
        if taken.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        taken
    }

    /// The online backup through a reader of its own.
    fn backup_to(&self, dest: &Path) -> Result<SnapshotStats, StoreError> {
        let reader = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.sqlite(e))?;
        reader
            .busy_timeout(self.options.busy_timeout)
            .map_err(|e| self.sqlite(e))?;
        snapshot::backup(&reader, dest)
    }

    /// [`integrity_check`] of a copy to be installed, remembered: installing
    /// the same file, unchanged (same [`FileStamp`]), does not check it again.
    pub fn check_copy(&self, path: &Path) -> Result<IntegrityReport, StoreError> {
        let before = FileStamp::of_path(path).map_err(io_err("reading", path))?;
        let report = integrity_check(path)?;
        if report.ok && FileStamp::of_path(path).ok() == Some(before) {
            self.checked.remember(before);
        }
        Ok(report)
    }

    /// Replace the live database with the copy at `src`, atomically: the copy
    /// is checked (unless [`Store::check_copy`] passed it and it has not
    /// changed since), copied next to the live file (with direct writes: the
    /// page cache does not fill with a second copy), synced, and renamed
    /// over it, so the database is never a half-written file. `src` is left
    /// in place.
    pub fn install_from(&self, src: &Path) -> Result<(), StoreError> {
        self.install_from_unless(src, || false)
    }

    /// [`Store::install_from`], given up (the live database untouched) when
    /// `abandoned` says so at the last moment before the live database is
    /// replaced.
    pub fn install_from_unless(
        &self,
        src: &Path,
        abandoned: impl Fn() -> bool,
    ) -> Result<(), StoreError> {
        let staged = sibling(&self.path, ".installing");
        let copied = (|| {
            let from = File::open(src).map_err(io_err("opening", src))?;
            let before = FileStamp::of(&from).map_err(io_err("reading", src))?;
            if !self.checked.holds(&before) {
                // Checked here, where it is likely in the page cache (the
                // copy written next is not); the copy is of the same bytes.
                refuse_unless_sound(src, src)?;
            }
            let out = create(&staged).map_err(io_err("creating", &staged))?;
            copy_direct(&from, &out, &staged, before.len).map_err(io_err("copying to", &staged))?;
            let after = FileStamp::of(&from).map_err(io_err("reading", src))?;
            Ok(before == after)
        })();
        let checked = match copied {
            Ok(checked) => checked,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        };
        self.put_in_place(src, &staged, checked, abandoned)
    }

    /// Replace the live database with the file at `src` by moving it there
    /// (a rename when it is on the live database's filesystem, a copy
    /// otherwise), synced, checked (unless [`Store::check_copy`] passed it
    /// unchanged), renamed over the live file. `src` is consumed: on
    /// success it is the live database; on failure it is removed and the
    /// live database is untouched.
    pub fn install_moving(&self, src: &Path) -> Result<(), StoreError> {
        self.install_moving_unless(src, || false)
    }

    /// [`Store::install_moving`], given up like [`Store::install_from_unless`].
    pub fn install_moving_unless(
        &self,
        src: &Path,
        abandoned: impl Fn() -> bool,
    ) -> Result<(), StoreError> {
        let staged = sibling(&self.path, ".installing");
        match std::fs::rename(src, &staged) {
            Ok(()) => {}
            // Another filesystem (EXDEV): copy, then let the source go.
            Err(e) if e.raw_os_error() == Some(18) => {
                let installed = self.install_from_unless(src, &abandoned);
                let _ = std::fs::remove_file(src);
                return installed;
            }
            Err(e) => return Err(io_err("moving", src)(e)),
        }
        let synced = (|| {
            let file = File::open(&staged).map_err(io_err("opening", &staged))?;
            file.sync_all().map_err(io_err("syncing", &staged))?;
            FileStamp::of(&file).map_err(io_err("reading", &staged))
        })();
        let stamp = match synced {
            Ok(stamp) => stamp,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        };
        let checked = self.checked.holds(&stamp);
        self.put_in_place(src, &staged, checked, abandoned)
    }

    /// The end of an install: `staged` (next to the live file, synced) is
    /// checked unless `checked`, made this node's, and renamed over the live
    /// file. On failure `staged` is removed; `src` names the copy in errors.
    fn put_in_place(
        &self,
        src: &Path,
        staged: &Path,
        checked: bool,
        abandoned: impl Fn() -> bool,
    ) -> Result<(), StoreError> {
        let discard = |e: StoreError| {
            let _ = std::fs::remove_file(staged);
            e
        };
        if !checked {
            refuse_unless_sound(staged, src).map_err(discard)?;
        }
        // A copy with a change log: it becomes this node's as a standby
        // (applied through its position) before it is put in place.
        capture::prepare_install(staged)
            .map_err(|error| StoreError::Capture {
                path: staged.to_path_buf(),
                error: Box::new(error),
            })
            .map_err(discard)?;
        let mut guard = self.lock();
        if abandoned() {
            drop(guard);
            return Err(discard(StoreError::Abandoned(self.path.clone())));
        }
        // Close the live connection so no WAL or journal is left behind.
        if let Some(conn) = guard.take() {
            conn.close().map_err(|(_, e)| self.sqlite(e))?;
        }
        for suffix in ["-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(sibling(&self.path, suffix));
        }
        let renamed = std::fs::rename(staged, &self.path).map_err(|source| StoreError::Io {
            what: "renaming the installed copy over",
            path: self.path.clone(),
            error: source,
        });
        if renamed.is_err() {
            let _ = std::fs::remove_file(staged);
        }
        sync_parent(&self.path);
        // Reopen whatever is now in place (the new copy, or the old file if the rename failed).
        *guard = Some(open_writer(&self.path, &self.options)?);
        renamed
    }
}

/// Run the integrity check on `path`; a copy that fails it (named `src` in
/// the error) is refused.
fn refuse_unless_sound(path: &Path, src: &Path) -> Result<(), StoreError> {
    let report = integrity_check(path)?;
    if report.ok {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        path: src.to_path_buf(),
        problems: report.problems.join("; "),
    })
}

fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}
