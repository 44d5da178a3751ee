//! Setting a returning node's database aside before a copy from the new
//! active overwrites it: a node that was active at an older epoch may hold
//! commits that never reached the other site (a user added just before the
//! crash). Its whole database is kept in `DATA_DIR/set-aside/` with a
//! summary an operator can read: per table, how many rows it has and which
//! rows (by key) the incoming copy does not hold as they are; with change
//! capture (case 3), also the changes it captured that the incoming copy's
//! node never applied (its divergent writes, with their row images still in
//! the set-aside file's change log).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::capture::quote;
use super::{Store, StoreError};

/// Where set-aside files go, in the node's data directory.
pub const SET_ASIDE_DIR: &str = "set-aside";
/// Keys listed per table in a summary (the count is always whole).
const KEYS_LISTED: usize = 50;

/// One table of a set-aside database.
#[derive(Debug, Clone, Serialize)]
pub struct TableSummary {
    /// The table.
    pub table: String,
    /// Its rows in the set-aside database.
    pub rows: u64,
    /// Of those, rows the incoming copy does not hold as they are (new or
    /// changed here).
    pub not_in_the_new_copy: u64,
    /// Their keys (JSON arrays of the key's values), the first 50.
    pub keys: Vec<String>,
}

/// A change this node captured that the incoming copy's node never applied.
#[derive(Debug, Clone, Serialize)]
pub struct DivergentChange {
    /// Its position in this node's change log.
    pub seq: u64,
    /// The table.
    pub table: String,
    /// `I`, `U` or `D`.
    pub op: String,
    /// The row's key (a JSON array).
    pub key: String,
}

/// Divergent changes listed in a summary (the count is always whole).
const DIVERGENT_LISTED: usize = 200;

/// What was set aside and why.
#[derive(Debug, Clone, Serialize)]
pub struct SetAsideSummary {
    /// The set-aside database.
    pub file: PathBuf,
    /// The epoch at which this node was last active.
    pub active_at_epoch: u64,
    /// When it was set aside (Unix ms).
    pub set_aside_at_ms: u64,
    /// Per table.
    pub tables: Vec<TableSummary>,
    /// Changes captured here after the last one the incoming copy's node
    /// applied (none without change capture).
    pub divergent_total: u64,
    /// The first 200 of them, oldest first.
    pub divergent_changes: Vec<DivergentChange>,
}

impl Store {
    /// Copy the live database into `data_dir/set-aside/` and compare it
    /// with `incoming` (the copy about to replace it); the summary is
    /// written beside it (`.summary.json`).
    pub fn set_aside_before_install(
        &self,
        incoming: &Path,
        data_dir: &Path,
        active_at_epoch: u64,
    ) -> Result<SetAsideSummary, StoreError> {
        let now = super::unix_ms();
        let dir = data_dir.join(SET_ASIDE_DIR);
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |error| StoreError::Io { what, path, error }
        };
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let file = dir.join(format!("biostar2-epoch{active_at_epoch}-{now}.db"));
        self.snapshot_to(&file)?;
        let sqlite = |error| StoreError::Sqlite {
            path: file.clone(),
            error,
        };
        let tables = compare(&file, incoming).map_err(sqlite)?;
        let (divergent_total, divergent_changes) = divergent(&file, incoming).map_err(sqlite)?;
        let summary = SetAsideSummary {
            file: file.clone(),
            active_at_epoch,
            set_aside_at_ms: now,
            tables,
            divergent_total,
            divergent_changes,
        };
        let summary_path = PathBuf::from(format!("{}.summary.json", file.display()));
        let text = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        std::fs::write(&summary_path, text).map_err(io("writing", &summary_path))?;
        Ok(summary)
    }
}

/// The declared primary key's columns of `table`, or every column when it
/// declares none (the whole row is then its key).
fn key_columns(conn: &Connection, table: &str) -> Result<Vec<String>, rusqlite::Error> {
    let columns: Vec<(String, i64)> = conn
        .prepare("SELECT name, pk FROM pragma_table_info(?1) ORDER BY pk, cid")?
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let key: Vec<String> = columns
        .iter()
        .filter(|(_, pk)| *pk > 0)
        .map(|(n, _)| n.clone())
        .collect();
    Ok(if key.is_empty() {
        columns.into_iter().map(|(n, _)| n).collect()
    } else {
        key
    })
}

