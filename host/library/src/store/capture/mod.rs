//! Change data capture: SQLite triggers write every committed change of the
//! replicated tables into a change log (table, operation, key, row image, in
//! commit order), whichever connection made it (the application's own
//! included: the triggers are plain SQL). The standby applies the changes
//! in one transaction per batch, idempotently, with capture suppressed inside
//! that transaction only, so nothing it applies loops back.
//!
//! Row images are JSON objects (SQLite's JSON functions); a BLOB value is
//! written `{"$blob": "<hex>"}`, which no other column value can produce.

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

mod log_start;
mod position;

pub use position::Position;

/// The change log and its control tables (never captured themselves).
const LOG_TABLES: &str = "
CREATE TABLE IF NOT EXISTS standby_changes (
    seq           INTEGER PRIMARY KEY,
    tbl           TEXT NOT NULL,
    op            TEXT NOT NULL,
    pk            TEXT NOT NULL,
    old_pk        TEXT,
    row           TEXT,
    committed_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS standby_capture (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    suppressed  INTEGER NOT NULL
);
INSERT OR IGNORE INTO standby_capture (id, suppressed) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS standby_applied (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     INTEGER NOT NULL,
    epoch   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS standby_log_start (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    after  INTEGER NOT NULL
);
";

/// The longest a prune waits for the write lock.
const PRUNE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Tables of the change log itself: never captured.
const OWN_PREFIX: &str = "standby_";

/// Milliseconds since the Unix epoch, in SQL.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// A capture problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// SQLite failed.
    #[error("change capture: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A table named for capture does not exist.
    #[error("change capture: table `{0}` does not exist")]
    NoTable(String),
    /// A table has no primary key and no rowid.
    #[error(
        "change capture: table `{0}` has neither a primary key nor a rowid; give it a primary key"
    )]
    NoKey(String),
    /// A change could not be applied.
    #[error("change {seq} ({op} on `{table}`) cannot be applied: {problem}")]
    Apply {
        /// The change's sequence.
        seq: u64,
        /// Its table.
        table: String,
        /// Its operation.
        op: String,
        /// Why.
        #[source]
        problem: ApplyProblem,
    },
    /// The changes asked for are no longer (or were never) in the log: the
    /// other site needs a snapshot first.
    #[error("change capture: the change log holds only changes after {start}, not those after {after}: the standby needs a snapshot of the database (a reseed)")]
    Pruned {
        /// Asked for changes after this.
        after: u64,
        /// The log holds changes after this.
        start: u64,
    },
    /// This node holds changes of its own numbered at or after the first
    /// change of a batch: they never reached the other site, and applying
    /// over them would lose them in silence. The node needs a snapshot (its
    /// database is set aside first).
    #[error("change capture: this database holds changes of its own through {own}, which the other site never had, and the batch starts at {first}: it needs a fresh copy of the active database (its own changes are set aside first)")]
    Diverged {
        /// The newest own change.
        own: u64,
        /// The batch's first change to apply.
        first: u64,
    },
    /// A batch from an older epoch than the changes applied here: it comes
    /// from a node that has since lost its lease.
    #[error("a batch captured at epoch {batch} comes after changes of epoch {applied}: its node is no longer active")]
    StaleEpoch {
        /// The batch's epoch.
        batch: u64,
        /// The epoch of the changes applied here.
        applied: u64,
    },
}

