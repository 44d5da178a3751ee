//! Unit tests of the store: idempotent ingest, watermarks, anti-passback,
//! journal modes, installs and schema versions.

use super::*;

fn event(seq: u64) -> AccessEvent {
    AccessEvent {
        device_id: 3,
        incarnation: 1,
        seq,
        event_code: 0x1000,
        user_id: None,
        occurred_at_ms: seq,
        payload: vec![seq as u8; 10],
    }
}

#[test]
fn ingest_is_idempotent_by_device_incarnation_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db"), StoreOptions::default()).unwrap();
    let first = store.ingest(&[event(1), event(2)], "n").unwrap();
    assert_eq!(
        first,
        IngestOutcome {
            inserted: 2,
            duplicates: 0
        }
    );
    let again = store.ingest(&[event(2), event(3)], "n").unwrap();
    assert_eq!(
        again,
        IngestOutcome {
            inserted: 1,
            duplicates: 1
        }
    );
    assert_eq!(store.info().unwrap().event_count, 3);
    assert_eq!(store.info().unwrap().journal_mode, "wal");
}

#[test]
fn the_watermark_is_the_contiguous_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db"), StoreOptions::default()).unwrap();
    let (_, w) = store
        .ingest_device(3, 1, &[event(1), event(2), event(4)], "n")
        .unwrap();
    assert_eq!(w, 2);
    let (_, w) = store.ingest_device(3, 1, &[event(5)], "n").unwrap();
    assert_eq!(w, 2);
    let (_, w) = store.ingest_device(3, 1, &[event(3)], "n").unwrap();
    assert_eq!(w, 5);
    let many: Vec<_> = (6..=1000).rev().map(event).collect();
    let (_, w) = store.ingest_device(3, 1, &many, "n").unwrap();
    assert_eq!(w, 1000);
    assert_eq!(store.watermark(3, 1).unwrap(), 1000);
    assert_eq!(store.watermark(3, 2).unwrap(), 0);
}

#[test]
fn anti_passback_alternates_in_and_out_per_zone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db"), StoreOptions::default()).unwrap();
    assert!(!store.apb_pass("42", "lobby", true, 1).unwrap());
    assert!(
        store.apb_pass("42", "lobby", true, 2).unwrap(),
        "entering twice"
    );
    assert!(!store.apb_pass("42", "lobby", false, 1).unwrap());
    assert!(
        store.apb_pass("42", "lobby", false, 1).unwrap(),
        "leaving twice"
    );
}

#[test]
fn rollback_exclusive_mode_locks_out_other_connections_and_still_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = Store::open(
        &path,
        StoreOptions {
            journal: JournalMode::RollbackExclusive,
            busy_timeout: Duration::from_millis(50),
        },
    )
    .unwrap();
    store.ingest(&[event(1)], "n").unwrap();
    assert_eq!(store.info().unwrap().journal_mode, "delete");
    let other = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    other.busy_timeout(Duration::ZERO).unwrap();
    let read = other.query_row("SELECT count(*) FROM access_events", [], |r| {
        r.get::<_, i64>(0)
    });
    assert!(
        read.is_err(),
        "another connection could read an exclusively locked file"
    );
    let copy = dir.path().join("copy.db");
    let stats = store.snapshot_to(&copy).unwrap();
    assert!(stats.size > 0);
    assert!(integrity_check(&copy).unwrap().ok);
}

#[test]
fn install_replaces_the_live_database_and_refuses_a_corrupt_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("live.db"), StoreOptions::default()).unwrap();
    store.ingest(&[event(1)], "n").unwrap();

    // A copy with more rows, made by another store.
    let other = Store::open(dir.path().join("other.db"), StoreOptions::default()).unwrap();
    other.ingest(&[event(1), event(2), event(3)], "n").unwrap();
    let copy = dir.path().join("copy.db");
    other.snapshot_to(&copy).unwrap();

    // A corrupt file is refused and the live database is unchanged.
    let corrupt = dir.path().join("corrupt.db");
    let mut bytes = std::fs::read(&copy).unwrap();
    for b in bytes.iter_mut().skip(100).take(4000) {
        *b = 0xA5;
    }
    std::fs::write(&corrupt, &bytes).unwrap();
    assert!(store.install_from(&corrupt).is_err());
    assert_eq!(store.info().unwrap().event_count, 1);

    store.install_from(&copy).unwrap();
    assert_eq!(store.info().unwrap().event_count, 3);
    // Still writable, still WAL.
    store.ingest(&[event(4)], "n").unwrap();
    assert_eq!(store.info().unwrap().journal_mode, "wal");
    assert!(copy.exists(), "the source copy is kept");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}
