//! Whole-file copy throughput, the way case 1 (WAN copy) and a standby's
//! seeding move the database, against `cp` of the same file in the same run:
//!
//! 1. snapshot: a consistent copy of the live database (`Store::snapshot_to`:
//!    the main file copied by the kernel under a pinned read transaction,
//!    hashed while it is copied, synced), as `db.snapshot` takes it;
//! 2. transfer: the copy streamed to the other node over the real peer link
//!    (`PeerLink::send_file`, PSK-authenticated TCP on loopback, every frame
//!    encrypted with AES-256-GCM), offered with the checksum the
//!    snapshot computed (as `peer.send-file` does for a snapshot the host
//!    placed), the receiver hashing what it writes and checking it against
//!    the offer after its fsync;
//! 3. integrity check: `Store::check_copy` on the received file (as
//!    `db.integrity-check` runs it, remembered for the install);
//! 4. install: `Store::install_from` on a second store, as `db.install` does
//!    (the received file stays where it is: it is copied next to the live
//!    file with direct writes, fsync, rename; the check of stage 3 stands
//!    since the file did not change): case 1's copies, which file-copy
//!    keeps on the standby as restore points.
//!
//! And the seed of a standby as the cdc plugin sends it, on a third store:
//!
//! 1+2. `PeerLink::send_snapshot` of `Store::pin_snapshot`, as
//!    `peer.send-snapshot` does: the live database read straight into the
//!    link under its pin, hashed as it is read, no copy on the sender's disk;
//!    the receiver as in 2;
//! 3. the integrity check as in 3;
//! 4. `Store::install_moving`, as `db.install-moving` does: the received
//!    file synced and renamed into place.
//!
//! And the floor under both ([`floor`]): the least work any copy over an
//! encrypted link does on this machine (AES-256-GCM over loopback TCP, no
//! checksum, no protocol), alone and with the integrity check beside it.
//!
//! The baseline is coreutils `cp` (run with `std::process::Command`) of the
//! source database file, then an fsync of the copy from this process. The
//! database (one table of 4 KiB random blobs, WAL) is built first. Runs
//! alternate: `cp` then the pipeline, the pipeline then `cp`, and so on.
//!
//! Run: `cargo bench -p standby-host --bench snapshot_copy [-- --size-mib N --dir PATH --runs N]`
//! (or `SNAPSHOT_BENCH_MIB=N`, `SNAPSHOT_BENCH_DIR=PATH`, `SNAPSHOT_BENCH_RUNS=N`;
//! default 1024 MiB under the system temporary directory, 3 runs).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod floor;
mod machine;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use standby_host::internals::{Incoming, KnownDigest, PeerConfig, PeerLink};
use standby_host::peer::Psk;
use standby_host::plugin::Role;
use standby_host::store::{Store, StoreOptions};
use tokio::sync::{mpsc, watch};

use machine::{cached, cpu_used, df_t, first_line_with, free_bytes, load, mb, mb_s, sh, Timed};

/// Size of one row's blob.
const BLOB: usize = 4096;
/// Rows per fill transaction (64 MiB of blobs).
const ROWS_PER_TX: u64 = 16 * 1024;
/// Bytes a row takes in the file, about: the blob on an overflow page plus
/// ~500 bytes left on the leaf page.
const ROW_FOOTPRINT: u64 = 4096 + 512;
/// Free space left untouched for everything else on the filesystem.
const MARGIN: u64 = 256 << 20;

struct Args {
    size_mib: u64,
    dir: PathBuf,
    runs: usize,
}

