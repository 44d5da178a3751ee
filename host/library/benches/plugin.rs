//! Plugin runtime benchmarks: a host-to-plugin call that makes one host
//! import (through the `Strategy` trait, as the host calls it), and component
//! load time with an empty (cold) and a filled (warm) compilation cache.
//!
//! Run: `cargo bench -p standby-host --bench plugin`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use standby_host::caps::{GrantsConfig, Services};
use standby_host::plugin::runtime::{PluginSource, PluginSpec, RuntimeOptions};
use standby_host::plugin::{NodeContext, PluginRuntime, Role, Setting, SettingValue, Strategy};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dist/misbehave.wasm")
}

fn ctx() -> NodeContext {
    NodeContext {
        node_id: "bench".into(),
        site: "bench".into(),
        role: Role::Active,
        epoch: 1,
        now_ms: 0,
    }
}

fn spec() -> PluginSpec {
    let mut grants = GrantsConfig::default();
    let data = std::env::temp_dir().join("standby-bench-data");
    grants.files.insert("data".into(), data);
    let grants = grants.resolve(Path::new("/"), Path::new("/")).unwrap();
    PluginSpec {
        name: "bench".into(),
        source: PluginSource::Path(fixture()),
        grants: Arc::new(grants),
        settings: vec![Setting {
            key: "mode".into(),
            value: SettingValue::Text("none".into()),
        }],
    }
}

fn call_round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = PluginRuntime::new(RuntimeOptions::default()).unwrap();
    let services = Services::new(None, std::env::temp_dir().join("standby-bench-staging")).unwrap();
    let strategy = rt
        .block_on(runtime.load_strategy(spec(), services))
        .unwrap();
    let ctx = ctx();
    // `status` makes one host import (clock.now) and returns a record.
    c.bench_function("host->plugin call (status, 1 host import)", |b| {
        b.to_async(&rt)
            .iter(|| async { strategy.status(&ctx).await.unwrap() })
    });
    // For comparison: a call with no host import that returns three strings.
    c.bench_function("host->plugin call (describe, no import)", |b| {
        b.to_async(&rt)
            .iter(|| async { strategy.describe().await.unwrap() })
    });
}

fn load_times(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bytes = std::fs::read(fixture()).unwrap();
    let mut group = c.benchmark_group("component load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("cold (empty cache)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let cache = tempfile::tempdir().unwrap();
                let runtime = PluginRuntime::new(RuntimeOptions {
                    cache_dir: Some(cache.path().to_path_buf()),
                    ..RuntimeOptions::default()
                })
                .unwrap();
                let started = Instant::now();
                runtime
                    .compile_bytes("bench", "misbehave.wasm", &bytes)
                    .unwrap();
                total += started.elapsed();
            }
            total
        })
    });
    let cache = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeOptions::default()
    };
    {
        let runtime = PluginRuntime::new(options.clone()).unwrap();
        runtime
            .compile_bytes("bench", "misbehave.wasm", &bytes)
            .unwrap();
        // wasmtime writes the cache entry in the background; give it time.
        std::thread::sleep(Duration::from_secs(1));
    }
    group.bench_function("warm (filled cache, new engine)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let runtime = PluginRuntime::new(options.clone()).unwrap();
                let started = Instant::now();
                runtime
                    .compile_bytes("bench", "misbehave.wasm", &bytes)
                    .unwrap();
                total += started.elapsed();
            }
            total
        })
    });
    group.bench_function("load + instantiate + configure (warm)", |b| {
        b.iter_custom(|iters| {
            let runtime = PluginRuntime::new(options.clone()).unwrap();
            let services =
                Services::new(None, std::env::temp_dir().join("standby-bench-staging")).unwrap();
            let started = Instant::now();
            for _ in 0..iters {
                rt.block_on(runtime.load_strategy(spec(), services.clone()))
                    .unwrap();
            }
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, call_round_trip, load_times);
criterion_main!(benches);
