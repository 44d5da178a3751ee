//! Change capture against real SQLite files: any connection's writes
//! replayed elsewhere row for row, failed batches, rowid tables.
#![allow(clippy::unwrap_used)]

use super::super::{Store, StoreOptions, User};
use super::*;

fn store(dir: &std::path::Path, name: &str) -> Store {
    Store::open(dir.join(name), StoreOptions::default()).unwrap()
}

/// Every row of every user table, as text, for comparing two databases.
fn dump(path: &std::path::Path) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for t in user_tables(&c).unwrap() {
        let mut stmt = c.prepare(&format!("SELECT * FROM {}", quote(&t))).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let vals: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get::<_, Value>(i).unwrap()))
                    .collect();
                Ok(format!("{t}: {}", vals.join("|")))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out.sort();
    out
}

#[test]
fn changes_from_any_connection_replay_on_another_database_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(dir.path(), "a.db");
    let b = store(dir.path(), "b.db");
    let tables = a.enable_capture(None).unwrap();
    assert!(
        tables.contains(&"users".to_string()) && !tables.iter().any(|t| t.starts_with("standby_")),
        "{tables:?}"
    );
    // The application writes through its own connection.
    let app = Connection::open(a.path()).unwrap();
    app.execute_batch(
        "INSERT INTO users (user_id, name, card, updated_at) VALUES ('u1', 'Ann', 'c1', 1), ('u2', 'Bo', 'c2', 1);
         UPDATE users SET name = 'Ann B' WHERE user_id = 'u1';
         UPDATE users SET user_id = 'u3' WHERE user_id = 'u2';
         INSERT INTO users (user_id, name, card, updated_at) VALUES ('u4', 'Cy', NULL, 2);
         DELETE FROM users WHERE user_id = 'u4';",
    )
    .unwrap();
    // The host writes too (a blob column, a WITHOUT ROWID table).
    a.ingest(
        &[super::super::AccessEvent {
            device_id: 5,
            incarnation: 1,
            seq: 1,
            event_code: 0x1000,
            user_id: Some("u1".into()),
            occurred_at_ms: 7,
            payload: vec![0, 159, 146, 150, 255],
        }],
        "a",
    )
    .unwrap();
    a.upsert_user(&User {
        user_id: "u5".into(),
        name: "Dee".into(),
        card: Some("c5".into()),
        disabled: false,
    })
    .unwrap();
    let changes = a.read_changes(0, 1_000, u64::MAX).unwrap();
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    // B captures too (as the plugin turns it on before it applies anything).
    b.enable_capture(None).unwrap();
    assert_eq!(
        b.apply_changes(&changes, 1).unwrap(),
        changes.last().unwrap().seq
    );
    assert_eq!(dump(a.path()), dump(b.path()));
    // Nothing applied was captured at B (it would loop back after a
    // failover): its log holds only the marker of the position it applied
    // through, and starts there.
    let again = b.apply_changes(&changes, 1).unwrap();
    let last = changes.last().unwrap().seq;
    assert_eq!(again, last, "applied twice");
    assert!(b.read_changes(last, 10, u64::MAX).unwrap().is_empty());
    assert!(b.read_changes(0, 10, u64::MAX).is_err());
    assert_eq!(dump(a.path()), dump(b.path()));
    // Pruned changes are gone from A's log.
    a.prune_changes(changes[2].seq).unwrap();
    assert_eq!(
        a.read_changes(changes[2].seq, 1_000, u64::MAX)
            .unwrap()
            .first()
            .map(|c| c.seq),
        Some(changes[3].seq)
    );
    assert!(
        a.read_changes(0, 1_000, u64::MAX).is_err(),
        "pruned changes asked for"
    );
    // Pruning everything keeps the newest change, so the next change
    // still follows it.
    let last = changes.last().unwrap().seq;
    a.prune_changes(last).unwrap();
    a.upsert_user(&User {
        user_id: "u6".into(),
        name: "Eve".into(),
        card: None,
        disabled: false,
    })
    .unwrap();
    let next = a.read_changes(last, 10, u64::MAX).unwrap();
    assert_eq!(next.first().map(|c| c.seq), Some(last + 1));
    assert_eq!(b.applied_mark().unwrap(), (changes.last().unwrap().seq, 1));
    assert_eq!(a.last_change().unwrap(), changes.last().unwrap().seq + 1);
    assert_eq!(b.last_change().unwrap(), changes.last().unwrap().seq);
}

