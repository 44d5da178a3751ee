//! The node's SQLite database (`biostar2.db`): schema, idempotent event ingest,
//! consistent snapshots (the main file copied by the kernel under a pinned
//! read transaction, or SQLite's online backup), integrity checks, and
//! atomic installation of a verified copy.
//!
//! The API is blocking; async callers run it with `tokio::task::spawn_blocking`.

mod capture;
mod copy;
mod freeze;
mod group;
mod ingest;
mod install;
mod marks;
mod pinned;
mod schema;
mod set_aside;
mod snapshot;
mod stamp;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use ingest::{handshake_tx, ingest_device_tx, ingest_tx, watermark_tx};

pub use capture::{ApplyProblem, CaptureError, Change, Position};
pub use freeze::Frozen;
pub(crate) use group::GroupWriter;
pub(crate) use marks::DeviceMark;
pub use pinned::PinnedSnapshot;
pub use set_aside::{SetAsideSummary, TableSummary, SET_ASIDE_DIR};
pub(crate) use snapshot::device_marks;
pub use snapshot::{integrity_check, IntegrityReport, SnapshotMethod, SnapshotStats};
pub use stamp::FileStamp;

/// How SQLite journals writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum JournalMode {
    /// Write-ahead log: readers and snapshots run beside the writer. For a
    /// database on a local disk.
    #[default]
    Wal,
    /// Rollback journal with exclusive locking: the only safe mode for a file on
    /// a network share (SQLite's WAL needs shared memory on one host). Only this
    /// process opens the file; snapshots are taken through the writer connection.
    RollbackExclusive,
}

/// Options for opening a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Journal mode.
    pub journal: JournalMode,
    /// How long a statement waits for a lock before failing.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            journal: JournalMode::Wal,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An install was abandoned before it replaced the live database (the
    /// call that asked for it was stopped).
    #[error("database {0}: the install was abandoned before it replaced the live database")]
    Abandoned(PathBuf),
    /// SQLite reported an error.
    #[error("database {path}: {error}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        error: rusqlite::Error,
    },
    /// A filesystem operation failed.
    #[error("{what} {path}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        error: std::io::Error,
    },
    /// The file is not a database this version understands.
    #[error("database {path}: {reason}")]
    Incompatible {
        /// The database file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A copy to be installed failed its integrity check.
    #[error("{path} failed its integrity check: {problems}")]
    Corrupt {
        /// The file checked.
        path: PathBuf,
        /// What SQLite reported.
        problems: String,
    },
    /// The store is detached (a shared file held by the other node).
    #[error("database {path} is not open on this node")]
    Detached {
        /// The database file.
        path: PathBuf,
    },
    /// A group of writes was rolled back because the node may no longer
    /// write (its lease ran out while the group was being written).
    #[error("database {path}: writes rolled back: this node may no longer write")]
    NotAllowed {
        /// The database file.
        path: PathBuf,
    },
    /// Change capture failed (capturing, reading or applying changes).
    #[error("database {path}: {error}")]
    Capture {
        /// The database file.
        path: PathBuf,
        /// What failed.
        #[source]
        error: Box<CaptureError>,
    },
}

/// One access event as a device logged it. The key (device, incarnation, seq)
/// makes ingest idempotent; `payload` is the event exactly as the device
/// encoded it, so an independent check can compare hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEvent {
    /// Device id.
    pub device_id: u32,
    /// The device's log incarnation (a reset device starts a new one).
    pub incarnation: u64,
    /// Per-device sequence within the incarnation, from 1.
    pub seq: u64,
    /// Event code (e.g. 0x1000 access granted, 0x3B00 TCP connected).
    pub event_code: u16,
    /// User involved, if any.
    pub user_id: Option<String>,
    /// When the device produced it, Unix milliseconds (device clock).
    pub occurred_at_ms: u64,
    /// The encoded event as stored in the device's log.
    pub payload: Vec<u8>,
}

/// One write of a group commit ([`Store::write_group`]).
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// A device's handshake (see [`Store::handshake`]).
    Handshake {
        /// Device id.
        device_id: u32,
        /// Device model.
        model: String,
        /// Firmware version.
        firmware: String,
        /// Log incarnation.
        incarnation: u64,
        /// Sequence up to which the device reports its events durable elsewhere.
        floor: u64,
    },
    /// One device's batch of events (see [`Store::ingest_device`]).
    Ingest {
        /// Device id.
        device_id: u32,
        /// Log incarnation.
        incarnation: u64,
        /// The events.
        events: Vec<AccessEvent>,
        /// The node storing them.
        received_by: String,
    },
}

/// What a [`Write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Written {
    /// The device incarnation's contiguous watermark after the handshake.
    Handshake(u64),
    /// The ingest outcome and the watermark after it.
    Ingest(IngestOutcome, u64),
}