/// Why one change cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyProblem {
    /// Its table cannot be captured or applied to here.
    #[error("{0}")]
    Table(#[source] Box<CaptureError>),
    /// Its key is not a JSON array.
    #[error("its key is not a JSON array: {0}")]
    KeyNotArray(#[source] serde_json::Error),
    /// Its key has the wrong number of values.
    #[error("its key has {got} values, the table's key {want} columns")]
    KeyArity {
        /// Values in the change's key.
        got: usize,
        /// Columns in the table's key.
        want: usize,
    },
    /// An insert or update without a row image.
    #[error("no row image")]
    NoRow,
    /// The row image is not a JSON object.
    #[error("its row image is not a JSON object: {0}")]
    RowNotObject(#[source] serde_json::Error),
    /// A number that fits neither an integer nor a real.
    #[error("a number out of range")]
    NumberOutOfRange,
    /// A blob value that is not hex.
    #[error("a blob that is not hex: {0}")]
    BlobNotHex(#[source] hex::FromHexError),
    /// An object value other than a blob.
    #[error("an object value that is not a blob")]
    ObjectValue,
    /// An array value.
    #[error("an array value")]
    ArrayValue,
    /// An operation other than I, U and D.
    #[error("unknown operation `{0}`")]
    UnknownOp(String),
    /// SQLite refused the statement.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// How a table's rows are identified.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableShape {
    name: String,
    columns: Vec<String>,
    /// Primary-key columns in key order; `["rowid"]` for a rowid table
    /// without a declared key.
    key: Vec<String>,
}

/// One captured change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Position in commit order.
    pub seq: u64,
    /// The table.
    pub table: String,
    /// `I`, `U` or `D`.
    pub op: String,
    /// The row's key (JSON array).
    pub pk: String,
    /// The key before an update that changed it (JSON array).
    pub old_pk: Option<String>,
    /// The row after the change (JSON object), none for a delete.
    pub row: Option<String>,
    /// When it was captured (Unix ms).
    pub committed_ms: u64,
}

/// Whether the table `name` exists.
fn table_exists(conn: &Connection, name: &str) -> Result<bool, rusqlite::Error> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
}

/// `ident` as an SQL identifier.
pub(super) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Every user table of the database (not SQLite's, not the change log's).
fn user_tables(conn: &Connection) -> Result<Vec<String>, CaptureError> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names
        .into_iter()
        .filter(|n| !n.starts_with(OWN_PREFIX))
        .collect())
}

fn shape(conn: &Connection, table: &str) -> Result<TableShape, CaptureError> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
    let mut cols: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)))?
        .collect::<Result<_, _>>()?;
    if cols.is_empty() {
        return Err(CaptureError::NoTable(table.to_string()));
    }
    let columns: Vec<String> = cols.iter().map(|(c, _)| c.clone()).collect();
    cols.retain(|(_, pk)| *pk > 0);
    cols.sort_by_key(|(_, pk)| *pk);
    let mut key: Vec<String> = cols.into_iter().map(|(c, _)| c).collect();
    if key.is_empty() {
        let without_rowid: bool = conn
            .query_row(
                "SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_schema WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap_or(false);
        if without_rowid {
            return Err(CaptureError::NoKey(table.to_string()));
        }
        key = vec!["rowid".into()];
    }
    Ok(TableShape {
        name: table.to_string(),
        columns,
        key,
    })
}

/// A column value as JSON, BLOBs as `{"$blob": hex}`.
fn json_value(side: &str, column: &str) -> String {
    let c = format!("{side}.{}", quote(column));
    format!("CASE typeof({c}) WHEN 'blob' THEN json_object('$blob', hex({c})) ELSE {c} END")
}

fn key_array(side: &str, shape: &TableShape) -> String {
    let parts: Vec<String> = shape.key.iter().map(|k| json_value(side, k)).collect();
    format!("json_array({})", parts.join(", "))
}

fn row_object(side: &str, shape: &TableShape) -> String {
    let mut parts: Vec<String> = shape
        .columns
        .iter()
        .map(|c| format!("{}, {}", literal(c), json_value(side, c)))
        .collect();
    if shape.key == ["rowid"] {
        parts.push(format!("'rowid', {side}.rowid"));
    }
    format!("json_object({})", parts.join(", "))
}

/// The three triggers of one table.
fn triggers(shape: &TableShape) -> String {
    let t = &shape.name;
    let when = "WHEN (SELECT suppressed FROM standby_capture WHERE id = 1) = 0";
    let insert = |op: &str, pk: String, old: String, row: String| {
        format!(
            "INSERT INTO standby_changes (tbl, op, pk, old_pk, row, committed_ms) VALUES ({}, '{op}', {pk}, {old}, {row}, {NOW_MS});",
            literal(t)
        )
    };
    let name = |op: &str| quote(&format!("standby_capture_{t}_{op}"));
    format!(
        "CREATE TRIGGER IF NOT EXISTS {ins} AFTER INSERT ON {qt} {when} BEGIN {i} END;
         CREATE TRIGGER IF NOT EXISTS {upd} AFTER UPDATE ON {qt} {when} BEGIN {u} END;
         CREATE TRIGGER IF NOT EXISTS {del} AFTER DELETE ON {qt} {when} BEGIN {d} END;",
        ins = name("insert"),
        upd = name("update"),
        del = name("delete"),
        qt = quote(t),
        i = insert(
            "I",
            key_array("NEW", shape),
            "NULL".into(),
            row_object("NEW", shape)
        ),
        u = insert(
            "U",
            key_array("NEW", shape),
            format!(
                "CASE WHEN {new} IS {old} THEN NULL ELSE {old} END",
                new = key_array("NEW", shape),
                old = key_array("OLD", shape)
            ),
            row_object("NEW", shape)
        ),
        d = insert("D", key_array("OLD", shape), "NULL".into(), "NULL".into()),
    )
}

