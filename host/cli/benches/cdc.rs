//! Case 3 (change data capture) between two `standby run` nodes on loopback:
//! the lag from a commit on A to the row being visible in B's database
//! (median, p99, worst) at a steady write rate, and how fast B catches up on
//! a burst (end to end: capture, read, ship over the encrypted peer link,
//! apply). The writer is the application: its own connection to A's
//! database, one transaction every 10 ms; the reader polls B's database,
//! opened read-only, every 2 ms; both use this machine's one clock.
//!
//! ```text
//! cargo bench -p standby --bench cdc
//! CDC_BENCH_RATES=1000,5000 CDC_BENCH_SECS=10 cargo bench -p standby --bench cdc
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use standby_lab::cluster::{Cluster, Which, CDC};
use standby_lab::process::Standby;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// A cluster of two nodes with cdc, A active and B its standby.
fn cluster(standby: &Standby, dir: &Path) -> Cluster {
    let mut c = Cluster::with_strategy(standby, dir, true, CDC);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start_active_then_standby();
    c
}

/// Insert `per_tx` users every 10 ms for `secs`, each stamped with the
/// commit's wall time; returns how many.
fn write_steadily(db: &Path, rate: u64, secs: u64, first: u64) -> u64 {
    let mut c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let per_tick = (rate / 100).max(1);
    let started = Instant::now();
    let mut n = 0u64;
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let tx = c.transaction().unwrap();
        let at = now_ms();
        for _ in 0..per_tick {
            let id = first + n;
            tx.execute(
                "INSERT INTO users (user_id, name, card, updated_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    format!("w{id:09}"),
                    format!("User {id}"),
                    format!("card-w{id}"),
                    at
                ],
            )
            .unwrap();
            n += 1;
        }
        tx.commit().unwrap();
        tick += 1;
        let next = started + Duration::from_millis(tick * 10);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    n
}

/// Poll B's database for rows written by the writer; the lag of each
/// (visible at B minus committed at A), until `stop` and `expect` rows seen.
fn watch_lags(
    db: PathBuf,
    stop: Arc<AtomicBool>,
    expect: Arc<std::sync::atomic::AtomicU64>,
) -> Vec<i64> {
    let mut lags = Vec::new();
    let mut last = String::from("w");
    let until_after_stop = Duration::from_secs(30);
    let mut stopped_at: Option<Instant> = None;
    loop {
        if let Ok(c) = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY) {
            loop {
                let seen = now_ms();
                let mut stmt = match c.prepare_cached(
                    "SELECT user_id, updated_at FROM users WHERE user_id > ?1 AND user_id LIKE 'w%' ORDER BY user_id",
                ) {
                    Ok(s) => s,
                    Err(_) => break,
                };
                let rows: Vec<(String, i64)> = stmt
                    .query_map([&last], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map(|it| it.filter_map(Result::ok).collect())
                    .unwrap_or_default();
                for (id, at) in rows {
                    lags.push(seen - at);
                    last = id;
                }
                if stop.load(Ordering::Relaxed) {
                    let s = *stopped_at.get_or_insert_with(Instant::now);
                    if lags.len() as u64 >= expect.load(Ordering::Relaxed)
                        || s.elapsed() > until_after_stop
                    {
                        return lags;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let standby = Standby::at(env!("CARGO_BIN_EXE_standby"));
    let rates = env_list("CDC_BENCH_RATES", "1000,5000");
    let secs = env_list("CDC_BENCH_SECS", "10")[0];
    println!("| changes/s (inserts, one transaction per 10 ms) | rows | lag median | p99 | worst | rows missing at B |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for rate in rates {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(&standby, dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let expect = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let reader = {
            let (db, stop, expect) = (c.db(Which::B), stop.clone(), expect.clone());
            std::thread::spawn(move || watch_lags(db, stop, expect))
        };
        let written = write_steadily(&c.db(Which::A), rate, secs, 0);
        expect.store(written, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let mut lags = reader.join().unwrap();
        lags.sort_unstable();
        println!(
            "| {rate} | {written} | {} ms | {} ms | {} ms | {} |",
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            lags.last().copied().unwrap_or(-1),
            written.saturating_sub(lags.len() as u64)
        );
    }

    // Catch-up: 100,000 rows committed on A at once (in transactions of
    // 1,000), then the time until B holds every one of them.
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&standby, dir.path());
    let mut a = Connection::open(c.db(Which::A)).unwrap();
    a.busy_timeout(Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    for chunk in 0..100 {
        let tx = a.transaction().unwrap();
        for i in 0..1_000 {
            let id = chunk * 1_000 + i;
            tx.execute(
                "INSERT INTO users (user_id, name, card, updated_at) VALUES (?1, ?2, ?3, 0)",
                rusqlite::params![
                    format!("b{id:09}"),
                    format!("User {id}"),
                    format!("card-b{id}")
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let written = started.elapsed();
    let b = Connection::open_with_flags(c.db(Which::B), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = b
            .query_row(
                "SELECT count(*) FROM users WHERE user_id LIKE 'b%'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if n >= 100_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B holds {n} of 100,000 rows after 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let all = started.elapsed();
    println!();
    println!(
        "catch-up: 100,000 rows committed on A in {:.2} s; all at B {:.2} s after the first commit: {:.0} changes/s end to end",
        written.as_secs_f64(),
        all.as_secs_f64(),
        100_000.0 / all.as_secs_f64()
    );
}