#[test]
fn a_batch_that_cannot_be_applied_changes_nothing_and_names_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(dir.path(), "a.db");
    let b = store(dir.path(), "b.db");
    a.enable_capture(None).unwrap();
    let app = Connection::open(a.path()).unwrap();
    app.execute_batch(
        "INSERT INTO users (user_id, name, updated_at) VALUES ('u1', 'Ann', 1), ('u2', 'Bo', 1);",
    )
    .unwrap();
    let mut changes = a.read_changes(0, 100, u64::MAX).unwrap();
    changes[1].row = Some("{\"user_id\": \"u2\", \"nonsense\": 1}".into());
    let e = b.apply_changes(&changes, 1).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("change {}", changes[1].seq)) && text.contains("users"),
        "{text}"
    );
    assert_eq!(b.applied_mark().unwrap(), (0, 0));
    assert!(
        b.user("u1").unwrap().is_none(),
        "part of a failed batch was applied"
    );
}

#[test]
fn rowid_tables_are_captured_by_rowid_and_a_missing_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(dir.path(), "a.db");
    let b = store(dir.path(), "b.db");
    for s in [&a, &b] {
        let c = Connection::open(s.path()).unwrap();
        c.execute_batch("CREATE TABLE notes (body TEXT, n REAL);")
            .unwrap();
    }
    a.enable_capture(Some(&["notes".to_string()])).unwrap();
    let app = Connection::open(a.path()).unwrap();
    app.execute_batch("INSERT INTO notes VALUES ('x', 1.5), ('y', 2); UPDATE notes SET body = 'z' WHERE n = 2; DELETE FROM notes WHERE body = 'x';").unwrap();
    b.apply_changes(&a.read_changes(0, 100, u64::MAX).unwrap(), 1)
        .unwrap();
    assert_eq!(dump(a.path()), dump(b.path()));
    let e = a
        .enable_capture(Some(&["missing".to_string()]))
        .unwrap_err();
    assert!(e.to_string().contains("`missing` does not exist"), "{e}");
}

#[test]
fn a_batch_from_an_older_epoch_is_refused_and_a_skipped_mark_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(dir.path(), "a.db");
    let b = store(dir.path(), "b.db");
    a.enable_capture(None).unwrap();
    let app = Connection::open(a.path()).unwrap();
    app.execute_batch(
        "INSERT INTO users (user_id, name, updated_at) VALUES ('u1', 'Ann', 1), ('u2', 'Bo', 1);",
    )
    .unwrap();
    let changes = a.read_changes(0, 100, u64::MAX).unwrap();
    assert_eq!(b.apply_changes(&changes[..1], 3).unwrap(), changes[0].seq);
    let e = b.apply_changes(&changes[1..], 2).unwrap_err();
    assert!(e.to_string().contains("epoch 2"), "{e}");
    assert!(b.user("u2").unwrap().is_none());
    // An operator's skip moves the mark on; an older mark never moves it back.
    let last = changes[1].seq;
    assert_eq!(b.mark_applied(last, 3).unwrap(), last);
    assert_eq!(b.mark_applied(1, 3).unwrap(), last);
    assert_eq!(b.apply_changes(&changes, 3).unwrap(), last);
    assert!(
        b.user("u2").unwrap().is_none(),
        "a skipped change was applied"
    );
}

#[test]
fn a_standby_the_log_cannot_serve_is_reseeded_from_a_snapshot_and_follows_from_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(dir.path(), "a.db");
    let b = store(dir.path(), "b.db");
    // Rows that were there before capture was turned on are in no change.
    let app = Connection::open(a.path()).unwrap();
    app.execute_batch("INSERT INTO users (user_id, name, updated_at) VALUES ('old', 'Before', 1);")
        .unwrap();
    a.enable_capture(None).unwrap();
    app.execute_batch("INSERT INTO users (user_id, name, updated_at) VALUES ('u1', 'Ann', 2);")
        .unwrap();
    let e = a.read_changes(0, 100, u64::MAX).unwrap_err().to_string();
    assert!(e.contains("needs a snapshot"), "{e}");

    // The reseed: a snapshot of A installed at B; B counts as applied
    // through the snapshot's newest change, and nothing of A's log is left
    // to ship from B.
    let snap = dir.path().join("seed.db");
    a.snapshot_to(&snap).unwrap();
    b.install_from(&snap).unwrap();
    let (position, _) = b.applied_mark().unwrap();
    assert_eq!(position, a.last_change().unwrap());
    assert!(b.read_changes(position, 100, u64::MAX).unwrap().is_empty());
    assert!(b.user("old").unwrap().is_some() && b.user("u1").unwrap().is_some());

    // The stream goes on from the position.
    app.execute_batch("UPDATE users SET name = 'Ann B' WHERE user_id = 'u1';")
        .unwrap();
    let next = a.read_changes(position, 100, u64::MAX).unwrap();
    assert_eq!(next.len(), 1);
    b.apply_changes(&next, 1).unwrap();
    assert_eq!(
        dump(a.path())
            .iter()
            .filter(|r| r.starts_with("users"))
            .count(),
        2
    );
    assert_eq!(
        dump(a.path())
            .into_iter()
            .filter(|r| r.starts_with("users"))
            .collect::<Vec<_>>(),
        dump(b.path())
            .into_iter()
            .filter(|r| r.starts_with("users"))
            .collect::<Vec<_>>()
    );

    // Pruned past a standby's mark (the log's bound): a snapshot again.
    app.execute_batch(
        "INSERT INTO users (user_id, name, updated_at) VALUES ('u2', 'Bo', 3), ('u3', 'Cy', 3);",
    )
    .unwrap();
    let last = a.last_change().unwrap();
    a.prune_changes(last - 1).unwrap();
    assert!(a.read_changes(position, 100, u64::MAX).is_err());
    assert_eq!(a.read_changes(last - 1, 100, u64::MAX).unwrap().len(), 1);
}

