//! The plugin runtime against real components: bad files, wrong worlds,
//! missing grants, traps, endless loops, unbounded allocation, and path-escape
//! attempts. Each gives a clear error and the host (this process) keeps going.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use standby_host::caps::Services;
use standby_host::plugin::runtime::{PluginSource, RuntimeOptions};
use standby_host::plugin::{
    CallError, Capability, FaultCause, HealthState, LoadError, PluginError, PluginRuntime, Role,
    Strategy,
};
use standby_lab::fixtures::*;

fn runtime(deadline_ms: u64, memory_cap: u64) -> PluginRuntime {
    PluginRuntime::new(RuntimeOptions {
        call_deadline_ms: deadline_ms,
        memory_cap,
        backoff_initial_ms: 300,
        backoff_max_ms: 1_000,
        cache: false,
        ..RuntimeOptions::default()
    })
    .unwrap()
}

fn no_store(dir: &std::path::Path) -> Arc<Services> {
    Services::new(None, dir.join(".staging")).unwrap()
}

async fn misbehave(
    rt: &PluginRuntime,
    dir: &std::path::Path,
    name: &str,
    mode: &str,
) -> impl Strategy {
    let data = dir.join("data");
    rt.load_strategy(
        spec(
            name,
            PluginSource::Path(fixture("misbehave")),
            grants(&[("data", &data)], false),
            vec![text("mode", mode)],
        ),
        no_store(dir),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1_000, 32 << 20);
    let text_file = dir.path().join("notes.wasm");
    std::fs::write(&text_file, "hello").unwrap();
    let err = rt
        .load_strategy(
            spec(
                "notes",
                PluginSource::Path(text_file),
                grants(&[], false),
                vec![],
            ),
            no_store(dir.path()),
        )
        .await
        .err()
        .expect("a text file must not load");
    assert!(matches!(err, LoadError::NotComponent { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("plugin notes") && msg.contains("notes.wasm") && msg.contains("magic bytes"),
        "{msg}"
    );

    // A core module (not wrapped as a component) gets a hint.
    let core = wit_component_free_core_module();
    let core_file = dir.path().join("core.wasm");
    std::fs::write(&core_file, core).unwrap();
    let err = rt
        .load_strategy(
            spec(
                "core",
                PluginSource::Path(core_file),
                grants(&[], false),
                vec![],
            ),
            no_store(dir.path()),
        )
        .await
        .err()
        .expect("a core module must not load");
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");
}

/// The smallest valid core module: magic and version 1.
fn wit_component_free_core_module() -> Vec<u8> {
    b"\0asm\x01\0\0\0".to_vec()
}

#[tokio::test]
async fn a_component_for_another_world_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1_000, 32 << 20);
    let err = rt
        .load_strategy(
            spec(
                "wrong",
                PluginSource::Path(fixture("wrong-world")),
                grants(&[], false),
                vec![],
            ),
            no_store(dir.path()),
        )
        .await
        .err()
        .expect("an action must not load as a strategy");
    match &err {
        LoadError::WrongWorld {
            found, expected, ..
        } => {
            assert_eq!(found, "failover-action");
            assert_eq!(*expected, "replication-strategy");
        }
        other => panic!("unexpected error: {other}"),
    }
    // Loaded as what it is, it works.
    let action = rt
        .load_action(
            spec(
                "wrong",
                PluginSource::Path(fixture("wrong-world")),
                grants(&[], false),
                vec![],
            ),
            no_store(dir.path()),
        )
        .await
        .unwrap();
    use standby_host::plugin::FailoverAction;
    let report = action.activate(&ctx(Role::Active)).await.unwrap();
    assert!(report.summary.contains("epoch 1"), "{}", report.summary);
}

#[tokio::test]
async fn an_ungranted_capability_fails_the_load_naming_plugin_and_capability() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1_000, 32 << 20);
    let err = rt
        .load_strategy(
            spec(
                "copier",
                PluginSource::Builtin("file-copy".into()),
                grants(&[], false),
                vec![],
            ),
            no_store(dir.path()),
        )
        .await
        .err()
        .expect("file-copy without grants must not load");
    match &err {
        LoadError::Ungranted {
            plugin, capability, ..
        } => {
            assert_eq!(plugin, "copier");
            assert_eq!(*capability, Capability::Db);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("`db`"), "{err}");
}

#[tokio::test]
async fn a_call_outside_the_grant_returns_access_denied() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(5_000, 64 << 20);
    let (services, _store) = services_with_store(dir.path());
    let g = file_copy_grants(&dir.path().join("snapshots"));
    // The plugin is told to write into a root it was not granted.
    let s = rt
        .load_strategy(
            spec(
                "copier",
                PluginSource::Builtin("file-copy".into()),
                g,
                vec![text("root", "elsewhere")],
            ),
            services,
        )
        .await
        .unwrap();
    let err = s
        .tick(&ctx(Role::Active))
        .await
        .expect_err("must be refused");
    match err {
        PluginError::Returned {
            error: CallError::AccessDenied(m),
            ..
        } => assert!(m.contains("elsewhere"), "{m}"),
        other => panic!("unexpected: {other}"),
    }
    // Refusal is a value, not a fault: the instance stays healthy.
    assert_eq!(s.health().state, HealthState::Healthy);
}

