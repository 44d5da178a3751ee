//! The DR-durable watermark end to end: with `durable_ack = "replication"` a
//! device forgets its events only once a copy holding them is installed at
//! the DR site; with `"local-commit"`, as soon as the active node stores
//! them. Real processes (witness, two sites running file-copy), a device
//! agent over real TCP, and its log file on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use standby_device::agent::{Agent, AgentStatus, EventLog, LogOptions};
use standby_lab::cluster::{quick_device, Cluster, Which};

const START: Duration = Duration::from_secs(60);

fn record(agent: &Agent) {
    agent
        .record(0x1001, Some("42".into()), b"door 1 opened".to_vec())
        .unwrap();
}

/// What the device's log file holds now: (durable watermark, events kept,
/// last sequence), read from a copy of the file.
fn on_disk(devices: &Path, scratch: &Path) -> (u64, usize, u64) {
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).unwrap();
    std::fs::copy(EventLog::path_in(devices, 1), EventLog::path_in(scratch, 1)).unwrap();
    let (log, _) = EventLog::open(scratch, 1, LogOptions::default()).unwrap();
    (log.durable(), log.pending(), log.last_seq())
}

/// A device of site A's, with a 2 s dead-link bound and 1 s timeouts.
fn device_on_a(devices: &Path, c: &Cluster) -> Agent {
    quick_device(
        devices,
        &c.device_addr(Which::A),
        Duration::from_millis(2_000),
        Duration::from_millis(1_000),
    )
}

/// Record `n` events and wait until the server has acknowledged everything
/// in the log (the device also logs its link events).
async fn acknowledged(agent: &Agent, n: u64) -> AgentStatus {
    for _ in 0..n {
        record(agent);
    }
    let until = Instant::now() + START;
    loop {
        let s = agent.status();
        if s.last_seq >= n && s.acked >= s.last_seq {
            return s;
        }
        assert!(
            Instant::now() < until,
            "the server did not acknowledge {n} events: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A site's status once its file-copy instance answers (it answers one call
/// at a time and may be busy with a copy for a moment).
fn status_with_strategy(c: &Cluster, which: Which) -> Value {
    c.wait_status(which, Duration::from_secs(20), |s| {
        s["strategies"][0]["status"]["Ok"].is_object()
    })
}

/// The last copy a site's file-copy instance took or installed (its time,
/// Unix ms); on a standby, the last one installed.
fn last_copy(status: &Value) -> Option<u64> {
    status["strategies"][0]["status"]["Ok"]["last_success_ms"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_forgets_its_events_only_once_a_copy_holding_them_is_installed_at_dr() {
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices");
    let scratch = dir.path().join("scratch");
    let mut c = Cluster::new(&crate::standby(), dir.path(), true);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    // A alone: it copies every second, but with no DR site nothing is shipped
    // and nothing installed.
    c.start(Which::A, &[]);
    c.wait_status(Which::A, START, |s| s["role"] == "active");

    let agent = device_on_a(&devices, &c);
    let first = acknowledged(&agent, 20).await;
    let covered = first.last_seq;
    // A stored and acknowledged them, more keep coming, and still the device
    // keeps every one: nothing is durable at DR yet.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(4) {
        record(&agent);
        let s = agent.status();
        assert!(s.acked >= covered, "{s:?}");
        assert_eq!(s.durable, 0, "durable with no copy at DR: {s:?}");
        assert_eq!(
            s.pending as u64, s.last_seq,
            "an event was forgotten: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(agent.status().acked > covered, "A kept acknowledging");
    let (durable, kept, last) = on_disk(&devices, &scratch);
    assert_eq!(durable, 0, "the log file has a durable mark");
    assert_eq!(kept as u64, last, "the log file kept every event");
    assert!(last > covered);
    let a = status_with_strategy(&c, Which::A);
    assert!(
        last_copy(&a).is_some(),
        "A takes copies all along (they just go nowhere): {a}"
    );

    // B starts; A's next copy is shipped, verified and installed there, B
    // confirms it, and the device learns with its next acknowledgement.
    c.start(Which::B, &[]);
    let until = Instant::now() + START;
    let advanced = loop {
        record(&agent);
        let s = agent.status();
        assert!(s.durable <= s.acked, "durable beyond what A holds: {s:?}");
        if s.durable > 0 {
            // It can only have come from B: a copy is installed there by now.
            let b = status_with_strategy(&c, Which::B);
            assert!(
                last_copy(&b).is_some(),
                "durable {} before B installed any copy: {b}",
                s.durable
            );
            assert_eq!(b["role"], "standby", "{b}");
        }
        if s.durable >= covered {
            break s;
        }
        assert!(
            Instant::now() < until,
            "the durable watermark never covered the first {covered} events: {s:?}\nA:\n{}\nB:\n{}",
            c.log(Which::A),
            c.log(Which::B)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        (advanced.pending as u64) < advanced.last_seq,
        "the device forgot nothing: {advanced:?}"
    );
    let b = status_with_strategy(&c, Which::B);
    assert!(last_copy(&b).is_some(), "{b}");
    // The device's log file says the same.
    let (durable, kept, last) = on_disk(&devices, &scratch);
    assert!(durable >= covered, "durable {durable} on disk");
    assert!(
        (kept as u64) <= last - durable,
        "events up to {durable} are still in the log file: {kept} of {last} kept"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_commit_a_device_forgets_its_events_as_soon_as_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices");
    let mut c = Cluster::new(&crate::standby(), dir.path(), true);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    // The same cluster without a DR site, except for `durable_ack`.
    c.start(
        Which::A,
        &["devices.durable_ack=\"local-commit\"".to_string()],
    );
    c.wait_status(Which::A, START, |s| s["role"] == "active");
    let agent = device_on_a(&devices, &c);
    acknowledged(&agent, 20).await;
    let until = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = agent.status();
        if s.durable >= s.last_seq {
            break s;
        }
        assert!(
            Instant::now() < until,
            "with local-commit the acknowledgement is the durable mark: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(s.durable, s.acked, "{s:?}");
    assert_eq!(s.pending, 0, "{s:?}");
    let (durable, _, _) = on_disk(&devices, &dir.path().join("scratch"));
    assert!(durable >= 20, "durable {durable} on disk");
    agent.shutdown().await;
}
