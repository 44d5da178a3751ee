//! Shared helpers for the end-to-end tests: the repository's fixtures,
//! prerequisites that CI requires, polling (from the testkit), and plugin
//! specs and contexts.
//!
//! Test harness: a failure here is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use standby_testkit::{wait_for, wait_until};

use standby_host::caps::{GrantsConfig, ResolvedGrants, Services};
use standby_host::plugin::runtime::{PluginSource, PluginSpec};
use standby_host::plugin::{NodeContext, Role, Setting, SettingValue};
use standby_host::store::{AccessEvent, Store, StoreOptions};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A committed test fixture component.
pub fn fixture(name: &str) -> PathBuf {
    repo()
        .join("tests/fixtures/dist")
        .join(format!("{name}.wasm"))
}

/// Make the FIFO `fifo` (and its folder) in `dir`, which the misbehave
/// fixture's stalling modes read: a read blocks inside the files capability
/// until someone writes to it. Returns its path.
pub fn stalling_fifo(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {} failed", fifo.display());
    fifo
}

/// True when running under CI, where a missing prerequisite fails a test.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Whether `program` is on PATH; under CI a missing program fails the test.
pub fn require(program: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            !in_ci(),
            "prerequisite `{program}` is missing (CI=true: failing instead of skipping)"
        );
        eprintln!("SKIPPED: `{program}` is not installed");
    }
    found
}

/// A context for calls.
pub fn ctx(role: Role) -> NodeContext {
    NodeContext {
        node_id: "test-node".into(),
        site: "test".into(),
        role,
        epoch: 1,
        now_ms: standby_host::store::unix_ms(),
    }
}

/// A text setting.
pub fn text(key: &str, value: &str) -> Setting {
    Setting {
        key: key.into(),
        value: SettingValue::Text(value.into()),
    }
}

/// An integer setting.
pub fn int(key: &str, value: i64) -> Setting {
    Setting {
        key: key.into(),
        value: SettingValue::Integer(value),
    }
}

/// Grants with the given roots (name, absolute dir) and optionally the db
/// grant, resolved as a node resolves a profile's.
pub fn grants(roots: &[(&str, &Path)], db: bool) -> Arc<ResolvedGrants> {
    Arc::new(
        grants_config(roots, db)
            .resolve(Path::new("/"), Path::new("/"))
            .unwrap(),
    )
}

/// The same grants as the profile writes them.
pub fn grants_config(roots: &[(&str, &Path)], db: bool) -> GrantsConfig {
    let mut g = GrantsConfig::default();
    for (name, dir) in roots {
        g.files.insert((*name).to_string(), dir.to_path_buf());
    }
    if db {
        g.db = Some(Default::default());
    }
    g
}

/// A spec for a plugin.
pub fn spec(
    name: &str,
    source: PluginSource,
    grants: Arc<ResolvedGrants>,
    settings: Vec<Setting>,
) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        source,
        grants,
        settings,
    }
}

/// Services with a fresh WAL store in `dir`.
pub fn services_with_store(dir: &Path) -> (Arc<Services>, Arc<Store>) {
    let store = Arc::new(Store::open(dir.join("biostar2.db"), StoreOptions::default()).unwrap());
    let services = Services::new(Some(store.clone()), dir.join(".staging")).unwrap();
    (services, store)
}

/// An access event with a recognisable payload.
pub fn event(device_id: u32, seq: u64) -> AccessEvent {
    AccessEvent {
        device_id,
        incarnation: 7,
        seq,
        event_code: 0x1000,
        user_id: Some(format!("{}", seq % 500)),
        occurred_at_ms: 1_700_000_000_000 + seq,
        payload: format!("device {device_id} event {seq} {}", "x".repeat(64)).into_bytes(),
    }
}

/// What `file-copy` needs: the database, a `snapshots` root, and the peer
/// link with that root as its inbox.
pub fn file_copy_grants(snapshots: &Path) -> Arc<ResolvedGrants> {
    let mut g = grants_config(&[("snapshots", snapshots)], true);
    g.peer = Some(standby_host::caps::PeerGrant {
        inbox: "snapshots".into(),
    });
    Arc::new(g.resolve(Path::new("/"), Path::new("/")).unwrap())
}
