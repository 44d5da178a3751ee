//! The independent check of the application's writes: the writer's own log
//! of commits ([`crate::app_writer`]) against a database opened read-only.
//! A write (user, `updated_at` T) is held by a database whose row for that
//! user has `updated_at` >= T (later writes to a user carry later times).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::audit::AuditError;

/// One logged commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedWrite {
    /// Commit time, ms since the Unix epoch (also the row's `updated_at`).
    pub at_ms: u64,
    /// The user written.
    pub user: String,
}

/// What a writer's log and a database say together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppAudit {
    /// Writes committed before the lease ended.
    pub app_writes: u64,
    /// Writes committed at or after it (divergent, never to be replicated).
    pub app_writes_divergent: u64,
    /// Of `app_writes`, absent from the database.
    pub app_writes_unreplicated: u64,
    /// The newest of `app_writes` the database holds (commit time).
    pub newest_held_ms: Option<u64>,
}

/// The commits in the writer's log at `log` (none when it does not exist);
/// a torn last line is ignored.
pub fn read_log(log: &Path) -> Result<Vec<LoggedWrite>, AuditError> {
    let text = match std::fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AuditError::Read {
                path: log.to_path_buf(),
                source,
            })
        }
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let at_ms = f.next()?.parse().ok()?;
            let user = f.next()?.to_string();
            f.next()?;
            Some(LoggedWrite { at_ms, user })
        })
        .collect())
}

/// Every user's `updated_at` in the database at `db`, opened read-only.
pub fn user_versions(db: &Path) -> Result<HashMap<String, u64>, AuditError> {
    let err = |source| AuditError::Database {
        path: db.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    let mut stmt = conn
        .prepare("SELECT user_id, updated_at FROM users")
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .and_then(|it| it.collect())
        .map_err(err)?;
    Ok(rows)
}

/// The writes in `log` against the database at `db`: those committed before
/// `lease_end_ms` count, the rest are divergent.
pub fn check(log: &Path, db: &Path, lease_end_ms: u64) -> Result<AppAudit, AuditError> {
    let writes = read_log(log)?;
    let held = user_versions(db)?;
    Ok(compare(&writes, &held, lease_end_ms))
}

/// [`check`] on what was read.
pub fn compare(writes: &[LoggedWrite], held: &HashMap<String, u64>, lease_end_ms: u64) -> AppAudit {
    let mut a = AppAudit::default();
    for w in writes {
        if w.at_ms >= lease_end_ms {
            a.app_writes_divergent += 1;
            continue;
        }
        a.app_writes += 1;
        if held.get(&w.user).is_some_and(|&v| v >= w.at_ms) {
            a.newest_held_ms = a.newest_held_ms.max(Some(w.at_ms));
        } else {
            a.app_writes_unreplicated += 1;
        }
    }
    a
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn w(at_ms: u64, user: &str) -> LoggedWrite {
        LoggedWrite {
            at_ms,
            user: user.into(),
        }
    }

    #[test]
    fn a_write_is_held_when_the_row_is_at_least_as_new_and_late_writes_are_divergent() {
        let writes = [w(10, "a"), w(20, "b"), w(30, "a"), w(40, "c"), w(50, "a")];
        let held: HashMap<String, u64> = [("a".to_string(), 30), ("b".to_string(), 20)].into();
        let a = compare(&writes, &held, 45);
        assert_eq!(
            a,
            AppAudit {
                app_writes: 4,
                app_writes_divergent: 1,
                app_writes_unreplicated: 1,
                newest_held_ms: Some(30),
            }
        );
    }

    #[test]
    fn a_torn_last_line_and_a_missing_log_are_no_writes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app-writes.log");
        assert!(read_log(&log).unwrap().is_empty());
        std::fs::write(&log, "100\tonsite-0000001\tI\n101\tonsite-00").unwrap();
        assert_eq!(read_log(&log).unwrap(), [w(100, "onsite-0000001")]);
    }
}
