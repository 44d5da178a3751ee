//! Where the change log starts: the changes at or below `after` in
//! `standby_log_start` are not in the log, so a standby that applied less
//! needs a snapshot of the database (a reseed) before it can follow the
//! stream again. The start moves when:
//!
//! - capture is first turned on over rows that are already there: they were
//!   never captured, so an origin entry (operation `O`, applied as nothing)
//!   takes the first sequence and the log starts after it;
//! - changes are pruned (acknowledged, or past the bound while the standby
//!   is away);
//! - a snapshot is installed: it holds everything through its newest
//!   change, and its own log is the other site's, so the log keeps only
//!   that newest entry (for the sequence to go on from it) and starts after
//!   it, and the applied mark becomes that position.

use rusqlite::{params, Connection, OptionalExtension};

use super::CaptureError;

/// The operation of the origin entry.
pub(super) const ORIGIN: &str = "O";

/// The log holds every change after this (0: every change).
pub(super) fn start(conn: &Connection) -> Result<u64, CaptureError> {
    if !super::table_exists(conn, "standby_log_start")? {
        return Ok(0);
    }
    let after: Option<i64> = conn
        .query_row(
            "SELECT after FROM standby_log_start WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(after.unwrap_or(0) as u64)
}

pub(super) fn set(conn: &Connection, after: u64) -> Result<(), CaptureError> {
    conn.execute(
        "INSERT INTO standby_log_start (id, after) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET after = max(after, excluded.after)",
        [after as i64],
    )?;
    Ok(())
}

/// Capture is turned on (inside its transaction): the first time, over
/// `tables` holding rows already, the log starts after an origin entry.
pub(super) fn on_enable(conn: &Connection, tables: &[String]) -> Result<(), CaptureError> {
    let known: bool = conn.query_row("SELECT count(*) > 0 FROM standby_log_start", [], |r| {
        r.get(0)
    })?;
    if known {
        return Ok(());
    }
    let mut has_rows = false;
    for t in tables {
        has_rows |= conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM {})", super::quote(t)),
            [],
            |r| r.get::<_, bool>(0),
        )?;
    }
    let has_log: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM standby_changes)", [], |r| {
            r.get(0)
        })?;
    if has_rows && !has_log {
        conn.execute(
            "INSERT INTO standby_changes (tbl, op, pk, old_pk, row, committed_ms)
             VALUES ('', ?1, '[]', NULL, NULL, 0)",
            [ORIGIN],
        )?;
        set(conn, conn.last_insert_rowid() as u64)
    } else {
        set(conn, 0)
    }
}

/// Changes through `through` are about to be pruned: the log will start
/// after the last of them actually removed (the newest entry stays).
pub(super) fn on_prune(conn: &Connection, through: u64) -> Result<(), CaptureError> {
    let removed: Option<i64> = conn.query_row(
        "SELECT max(seq) FROM standby_changes
         WHERE seq <= ?1 AND seq < (SELECT max(seq) FROM standby_changes)",
        [through as i64],
        |r| r.get(0),
    )?;
    match removed {
        Some(seq) => set(conn, seq as u64),
        None => Ok(()),
    }
}

/// A copy about to be installed as the live database (not yet in place):
/// the position it holds (its newest change); its log keeps only that entry
/// and starts after it; it counts as applied through it. Nothing to do on a
/// database without capture.
pub(super) fn on_install(conn: &Connection) -> Result<u64, CaptureError> {
    if !super::table_exists(conn, "standby_changes")? {
        return Ok(0);
    }
    conn.execute_batch(super::LOG_TABLES)?;
    let position: i64 = conn.query_row(
        "SELECT coalesce(max(seq), 0) FROM standby_changes",
        [],
        |r| r.get(0),
    )?;
    let position = (position as u64).max(start(conn)?);
    conn.execute(
        "DELETE FROM standby_changes WHERE seq < ?1",
        [position as i64],
    )?;
    conn.execute(
        "INSERT INTO standby_log_start (id, after) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET after = excluded.after",
        [position as i64],
    )?;
    conn.execute(
        "INSERT INTO standby_applied (id, seq, epoch) VALUES (1, ?1, 0)
         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, epoch = 0",
        params![position as i64],
    )?;
    conn.execute("UPDATE standby_capture SET suppressed = 0 WHERE id = 1", [])?;
    Ok(position)
}