/// Create the change log and the triggers of `tables` (every user table
/// when `None`). Idempotent. Returns the tables captured.
pub(super) fn enable(
    conn: &mut Connection,
    tables: Option<&[String]>,
) -> Result<Vec<String>, CaptureError> {
    let tx = conn.transaction()?;
    tx.execute_batch(LOG_TABLES)?;
    let names = match tables {
        Some(t) => t.to_vec(),
        None => user_tables(&tx)?,
    };
    for name in &names {
        let s = shape(&tx, name)?;
        tx.execute_batch(&triggers(&s))?;
    }
    log_start::on_enable(&tx, &names)?;
    tx.commit()?;
    Ok(names)
}

/// Up to `max` changes after `after`, in commit order, stopping before the
/// one that would take their row images past `max_bytes` (at least one).
pub(super) fn read(
    conn: &Connection,
    after: u64,
    max: u32,
    max_bytes: u64,
) -> Result<Vec<Change>, CaptureError> {
    let start = log_start::start(conn)?;
    if after < start {
        return Err(CaptureError::Pruned { after, start });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, tbl, op, pk, old_pk, row, committed_ms FROM standby_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after as i64, max], |r| {
        Ok(Change {
            seq: r.get::<_, i64>(0)? as u64,
            table: r.get(1)?,
            op: r.get(2)?,
            pk: r.get(3)?,
            old_pk: r.get(4)?,
            row: r.get(5)?,
            committed_ms: r.get::<_, i64>(6)? as u64,
        })
    })?;
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for row in rows {
        let c = row?;
        let size = (c.pk.len() + c.row.as_ref().map_or(0, String::len) + 64) as u64;
        if !out.is_empty() && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        out.push(c);
    }
    Ok(out)
}

/// Forget the changes up to and including `through`, except the newest
/// change of all: a new change's sequence is one above the highest in the
/// log (a plain rowid, cheaper for the triggers than AUTOINCREMENT), so the
/// log is never left empty once it has held a change.
pub(super) fn prune(conn: &Connection, through: u64) -> Result<usize, CaptureError> {
    log_start::on_prune(conn, through)?;
    Ok(conn.execute(
        "DELETE FROM standby_changes WHERE seq <= ?1 AND seq < (SELECT max(seq) FROM standby_changes)",
        [through as i64],
    )?)
}

/// Make the copy at `path` (not yet installed) a standby's database: its
/// change log is the other site's, so it keeps only its newest entry, and
/// it counts as applied through that position (returned; 0 without
/// capture).
pub(crate) fn prepare_install(path: &std::path::Path) -> Result<u64, CaptureError> {
    let conn = Connection::open(path)?;
    let position = log_start::on_install(&conn)?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(position)
}

