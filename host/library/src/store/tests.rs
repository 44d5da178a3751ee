//! Unit tests of the store: idempotent ingest, watermarks, anti-passback,
//! journal modes, snapshots under writers, installs and schema versions.

use super::*;
use rusqlite::OpenFlags;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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

/// The bytes row `id` of the test table holds.
fn row_bytes(id: u64) -> Vec<u8> {
    (0..4096u64).map(|i| (id * 31 + i * 7) as u8).collect()
}

/// A store with a table `t` of `rows` 4 KiB rows (ids 1..=rows).
fn store_with_rows(dir: &Path, rows: u64, options: StoreOptions) -> Store {
    let store = Store::open(dir.join("live.db"), options).unwrap();
    let conn = Connection::open(store.path()).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL);")
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for id in 1..=rows {
        tx.execute(
            "INSERT INTO t (id, v) VALUES (?1, ?2)",
            params![id as i64, row_bytes(id)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    store
}

/// Check a copy independently: integrity, a standalone rollback-journal
/// file, its rows a prefix 1..=n with the right bytes; returns n.
fn check_copy_rows(copy: &Path, stats: &SnapshotStats) -> u64 {
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(copy).unwrap()))
    };
    assert_eq!(stats.sha256, sha, "the snapshot's checksum is its file's");
    assert_eq!(stats.size, std::fs::metadata(copy).unwrap().len());
    assert_eq!(stats.stamp, FileStamp::of_path(copy).unwrap());
    assert!(integrity_check(copy).unwrap().ok);
    let c = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the copy is a standalone file");
    let (n, max): (u64, Option<i64>) = c
        .query_row("SELECT count(*), max(id) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        Some(n as i64),
        max,
        "the copy is not a prefix of the commits"
    );
    let mut stmt = c.prepare("SELECT id, v FROM t").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap();
    for row in rows {
        let (id, v) = row.unwrap();
        assert!(v == row_bytes(id as u64), "row {id} holds other bytes");
    }
    drop(stmt);
    drop(c);
    assert!(
        !sibling(copy, "-wal").exists() && !sibling(copy, "-shm").exists(),
        "reading the copy left a WAL beside it"
    );
    n
}

#[test]
fn a_snapshot_under_writers_and_checkpoints_holds_every_commit_before_it_and_nothing_torn() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_rows(dir.path(), 8_000, StoreOptions::default());
    let committed = Arc::new(AtomicU64::new(8_000));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, committed, stop) = (store.path().to_path_buf(), committed.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            // Checkpoints as often as they can run: every few pages.
            conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 4;")
                .unwrap();
            let mut id = committed.load(Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                conn.execute(
                    "INSERT INTO t (id, v) VALUES (?1, ?2)",
                    params![id as i64, row_bytes(id)],
                )
                .unwrap();
                committed.store(id, Ordering::SeqCst);
            }
        })
    };
    while committed.load(Ordering::SeqCst) < 8_200 {
        std::thread::sleep(Duration::from_millis(1));
    }
    for round in 0..3 {
        let before = committed.load(Ordering::SeqCst);
        let copy = dir.path().join(format!("copy-{round}.db"));
        let stats = store.snapshot_to(&copy).unwrap();
        let after = committed.load(Ordering::SeqCst);
        assert_eq!(stats.method, SnapshotMethod::FileCopy);
        assert!(
            after > before,
            "the writer was held back for the whole copy"
        );
        let n = check_copy_rows(&copy, &stats);
        assert!(
            n >= before,
            "{n} rows, but {before} were committed before the snapshot"
        );
        assert!(n <= after);
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
}

#[test]
fn a_reader_holding_the_wal_back_makes_the_snapshot_an_online_backup_with_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_rows(dir.path(), 100, StoreOptions::default());
    // An old reader pins the state of 100 rows.
    let reader = Connection::open(store.path()).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 100);
    let conn = Connection::open(store.path()).unwrap();
    for id in 101..=150u64 {
        conn.execute(
            "INSERT INTO t (id, v) VALUES (?1, ?2)",
            params![id as i64, row_bytes(id)],
        )
        .unwrap();
    }
    let copy = dir.path().join("copy.db");
    let stats = store.snapshot_to(&copy).unwrap();
    assert_eq!(stats.method, SnapshotMethod::OnlineBackup);
    assert_eq!(check_copy_rows(&copy, &stats), 150);
    reader.execute_batch("COMMIT").unwrap();
    // With the reader gone, the main file can be pinned again.
    let again = dir.path().join("again.db");
    let stats = store.snapshot_to(&again).unwrap();
    assert_eq!(stats.method, SnapshotMethod::FileCopy);
    assert_eq!(check_copy_rows(&again, &stats), 150);
}

