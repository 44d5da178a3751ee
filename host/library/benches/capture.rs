//! Change capture, the store's side of case 3: what the capture triggers cost
//! the application's writes (the same workload with and without, alternating,
//! same run), how fast a standby applies captured changes, and how fast the
//! change log is read.
//!
//! ```text
//! cargo bench -p standby-host --bench capture
//! CAPTURE_BENCH_ROUNDS=5 cargo bench -p standby-host --bench capture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use standby_host::store::{AccessEvent, Store, StoreOptions};

/// Rows per transaction in the grouped workload.
const GROUP: usize = 500;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The application's writes: `n` users inserted and half of them updated,
/// `per_tx` statements to a transaction, through its own connection, with
/// prepared statements kept (as drivers and ORMs do: preparing a statement
/// also compiles the triggers it fires).
fn app_writes(db: &Path, n: usize, per_tx: usize) -> Duration {
    let mut c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let tx = c.transaction().unwrap();
        for j in i..(i + per_tx).min(n) {
            tx.prepare_cached(
                "INSERT INTO users (user_id, name, card, updated_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .unwrap()
            .execute(rusqlite::params![
                format!("u{j}"),
                format!("User number {j}"),
                format!("card-{j}"),
                j as i64
            ])
            .unwrap();
            if j % 2 == 1 {
                tx.prepare_cached("UPDATE users SET name = ?1, updated_at = ?2 WHERE user_id = ?3")
                    .unwrap()
                    .execute(rusqlite::params![
                        format!("User {j} (moved)"),
                        j as i64 + 1,
                        format!("u{}", j - 1)
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        i += per_tx;
    }
    started.elapsed()
}

/// A fresh store in `dir`, capturing or not.
fn fresh(dir: &Path, name: &str, capture: bool) -> Store {
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    if capture {
        store.enable_capture(None).unwrap();
    }
    store
}

/// Device events in the store's own group commits: `n` events of one device.
fn device_events(store: &Store, n: u64) {
    let mut seq = 1;
    while seq <= n {
        let events: Vec<AccessEvent> = (seq..(seq + 256).min(n + 1))
            .map(|s| AccessEvent {
                device_id: 7,
                incarnation: 1,
                seq: s,
                event_code: 0x1000,
                user_id: Some(format!("u{}", s % 500)),
                occurred_at_ms: s,
                payload: vec![0x5a; 32],
            })
            .collect();
        seq += events.len() as u64;
        store.ingest(&events, "bench").unwrap();
    }
}

fn main() {
    let rounds: usize = std::env::var("CAPTURE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();

    // 1. The triggers' cost to the application's writes.
    println!("| workload | without capture (median) | with capture (median) | ratio |");
    println!("| --- | --- | --- | --- |");
    for (label, n, per_tx) in [
        (
            "20,000 inserts + 10,000 updates, 500 to a transaction",
            20_000,
            GROUP,
        ),
        (
            "1,000 inserts + 500 updates, one to a transaction (fsync each)",
            1_000,
            1,
        ),
    ] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let s = fresh(dir.path(), "plain.db", false);
            off.push(app_writes(s.path(), n, per_tx));
            let s = fresh(dir.path(), "captured.db", true);
            on.push(app_writes(s.path(), n, per_tx));
        }
        let (off, on) = (median(off), median(on));
        println!(
            "| {label} | {:.1} ms | {:.1} ms | {:.2} |",
            off.as_secs_f64() * 1e3,
            on.as_secs_f64() * 1e3,
            on.as_secs_f64() / off.as_secs_f64()
        );
    }

    // 2. Reading the log and applying it on a standby.
    println!();
    println!("| round | changes | read (changes/s) | applied (changes/s, 2,000 a batch, one transaction each) |");
    println!("| --- | --- | --- | --- |");
    for round in 0..rounds {
        let a = fresh(dir.path(), "a.db", true);
        app_writes(a.path(), 50_000, GROUP);
        device_events(&a, 50_000);
        let b = fresh(dir.path(), "b.db", true);
        let started = Instant::now();
        let mut batches = Vec::new();
        let mut after = 0;
        loop {
            let batch = a.read_changes(after, 2_000, 1 << 20).unwrap();
            let Some(last) = batch.last() else { break };
            after = last.seq;
            batches.push(batch);
        }
        let read = started.elapsed();
        let total: usize = batches.iter().map(Vec::len).sum();
        let started = Instant::now();
        for batch in &batches {
            b.apply_changes(batch, 1).unwrap();
        }
        let applied = started.elapsed();
        println!(
            "| {round} | {total} | {:.0} | {:.0} |",
            total as f64 / read.as_secs_f64(),
            total as f64 / applied.as_secs_f64()
        );
    }
}
