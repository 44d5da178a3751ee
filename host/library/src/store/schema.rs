//! The schema, modelled on BioStar 2's: users, devices and access events keyed
//! by (device, log incarnation, per-device sequence). `device_logs` keeps, in
//! the same transactions as the events, each device incarnation's contiguous
//! watermark (every sequence up to it is stored), so any consistent copy of
//! the database carries watermarks that match its events.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Schema version this build writes and understands.
pub(super) const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS users (
    user_id     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    card        TEXT UNIQUE,
    disabled    INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    device_id    INTEGER PRIMARY KEY,
    model        TEXT,
    firmware     TEXT,
    incarnation  INTEGER,
    last_seen    INTEGER
);
CREATE TABLE IF NOT EXISTS access_events (
    device_id       INTEGER NOT NULL,
    incarnation     INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    event_code      INTEGER NOT NULL,
    user_id         TEXT,
    occurred_at     INTEGER NOT NULL,
    payload         BLOB NOT NULL,
    payload_sha256  BLOB NOT NULL,
    received_at     INTEGER NOT NULL,
    received_by     TEXT NOT NULL,
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS access_events_by_time ON access_events (occurred_at);
CREATE TABLE IF NOT EXISTS device_logs (
    device_id    INTEGER NOT NULL,
    incarnation  INTEGER NOT NULL,
    contiguous   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (device_id, incarnation)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS apb_state (
    user_id     TEXT PRIMARY KEY,
    zone        TEXT NOT NULL,
    device_id   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
";

/// Create the schema or check that an existing one is one this build knows.
pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        error: source,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Incompatible {
            path: path.to_path_buf(),
            reason: format!(
                "schema version {version} is newer than this build understands ({SCHEMA_VERSION})"
            ),
        });
    }
    if version < SCHEMA_VERSION {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(err)?;
    }
    Ok(())
}
