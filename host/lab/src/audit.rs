//! The independent check: every entry of every device's own log (its audit
//! file) compared with a database opened read-only, by (device, incarnation,
//! sequence, payload hash). It reads only those files; it never asks the
//! system's own counters.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use standby_device::agent::log::{AuditLine, EventLog};

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Devices whose logs were read.
    pub devices: usize,
    /// Entries in the devices' logs.
    pub entries: u64,
    /// Entries found in the database with the same payload hash.
    pub found: u64,
    /// Entries missing from the database.
    pub missing: u64,
    /// Entries present with a different payload hash.
    pub mismatched: u64,
    /// Rows for these devices' incarnations that no log has.
    pub unknown_rows: u64,
    /// Entries logged twice under the same key (a device reusing a sequence).
    pub duplicate_entries: u64,
    /// Up to 20 missing keys, for messages.
    pub missing_examples: Vec<(u32, u64, u64)>,
}

/// A check could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database could not be opened or queried.
    #[error("audit: {}: {source}", path.display())]
    Database {
        /// The database.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A device's directory or audit file could not be read.
    #[error("audit: {}: {source}", path.display())]
    Read {
        /// The directory or file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An error of the database at `path`.
fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> AuditError + '_ {
    move |source| AuditError::Database {
        path: path.to_path_buf(),
        source,
    }
}

/// Compare every `*.audit` file in `devices_dir` with the database at `db`.
pub fn check(devices_dir: &Path, db: &Path) -> Result<AuditReport, AuditError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error(db))?;
    let mut lookup = conn
        .prepare("SELECT hex(payload_sha256) FROM access_events WHERE device_id = ?1 AND incarnation = ?2 AND seq = ?3")
        .map_err(db_error(db))?;
    let mut report = AuditReport::default();
    let mut incarnations: HashSet<(u32, u64)> = HashSet::new();
    let mut keys: HashSet<(u32, u64, u64)> = HashSet::new();
    let mut files: Vec<_> = std::fs::read_dir(devices_dir)
        .map_err(|source| AuditError::Read {
            path: devices_dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("audit"))
        .collect();
    files.sort();
    for file in files {
        report.devices += 1;
        let lines: Vec<AuditLine> =
            EventLog::read_audit(&file).map_err(|source| AuditError::Read {
                path: file.clone(),
                source,
            })?;
        for l in lines {
            report.entries += 1;
            incarnations.insert((l.device, l.incarnation));
            if !keys.insert((l.device, l.incarnation, l.seq)) {
                report.duplicate_entries += 1;
                continue;
            }
            let hash: Option<String> = lookup
                .query_row(
                    rusqlite::params![l.device, l.incarnation as i64, l.seq as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_error(db))?;
            match hash {
                Some(h) if h.eq_ignore_ascii_case(&l.sha256) => report.found += 1,
                Some(_) => report.mismatched += 1,
                None => {
                    report.missing += 1;
                    if report.missing_examples.len() < 20 {
                        report
                            .missing_examples
                            .push((l.device, l.incarnation, l.seq));
                    }
                }
            }
        }
    }
    let mut rows = conn
        .prepare("SELECT seq FROM access_events WHERE device_id = ?1 AND incarnation = ?2")
        .map_err(db_error(db))?;
    for (device, incarnation) in &incarnations {
        let seqs: Vec<i64> = rows
            .query_map(rusqlite::params![device, *incarnation as i64], |r| r.get(0))
            .and_then(|it| it.collect())
            .map_err(db_error(db))?;
        report.unknown_rows += seqs
            .iter()
            .filter(|s| !keys.contains(&(*device, *incarnation, **s as u64)))
            .count() as u64;
    }
    Ok(report)
}

/// A log entry's key: (device, incarnation, sequence).
pub type EntryKey = (u32, u64, u64);

/// The keys of the events the database at `db` (opened read-only) records as
/// received by `node`: comparing them before and after a moment tells
/// whether that node stored anything in between.
pub fn received_by(db: &Path, node: &str) -> Result<HashSet<EntryKey>, AuditError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error(db))?;
    let mut stmt = conn
        .prepare("SELECT device_id, incarnation, seq FROM access_events WHERE received_by = ?1")
        .map_err(db_error(db))?;
    let keys = stmt
        .query_map([node], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })
        .and_then(|it| it.collect())
        .map_err(db_error(db))?;
    Ok(keys)
}

/// The keys of the devices' log entries (every `*.audit` file in
/// `devices_dir`) that the database at `db`, opened read-only, holds with the
/// same payload hash. Set differences between databases tell what a copy
/// lacked and what came back from the devices.
pub fn found_keys(devices_dir: &Path, db: &Path) -> Result<HashSet<EntryKey>, AuditError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_error(db))?;
    let mut stmt = conn
        .prepare("SELECT device_id, incarnation, seq, hex(payload_sha256) FROM access_events")
        .map_err(db_error(db))?;
    let rows: std::collections::HashMap<EntryKey, String> = stmt
        .query_map([], |r| {
            Ok((
                (
                    r.get::<_, u32>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ),
                r.get::<_, String>(3)?,
            ))
        })
        .and_then(|it| it.collect())
        .map_err(db_error(db))?;
    let mut found = HashSet::new();
    for entry in std::fs::read_dir(devices_dir).map_err(|source| AuditError::Read {
        path: devices_dir.to_path_buf(),
        source,
    })? {
        let path = entry
            .map_err(|source| AuditError::Read {
                path: devices_dir.to_path_buf(),
                source,
            })?
            .path();
        if path.extension().and_then(|x| x.to_str()) != Some("audit") {
            continue;
        }
        let lines = EventLog::read_audit(&path).map_err(|source| AuditError::Read {
            path: path.clone(),
            source,
        })?;
        for l in lines {
            let key = (l.device, l.incarnation, l.seq);
            if rows
                .get(&key)
                .is_some_and(|h| h.eq_ignore_ascii_case(&l.sha256))
            {
                found.insert(key);
            }
        }
    }
    Ok(found)
}