/// Outcome of ingesting a batch of events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestOutcome {
    /// Newly stored events.
    pub inserted: usize,
    /// Events already present (same key); not stored again.
    pub duplicates: usize,
}

/// Statistics about the live database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbInfo {
    /// Journal mode SQLite reports.
    pub journal_mode: String,
    /// Main file size in bytes.
    pub size: u64,
    /// Number of stored access events.
    pub event_count: u64,
}

/// A user record, as used for server matching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id (BioStar user ids are strings of digits).
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// Card credential, if any.
    pub card: Option<String>,
    /// Disabled users never match.
    pub disabled: bool,
}

/// The node's database.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    options: StoreOptions,
    writer: Mutex<Option<Connection>>,
    /// Copies that passed [`Store::check_copy`], by stamp.
    checked: install::Checked,
    /// A [`Frozen`] holds the write lock.
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub fn open(path: impl Into<PathBuf>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.into();
        let conn = open_writer(&path, &options)?;
        Ok(Self {
            path,
            options,
            writer: Mutex::new(Some(conn)),
            checked: install::Checked::default(),
            frozen: Default::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            error: source,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        // A panic while holding the lock leaves the connection usable: SQLite
        // rolls back an unfinished transaction when the next one starts.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` with the writer connection.
    fn with_writer<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let mut guard = self.lock();
        let conn = guard.as_mut().ok_or_else(|| StoreError::Detached {
            path: self.path.clone(),
        })?;
        f(conn).map_err(|e| self.sqlite(e))
    }

    /// Store events idempotently, in one transaction. Events already present
    /// (same device, incarnation and sequence) are counted as duplicates. The
    /// contiguous watermark of every device incarnation touched advances in
    /// the same transaction.
    pub fn ingest(
        &self,
        events: &[AccessEvent],
        received_by: &str,
    ) -> Result<IngestOutcome, StoreError> {
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let outcome = ingest_tx(&tx, events, received_by)?;
            tx.commit()?;
            Ok(outcome)
        })
    }

    /// Store one device's batch and return the outcome with the device
    /// incarnation's contiguous watermark after the commit.
    pub fn ingest_device(
        &self,
        device_id: u32,
        incarnation: u64,
        events: &[AccessEvent],
        received_by: &str,
    ) -> Result<(IngestOutcome, u64), StoreError> {
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let done = ingest_device_tx(&tx, device_id, incarnation, events, received_by)?;
            tx.commit()?;
            Ok(done)
        })
    }

    /// The contiguous watermark of a device incarnation (0 when nothing is stored).
    pub fn watermark(&self, device_id: u32, incarnation: u64) -> Result<u64, StoreError> {
        self.with_writer(|conn| watermark_tx(conn, device_id, incarnation))
    }

    /// A device's handshake, in one transaction: record its identity, raise
    /// its incarnation's watermark to at least `floor` (events the device
    /// reports as already durable elsewhere), advance it past what is stored,
    /// and return it.
    pub fn handshake(
        &self,
        device_id: u32,
        model: &str,
        firmware: &str,
        incarnation: u64,
        floor: u64,
    ) -> Result<u64, StoreError> {
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let mark = handshake_tx(&tx, device_id, model, firmware, incarnation, floor)?;
            tx.commit()?;
            Ok(mark)
        })
    }

    /// Run several writes as one transaction (a group commit): each write in
    /// its own savepoint, so one that fails is rolled back alone and reports
    /// its error while the others commit. Returns one result per write, in
    /// order; an error of the whole group (cannot begin or commit) is the
    /// outer error and means none of them is stored.
    #[cfg(test)]
    pub(crate) fn write_group(
        &self,
        writes: &[Write],
    ) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
        self.write_group_if(writes, &|| true)
    }

    /// [`Store::write_group`], committed only if `may_commit` still says yes
    /// just before the commit (a node that stopped while writing and lost its
    /// lease meanwhile rolls the group back instead).
    pub(crate) fn write_group_if(
        &self,
        writes: &[Write],
        may_commit: &dyn Fn() -> bool,
    ) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
        let path = self.path.clone();
        if !may_commit() {
            // Not even begun: a closed gate (a switchover holding the
            // database frozen) must not keep the connection waiting.
            return Err(StoreError::NotAllowed { path });
        }
        self.with_writer(|conn| {
            let mut tx = conn.transaction()?;
            let mut results = Vec::with_capacity(writes.len());
            for w in writes {
                let sp = tx.savepoint()?;
                let result = match w {
                    Write::Handshake {
                        device_id,
                        model,
                        firmware,
                        incarnation,
                        floor,
                    } => handshake_tx(&sp, *device_id, model, firmware, *incarnation, *floor)
                        .map(Written::Handshake),
                    Write::Ingest {
                        device_id,
                        incarnation,
                        events,
                        received_by,
                    } => ingest_device_tx(&sp, *device_id, *incarnation, events, received_by)
                        .map(|(outcome, mark)| Written::Ingest(outcome, mark)),
                };
                match result {
                    Ok(done) => {
                        sp.commit()?;
                        results.push(Ok(done));
                    }
                    Err(error) => {
                        drop(sp);
                        results.push(Err(StoreError::Sqlite {
                            path: path.clone(),
                            error,
                        }));
                    }
                }
            }
            if !may_commit() {
                // Dropping the transaction rolls it back.
                return Ok(None);
            }
            tx.commit()?;
            Ok(Some(results))
        })?
        .ok_or_else(|| StoreError::NotAllowed {
            path: self.path.clone(),
        })
    }

    /// Global anti-passback: record a pass of `user_id` through `zone` and
    /// say whether it violates (entering when already in, leaving when out).
    /// A violating pass does not change the state.
    pub fn apb_pass(
        &self,
        user_id: &str,
        zone: &str,
        entering: bool,
        device_id: u32,
    ) -> Result<bool, StoreError> {
        let state = if entering { "in" } else { "out" };
        self.with_writer(|conn| {
            let tx = conn.transaction()?;
            let current: Option<String> = tx
                .query_row(
                    "SELECT zone FROM apb_state WHERE user_id = ?1 AND zone LIKE ?2 || ':%'",
                    params![user_id, zone],
                    |r| r.get(0),
                )
                .optional()?;
            let inside = current.as_deref() == Some(&format!("{zone}:in"));
            let violation = inside == entering;
            if !violation {
                tx.execute(
                    "INSERT INTO apb_state (user_id, zone, device_id, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(user_id) DO UPDATE SET zone = ?2, device_id = ?3, updated_at = ?4",
                    params![user_id, format!("{zone}:{state}"), device_id, unix_ms() as i64],
                )?;
            }
            tx.commit()?;
            Ok(violation)
        })
    }

    /// Add or replace a user.
    pub fn upsert_user(&self, user: &User) -> Result<(), StoreError> {
        self.with_writer(|conn| {
            conn.execute(
                "INSERT INTO users (user_id, name, card, disabled, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(user_id) DO UPDATE SET name = ?2, card = ?3, disabled = ?4, updated_at = ?5",
                params![user.user_id, user.name, user.card, user.disabled, unix_ms() as i64],
            )?;
            Ok(())
        })
    }

    /// The enabled user `user_id`, if any.
    pub fn user(&self, user_id: &str) -> Result<Option<User>, StoreError> {
        self.with_writer(|conn| {
            conn.query_row(
                "SELECT user_id, name, card, disabled FROM users WHERE user_id = ?1 AND disabled = 0",
                params![user_id],
                user_row,
            )
            .optional()
        })
    }

    /// Find the enabled user holding `card`.
    pub fn user_by_card(&self, card: &str) -> Result<Option<User>, StoreError> {
        self.with_writer(|conn| {
            conn.query_row(
                "SELECT user_id, name, card, disabled FROM users WHERE card = ?1 AND disabled = 0",
                params![card],
                user_row,
            )
            .optional()
        })
    }

    /// Statistics about the live database.
    pub fn info(&self) -> Result<DbInfo, StoreError> {
        let (journal_mode, event_count) = self.with_writer(|conn| {
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let count: i64 =
                conn.query_row("SELECT count(*) FROM access_events", [], |r| r.get(0))?;
            Ok((mode, count as u64))
        })?;
        let size = std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|source| StoreError::Io {
                what: "reading size of",
                path: self.path.clone(),
                error: source,
            })?;
        Ok(DbInfo {
            journal_mode,
            size,
            event_count,
        })
    }

    /// Write the WAL back into the main file and truncate it.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.with_writer(|conn| {
            if self.options.journal == JournalMode::Wal {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            }
            Ok(())
        })
    }
}

/// A `users` row selected as `user_id, name, card, disabled`.
fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        user_id: r.get(0)?,
        name: r.get(1)?,
        card: r.get(2)?,
        disabled: r.get(3)?,
    })
}

fn open_writer(path: &Path, options: &StoreOptions) -> Result<Connection, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        error: source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(options.busy_timeout).map_err(err)?;
    match options.journal {
        JournalMode::Wal => {
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Incompatible {
                    path: path.to_path_buf(),
                    reason: format!("cannot switch to WAL (journal mode stays {mode}); use journal = \"rollback-exclusive\" on network shares"),
                });
            }
            conn.execute_batch("PRAGMA synchronous = NORMAL;")
                .map_err(err)?;
        }
        JournalMode::RollbackExclusive => {
            conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
                .map_err(err)?;
            conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE; PRAGMA synchronous = FULL;")
                .map_err(err)?;
        }
    }
    schema::migrate(&conn, path)?;
    Ok(conn)
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// A failed file operation on `path`, as a [`StoreError`].
fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |error| StoreError::Io { what, path, error }
}

/// SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// Wall-clock Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
