//! The application on the active node only (the `app` failover action with
//! a service the node supervises), end to end with real processes: started
//! when a node becomes active, never on a standby, gone with a killed node,
//! started on the node that takes over, and stopped on a clean shutdown
//! before the lease is given back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use standby_lab::cluster::{Cluster, Which};
use standby_lab::fixtures::wait_until;

/// The application: `sleep` for a duration no other process on the machine
/// is likely to use, so the test finds exactly its own.
fn application(seconds: u32) -> String {
    format!(
        "[[failover]]\nplugin = \"builtin:app\"\n[failover.settings]\nservice = \"app\"\n\
         stop_grace_ms = 1000\n[failover.grants.exec]\napp = {{ command = [\"/bin/sleep\", \"{seconds}\"] }}\n"
    )
}

/// The pids of `/bin/sleep SECONDS` whose parent is `parent`.
fn applications_of(parent: u32, seconds: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline != format!("/bin/sleep\0{seconds}\0").as_bytes() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_runs_on_the_active_node_only_and_stops_before_the_lease_is_given_back() {
    let seconds = 86_400 + std::process::id() % 10_000;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::with_extra(&crate::standby(), dir.path(), true, &application(seconds));
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start_active_then_standby();
    let (a, b) = (c.pid(Which::A).unwrap(), c.pid(Which::B).unwrap());
    assert!(
        wait_until(Duration::from_secs(10), || applications_of(a, seconds)
            .len()
            == 1),
        "A runs its application"
    );
    assert!(
        applications_of(b, seconds).is_empty(),
        "a standby never runs it"
    );
    let first = applications_of(a, seconds)[0];

    // A is killed: its application goes with it, and B, active, starts its own.
    c.kill(Which::A);
    assert!(
        wait_until(Duration::from_secs(2), || !std::path::Path::new(&format!(
            "/proc/{first}"
        ))
        .exists()),
        "the application outlived its killed node"
    );
    c.wait_status(Which::B, Duration::from_secs(30), |s| {
        s["role"] == "active" && s["last_failover"]["completed"] == true
    });
    assert!(
        wait_until(Duration::from_secs(5), || applications_of(b, seconds).len()
            == 1),
        "B runs the application once active"
    );
    let step = crate::step(
        &c.status(Which::B).unwrap()["last_failover"],
        "activate:app",
    )
    .clone();
    assert_eq!(step["ok"], true, "{step}");

    // A clean stop: the application first, then the lease.
    let on_b = applications_of(b, seconds)[0];
    c.terminate(Which::B, Duration::from_secs(10)).await;
    assert!(!std::path::Path::new(&format!("/proc/{on_b}")).exists());
    let log = c.log(Which::B);
    let stopped = log
        .find("service stopped")
        .expect("the service was stopped");
    let released = log
        .find("lease given back")
        .expect("the lease was given back");
    assert!(
        stopped < released,
        "the lease went back before the application stopped:\n{log}"
    );
}