/// Every table of `ours` (the change log's own excepted) against the same
/// table of `theirs`.
fn compare(ours: &Path, theirs: &Path) -> Result<Vec<TableSummary>, rusqlite::Error> {
    let conn = Connection::open_with_flags(ours, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.execute("ATTACH DATABASE ?1 AS theirs", [theirs.to_string_lossy()])?;
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM main.sqlite_schema WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'standby_%' ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for table in tables {
        let q = quote(&table);
        let rows: i64 =
            conn.query_row(&format!("SELECT count(*) FROM main.{q}"), [], |r| r.get(0))?;
        let key_list = key_columns(&conn, &table)?
            .iter()
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        let in_theirs: bool = conn.query_row(
            "SELECT count(*) > 0 FROM theirs.sqlite_schema WHERE type = 'table' AND name = ?1",
            [&table],
            |r| r.get(0),
        )?;
        // Rows here that the new copy does not hold as they are.
        let differing = if in_theirs {
            format!("SELECT * FROM main.{q} EXCEPT SELECT * FROM theirs.{q}")
        } else {
            format!("SELECT * FROM main.{q}")
        };
        let not_in: i64 =
            conn.query_row(&format!("SELECT count(*) FROM ({differing})"), [], |r| {
                r.get(0)
            })?;
        let keys: Vec<String> = conn
            .prepare(&format!(
                "SELECT json_array({key_list}) FROM ({differing}) LIMIT {KEYS_LISTED}"
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        out.push(TableSummary {
            table,
            rows: rows as u64,
            not_in_the_new_copy: not_in as u64,
            keys,
        });
    }
    conn.execute("DETACH DATABASE theirs", [])?;
    Ok(out)
}

/// The changes in `ours`'s change log past the position `theirs` applied
/// through: how many, and the first [`DIVERGENT_LISTED`].
fn divergent(ours: &Path, theirs: &Path) -> Result<(u64, Vec<DivergentChange>), rusqlite::Error> {
    let conn = Connection::open_with_flags(ours, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.execute("ATTACH DATABASE ?1 AS theirs", [theirs.to_string_lossy()])?;
    let has = |schema: &str, table: &str| -> Result<bool, rusqlite::Error> {
        conn.query_row(
            &format!("SELECT count(*) > 0 FROM {schema}.sqlite_schema WHERE type = 'table' AND name = ?1"),
            [table],
            |r| r.get(0),
        )
    };
    if !has("main", "standby_changes")? {
        return Ok((0, Vec::new()));
    }
    let applied: i64 = if has("theirs", "standby_applied")? {
        conn.query_row(
            "SELECT coalesce(max(seq), 0) FROM theirs.standby_applied",
            [],
            |r| r.get(0),
        )?
    } else {
        0
    };
    // Markers (`O`) are positions, not changes.
    let past = "FROM main.standby_changes WHERE seq > ?1 AND op != 'O'";
    let total: i64 = conn.query_row(&format!("SELECT count(*) {past}"), [applied], |r| r.get(0))?;
    let listed = conn
        .prepare(&format!(
            "SELECT seq, tbl, op, pk {past} ORDER BY seq LIMIT {DIVERGENT_LISTED}"
        ))?
        .query_map([applied], |r| {
            Ok(DivergentChange {
                seq: r.get::<_, i64>(0)? as u64,
                table: r.get(1)?,
                op: r.get(2)?,
                key: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok((total as u64, listed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn the_summary_names_the_rows_the_new_copy_lacks_or_holds_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let ours = Store::open(dir.path().join("ours.db"), StoreOptions::default()).unwrap();
        let theirs = Store::open(dir.path().join("theirs.db"), StoreOptions::default()).unwrap();
        let sql = |s: &Store, q: &str| {
            Connection::open(s.path())
                .unwrap()
                .execute_batch(q)
                .unwrap()
        };
        sql(
            &ours,
            "INSERT INTO users (user_id, name, updated_at) VALUES ('same', 'S', 1), ('changed', 'Mine', 2), ('late', 'L', 3);",
        );
        sql(
            &theirs,
            "INSERT INTO users (user_id, name, updated_at) VALUES ('same', 'S', 1), ('changed', 'Theirs', 2), ('theirs only', 'T', 4);",
        );
        let copy = dir.path().join("incoming.db");
        theirs.snapshot_to(&copy).unwrap();
        let data = dir.path().join("data");
        let s = ours.set_aside_before_install(&copy, &data, 7).unwrap();
        let users = s.tables.iter().find(|t| t.table == "users").unwrap();
        assert_eq!((users.rows, users.not_in_the_new_copy), (3, 2));
        let mut keys = users.keys.clone();
        keys.sort();
        assert_eq!(keys, ["[\"changed\"]", "[\"late\"]"]);
        assert!(s.file.starts_with(data.join(SET_ASIDE_DIR)) && s.file.exists());
        let written: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{}.summary.json", s.file.display())).unwrap(),
        )
        .unwrap();
        assert_eq!(written["active_at_epoch"], 7);
        assert_eq!(s.divergent_total, 0, "no change capture, no change listed");
        // The live database is untouched.
        assert!(ours.user("late").unwrap().is_some());
    }

    #[test]
    fn with_change_capture_the_summary_lists_the_changes_the_other_node_never_applied() {
        let dir = tempfile::tempdir().unwrap();
        let ours = Store::open(dir.path().join("ours.db"), StoreOptions::default()).unwrap();
        ours.enable_capture(None).unwrap();
        let write = |q: &str| {
            Connection::open(ours.path())
                .unwrap()
                .execute_batch(q)
                .unwrap()
        };
        write("INSERT INTO users (user_id, name, updated_at) VALUES ('shipped', 'S', 1);");
        let shipped = ours.last_change().unwrap();
        write("INSERT INTO users (user_id, name, updated_at) VALUES ('late', 'L', 2);");
        write("UPDATE users SET name = 'changed late' WHERE user_id = 'shipped';");
        // The other node applied through `shipped` and went on by itself.
        let theirs = Store::open(dir.path().join("theirs.db"), StoreOptions::default()).unwrap();
        theirs.enable_capture(None).unwrap();
        theirs.mark_applied(shipped, 3).unwrap();
        let copy = dir.path().join("incoming.db");
        theirs.snapshot_to(&copy).unwrap();
        let s = ours
            .set_aside_before_install(&copy, &dir.path().join("data"), 3)
            .unwrap();
        assert_eq!(s.divergent_total, 2, "{s:?}");
        let listed: Vec<(&str, &str, &str)> = s
            .divergent_changes
            .iter()
            .map(|c| (c.table.as_str(), c.op.as_str(), c.key.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("users", "I", "[\"late\"]"),
                ("users", "U", "[\"shipped\"]")
            ]
        );
    }
}