fn args() -> Args {
    let number = |v: &str, what: &str| -> u64 {
        v.parse()
            .unwrap_or_else(|_| panic!("{what}: a whole number of MiB, not {v:?}"))
    };
    let mut size_mib = std::env::var("SNAPSHOT_BENCH_MIB")
        .ok()
        .map(|v| number(&v, "SNAPSHOT_BENCH_MIB"));
    let mut dir = std::env::var_os("SNAPSHOT_BENCH_DIR").map(PathBuf::from);
    let mut runs = std::env::var("SNAPSHOT_BENCH_RUNS")
        .ok()
        .map(|v| number(&v, "SNAPSHOT_BENCH_RUNS"));
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--size-mib=") {
            size_mib = Some(number(v, "--size-mib"));
        } else if a == "--size-mib" {
            size_mib = Some(number(&it.next().expect("--size-mib N"), "--size-mib"));
        } else if let Some(v) = a.strip_prefix("--dir=") {
            dir = Some(v.into());
        } else if a == "--dir" {
            dir = Some(it.next().expect("--dir PATH").into());
        } else if let Some(v) = a.strip_prefix("--runs=") {
            runs = Some(number(v, "--runs"));
        } else if a == "--runs" {
            runs = Some(number(&it.next().expect("--runs N"), "--runs"));
        }
        // Anything else (`cargo bench` passes `--bench`) is ignored.
    }
    Args {
        size_mib: size_mib.unwrap_or(1024),
        dir: dir.unwrap_or_else(std::env::temp_dir),
        runs: runs.unwrap_or(3).max(1) as usize,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Create the store at `path` and fill it with 4 KiB random blobs, in big
/// WAL transactions, until it holds at least `target` bytes; checkpointed at
/// the end so the main file holds everything. Returns the store (left open:
/// the snapshots are of a live database) and the number of rows.
fn build_db(path: &Path, target: u64) -> (Store, u64) {
    let store = Store::open(path, StoreOptions::default()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert!(mode.eq_ignore_ascii_case("wal"), "journal mode {mode}");
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS bench_fill (id INTEGER PRIMARY KEY, data BLOB NOT NULL);",
    )
    .unwrap();
    let db_size = |conn: &rusqlite::Connection| -> u64 {
        let pages: u64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let page: u64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        pages * page
    };
    let mut rng = rand::rng();
    let mut blob = vec![0u8; BLOB];
    let started = Instant::now();
    let mut rows = 0u64;
    let mut size = db_size(&conn);
    while size < target {
        let n = ((target - size) / ROW_FOOTPRINT + 1).min(ROWS_PER_TX);
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO bench_fill (data) VALUES (?1)")
                .unwrap();
            for _ in 0..n {
                rng.fill_bytes(&mut blob);
                insert.execute([&blob[..]]).unwrap();
            }
        }
        tx.commit().unwrap();
        rows += n;
        size = db_size(&conn);
        eprintln!(
            "building: {} / {} MB, {rows} rows, {:.0} MB/s",
            mb(size),
            mb(target),
            mb_s(size, started.elapsed())
        );
    }
    drop(conn);
    store.checkpoint().unwrap();
    eprintln!(
        "built in {:.1} s (WAL checkpointed into the main file)",
        started.elapsed().as_secs_f64()
    );
    (store, rows)
}

/// Two peer links on loopback, "a" dialling "b", with the same random key.
struct Pair {
    chunk: usize,
    a: PeerLink,
    b: PeerLink,
    b_incoming: mpsc::Receiver<Incoming>,
    _a_incoming: mpsc::Receiver<Incoming>,
    _local: [watch::Sender<(u64, Role)>; 2],
}

