//! Where a database stands in the one sequence of changes both sites share.
//!
//! A standby keeps its own change log at the position it has applied (one
//! marker entry, applied as nothing), so when it becomes active its own
//! changes are numbered on from the other site's: the sequence goes on
//! across failovers and switchovers, and a node can tell the active one how
//! far it has got. A node that was active and comes back holds its own
//! changes past that point; if the new active took over before them, they
//! are divergent, and the standby refuses to apply a batch over them.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::log_start::{self, ORIGIN};
use super::{table_exists, CaptureError};

/// Where a database stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The newest change it holds (applied or captured here).
    pub seq: u64,
    /// The epoch of the node that captured it (0: not known).
    pub epoch: u64,
    /// It was captured here.
    pub own: bool,
}

/// The newest change captured here (not a marker), if any.
fn newest_own(conn: &Connection) -> Result<Option<u64>, CaptureError> {
    if !table_exists(conn, "standby_changes")? {
        return Ok(None);
    }
    let seq: Option<i64> = conn
        .query_row(
            "SELECT seq FROM standby_changes WHERE op != ?1 ORDER BY seq DESC LIMIT 1",
            [ORIGIN],
            |r| r.get(0),
        )
        .optional()?;
    Ok(seq.map(|s| s as u64))
}

/// Where the database on `conn` stands; `own_epoch` is the epoch at which
/// this node captured its own changes (when it was last active).
pub(super) fn position(conn: &Connection, own_epoch: u64) -> Result<Position, CaptureError> {
    let (applied, applied_epoch) = super::applied(conn)?;
    Ok(match newest_own(conn)? {
        Some(seq) if seq > applied => Position {
            seq,
            epoch: own_epoch,
            own: true,
        },
        _ => Position {
            seq: applied,
            epoch: applied_epoch,
            own: false,
        },
    })
}

/// Before applying changes from `first` on: none of this node's own changes
/// may be numbered at or above it (they would be changes the other site
/// never had, overwritten in silence).
pub(super) fn check_not_diverged(conn: &Connection, first: u64) -> Result<(), CaptureError> {
    match newest_own(conn)? {
        Some(own) if own >= first => Err(CaptureError::Diverged { own, first }),
        _ => Ok(()),
    }
}

/// After applying through `mark` (inside the same transaction): the log
/// keeps one marker at `mark` and starts there, so changes this node
/// captures once active are numbered after it.
pub(super) fn keep_at(conn: &Connection, mark: u64) -> Result<(), CaptureError> {
    conn.execute("DELETE FROM standby_changes WHERE seq < ?1", [mark as i64])?;
    conn.execute(
        "INSERT OR IGNORE INTO standby_changes (seq, tbl, op, pk, old_pk, row, committed_ms)
         VALUES (?1, '', ?2, '[]', NULL, NULL, 0)",
        params![mark as i64, ORIGIN],
    )?;
    log_start::set(conn, mark)
}

/// An installed copy counts as applied at `epoch` (the node's, now): the
/// active node that sent it can recognise the position later.
pub(super) fn adopt_epoch(conn: &Connection, epoch: u64) -> Result<(), CaptureError> {
    if table_exists(conn, "standby_applied")? {
        conn.execute(
            "UPDATE standby_applied SET epoch = ?1 WHERE id = 1",
            [epoch as i64],
        )?;
    }
    Ok(())
}

impl crate::store::Store {
    /// Where this database stands (see [`Position`]); `own_epoch` is the
    /// epoch at which this node was last active.
    pub fn position(&self, own_epoch: u64) -> Result<Position, crate::store::StoreError> {
        self.with_capture(|c| position(c, own_epoch))
    }

    /// The copy just installed counts as applied at `epoch`.
    pub fn adopt_applied_epoch(&self, epoch: u64) -> Result<(), crate::store::StoreError> {
        self.with_capture(|c| adopt_epoch(c, epoch))
    }
}
