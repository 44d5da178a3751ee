//! The old active's return (case 1): it comes back fenced, learns the new
//! epoch and becomes the new active's standby; before the first copy from
//! the new active replaces its database, it sets that database aside (with
//! a summary naming what the copy lacks), so what it committed after the
//! last copy it sent is not lost without a trace; afterwards its database
//! equals the new active's, row for row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use standby_lab::cluster::{Cluster, Which};
use standby_lab::fixtures::wait_until;

use crate::table_rows as rows;

/// Start A again and wait until it has set a database aside; it is a
/// standby then. The summary's path (as status names it) and the summary.
fn restart_until_set_aside(c: &mut Cluster) -> (String, serde_json::Value) {
    c.start(Which::A, &[]);
    let status = c.wait_status(Which::A, Duration::from_secs(30), |s| {
        s["set_aside"].as_array().is_some_and(|f| !f.is_empty())
    });
    assert_eq!(status["role"], "standby", "{status}");
    let summary_path = status["set_aside"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".summary.json"))
        .unwrap_or_else(|| panic!("no summary named: {status}"))
        .to_string();
    let summary = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    (summary_path, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_active_sets_its_database_aside_before_the_new_actives_copy_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    // Case 1: a verified copy every second.
    let mut c = Cluster::new(&crate::standby(), dir.path(), true);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start_active_then_standby();
    c.wait_status(Which::B, Duration::from_secs(30), |s| {
        s["strategies"][0]["status"]["Ok"]["last_success_ms"].is_u64()
    });
    // A user added on A just before A dies: no copy carries it.
    let (a, b) = (c.db(Which::A), c.db(Which::B));
    Connection::open(&a)
        .unwrap()
        .execute(
            "INSERT INTO users (user_id, name, updated_at) VALUES ('late', 'Added just before the crash', 1)",
            [],
        )
        .unwrap();
    c.kill(Which::A);
    c.wait_status(Which::B, Duration::from_secs(30), |s| s["role"] == "active");
    assert!(!rows(&b, "users").iter().any(|r| r.contains("\"late\"")));

    // A comes back: standby of B, and B's copies reach it.
    let (summary_path, summary) = restart_until_set_aside(&mut c);
    let users = summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "users")
        .unwrap();
    assert!(
        users["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "[\"late\"]"),
        "the summary names the user B lacks: {summary}"
    );
    assert_eq!(summary["active_at_epoch"], 1, "{summary}");
    // The set-aside database holds it.
    let kept = summary["file"].as_str().unwrap();
    assert!(rows(Path::new(kept), "users")
        .iter()
        .any(|r| r.contains("\"late\"")));
    // `standby status` names the file for people.
    let (ok, text, err) =
        crate::run_standby(&["status", c.profile.to_str().unwrap(), "--site", "onsite"]);
    assert!(
        ok && text.contains("set aside") && text.contains(&summary_path),
        "{text}{err}"
    );

    // Afterwards A's database equals B's, row for row.
    assert!(
        wait_until(Duration::from_secs(20), || {
            rows(&a, "users") == rows(&b, "users")
                && rows(&a, "access_events") == rows(&b, "access_events")
        }),
        "A's database never became B's"
    );
    // Only one set-aside: later copies replace A's database as usual.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = c.status(Which::A).unwrap();
    let summaries = s["set_aside"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.as_str().is_some_and(|f| f.ends_with(".summary.json")))
        .count();
    assert_eq!(summaries, 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_active_in_case_3_sets_its_divergent_changes_aside_and_follows_after_a_reseed() {
    use crate::cdc::{add_users, cdc_pair, eventually, has_user, seeds};
    let dir = tempfile::tempdir().unwrap();
    let mut c = cdc_pair(dir.path(), "");
    let (a, b) = (c.db(Which::A), c.db(Which::B));
    let app = Connection::open(&a).unwrap();
    app.busy_timeout(Duration::from_secs(5)).unwrap();
    add_users(&app, 0..20, "replicated");
    eventually(Duration::from_secs(10), "B following A", || {
        has_user(&b, "u019")
    });
    // B refuses one user (a constraint only B has): the stream stops there,
    // and the user never reaches B before A dies.
    let dr = Connection::open(&b).unwrap();
    dr.execute_batch(
        "CREATE TRIGGER refuse_late BEFORE INSERT ON users WHEN NEW.user_id = 'late' \
         BEGIN SELECT RAISE(ABORT, 'not here'); END;",
    )
    .unwrap();
    app.execute(
        "INSERT INTO users (user_id, name, updated_at) VALUES ('late', 'Added just before the crash', 1)",
        [],
    )
    .unwrap();
    c.wait_status(Which::B, Duration::from_secs(10), |s| {
        s["change_stream_stopped"].is_object()
    });
    c.kill(Which::A);
    dr.execute_batch("DROP TRIGGER refuse_late").unwrap();
    c.wait_status(Which::B, Duration::from_secs(30), |s| s["role"] == "active");
    assert!(!has_user(&b, "late"));
    // B's application writes too: the databases differ both ways.
    let app_b = Connection::open(&b).unwrap();
    app_b.busy_timeout(Duration::from_secs(5)).unwrap();
    add_users(&app_b, 100..110, "on B");

    // A comes back as B's standby: B sends it a snapshot, and before it
    // replaces A's database A sets its own aside, naming the divergent write.
    let (_, summary) = restart_until_set_aside(&mut c);
    let divergent = summary["divergent_changes"].as_array().unwrap();
    assert!(
        divergent
            .iter()
            .any(|d| d["table"] == "users" && d["key"] == "[\"late\"]" && d["op"] == "I"),
        "the summary names the divergent write: {summary}"
    );
    assert!(
        divergent.iter().all(|d| d["key"] != "[\"u019\"]"),
        "only what B never applied is divergent: {summary}"
    );
    let kept = summary["file"].as_str().unwrap();
    assert!(has_user(Path::new(kept), "late"));

    // Afterwards A follows B's stream: equal row for row, B's new writes too.
    add_users(&app_b, 110..120, "after A came back");
    eventually(Duration::from_secs(20), "A equal to B", || {
        rows(&a, "users") == rows(&b, "users") && has_user(&a, "u119")
    });
    assert!(!has_user(&a, "late"));
    let sa = c.status(Which::A).unwrap();
    assert_eq!(seeds(&sa), "1", "{sa}");
}