async fn pair(dir: &Path) -> Pair {
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let (pa, pb) = (free_port(), free_port());
    let config_a = PeerConfig::new(
        "a",
        addr(pa),
        "b",
        addr(pb),
        Psk::new(key.clone()).unwrap(),
        dir.join("a-staging"),
    );
    let config_b = PeerConfig::new(
        "b",
        addr(pb),
        "a",
        addr(pa),
        Psk::new(key).unwrap(),
        dir.join("b-staging"),
    );
    // Everything as the node runs it: a big file on a slow machine is bounded
    // only by the stall bound (no progress for 30 s), never by its length.
    let chunk = config_a.chunk;
    let (local_a, rx_a) = watch::channel((1, Role::Active));
    let (local_b, rx_b) = watch::channel((1, Role::Standby));
    let (tx_a, a_incoming) = mpsc::channel(16);
    let (tx_b, b_incoming) = mpsc::channel(16);
    let a = PeerLink::start(config_a, rx_a, tx_a).await.unwrap();
    let b = PeerLink::start(config_b, rx_b, tx_b).await.unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !(a.state().connected && b.state().connected) {
        assert!(Instant::now() < until, "the peer links did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Pair {
        chunk,
        a,
        b,
        b_incoming,
        _a_incoming: a_incoming,
        _local: [local_a, local_b],
    }
}

/// `cp` of `src` to a new file, then fsync of the copy.
fn cp(src: &Path, work: &Path) -> Timed {
    let dest = work.join("cp-copy.db");
    println!("  before cp: source {}", cached(src));
    let started = Instant::now();
    let status = Command::new("cp").arg(src).arg(&dest).status().unwrap();
    assert!(status.success(), "cp failed: {status}");
    let copied = started.elapsed();
    std::fs::File::open(&dest).unwrap().sync_all().unwrap();
    let took = started.elapsed();
    let bytes = std::fs::metadata(&dest).unwrap().len();
    assert_eq!(bytes, std::fs::metadata(src).unwrap().len());
    std::fs::remove_file(&dest).unwrap();
    let timed = Timed { bytes, took };
    println!(
        "{}   (cp {:.2} s, fsync {:.2} s)",
        timed.line("cp + fsync"),
        copied.as_secs_f64(),
        (took - copied).as_secs_f64()
    );
    timed
}

/// What one run took: case 1's copy (stages 1-4) and the seed.
struct Totals {
    total: Timed,
    seed: Timed,
}

/// A fresh, empty store in `dir` (so every run replaces the same database).
fn fresh_store(dir: &Path) -> Store {
    std::fs::create_dir_all(dir).unwrap();
    Store::open(dir.join("biostar2.db"), StoreOptions::default()).unwrap()
}

/// Stage 3: `store`'s integrity check of the received copy at `received`
/// (`size` bytes), which must pass.
fn integrity_check(store: &Store, received: &Path, size: u64) -> Timed {
    let started = Instant::now();
    let report = store.check_copy(received).unwrap();
    assert!(report.ok, "integrity check: {:?}", report.problems);
    Timed {
        bytes: size,
        took: started.elapsed(),
    }
}

/// Rows in the `bench_fill` table of `store`'s database.
fn rows_in(store: &Store) -> u64 {
    rusqlite::Connection::open_with_flags(store.path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row("SELECT count(*) FROM bench_fill", [], |r| r.get(0))
        .unwrap()
}

/// Snapshot, transfer, integrity check and install; then the seed.
fn pipeline(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    rows: u64,
    pair: &mut Pair,
    work: &Path,
    run: usize,
) -> Totals {
    println!("  before the pipeline: source {}", cached(store.path()));
    let snap = work.join("a-snapshots").join(format!("snapshot-{run}.db"));
    std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
    let b_dir = work.join(format!("b-{run}"));
    let c_dir = work.join(format!("c-{run}"));
    let store_b = fresh_store(&b_dir);

    let started = Instant::now();
    let stats = store.snapshot_to(&snap).unwrap();
    let snapshot = Timed {
        bytes: stats.size,
        took: started.elapsed(),
    };

    let started = Instant::now();
    let cpu_before = cpu_used();
    let known = KnownDigest {
        sha256: stats.sha256.clone(),
        stamp: stats.stamp,
    };
    let receipt = rt
        .block_on(pair.a.send_file(
            "file-copy",
            &snap,
            "snapshot.db",
            &format!("bench-{run}"),
            Some(&known),
        ))
        .unwrap();
    let (received, size, sha256) = received_file(rt, pair);
    let transfer = Timed {
        bytes: receipt.bytes,
        took: started.elapsed(),
    };
    let transfer_cpu = cpu_used().saturating_sub(cpu_before);
    assert_eq!(size, stats.size);
    assert_eq!(sha256, receipt.sha256);
    assert_eq!(sha256, stats.sha256, "the peer stored other bytes");
    // The sender's copy is no longer needed (and the disk may be small).
    std::fs::remove_file(&snap).unwrap();

    let check = integrity_check(&store_b, &received, size);

    let started = Instant::now();
    store_b.install_from(&received).unwrap();
    let install = Timed {
        bytes: size,
        took: started.elapsed(),
    };
    assert_eq!(rows_in(&store_b), rows);
    drop(store_b);
    std::fs::remove_dir_all(&b_dir).unwrap();

    std::fs::remove_file(&received).unwrap();
    let before_install = snapshot.took + transfer.took + check.took;
    let total = Timed {
        bytes: size,
        took: before_install + install.took,
    };
    println!(
        "{}   ({} pages, {:?}, SHA-256 while copying)",
        snapshot.line("1 snapshot"),
        stats.pages,
        stats.method
    );
    println!(
        "{}   (send_file to the receipt {} ms; CPU {:.2} core-s of both nodes)",
        transfer.line("2 transfer"),
        receipt.duration_ms,
        transfer_cpu.as_secs_f64()
    );
    println!("{}", check.line("3 integrity check"));
    println!(
        "{}   (direct-I/O copy, fsync, rename; stage 3's check stands)",
        install.line("4 install")
    );
    println!("{}", total.line("pipeline total"));
    let seed = seed(rt, store, rows, pair, &c_dir, run);
    Totals { total, seed }
}

/// The seed of a standby: streamed from the pinned live database, checked,
/// installed by moving onto a fresh store in `dir`.
fn seed(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    rows: u64,
    pair: &mut Pair,
    dir: &Path,
    run: usize,
) -> Timed {
    let store_c = fresh_store(dir);
    let started = Instant::now();
    let cpu_before = cpu_used();
    let pinned = store
        .pin_snapshot()
        .unwrap()
        .expect("the live database pins");
    let (receipt, sent) = rt
        .block_on(
            pair.a
                .send_snapshot("cdc", pinned, "seed.db", &format!("seed-{run}")),
        )
        .unwrap();
    let (received, size, sha256) = received_file(rt, pair);
    let stream = Timed {
        bytes: receipt.bytes,
        took: started.elapsed(),
    };
    let stream_cpu = cpu_used().saturating_sub(cpu_before);
    assert_eq!(sha256, sent, "the peer stored other bytes");

    let check = integrity_check(&store_c, &received, size);
    let started = Instant::now();
    store_c.install_moving(&received).unwrap();
    let install = Timed {
        bytes: size,
        took: started.elapsed(),
    };
    assert!(!received.exists());
    assert_eq!(rows_in(&store_c), rows);
    drop(store_c);
    std::fs::remove_dir_all(dir).unwrap();
    let total = Timed {
        bytes: size,
        took: stream.took + check.took + install.took,
    };
    println!(
        "{}   (peer.send-snapshot: read from the pinned live database, SHA-256 as read; CPU {:.2} core-s of both nodes)",
        stream.line("seed 1+2 streamed"),
        stream_cpu.as_secs_f64()
    );
    println!("{}", check.line("seed 3 integrity check"));
    println!(
        "{}   (db.install-moving: fsync, rename)",
        install.line("seed 4 install by moving")
    );
    println!("{}", total.line("seed total"));
    total
}

/// The file the receiving node handed over next: its path, size and the
/// SHA-256 it computed.
fn received_file(rt: &tokio::runtime::Runtime, pair: &mut Pair) -> (PathBuf, u64, String) {
    let incoming = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), pair.b_incoming.recv()).await
        })
        .expect("the receiver handed nothing over")
        .unwrap();
    let Incoming::File {
        path, size, sha256, ..
    } = incoming
    else {
        panic!("expected a file, got {incoming:?}")
    };
    (path, size, sha256)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One run's times as multiples of its `cp` + fsync.