/// The highest change applied here, and the epoch it came from.
pub(super) fn applied(conn: &Connection) -> Result<(u64, u64), CaptureError> {
    if !table_exists(conn, "standby_applied")? {
        return Ok((0, 0));
    }
    let mark: Option<(i64, i64)> = conn
        .query_row(
            "SELECT seq, epoch FROM standby_applied WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(mark.map_or((0, 0), |(s, e)| (s as u64, e as u64)))
}

/// Apply `changes` (in commit order) in one transaction with capture
/// suppressed: those at or below the applied mark are skipped. Returns the
/// new applied mark. Nothing is applied when one change fails.
pub(super) fn apply(
    conn: &mut Connection,
    changes: &[Change],
    epoch: u64,
) -> Result<u64, CaptureError> {
    // The write lock first, so a busy database (the application's long
    // transaction) is waited for, up to the busy timeout.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(LOG_TABLES)?;
    let (before, applied_epoch) = applied(&tx)?;
    if epoch < applied_epoch {
        return Err(CaptureError::StaleEpoch {
            batch: epoch,
            applied: applied_epoch,
        });
    }
    let mut mark = before;
    if let Some(first) = changes.iter().map(|c| c.seq).find(|s| *s > before) {
        position::check_not_diverged(&tx, first)?;
    }
    tx.execute("UPDATE standby_capture SET suppressed = 1 WHERE id = 1", [])?;
    let mut shapes: std::collections::HashMap<String, TableShape> = Default::default();
    for c in changes.iter().filter(|c| c.seq > before) {
        let failed = |problem: ApplyProblem| CaptureError::Apply {
            seq: c.seq,
            table: c.table.clone(),
            op: c.op.clone(),
            problem,
        };
        if c.op == log_start::ORIGIN {
            // Marks where the log began; nothing to apply.
            mark = c.seq;
            continue;
        }
        if !shapes.contains_key(&c.table) {
            let s = shape(&tx, &c.table).map_err(|e| failed(ApplyProblem::Table(Box::new(e))))?;
            shapes.insert(c.table.clone(), s);
        }
        let s = &shapes[&c.table];
        apply_one(&tx, s, c).map_err(failed)?;
        mark = c.seq;
    }
    tx.execute("UPDATE standby_capture SET suppressed = 0 WHERE id = 1", [])?;
    if mark > before {
        position::keep_at(&tx, mark)?;
    }
    tx.execute(
        "INSERT INTO standby_applied (id, seq, epoch) VALUES (1, ?1, ?2)
         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, epoch = excluded.epoch",
        params![mark as i64, epoch as i64],
    )?;
    tx.commit()?;
    Ok(mark)
}

/// A JSON value as an SQLite value (`{"$blob": hex}` as a BLOB).
fn sql_value(v: &serde_json::Value) -> Result<Value, ApplyProblem> {
    Ok(match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().ok_or(ApplyProblem::NumberOutOfRange)?),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Object(o) => match o.get("$blob").and_then(|b| b.as_str()) {
            Some(h) => Value::Blob(hex::decode(h).map_err(ApplyProblem::BlobNotHex)?),
            None => return Err(ApplyProblem::ObjectValue),
        },
        serde_json::Value::Array(_) => return Err(ApplyProblem::ArrayValue),
    })
}

fn key_values(s: &TableShape, pk: &str) -> Result<Vec<Value>, ApplyProblem> {
    let parsed: Vec<serde_json::Value> =
        serde_json::from_str(pk).map_err(ApplyProblem::KeyNotArray)?;
    if parsed.len() != s.key.len() {
        return Err(ApplyProblem::KeyArity {
            got: parsed.len(),
            want: s.key.len(),
        });
    }
    parsed.iter().map(sql_value).collect()
}

fn delete(tx: &Transaction<'_>, s: &TableShape, pk: &str) -> Result<(), ApplyProblem> {
    let keys = key_values(s, pk)?;
    let cond: Vec<String> = s.key.iter().map(|k| format!("{} = ?", quote(k))).collect();
    tx.prepare_cached(&format!(
        "DELETE FROM {} WHERE {}",
        quote(&s.name),
        cond.join(" AND ")
    ))?
    .execute(rusqlite::params_from_iter(keys))?;
    Ok(())
}

fn apply_one(tx: &Transaction<'_>, s: &TableShape, c: &Change) -> Result<(), ApplyProblem> {
    match c.op.as_str() {
        log_start::ORIGIN => Ok(()),
        "D" => delete(tx, s, &c.pk),
        "I" | "U" => {
            if let Some(old) = &c.old_pk {
                delete(tx, s, old)?;
            }
            let row: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(c.row.as_deref().ok_or(ApplyProblem::NoRow)?)
                    .map_err(ApplyProblem::RowNotObject)?;
            let mut cols = Vec::new();
            let mut values = Vec::new();
            for (k, v) in &row {
                cols.push(quote(k));
                values.push(sql_value(v)?);
            }
            let keys: Vec<String> = s.key.iter().map(|k| quote(k)).collect();
            let updates: Vec<String> = cols
                .iter()
                .filter(|c| !keys.contains(c))
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            let conflict = if updates.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            let marks = vec!["?"; cols.len()].join(", ");
            let sql = if s.key == ["rowid"] {
                format!(
                    "INSERT OR REPLACE INTO {} ({}) VALUES ({marks})",
                    quote(&s.name),
                    cols.join(", ")
                )
            } else {
                format!(
                    "INSERT INTO {} ({}) VALUES ({marks}) ON CONFLICT({}) {conflict}",
                    quote(&s.name),
                    cols.join(", "),
                    keys.join(", ")
                )
            };
            tx.prepare_cached(&sql)?
                .execute(rusqlite::params_from_iter(values))?;
            Ok(())
        }
        other => Err(ApplyProblem::UnknownOp(other.to_string())),
    }
}

