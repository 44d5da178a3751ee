//! The `file-copy` strategy end to end: a consistent snapshot of a database
//! that is being written to, verified, and checked independently; and a
//! modified build of the plugin whose different outcome shows the behaviour
//! lives in the plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};
use standby_host::plugin::runtime::{PluginSource, RuntimeOptions};
use standby_host::plugin::{PluginRuntime, Role, Strategy};
use standby_host::store::Store;
use standby_lab::fixtures::*;

/// Writes one event per transaction until stopped; `committed` is the highest
/// sequence whose transaction has returned from commit.
fn start_writer(
    store: Arc<Store>,
    first: u64,
    committed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seq = first;
        while !stop.load(Ordering::Relaxed) {
            store.ingest(&[event(1, seq)], "writer").unwrap();
            committed.store(seq, Ordering::SeqCst);
            seq += 1;
        }
    })
}

fn snapshots_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("db"))
        .collect();
    v.sort();
    v
}

async fn load(
    rt: &PluginRuntime,
    source: PluginSource,
    dir: &Path,
    services: Arc<standby_host::caps::Services>,
) -> impl Strategy {
    rt.load_strategy(
        spec(
            "file-copy",
            source,
            file_copy_grants(&dir.join("snapshots")),
            vec![text("every", "1h"), int("retain", 2)],
        ),
        services,
    )
    .await
    .unwrap()
}

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeOptions {
        cache: false,
        ..RuntimeOptions::default()
    })
    .unwrap()
}

/// Fill the database so the snapshot takes a while.
fn prefill(store: &Store, n: u64) {
    let batch: Vec<_> = (1..=n).map(|s| event(0, s)).collect();
    for chunk in batch.chunks(5_000) {
        store.ingest(chunk, "prefill").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_under_concurrent_writes_holds_every_row_committed_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let (services, store) = services_with_store(dir.path());
    prefill(&store, 60_000);

    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(store.clone(), 1, committed.clone(), stop.clone());
    while committed.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let rt = runtime();
    let strategy = load(
        &rt,
        PluginSource::Builtin("file-copy".into()),
        dir.path(),
        services,
    )
    .await;
    let before = committed.load(Ordering::SeqCst);
    let report = strategy.tick(&ctx(Role::Active)).await.unwrap();
    let after = committed.load(Ordering::SeqCst);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        report.did.starts_with("snapshot biostar2-"),
        "{}",
        report.did
    );
    assert!(
        after > before,
        "the writer made no progress while the snapshot ran ({before} -> {after})"
    );

    let snaps = snapshots_in(&dir.path().join("snapshots"));
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let snap = &snaps[0];

    // Independent check: open the copy read-only, outside the host's code.
    let copy = Connection::open_with_flags(snap, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let ok: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let prefilled: u64 = copy
        .query_row(
            "SELECT count(*) FROM access_events WHERE device_id = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(prefilled, 60_000);
    let present: u64 = copy
        .query_row(
            "SELECT count(*) FROM access_events WHERE device_id = 1 AND seq <= ?1",
            [before as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        present, before,
        "rows committed before the snapshot began are missing"
    );
    // Whatever the copy holds of the writer is a prefix (a consistent cut).
    let (n, max): (u64, Option<i64>) = copy
        .query_row(
            "SELECT count(*), max(seq) FROM access_events WHERE device_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        Some(n as i64),
        max,
        "the copy is not a prefix of the writer's commits"
    );

    // The plugin verified it: manifest with the file's real checksum.
    let manifest = std::fs::read_to_string(format!("{}.verified", snap.display())).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(snap).unwrap()))
    };
    assert!(manifest.contains(&format!("sha256={sha}")), "{manifest}");
    assert!(manifest.contains("integrity=ok"), "{manifest}");

    let status = strategy.status(&ctx(Role::Active)).await.unwrap();
    assert!(status.healthy);
    assert_eq!(
        status.last_size,
        Some(std::fs::metadata(snap).unwrap().len())
    );
}

#[tokio::test]
async fn retention_keeps_the_newest_copies() {
    let dir = tempfile::tempdir().unwrap();
    let (services, store) = services_with_store(dir.path());
    prefill(&store, 100);
    let rt = runtime();
    let strategy = rt
        .load_strategy(
            spec(
                "file-copy",
                PluginSource::Builtin("file-copy".into()),
                file_copy_grants(&dir.path().join("snapshots")),
                vec![text("every", "100ms"), int("retain", 2)],
            ),
            services,
        )
        .await
        .unwrap();
    for _ in 0..4 {
        strategy.tick(&ctx(Role::Active)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    }
    let snaps = snapshots_in(&dir.path().join("snapshots"));
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    // A standby node does not copy.
    let report = strategy.tick(&ctx(Role::Standby)).await.unwrap();
    assert!(report.did.is_empty());
}

#[tokio::test]
async fn a_modified_build_without_verification_changes_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (services, store) = services_with_store(dir.path());
    prefill(&store, 1_000);
    let rt = runtime();

    let real_dir = dir.path().join("real");
    let modified_dir = dir.path().join("modified");
    let real = load(
        &rt,
        PluginSource::Builtin("file-copy".into()),
        &real_dir,
        services.clone(),
    )
    .await;
    let modified = load(
        &rt,
        PluginSource::Path(fixture("file-copy-unverified")),
        &modified_dir,
        services,
    )
    .await;
    real.tick(&ctx(Role::Active)).await.unwrap();
    modified.tick(&ctx(Role::Active)).await.unwrap();

    let manifests = |d: &Path| {
        std::fs::read_dir(d.join("snapshots"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .to_string_lossy()
                    .ends_with(".verified")
            })
            .count()
    };
    assert_eq!(snapshots_in(&real_dir.join("snapshots")).len(), 1);
    assert_eq!(snapshots_in(&modified_dir.join("snapshots")).len(), 1);
    assert_eq!(
        manifests(&real_dir),
        1,
        "the shipped plugin verifies its copies"
    );
    assert_eq!(
        manifests(&modified_dir),
        0,
        "the modified build skips verification"
    );

    let detail = |s: &standby_host::plugin::StrategyStatus| {
        s.details
            .iter()
            .find(|(k, _)| k == "verify")
            .map(|(_, v)| v.clone())
    };
    let real_status = real.status(&ctx(Role::Active)).await.unwrap();
    let modified_status = modified.status(&ctx(Role::Active)).await.unwrap();
    assert_eq!(detail(&real_status).as_deref(), Some("true"));
    assert_eq!(detail(&modified_status).as_deref(), Some("false"));
    assert_eq!(
        modified.describe().await.unwrap().name,
        "file-copy-unverified"
    );
}
