//! Planned switchovers (`standby switchover PROFILE --to NAME`), end to end
//! with separate processes: under load through the demo and its
//! independent checker (cases 3 and 1), there and back again with the
//! change stream going on without a reseed, and a switchover the other
//! node never confirms (abandoned: the old active goes on, nothing lost).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value;
use standby_lab::cluster::{Cluster, Which};

use crate::cdc::{add_users, cdc_cluster, cdc_pair, eventually, has_user, seeds};
use crate::failover::{assert_failover_outcome, demo_with};
use crate::table_rows as rows;

/// The demo with a switchover in place of the fault.
fn demo_switchover(profile: &str) -> Value {
    demo_with(&[
        "--profile",
        profile,
        "--fault",
        "switchover",
        "--devices",
        "30",
        "--kill-after",
        "2",
        "--run-after",
        "4",
    ])
}

/// What every switchover under load must show: nothing lost, nothing
/// divergent, a higher epoch, A handed over and B's writer writing.
fn assert_lossless_switchover(o: &Value) {
    assert_failover_outcome(o, "switchover");
    let n = |k: &str| o[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {o}"));
    assert_eq!(o["fault"], "switchover", "{o}");
    assert_eq!(n("rpo_events"), 0, "A handed over every event: {o}");
    assert_eq!(n("app_writes_unreplicated"), 0, "every write on B: {o}");
    assert_eq!(n("app_writes_divergent"), 0, "{o}");
    assert!(
        o["a_after_fault"]
            .as_str()
            .unwrap()
            .starts_with("handed over: standby"),
        "{o}"
    );
    assert!(o["switchover_handover_ms"].is_u64(), "{o}");
    assert!(o["switchover_no_active_server_ms"].is_u64(), "{o}");
}

#[test]
fn a_switchover_under_load_loses_nothing_in_case_3() {
    let o = demo_switchover("case3");
    assert_lossless_switchover(&o);
    assert!(
        o["restored_from"]
            .as_str()
            .unwrap()
            .starts_with("change stream applied through change "),
        "{o}"
    );
}

#[test]
fn a_switchover_under_load_loses_nothing_in_case_1() {
    let o = demo_switchover("case1");
    assert_lossless_switchover(&o);
    assert!(
        o["restored_from"]
            .as_str()
            .unwrap()
            .starts_with("snapshot "),
        "B restored the last copy A sent at the switchover: {o}"
    );
}

/// `standby switchover PROFILE --to SITE --json`: whether it succeeded, the
/// report (or the output when it failed).
fn switchover(c: &Cluster, to: &str) -> (bool, Value, String) {
    let (ok, out, err) = crate::run_standby(&[
        "switchover",
        c.profile.to_str().unwrap(),
        "--to",
        to,
        "--json",
    ]);
    let report = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (ok, report, format!("{out}{err}"))
}

fn set_aside(s: &Value) -> usize {
    s["set_aside"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_and_back_keeps_both_databases_equal_without_a_reseed() {
    let dir = tempfile::tempdir().unwrap();
    let c = cdc_pair(dir.path(), "");
    let (a, b) = (c.db(Which::A), c.db(Which::B));
    let app_a = Connection::open(&a).unwrap();
    app_a.busy_timeout(Duration::from_secs(5)).unwrap();
    add_users(&app_a, 0..50, "on A");
    eventually(Duration::from_secs(10), "B following A", || {
        has_user(&b, "u049")
    });
    // The last writes just before the switchover: the hand-over carries them.
    add_users(&app_a, 50..60, "just before");

    let (ok, report, out) = switchover(&c, "dr");
    assert!(ok, "{out}");
    assert_eq!(report["from"], "onsite", "{report}");
    assert!(
        report["epoch_after"].as_u64().unwrap() > report["epoch_before"].as_u64().unwrap(),
        "{report}"
    );
    assert!(has_user(&b, "u059"), "B holds the last writes");
    let sb = c.wait_status(Which::B, Duration::from_secs(10), |s| s["role"] == "active");
    let sa = c.wait_status(Which::A, Duration::from_secs(10), |s| {
        s["role"] == "standby" && s["epoch"] == sb["epoch"]
    });
    assert_eq!(
        sa["last_demotion"]["kind"], "switchover",
        "A's status shows the switchover: {sa}"
    );
    assert_eq!(sa["last_demotion"]["epoch_after"], sb["epoch"], "{sa}");
    let (ok, text, _) =
        crate::run_standby(&["status", c.profile.to_str().unwrap(), "--site", "onsite"]);
    assert!(
        ok && text.contains("last switchover:") && text.contains("peer-active"),
        "{text}"
    );

    // B writes; A follows B's stream from where A stood: no snapshot.
    let app_b = Connection::open(&b).unwrap();
    app_b.busy_timeout(Duration::from_secs(5)).unwrap();
    add_users(&app_b, 100..150, "on B");
    app_b
        .execute(
            "UPDATE users SET name = 'changed on B' WHERE user_id = 'u010'",
            [],
        )
        .unwrap();
    eventually(Duration::from_secs(10), "A following B", || {
        rows(&a, "users") == rows(&b, "users")
    });

    // And back: A active again, B its standby, still no snapshot.
    let (ok, report, out) = switchover(&c, "onsite");
    assert!(ok, "{out}");
    assert_eq!(report["from"], "dr", "{report}");
    c.wait_status(Which::A, Duration::from_secs(10), |s| s["role"] == "active");
    add_users(&app_a, 200..220, "on A again");
    eventually(Duration::from_secs(10), "B following A again", || {
        rows(&a, "users") == rows(&b, "users") && has_user(&b, "u219")
    });
    assert_eq!(rows(&a, "users").len(), 60 + 50 + 20);
    for which in [Which::A, Which::B] {
        let s = c.status(which).unwrap();
        assert_eq!(seeds(&s), "0", "no reseed on either side: {s}");
        assert_eq!(
            set_aside(&s),
            0,
            "a clean hand-over sets nothing aside: {s}"
        );
        assert_eq!(s["strategies"][0]["status"]["Ok"]["healthy"], true, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_the_standby_never_confirms_is_abandoned_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cdc_cluster(dir.path(), "");
    let quick = ["cluster.switchover_timeout_ms=1500".to_string()];
    c.start(Which::A, &quick);
    c.wait_status(Which::A, Duration::from_secs(30), |s| s["role"] == "active");
    c.start(Which::B, &quick);
    c.wait_status(Which::B, Duration::from_secs(30), |s| {
        s["role"] == "standby" && s["peer"]["connected"] == true
    });
    let (a, b) = (c.db(Which::A), c.db(Which::B));
    let app = Connection::open(&a).unwrap();
    app.busy_timeout(Duration::from_secs(5)).unwrap();
    add_users(&app, 0..10, "before");
    eventually(Duration::from_secs(10), "B following A", || {
        has_user(&b, "u009")
    });
    let epoch = c.status(Which::A).unwrap()["epoch"].clone();
    // Refused before anything moves: a site the profile lacks, and a
    // switchover to the site that is active already (its peer is asked).
    let (ok, _, out) = switchover(&c, "nowhere");
    assert!(!ok && out.contains("not a site of this profile"), "{out}");
    let (ok, _, out) = switchover(&c, "onsite");
    assert!(!ok && out.contains("not active"), "{out}");
    // B cannot apply (another connection holds its database): it never
    // confirms what A sends it.
    let blocker = Connection::open(&b).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    add_users(&app, 10..20, "B never confirmed");

    let (ok, _, out) = switchover(&c, "dr");
    assert!(!ok, "the switchover must fail: {out}");
    assert!(
        out.contains("abandoned") && out.contains("did not confirm"),
        "{out}\nA's log:\n{}",
        c.log(Which::A)
    );
    // A goes on as before: active at its epoch, acknowledging, writable.
    let sa = c.status(Which::A).unwrap();
    assert_eq!(sa["role"], "active", "{sa}");
    assert_eq!(sa["epoch"], epoch, "{sa}");
    assert_eq!(sa["acknowledging"], true, "{sa}");
    assert_eq!(sa["database_frozen"], false, "{sa}");
    let quick_write = Connection::open(&a).unwrap();
    quick_write
        .busy_timeout(Duration::from_millis(500))
        .unwrap();
    add_users(&quick_write, 20..30, "after the abandoned switchover");
    let sb = c.status(Which::B).unwrap();
    assert_eq!(sb["role"], "standby", "{sb}");

    // B free again: it catches up; nothing was lost on either side.
    blocker.execute_batch("COMMIT").unwrap();
    eventually(Duration::from_secs(15), "B equal to A", || {
        rows(&a, "users") == rows(&b, "users")
    });
    assert_eq!(rows(&a, "users").len(), 30);
}

/// A device on `addr` whose next event the server acknowledges within 10 s.
async fn acknowledged_on(dir: &std::path::Path, addr: &str) -> bool {
    let agent = standby_lab::cluster::quick_device(
        dir,
        addr,
        Duration::from_millis(2_000),
        Duration::from_millis(1_000),
    );
    let seq = agent.record(0x1001, None, b"door opened".to_vec()).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut ok = false;
    while std::time::Instant::now() < until {
        if agent.status().acked >= seq {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.shutdown().await;
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_witness_a_switchover_hands_over_with_a_last_copy_and_back() {
    let dir = tempfile::tempdir().unwrap();
    // Case 1 without a witness: the switchover is the operator's decision.
    let mut c = Cluster::new(&crate::standby(), dir.path(), false);
    c.start_active_then_standby();
    let (a, b) = (c.db(Which::A), c.db(Which::B));
    Connection::open(&a)
        .unwrap()
        .execute(
            "INSERT INTO users (user_id, name, updated_at) VALUES ('last', 'Added just before', 1)",
            [],
        )
        .unwrap();
    let (ok, report, out) = switchover(&c, "dr");
    assert!(ok, "{out}");
    assert_eq!(report["epoch_after"], 1, "{report}");
    assert!(has_user(&b, "last"), "the last copy carried the last write");
    assert!(
        acknowledged_on(&dir.path().join("dev-b"), &c.device_addr(Which::B)).await,
        "B acknowledges devices"
    );
    c.wait_status(Which::A, Duration::from_secs(10), |s| {
        s["role"] == "standby" && s["epoch"] == 1
    });
    // And back: A acknowledges again (its gate opened at its promotion).
    Connection::open(&b)
        .unwrap()
        .execute(
            "INSERT INTO users (user_id, name, updated_at) VALUES ('on b', 'Added on B', 2)",
            [],
        )
        .unwrap();
    let (ok, report, out) = switchover(&c, "onsite");
    assert!(ok, "{out}");
    assert_eq!(report["epoch_after"], 2, "{report}");
    assert!(has_user(&a, "on b") && has_user(&a, "last"));
    assert!(
        acknowledged_on(&dir.path().join("dev-a"), &c.device_addr(Which::A)).await,
        "A acknowledges devices again"
    );
    let sa = c.status(Which::A).unwrap();
    assert_eq!(
        set_aside(&sa),
        0,
        "a clean hand-over sets nothing aside: {sa}"
    );
}