#[tokio::test]
async fn a_trapping_plugin_is_disabled_reinstantiated_with_backoff_and_others_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(2_000, 32 << 20);
    let bad = misbehave(&rt, dir.path(), "bad", "trap").await;
    let good = misbehave(&rt, dir.path(), "good", "none").await;

    let err = bad
        .tick(&ctx(Role::Active))
        .await
        .expect_err("trap mode must fail");
    assert!(
        matches!(
            err,
            PluginError::Faulted {
                cause: FaultCause::Trap(_),
                ..
            }
        ),
        "{err}"
    );
    let health = bad.health();
    assert_eq!(health.state, HealthState::Degraded);
    assert!(matches!(health.last_fault, Some(FaultCause::Trap(_))));
    let registry = rt.health();
    assert!(registry
        .iter()
        .any(|h| h.plugin == "bad" && h.state == HealthState::Degraded));
    assert!(registry
        .iter()
        .any(|h| h.plugin == "good" && h.state == HealthState::Healthy));

    // During the backoff the instance is disabled.
    let err = bad
        .status(&ctx(Role::Active))
        .await
        .expect_err("disabled during backoff");
    assert!(matches!(err, PluginError::Disabled { .. }), "{err}");

    // The other plugin is untouched.
    let report = good.tick(&ctx(Role::Active)).await.unwrap();
    assert_eq!(report.did, "tick 1");

    // After the backoff it is re-instantiated (fresh state) and answers.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let status = bad.status(&ctx(Role::Active)).await.unwrap();
    assert_eq!(status.summary, "mode trap after 0 ticks");
    let health = bad.health();
    assert_eq!(health.restarts, 1);
    assert_eq!(health.state, HealthState::Healthy);
}

#[tokio::test(flavor = "current_thread")]
async fn an_endless_loop_hits_the_deadline_without_blocking_the_async_thread() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(300, 32 << 20);
    let spinner = misbehave(&rt, dir.path(), "spinner", "spin").await;

    // On a single-threaded runtime, a timer task only advances if the guest
    // call yields the thread while it loops.
    let beats = Arc::new(AtomicU64::new(0));
    let counter = beats.clone();
    let heart = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    let err = spinner
        .tick(&ctx(Role::Active))
        .await
        .expect_err("must hit the deadline");
    let took = started.elapsed();
    heart.abort();
    assert!(
        matches!(
            err,
            PluginError::Faulted {
                cause: FaultCause::Deadline(300),
                ..
            }
        ),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "the call took {took:?}");
    let beats = beats.load(Ordering::Relaxed);
    assert!(
        beats >= 5,
        "the async thread was blocked during the guest call ({beats} beats in {took:?})"
    );
    assert!(matches!(
        spinner.health().last_fault,
        Some(FaultCause::Deadline(_))
    ));
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(10_000, 16 << 20);
    let hog = misbehave(&rt, dir.path(), "hog", "hog").await;
    let err = hog
        .tick(&ctx(Role::Active))
        .await
        .expect_err("must hit the cap");
    assert!(
        matches!(
            err,
            PluginError::Faulted {
                cause: FaultCause::MemoryCap(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("memory cap"), "{err}");
}

#[tokio::test]
async fn path_escapes_through_the_files_capability_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(dir.path().join("outside.txt"), "SECRET-PARENT").unwrap();
    std::fs::write(outside.join("outside.txt"), "SECRET-LINKED").unwrap();
    std::fs::write(data.join("inside.txt"), "hello inside").unwrap();
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("link-out")).unwrap();

    let rt = runtime(2_000, 32 << 20);
    let plugin = misbehave(&rt, dir.path(), "escaper", "escape").await;
    let report = plugin.tick(&ctx(Role::Active)).await.unwrap();
    let lines: Vec<&str> = report.did.lines().collect();
    assert_eq!(
        lines,
        vec![
            "../outside.txt => access-denied",
            "/etc/hostname => access-denied",
            "sub/../../outside.txt => access-denied",
            "link-out/outside.txt => access-denied",
            "inside.txt => ok:hello inside",
        ],
        "{}",
        report.did
    );
    assert!(!report.did.contains("SECRET"));
    let health = rt.health();
    let h = health.iter().find(|h| h.plugin == "escaper").unwrap();
    assert_eq!(h.denials, 4, "every denied call is counted: {h:?}");
}

