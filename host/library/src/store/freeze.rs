//! Quiescing the database for a copy taken from outside (a VM or disk
//! snapshot, a switchover's last batch): wait for the write running now,
//! hold back every new one, and write the WAL back into the main file, so
//! the main file alone holds every committed transaction and does not
//! change until thawed. Readers go on. The hold is a write transaction
//! (`BEGIN IMMEDIATE`) on a connection of its own: the application's
//! connections and the node's own writer wait on it (up to their busy
//! timeouts) like on any writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;

use super::{JournalMode, Store, StoreError};

/// The database held frozen; dropping it (or [`Frozen::thaw`]) lets writes
/// go on.
#[derive(Debug)]
pub struct Frozen {
    conn: Connection,
    path: PathBuf,
    since: Instant,
    /// The store's "frozen" flag, cleared when the hold ends.
    flag: Arc<AtomicBool>,
}

impl Frozen {
    /// Let writes go on; how long they were held.
    pub fn thaw(self) -> std::time::Duration {
        let held = self.since.elapsed();
        // The hold wrote nothing; closing the connection ends it.
        drop(self);
        held
    }

    /// The database held.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
        self.flag.store(false, Ordering::SeqCst);
    }
}

impl Store {
    /// Freeze the database: wait (up to the busy timeout) for the write
    /// running now, hold back new writes, and checkpoint the WAL into the
    /// main file. Only in WAL mode (the rollback mode's exclusive lock
    /// already keeps every other connection out).
    pub fn freeze(&self) -> Result<Frozen, StoreError> {
        if self.options.journal != JournalMode::Wal {
            return Err(StoreError::Incompatible {
                path: self.path.clone(),
                reason: "freezing needs journal = \"wal\"".into(),
            });
        }
        let err = |e| self.sqlite(e);
        let conn = Connection::open(&self.path).map_err(err)?;
        conn.busy_timeout(self.options.busy_timeout).map_err(err)?;
        // Take the write lock and keep it: a transaction that is never
        // committed (raw statements, so the connection can move into the
        // hold; `Transaction` would borrow it).
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        // No writer can run now: every committed frame goes into the main
        // file, through another connection (a connection inside a
        // transaction cannot checkpoint; PASSIVE waits for nothing, and only
        // a reader older than this moment can hold frames back).
        let checkpointer = Connection::open(&self.path).map_err(err)?;
        let (busy, log, done): (i64, i64, i64) = checkpointer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(err)?;
        drop(checkpointer);
        if busy != 0 || done < log {
            tracing::warn!(
                path = %self.path.display(),
                frames = log,
                written = done,
                "frozen, but a long reader held part of the WAL back: the copy must include the -wal file"
            );
        }
        self.frozen.store(true, Ordering::SeqCst);
        Ok(Frozen {
            conn,
            path: self.path.clone(),
            since: Instant::now(),
            flag: self.frozen.clone(),
        })
    }

    /// Whether a [`Frozen`] of this store holds the write lock now.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use std::time::Duration;

    #[test]
    fn a_frozen_database_holds_writers_back_and_its_main_file_alone_has_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), StoreOptions::default()).unwrap();
        let app = Connection::open(store.path()).unwrap();
        app.execute_batch("INSERT INTO users (user_id, name, updated_at) VALUES ('u1', 'A', 1);")
            .unwrap();
        let frozen = store.freeze().unwrap();
        // The application cannot write; it can read.
        app.busy_timeout(Duration::from_millis(100)).unwrap();
        let refused = app.execute(
            "INSERT INTO users (user_id, name, updated_at) VALUES ('u2', 'B', 1)",
            [],
        );
        assert!(refused.is_err(), "a write went through a freeze");
        let n: i64 = app
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        // The main file alone (copied without its WAL) holds the commit.
        let copy = dir.path().join("copy.db");
        std::fs::copy(store.path(), &copy).unwrap();
        let c = Connection::open(&copy).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM users WHERE user_id = 'u1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1, "the commit was still only in the WAL");
        // Thawed, writes go on.
        assert!(frozen.thaw() < Duration::from_secs(5));
        app.execute(
            "INSERT INTO users (user_id, name, updated_at) VALUES ('u2', 'B', 1)",
            [],
        )
        .unwrap();
    }
}
