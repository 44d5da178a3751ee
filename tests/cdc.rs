//! Case 3 end to end: change data capture between two `standby run` nodes.
//! The application writes through its own connection to A's database,
//! devices send events to A's gateway, and B's database (opened read-only)
//! follows row for row; devices are told their events are durable as B
//! applies them; B takes over when A is killed with everything applied.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use standby_lab::cluster::{quick_device, Cluster, Which, CDC};

/// Every row of `table`, sorted, as text.
fn rows(db: &Path, table: &str) -> Vec<String> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = c.prepare(&format!("SELECT * FROM {table}")).unwrap();
    let n = stmt.column_count();
    let mut out: Vec<String> = stmt
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    out.sort();
    out
}

/// Wait until `f` holds, up to `limit`.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < until,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_writes_and_device_events_follow_to_the_standby_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::with_strategy(&crate::standby(), dir.path(), true, CDC);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start_active_then_standby();

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
    // Nothing B applied was captured again at B.
    let captured_at_b: i64 = Connection::open_with_flags(&b, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row("SELECT count(*) FROM standby_changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(captured_at_b, 0);

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