impl super::Store {
    pub(super) fn with_capture<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, CaptureError>,
    ) -> Result<R, super::StoreError> {
        let mut guard = self.lock();
        let conn = guard.as_mut().ok_or_else(|| super::StoreError::Detached {
            path: self.path.clone(),
        })?;
        f(conn).map_err(|error| super::StoreError::Capture {
            path: self.path.clone(),
            error: Box::new(error),
        })
    }

    /// Capture every committed change of `tables` (every user table when
    /// `None`) into the change log, whichever connection makes it.
    /// Idempotent; returns the tables captured.
    pub fn enable_capture(
        &self,
        tables: Option<&[String]>,
    ) -> Result<Vec<String>, super::StoreError> {
        self.with_capture(|c| enable(c, tables))
    }

    /// Up to `max` captured changes after `after`, in commit order, their
    /// row images together not much over `max_bytes` (at least one change).
    pub fn read_changes(
        &self,
        after: u64,
        max: u32,
        max_bytes: u64,
    ) -> Result<Vec<Change>, super::StoreError> {
        self.with_capture(|c| read(c, after, max, max_bytes))
    }

    /// Apply changes from the other site, in commit order, in one
    /// transaction with capture suppressed inside it: changes at or below
    /// the applied mark are skipped, and nothing is applied when one change
    /// fails (the error names it). Returns the new applied mark.
    pub fn apply_changes(&self, changes: &[Change], epoch: u64) -> Result<u64, super::StoreError> {
        self.with_capture(|c| apply(c, changes, epoch))
    }

    /// Record every change through `seq` (captured at `epoch`) as applied
    /// here without applying anything (an operator skipped them); the mark
    /// never goes back. Returns the mark.
    pub fn mark_applied(&self, seq: u64, epoch: u64) -> Result<u64, super::StoreError> {
        self.with_capture(|c| {
            c.execute_batch(LOG_TABLES)?;
            c.execute(
                "INSERT INTO standby_applied (id, seq, epoch) VALUES (1, ?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET seq = max(seq, excluded.seq), epoch = excluded.epoch",
                params![seq as i64, epoch as i64],
            )?;
            Ok(applied(c)?.0)
        })
    }

    /// The highest change applied here and the epoch it came from.
    pub fn applied_mark(&self) -> Result<(u64, u64), super::StoreError> {
        self.with_capture(|c| applied(c))
    }

    /// The highest change sequence captured here (0 when capture is off).
    pub fn last_change(&self) -> Result<u64, super::StoreError> {
        self.with_capture(|c| {
            if !table_exists(c, "standby_changes")? {
                return Ok(0);
            }
            let seq: Option<i64> =
                c.query_row("SELECT max(seq) FROM standby_changes", [], |r| r.get(0))?;
            Ok(seq.map_or(0, |s| s as u64))
        })
    }

    /// Forget captured changes up to and including `through`; how many.
    /// Pruning is tidying: on a frozen store it prunes nothing now (0), and
    /// otherwise it waits at most 50 ms for the write lock (a freeze from
    /// elsewhere, the application's long transaction) before it gives up the
    /// same way: the next prune covers these too.
    pub fn prune_changes(&self, through: u64) -> Result<usize, super::StoreError> {
        if self.is_frozen() {
            // The freeze holds the write lock: the next prune covers these.
            tracing::debug!(through, "database frozen: pruning the change log later");
            return Ok(0);
        }
        let wait = self.options.busy_timeout;
        self.with_capture(|c| {
            c.busy_timeout(PRUNE_WAIT)?;
            let pruned = prune(c, through);
            c.busy_timeout(wait)?;
            match pruned {
                Err(CaptureError::Sqlite(e))
                    if matches!(
                        e.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) =>
                {
                    tracing::debug!(
                        through,
                        "the database is busy: pruning the change log later"
                    );
                    Ok(0)
                }
                other => other,
            }
        })
    }
}

#[cfg(test)]
mod tests;