struct Ratios {
    run: usize,
    total: f64,
    seed: f64,
    floor: f64,
    floor_checked: f64,
}

/// The pipeline and the seed, then the floor alone and with the check
/// beside it.
fn pipeline_and_floor(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    rows: u64,
    pair: &mut Pair,
    work: &Path,
    run: usize,
) -> (Totals, [floor::Floor; 2]) {
    let totals = pipeline(rt, store, rows, pair, work, run);
    let dest = work.join("floor-copy.db");
    let alone = floor::encrypted_stream(store.path(), &dest, None);
    println!(
        "{}   (AES-256-GCM over loopback, no checksum; CPU {:.2} core-s)",
        alone.timed.line("floor"),
        alone.cpu.as_secs_f64()
    );
    let checked = floor::encrypted_stream(store.path(), &dest, Some(store.path()));
    println!(
        "{}   (the same, the source's integrity check beside it; CPU {:.2} core-s)",
        checked.timed.line("floor + check beside"),
        checked.cpu.as_secs_f64()
    );
    (totals, [alone, checked])
}

fn main() {
    let args = args();
    let target = args.size_mib << 20;
    println!(
        "machine: {} CPUs ({}), {} RAM, {}, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        first_line_with("/proc/cpuinfo", "model name"),
        first_line_with("/proc/meminfo", "MemTotal"),
        first_line_with("/etc/os-release", "PRETTY_NAME"),
        sh("uname", &["-r"])
    );
    println!("load average:        {}", load());
    println!("/tmp is on:          {}", df_t(Path::new("/tmp")));
    std::fs::create_dir_all(&args.dir).unwrap();
    println!("the bench runs on:   {}", df_t(&args.dir));
    let need = 3 * target + (64 << 20) + MARGIN;
    if let Some(free) = free_bytes(&args.dir) {
        if free < need {
            eprintln!(
                "{} has {} MB free; a {} MiB database needs about {} MB here (source, snapshot and received copy, or source, received copy and installed copy, plus {} MB left free). \
                 Pick a smaller size (SNAPSHOT_BENCH_MIB) or another filesystem (SNAPSHOT_BENCH_DIR, e.g. /dev/shm).",
                args.dir.display(),
                mb(free),
                args.size_mib,
                mb(need),
                mb(MARGIN)
            );
            std::process::exit(2);
        }
    }
    let work = tempfile::Builder::new()
        .prefix("snapshot-bench-")
        .tempdir_in(&args.dir)
        .unwrap();
    println!("work directory:      {}", work.path().display());
    println!(
        "baseline: {} run with std::process::Command (`cp SRC DEST`), then fsync of DEST from this process (File::sync_all)",
        sh("cp", &["--version"]).lines().next().unwrap_or("cp")
    );
    println!("units: MB = 10^6 bytes, MB/s = database bytes / stage time");

    let src = work.path().join("a").join("biostar2.db");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    let (store, rows) = build_db(&src, target);
    let size = std::fs::metadata(&src).unwrap().len();
    println!(
        "database: {} MB ({} MiB), {rows} rows of {BLOB} random bytes, WAL, checkpointed; just written, so warm: {}",
        mb(size),
        size >> 20,
        cached(&src)
    );

    // Reference: SHA-256 alone over the warm file (the snapshot computes it
    // while copying, the receiver while writing; a MAC over every frame on
    // each side).
    let started = Instant::now();
    let mut file = std::fs::File::open(&src).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let _ = h.finalize();
    println!(
        "reference: SHA-256 of the warm file in one thread: {:.0} MB/s",
        mb_s(size, started.elapsed())
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut pair = rt.block_on(pair(work.path()));
    println!(
        "peer link: a -> b on 127.0.0.1, connected ({:?} / {:?}), chunks of {} KiB",
        pair.a.state().node_id,
        pair.b.state().node_id,
        pair.chunk >> 10
    );

    let mut results = Vec::new();
    for run in 1..=args.runs {
        let cp_first = run % 2 == 1;
        println!(
            "run {run}: {}",
            if cp_first {
                "cp first, then the pipeline"
            } else {
                "the pipeline first, then cp"
            }
        );
        let (cp_t, (totals, floors)) = if cp_first {
            let c = cp(&src, work.path());
            (
                c,
                pipeline_and_floor(&rt, &store, rows, &mut pair, work.path(), run),
            )
        } else {
            let t = pipeline_and_floor(&rt, &store, rows, &mut pair, work.path(), run);
            (cp(&src, work.path()), t)
        };
        let of_cp = |t: &Timed| t.took.as_secs_f64() / cp_t.took.as_secs_f64();
        let r = Ratios {
            run,
            total: of_cp(&totals.total),
            seed: of_cp(&totals.seed),
            floor: of_cp(&floors[0].timed),
            floor_checked: of_cp(&floors[1].timed),
        };
        println!(
            "  ratio to cp: pipeline total {:.2}; seed total {:.2}; floor {:.2}; floor with the check beside it {:.2}; seed total / floor {:.2}",
            r.total, r.seed, r.floor, r.floor_checked, r.seed / r.floor
        );
        println!("  load average after the run: {}", load());
        results.push(r);
    }
    let med = |f: fn(&Ratios) -> f64| median(results.iter().map(f).collect());
    println!(
        "summary: ratio total/cp {}; median {:.2}; seed total/cp median {:.2}; floor/cp median {:.2}, with the check beside it {:.2}; seed total/floor median {:.2}",
        results
            .iter()
            .map(|r| format!("run {} {:.2}", r.run, r.total))
            .collect::<Vec<_>>()
            .join(", "),
        med(|r| r.total),
        med(|r| r.seed),
        med(|r| r.floor),
        med(|r| r.floor_checked),
        med(|r| r.seed / r.floor),
    );
    drop(store);
}