#[test]
fn the_sequence_goes_on_across_a_switch_of_roles_and_own_changes_past_it_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(dir.path(), "a.db");
    let b = store(dir.path(), "b.db");
    a.enable_capture(None).unwrap();
    b.enable_capture(None).unwrap();
    let write = |s: &Store, id: &str| {
        Connection::open(s.path())
            .unwrap()
            .execute(
                "INSERT INTO users (user_id, name, updated_at) VALUES (?1, 'x', 1)",
                [id],
            )
            .unwrap();
    };
    for id in ["a1", "a2", "a3"] {
        write(&a, id);
    }
    // A, active at epoch 1, stands at its own third change.
    let pa = a.position(1).unwrap();
    assert_eq!((pa.seq, pa.epoch, pa.own), (3, 1, true));
    // B applies them: it stands there too, and its log holds one marker.
    let changes = a.read_changes(0, 100, u64::MAX).unwrap();
    assert_eq!(b.apply_changes(&changes, 1).unwrap(), 3);
    let pb = b.position(0).unwrap();
    assert_eq!((pb.seq, pb.epoch, pb.own), (3, 1, false));
    // B becomes active: its own changes are numbered on from 3.
    write(&b, "b4");
    let from_b = b.read_changes(3, 100, u64::MAX).unwrap();
    assert_eq!(from_b.iter().map(|c| c.seq).collect::<Vec<_>>(), [4]);
    // A (handed over at 3) follows from there.
    assert_eq!(a.apply_changes(&from_b, 2).unwrap(), 4);
    assert_eq!(a.position(1).unwrap().seq, 4);
    assert!(a.user("b4").unwrap().is_some());

    // A node holding changes of its own past a batch's start refuses it.
    let c = store(dir.path(), "c.db");
    c.enable_capture(None).unwrap();
    c.apply_changes(&changes, 1).unwrap();
    write(&c, "c4");
    let e = c.apply_changes(&from_b, 2).unwrap_err();
    assert!(
        matches!(&e, crate::store::StoreError::Capture { error, .. }
            if matches!(error.as_ref(), CaptureError::Diverged { own: 4, first: 4 })),
        "{e}"
    );
    assert!(c.user("b4").unwrap().is_none(), "nothing applied");
    // An installed copy adopts the node's epoch.
    b.adopt_applied_epoch(7).unwrap();
    assert_eq!(b.applied_mark().unwrap(), (3, 7));
}

#[test]
fn a_prune_against_a_frozen_database_prunes_nothing_now_and_everything_later() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(dir.path(), "a.db");
    a.enable_capture(None).unwrap();
    for i in 0..5 {
        a.upsert_user(&User {
            user_id: format!("u{i}"),
            name: "x".into(),
            card: None,
            disabled: false,
        })
        .unwrap();
    }
    let frozen = a.freeze().unwrap();
    // The write lock is held elsewhere: nothing pruned, no error.
    assert_eq!(a.prune_changes(4).unwrap(), 0);
    assert_eq!(a.read_changes(0, 10, u64::MAX).unwrap().len(), 5);
    frozen.thaw();
    assert_eq!(a.prune_changes(4).unwrap(), 4);
    assert!(a.read_changes(0, 10, u64::MAX).is_err(), "pruned");
}