#[tokio::test]
async fn a_plugin_flooding_the_log_and_returning_huge_strings_is_cut_to_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(5_000, 64 << 20);
    let plugin = misbehave(&rt, dir.path(), "flooder", "flood").await;
    let report = plugin.tick(&ctx(Role::Active)).await.unwrap();
    assert!(
        report.did.len() < 4096 + 64 && report.did.ends_with("more bytes]"),
        "a 1 MiB report reached the host as {} bytes",
        report.did.len()
    );
    let health = rt.health();
    let h = health.iter().find(|h| h.plugin == "flooder").unwrap();
    // 40 MB of lines against a burst of 256 KiB: nearly all are dropped.
    assert!(h.log_lines_dropped >= 9_000, "{h:?}");
    assert_eq!(h.strings_truncated, 1, "{h:?}");
    // The instance still works.
    assert!(plugin.status(&ctx(Role::Active)).await.is_ok());
}

#[tokio::test]
async fn a_plugin_importing_functions_not_implemented_yet_is_refused_at_load_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(1_000, 32 << 20);
    let err = rt
        .load_strategy(
            spec(
                "unimplemented",
                PluginSource::Path(fixture("unimplemented")),
                grants(&[], true),
                vec![],
            ),
            no_store(dir.path()),
        )
        .await
        .err()
        .expect("a plugin importing db.attach must not load");
    assert!(matches!(err, LoadError::NotImplemented { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("plugin unimplemented")
            && msg.contains("db.attach")
            && msg.contains("db.detach")
            && msg.contains("does not implement yet"),
        "{msg}"
    );

    // `standby plugin inspect` says so before anyone loads it.
    let path = fixture("unimplemented").display().to_string();
    let (ok, out, err) = crate::run_standby(&["plugin", "inspect", &path]);
    assert!(ok, "{err}");
    assert!(
        out.contains("NOT IMPLEMENTED") && out.contains("db.attach, db.detach"),
        "{out}"
    );
    // The built-in plugins import nothing unimplemented, and export `lifecycle`.
    for builtin in ["builtin:file-copy", "builtin:dns-ip"] {
        let (ok, out, err) = crate::run_standby(&["plugin", "inspect", builtin, "--json"]);
        assert!(ok, "{err}");
        let shape: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(shape["not_implemented"], serde_json::json!([]), "{shape}");
        assert_eq!(shape["lifecycle"], true, "{shape}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_call_blocked_inside_a_capability_stops_at_its_wall_clock_limit() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = standby_lab::fixtures::stalling_fifo(&dir.path().join("data"));
    // Guest time would allow 60 s; the failover-path limit is 1 s.
    let rt = PluginRuntime::new(RuntimeOptions {
        call_deadline_ms: 60_000,
        failover_call_limit_ms: 1_000,
        cache: false,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let plugin = misbehave(&rt, dir.path(), "staller", "stall").await;
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        plugin.on_promote(&ctx(Role::Active)),
    )
    .await
    .expect("on-promote was not stopped within 10 s")
    .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            PluginError::TimedOut {
                op: "on-promote",
                limit_ms: 1_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        took < Duration::from_millis(1_500),
        "on-promote returned after {took:?}"
    );
    // Not a fault: the instance is healthy, made afresh, and answers at once.
    let health = rt.health();
    let h = health.iter().find(|h| h.plugin == "staller").unwrap();
    assert_eq!(h.state, HealthState::Healthy, "{h:?}");
    assert!(h.last_fault.is_none(), "{h:?}");
    assert!(plugin.status(&ctx(Role::Active)).await.is_ok());
    // Release the host thread still waiting on the FIFO.
    let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_preempts_a_tick_blocked_inside_a_capability_within_100_ms() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = standby_lab::fixtures::stalling_fifo(&dir.path().join("data"));
    let rt = runtime(60_000, 32 << 20);
    let plugin = Arc::new(misbehave(&rt, dir.path(), "ticker", "stall-tick").await);
    let ticking = {
        let plugin = plugin.clone();
        tokio::spawn(async move { plugin.tick(&ctx(Role::Standby)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !ticking.is_finished(),
        "the tick should be blocked on the FIFO"
    );

    let started = Instant::now();
    plugin.preempt();
    let tick = tokio::time::timeout(Duration::from_secs(5), ticking)
        .await
        .expect("the tick was not stopped")
        .unwrap();
    let stopped_after = started.elapsed();
    assert!(
        matches!(tick, Err(PluginError::Preempted { op: "tick", .. })),
        "{tick:?}"
    );
    let report = plugin.on_promote(&ctx(Role::Active)).await.unwrap();
    let promoted_after = started.elapsed();
    assert!(
        stopped_after < Duration::from_millis(100) && promoted_after < Duration::from_millis(500),
        "tick stopped after {stopped_after:?}, on-promote done after {promoted_after:?}"
    );
    assert_eq!(report.restored_from, "nothing");
    // Not a fault.
    let health = rt.health();
    let h = health.iter().find(|h| h.plugin == "ticker").unwrap();
    assert_eq!(h.state, HealthState::Healthy, "{h:?}");
    assert!(h.last_fault.is_none(), "{h:?}");
    let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
}