#[test]
fn a_snapshot_of_a_frozen_database_does_not_wait_for_the_thaw() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(200),
        ..StoreOptions::default()
    };
    let store = store_with_rows(dir.path(), 50, options);
    let frozen = store.freeze().unwrap();
    let copy = dir.path().join("copy.db");
    let stats = store.snapshot_to(&copy).unwrap();
    assert_eq!(stats.method, SnapshotMethod::OnlineBackup);
    assert_eq!(check_copy_rows(&copy, &stats), 50);
    drop(frozen);
}

#[test]
fn a_pinned_snapshot_reads_as_the_snapshot_file_and_a_frozen_database_is_not_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_rows(dir.path(), 300, StoreOptions::default());
    let copy = dir.path().join("copy.db");
    let stats = store.snapshot_to(&copy).unwrap();
    let pinned = store.pin_snapshot().unwrap().expect("a WAL database pins");
    assert_eq!(pinned.len(), stats.size);
    // Read in odd pieces: the bytes are the snapshot file's, header and all.
    let mut read = vec![0u8; pinned.len() as usize];
    let mut at = 0;
    while at < read.len() {
        let end = (at + 7).min(read.len());
        let got = pinned.read_at(&mut read[at..end], at as u64).unwrap();
        assert!(got > 0);
        at += got;
    }
    assert!(read == std::fs::read(&copy).unwrap(), "the bytes differ");
    drop(pinned);
    let frozen = store.freeze().unwrap();
    assert!(store.pin_snapshot().unwrap().is_none());
    drop(frozen);
}

/// A copy of `store` (made by a snapshot) and a corrupt variant of it.
fn copies(store: &Store, dir: &Path) -> (PathBuf, PathBuf) {
    let copy = dir.join("copy.db");
    store.snapshot_to(&copy).unwrap();
    let corrupt = dir.join("corrupt.db");
    // The last pages hold rows of `t`: the schema stays readable.
    let mut bytes = std::fs::read(&copy).unwrap();
    let from = bytes.len() - 8192;
    for b in bytes.iter_mut().skip(from).take(4000) {
        *b = 0xA5;
    }
    std::fs::write(&corrupt, &bytes).unwrap();
    (copy, corrupt)
}

#[test]
fn an_install_by_moving_consumes_the_file_and_leaves_nothing_partial_when_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("other")).unwrap();
    let other = store_with_rows(&dir.path().join("other"), 30, StoreOptions::default());
    let store = Store::open(dir.path().join("live.db"), StoreOptions::default()).unwrap();
    store.ingest(&[event(1)], "n").unwrap();
    let (copy, corrupt) = copies(&other, dir.path());

    let err = store.install_moving(&corrupt).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(!corrupt.exists(), "a refused copy handed over is removed");
    assert!(!sibling(store.path(), ".installing").exists());
    assert_eq!(
        store.info().unwrap().event_count,
        1,
        "the live database changed"
    );

    store.install_moving(&copy).unwrap();
    assert!(!copy.exists(), "the copy became the live database");
    assert!(!sibling(store.path(), ".installing").exists());
    let n: i64 = Connection::open(store.path())
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 30);
    store.ingest(&[event(2)], "n").unwrap();
    assert_eq!(store.info().unwrap().journal_mode, "wal");
}

#[test]
fn a_checked_copy_is_not_checked_again_unless_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("other")).unwrap();
    let other = store_with_rows(&dir.path().join("other"), 30, StoreOptions::default());
    let store = Store::open(dir.path().join("live.db"), StoreOptions::default()).unwrap();
    let (copy, corrupt) = copies(&other, dir.path());

    // Checked, then changed (new bytes, new stamp): checked again, refused.
    assert!(store.check_copy(&copy).unwrap().ok);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::copy(&corrupt, &copy).unwrap();
    assert!(matches!(
        store.install_from(&copy).unwrap_err(),
        StoreError::Corrupt { .. }
    ));
    assert!(!sibling(store.path(), ".installing").exists());

    // Checked and unchanged: its check stands. Shown by changing its bytes
    // behind its stamp's back (the modification time put back): the install
    // trusts the check it remembers and does not read the file for it again.
    let (good, _) = copies(&other, &dir.path().join("other"));
    assert!(store.check_copy(&good).unwrap().ok);
    let stamp = FileStamp::of_path(&good).unwrap();
    let mtime = std::fs::metadata(&good).unwrap().modified().unwrap();
    std::fs::write(&good, std::fs::read(&corrupt).unwrap()).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&good).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert_eq!(FileStamp::of_path(&good).unwrap(), stamp);
    store.install_from(&good).unwrap();
    assert!(
        !integrity_check(store.path()).unwrap().ok,
        "the install checked the file again"
    );
}
