//! Case 3 end to end: change data capture between two `standby run` nodes.
//! The application writes through its own connection to A's database,
//! devices send events to A's gateway, and B's database (opened read-only)
//! follows row for row; devices are told their events are durable as B
//! applies them; B takes over when A is killed with everything applied.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use standby_lab::cluster::{quick_device, Cluster, Which, CDC};

use crate::table_rows as rows;

/// Wait until `f` holds, up to `limit`.
pub(crate) fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < until,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A witness and two nodes with the cdc strategy (`settings`: lines of its
/// `[strategy.settings]`), the witness started.
pub(crate) fn cdc_cluster(dir: &Path, settings: &str) -> Cluster {
    let strategy = CDC.replace(
        "[strategy.grants]",
        &format!("[strategy.settings]\n{settings}\n[strategy.grants]"),
    );
    let mut c = Cluster::with_strategy(&crate::standby(), dir, true, &strategy);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c
}

/// [`cdc_cluster`] with A active and B its standby.
pub(crate) fn cdc_pair(dir: &Path, settings: &str) -> Cluster {
    let mut c = cdc_cluster(dir, settings);
    c.start_active_then_standby();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_writes_and_device_events_follow_to_the_standby_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cdc_pair(dir.path(), "");

    // The application: its own connection to A's database.
    let app = Connection::open(c.db(Which::A)).unwrap();
    app.busy_timeout(Duration::from_secs(5)).unwrap();
    for i in 0..200 {
        app.execute(
            "INSERT INTO users (user_id, name, card, updated_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![format!("u{i}"), format!("User {i}"), format!("card-{i}"), i],
        )
        .unwrap();
        if i % 10 == 9 {
            app.execute(
                "UPDATE users SET name = name || ' (moved)' WHERE user_id = ?1",
                [format!("u{}", i - 5)],
            )
            .unwrap();
        }
    }
    app.execute("DELETE FROM users WHERE user_id = 'u3'", [])
        .unwrap();
    // A device sends events to A.
    let devices = dir.path().join("devices");
    let agent = quick_device(
        &devices,
        &c.device_addr(Which::A),
        Duration::from_millis(2_000),
        Duration::from_millis(1_000),
    );
    for _ in 0..50 {
        agent
            .record(0x1001, Some("u1".into()), b"door 1 opened".to_vec())
            .unwrap();
    }
    let acked = || {
        let s = agent.status();
        s.last_seq >= 50 && s.acked >= s.last_seq
    };
    eventually(
        Duration::from_secs(20),
        "the device's events acknowledged",
        acked,
    );

    // B follows: the same users and events, row for row.
    let (a, b) = (c.db(Which::A), c.db(Which::B));
    eventually(
        Duration::from_secs(10),
        "B holding A's users and events",
        || {
            rows(&a, "users") == rows(&b, "users")
                && rows(&a, "access_events") == rows(&b, "access_events")
        },
    );
    assert_eq!(rows(&b, "users").len(), 199);
    // The device is told its events are durable at B (from the applied
    // batches) with its next acknowledgements, and forgets them.
    let covered = agent.status().last_seq;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        agent
            .record(0x1001, Some("u2".into()), b"door 2 opened".to_vec())
            .unwrap();
        let s = agent.status();
        if s.durable >= covered {
            assert!((s.pending as u64) < s.last_seq, "nothing forgotten: {s:?}");
            break;
        }
        assert!(Instant::now() < until, "never confirmed durable: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sb = c.status(Which::B).unwrap();
    let strategy = &sb["strategies"][0]["status"]["Ok"];
    assert_eq!(strategy["healthy"], true, "{sb}");
    // Nothing B applied was captured again at B: its log holds only the
    // marker of the position it applied through. Both read in one read
    // transaction: B goes on applying the device's events meanwhile.
    let mut b_conn = Connection::open_with_flags(&b, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let b_read = b_conn.transaction().unwrap();
    let b_log: Vec<(i64, String)> = b_read
        .prepare("SELECT seq, op FROM standby_changes")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let applied: i64 = b_read
        .query_row("SELECT seq FROM standby_applied", [], |r| r.get(0))
        .unwrap();
    drop(b_read);
    assert_eq!(b_log, [(applied, String::from("O"))]);

    // A is killed: B takes over with everything A committed.
    let users_on_a = rows(&a, "users");
    c.kill(Which::A);
    let s = c.wait_status(Which::B, Duration::from_secs(30), |s| s["role"] == "active");
    assert!(
        s["promoted_from"][0]["report"]["restored_from"]
            .as_str()
            .is_some_and(|r| r.starts_with("change stream applied through change")),
        "{s}"
    );
    assert_eq!(rows(&b, "users"), users_on_a);
    agent.shutdown().await;
}

/// Insert users `ids` with `name` through the application's connection.
pub(crate) fn add_users(app: &Connection, ids: std::ops::Range<u32>, name: &str) {
    for i in ids {
        app.execute(
            "INSERT INTO users (user_id, name, updated_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![format!("u{i:03}"), name, i],
        )
        .unwrap();
    }
}

/// `standby replication DECISION` on B: whether it succeeded, its output.
fn decide(c: &Cluster, decision: &str) -> (bool, String) {
    let (ok, out, err) = crate::run_standby(&[
        "replication",
        decision,
        c.profile.to_str().unwrap(),
        "--site",
        "dr",
    ]);
    (ok, format!("{out}{err}"))
}

pub(crate) fn has_user(db: &Path, id: &str) -> bool {
    rows(db, "users")
        .iter()
        .any(|r| r.contains(&format!("\"{id}\"")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_batch_stops_the_stream_until_an_operator_retries_or_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = cdc_pair(dir.path(), "");
    let (a, b) = (c.db(Which::A), c.db(Which::B));
    // The DR site's schema refuses some rows (a constraint only it has).
    let dr = Connection::open(&b).unwrap();
    let poison = "CREATE TRIGGER poison BEFORE INSERT ON users WHEN NEW.name = 'poison' \
                  BEGIN SELECT RAISE(ABORT, 'refused by the DR site'); END;";
    dr.execute_batch(poison).unwrap();
    let app = Connection::open(&a).unwrap();
    app.busy_timeout(Duration::from_secs(5)).unwrap();
    add_users(&app, 0..10, "ok");
    eventually(Duration::from_secs(10), "B holding the first users", || {
        has_user(&b, "u009")
    });
    add_users(&app, 10..11, "poison");
    add_users(&app, 11..20, "ok");

    // The stream stops at the batch, loudly; nothing after it is applied.
    let stopped = c.wait_status(Which::B, Duration::from_secs(10), |s| {
        s["change_stream_stopped"].is_object()
    });
    let stop = &stopped["change_stream_stopped"];
    assert!(
        stop["cause"]
            .as_str()
            .unwrap()
            .contains("refused by the DR site"),
        "{stop}"
    );
    assert!(stop["failed_seq"].as_u64().is_some(), "{stop}");
    let strategy = &stopped["strategies"][0]["status"]["Ok"];
    assert_eq!(strategy["healthy"], false, "{stopped}");
    assert!(c.log(Which::B).contains("the change stream stops"));
    let (ok, text, _) =
        crate::run_standby(&["status", c.profile.to_str().unwrap(), "--site", "dr"]);
    assert!(ok && text.contains("STREAM STOPPED"), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!has_user(&b, "u010") && !has_user(&b, "u019"));

    // A retry with the cause still there stops again and says so.
    let (ok, text) = decide(&c, "retry");
    assert!(!ok && text.contains("stopped again"), "{text}");
    // The cause fixed, a retry applies the batch and the stream goes on.
    dr.execute_batch("DROP TRIGGER poison").unwrap();
    let (ok, text) = decide(&c, "retry");
    assert!(ok, "{text}");
    let (ok, text) = decide(&c, "retry");
    assert!(!ok && text.contains("not stopped"), "{text}");
    eventually(Duration::from_secs(10), "B equal to A again", || {
        rows(&a, "users") == rows(&b, "users")
    });

    // Skip: the failing change is set aside in a file, the rest applied.
    dr.execute_batch(poison).unwrap();
    add_users(&app, 20..21, "poison");
    add_users(&app, 21..30, "ok");
    c.wait_status(Which::B, Duration::from_secs(10), |s| {
        s["change_stream_stopped"].is_object()
    });
    let (ok, text) = decide(&c, "skip");
    assert!(
        ok && text.contains("set the failing change aside in"),
        "{text}"
    );
    eventually(Duration::from_secs(10), "B applying after the skip", || {
        has_user(&b, "u029")
    });
    assert!(!has_user(&b, "u020") && has_user(&a, "u020"));
    let set_aside: Vec<_> = std::fs::read_dir(dir.path().join("dr/set-aside"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(set_aside.len(), 1);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(set_aside[0].path()).unwrap()).unwrap();
    assert_eq!(file["skipped"][0]["pk"], "[\"u020\"]", "{file}");
    let healthy = c.wait_status(Which::B, Duration::from_secs(10), |s| {
        s["strategies"][0]["status"]["Ok"]["healthy"] == true
    });
    assert!(healthy["change_stream_stopped"].is_null(), "{healthy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_shipped_again_to_a_slow_standby_are_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    // A ships again what B has not reported applied after 300 ms.
    let c = cdc_pair(dir.path(), "resend_after_ms = 300");
    let (a, b) = (c.db(Which::A), c.db(Which::B));
    // Every row B writes into `users` is counted (by triggers of B's own):
    // a change applied twice would count twice.
    Connection::open(&b)
        .unwrap()
        .execute_batch(
            "CREATE TABLE applied_writes (n INTEGER NOT NULL); INSERT INTO applied_writes VALUES (0);
             CREATE TRIGGER count_insert AFTER INSERT ON users BEGIN UPDATE applied_writes SET n = n + 1; END;
             CREATE TRIGGER count_update AFTER UPDATE ON users BEGIN UPDATE applied_writes SET n = n + 1; END;",
        )
        .unwrap();
    let app = Connection::open(&a).unwrap();
    app.busy_timeout(Duration::from_secs(5)).unwrap();
    add_users(&app, 0..20, "before");
    eventually(Duration::from_secs(10), "B following", || {
        has_user(&b, "u019")
    });
    // B cannot apply for 1.5 s (another connection holds its database):
    // its reports stop, A ships the same changes again, and B finds both
    // copies queued once it can apply (the store skips what it applied).
    let blocker = Connection::open(&b).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for i in 20..40 {
        add_users(&app, i..i + 1, "while B was slow");
        // Each insert is followed by a change of the same row: a copy of
        // the insert applied again after it would undo the change.
        app.execute(
            "UPDATE users SET name = 'changed' WHERE user_id = ?1",
            [format!("u{i:03}")],
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.execute_batch("COMMIT").unwrap();
    add_users(&app, 40..50, "after");
    eventually(Duration::from_secs(15), "B equal to A", || {
        rows(&a, "users") == rows(&b, "users")
    });
    assert!(
        c.log(Which::A).contains("shipping them again"),
        "A shipped the batches again"
    );
    // 50 inserts and 20 updates on A: each applied once on B.
    let writes: i64 = Connection::open_with_flags(&b, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row("SELECT n FROM applied_writes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(writes, 70, "changes applied more than once");
    let s = c.status(Which::B).unwrap();
    assert_eq!(s["strategies"][0]["status"]["Ok"]["healthy"], true, "{s}");
    assert!(s["change_stream_stopped"].is_null(), "{s}");
}

/// The `seeds` detail of a node's cdc status.
pub(crate) fn seeds(s: &serde_json::Value) -> String {
    s["strategies"][0]["status"]["Ok"]["details"]
        .as_array()
        .and_then(|d| d.iter().find(|kv| kv[0] == "seeds"))
        .map(|kv| kv[1].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_away_past_the_logs_bound_is_reseeded_and_follows_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cdc_cluster(dir.path(), "max_log_changes = 1000");
    // A runs alone (B is away, its database empty) and writes 3,000 changes.
    c.start(Which::A, &[]);
    c.wait_status(Which::A, Duration::from_secs(30), |s| s["role"] == "active");
    let a = c.db(Which::A);
    let mut app = Connection::open(&a).unwrap();
    app.busy_timeout(Duration::from_secs(5)).unwrap();
    for chunk in 0..30 {
        let tx = app.transaction().unwrap();
        add_users(&tx, chunk * 100..(chunk + 1) * 100, "while B was away");
        tx.commit().unwrap();
    }
    // The log is held to its bound: what B would need first is gone.
    let log_size = || -> i64 {
        Connection::open_with_flags(&a, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
            .query_row("SELECT count(*) FROM standby_changes", [], |r| r.get(0))
            .unwrap()
    };
    eventually(
        Duration::from_secs(15),
        "A's log held to 1,000 changes",
        || log_size() <= 1_000,
    );

    // B starts empty: it is sent a snapshot, installs it, and follows.
    c.start(Which::B, &[]);
    c.wait_status(Which::B, Duration::from_secs(30), |s| {
        s["role"] == "standby" && s["peer"]["connected"] == true
    });
    let b = c.db(Which::B);
    eventually(Duration::from_secs(30), "B seeded with A's users", || {
        rows(&b, "users").len() == 3_000
    });
    add_users(&app, 3_000..3_010, "after the seed");
    app.execute(
        "UPDATE users SET name = 'changed' WHERE user_id = 'u005'",
        [],
    )
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "B following after the seed",
        || rows(&a, "users") == rows(&b, "users"),
    );
    let sb = c.status(Which::B).unwrap();
    assert_eq!(seeds(&sb), "1", "{sb}");
    assert_eq!(sb["strategies"][0]["status"]["Ok"]["healthy"], true, "{sb}");
    let sa = c.status(Which::A).unwrap();
    assert_eq!(seeds(&sa), "1", "{sa}");
    assert!(c.log(Which::A).contains("sending it a snapshot"));
    assert!(
        c.log(Which::A)
            .contains("snapshot sent to the peer, streamed from the live database"),
        "{}",
        c.log(Which::A)
    );
    // The seed was moved into place (not copied and kept): nothing of it is
    // left in B's inbox.
    let b_log = c.log(Which::B);
    let installed = b_log
        .lines()
        .find(|l| l.contains("installed a copy as the live database"))
        .unwrap_or_else(|| panic!("B installed nothing: {b_log}"));
    assert!(
        installed.contains("moved") && installed.ends_with("true"),
        "{installed}"
    );
    let inbox = b.parent().unwrap().join("cdc-inbox");
    let left: Vec<_> = std::fs::read_dir(&inbox)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", inbox.display());
    // Nothing of A's log came along to be shipped from B.
    let b_log: i64 = Connection::open_with_flags(&b, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row("SELECT count(*) FROM standby_changes", [], |r| r.get(0))
        .unwrap();
    assert!(b_log <= 1, "{b_log}");
}
