//! The host side of each WIT capability, one module per capability (in the
//! manner of Spin's factors): its host functions, its grant (the profile's
//! form, validation, resolution, the call-time check) and their tests. A
//! registry lists them ([`Capability`]) and builds the linker and the
//! load-time check from them; [`GrantsConfig`] gathers the grants of one
//! plugin entry and [`ResolvedGrants`] is what an instance runs with.
//!
//! Every plugin instance has its own host state: its name, its resolved
//! grants, and the node's shared [`Services`]. Grants were checked when the
//! plugin loaded; each call checks its arguments against them again (roots,
//! commands, interfaces, servers) and answers `access-denied` for anything
//! outside.

pub(crate) mod batches;
mod capability;
mod clock;
pub(crate) mod db;
mod dns;
pub(crate) mod exec;
mod files;
mod grant_error;
pub(crate) mod grants;
mod log;
mod net;
pub(crate) mod output;
mod peer;
pub(crate) mod registry;
pub mod stream;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::ResourceLimiter;

use crate::role::Role;
use crate::store::Store;
use crate::wit::strategy::standby::plugin::types::{Error as WitError, FileRef};

/// The word after the epoch in `DATA_DIR/.active-epoch` once the node has
/// handed over cleanly.
const HANDED_OVER: &str = "handed-over";

pub use capability::Capability;
pub use db::grant::DbGrant;
pub use dns::grant::DnsServerGrant;
pub use exec::grant::ExecGrant;
pub(crate) use files::grant::relative_path;
pub use files::grant::{FilesGrant, Root};
pub use grants::{GrantCheck, GrantError, GrantsConfig, ResolvedGrants};
pub use net::grant::{NetAddress, NetGrant};
pub use peer::grant::PeerGrant;

/// Node-wide facilities the capabilities use. One per node, shared by every
/// plugin instance.
#[derive(Debug)]
pub struct Services {
    store: Option<Arc<Store>>,
    staging: PathBuf,
    started: Instant,
    next_snapshot_id: AtomicU64,
    durable: Mutex<Vec<DurableMark>>,
    role: Mutex<Role>,
    peer: std::sync::OnceLock<crate::peer::PeerLink>,
    snapshot_marks: Mutex<std::collections::HashMap<u64, Vec<crate::store::DeviceMark>>>,
    /// Change batches held for plugins.
    pub(crate) batches: batches::Batches,
    /// What each batch read from the change log holds for the devices, by
    /// the batch's last sequence.
    change_marks: Mutex<std::collections::BTreeMap<u64, Vec<crate::store::DeviceMark>>>,
    /// The epoch the node presents now.
    epoch: AtomicU64,
    /// Long-running commands started for plugins (the application).
    pub(crate) supervisor: exec::service::Supervisor,
    /// The change stream's stop at a batch that cannot be applied.
    pub(crate) stream: stream::StreamStop,
    /// The database's freeze, if a plugin holds one.
    pub(crate) freeze: Arc<db::freeze::FreezeHold>,
    /// Checksums of the snapshots placed for plugins (the newest few): a
    /// snapshot sent to the peer unchanged is not read once more for it.
    digests: Mutex<std::collections::VecDeque<crate::peer::KnownDigest>>,
}

/// What the other site holds durably, as a strategy confirmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) enum DurableMark {
    /// A snapshot (by host id) is installed at the other site.
    Snapshot(u64),
    /// Every change through this sequence is applied at the other site.
    Changes(u64),
}

impl Services {
    /// Services for a node whose database is `store` (or none, e.g. when only
    /// checking a profile). `staging` is a host-private directory on the same
    /// filesystem as the plugins' roots where possible; it is created if missing.
    pub fn new(
        store: Option<Arc<Store>>,
        staging: impl Into<PathBuf>,
    ) -> std::io::Result<Arc<Self>> {
        let staging = staging.into();
        std::fs::create_dir_all(&staging)?;
        Ok(Arc::new(Self {
            store,
            staging,
            started: Instant::now(),
            next_snapshot_id: AtomicU64::new(1),
            durable: Mutex::new(Vec::new()),
            role: Mutex::new(Role::Standby),
            peer: std::sync::OnceLock::new(),
            snapshot_marks: Mutex::new(std::collections::HashMap::new()),
            batches: batches::Batches::default(),
            change_marks: Mutex::new(std::collections::BTreeMap::new()),
            epoch: AtomicU64::new(0),
            supervisor: exec::service::Supervisor::default(),
            stream: stream::StreamStop::default(),
            freeze: Arc::default(),
            digests: Mutex::default(),
        }))
    }

    /// The node's database, if it has one open.
    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Durable marks confirmed so far (oldest first), drained.
    pub(crate) fn take_durable_marks(&self) -> Vec<DurableMark> {
        std::mem::take(&mut *self.durable.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The node's current role, as the capabilities see it.
    pub(crate) fn role(&self) -> Role {
        *self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record the node's role (the node does this on every transition;
    /// the epoch first). Becoming active is remembered on disk: if the node
    /// comes back after another took over, what it committed meanwhile is
    /// set aside before a copy from the new active replaces it.
    pub(crate) fn set_role(&self, role: Role) {
        *self.role.lock().unwrap_or_else(|p| p.into_inner()) = role;
        if role == Role::Active {
            let marker = self.active_marker();
            if let Err(e) = std::fs::write(&marker, self.epoch().to_string()) {
                tracing::warn!(path = %marker.display(), error = %e, "could not record the active epoch");
            }
        }
    }

    /// The node's data directory (the staging directory's parent).
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.staging.parent().unwrap_or(&self.staging)
    }

    fn active_marker(&self) -> PathBuf {
        self.data_dir().join(".active-epoch")
    }

    /// The marker: the epoch at which this node was last active, and
    /// whether it handed over cleanly since (a planned switchover).
    fn read_active_marker(&self) -> Option<(u64, bool)> {
        let text = std::fs::read_to_string(self.active_marker()).ok()?;
        let mut words = text.split_whitespace();
        let epoch = words.next()?.parse().ok()?;
        Some((epoch, words.next() == Some(HANDED_OVER)))
    }

    /// The epoch at which this node was last active (its own captured
    /// changes are of that epoch), if it was.
    pub(crate) fn active_epoch(&self) -> Option<u64> {
        self.read_active_marker().map(|(epoch, _)| epoch)
    }

    /// The epoch at which this node was last active, if a later epoch has
    /// since begun (it came back after another node took over) and it did
    /// not hand over cleanly.
    pub(crate) fn returning_from_epoch(&self) -> Option<u64> {
        let (was, clean) = self.read_active_marker()?;
        (was < self.epoch() && !clean).then_some(was)
    }

    /// This node handed the service over in a planned switchover: the other
    /// node confirmed it holds everything this one committed, so nothing
    /// needs setting aside when its copies arrive.
    pub(crate) fn mark_handed_over(&self) {
        if let Some(epoch) = self.active_epoch() {
            let marker = self.active_marker();
            if let Err(e) = std::fs::write(&marker, format!("{epoch} {HANDED_OVER}")) {
                tracing::warn!(path = %marker.display(), error = %e, "could not record the hand-over");
            }
        }
    }

    /// What the node held from its last active epoch is dealt with.
    pub(crate) fn forget_active_epoch(&self) {
        let _ = std::fs::remove_file(self.active_marker());
    }

    /// The node's current epoch, as the capabilities see it.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Record the node's epoch (the node does this on every change).
    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Connect the `peer` capability to the node's peer link (once).
    pub(crate) fn attach_peer(&self, link: crate::peer::PeerLink) {
        let _ = self.peer.set(link);
    }

    /// The node's peer link, if it has one.
    pub(crate) fn peer(&self) -> Option<&crate::peer::PeerLink> {
        self.peer.get()
    }

    /// The per-device watermarks a snapshot holds (recorded when it was
    /// taken), removed: once the other site confirms the snapshot, these
    /// events are durable there.
    pub(crate) fn take_snapshot_marks(&self, id: u64) -> Vec<crate::store::DeviceMark> {
        self.snapshot_marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .unwrap_or_default()
    }

    /// The device marks of every batch through `seq`, removed: the other
    /// site has applied them.
    pub(crate) fn take_change_marks(&self, seq: u64) -> Vec<crate::store::DeviceMark> {
        let mut all = self.change_marks.lock().unwrap_or_else(|p| p.into_inner());
        let later = all.split_off(&(seq + 1));
        let done = std::mem::replace(&mut *all, later);
        done.into_values().flatten().collect()
    }

    fn record_change_marks(&self, last_seq: u64, marks: Vec<crate::store::DeviceMark>) {
        if marks.is_empty() {
            return;
        }
        let mut all = self.change_marks.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= 4_096 {
            all.pop_first();
        }
        all.entry(last_seq).or_default().extend(marks);
    }

    fn record_snapshot_marks(&self, id: u64, marks: Vec<crate::store::DeviceMark>) {
        let mut all = self
            .snapshot_marks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Keep the recent ones only: a snapshot never confirmed is superseded.
        if all.len() >= 64 {
            if let Some(oldest) = all.keys().min().copied() {
                all.remove(&oldest);
            }
        }
        all.insert(id, marks);
    }

    /// Remember the checksum of a snapshot just placed for a plugin.
    fn record_digest(&self, digest: crate::peer::KnownDigest) {
        let mut all = self.digests.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|d| d.stamp != digest.stamp);
        if all.len() >= 64 {
            all.pop_front();
        }
        all.push_back(digest);
    }

    /// The checksum of the snapshot that has `stamp`, if one was placed.
    fn known_digest(&self, stamp: &crate::store::FileStamp) -> Option<crate::peer::KnownDigest> {
        self.digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|d| d.stamp == *stamp)
            .cloned()
    }

    fn next_snapshot_id(&self) -> u64 {
        self.next_snapshot_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Per-instance state inside a wasmtime `Store`.
pub(crate) struct HostState {
    pub(crate) plugin: Arc<str>,
    pub(crate) grants: Arc<ResolvedGrants>,
    pub(crate) services: Arc<Services>,
    pub(crate) limits: CallLimits,
    /// What the instance may put into the host's log, and its counts.
    pub(crate) output: Arc<output::InstanceOutput>,
    /// Set when the call in progress was stopped (time limit, promotion):
    /// host work it began must not take effect afterwards.
    pub(crate) abandoned: Arc<std::sync::atomic::AtomicBool>,
}

impl HostState {
    /// State for one instance of `plugin`.
    pub(crate) fn new(
        plugin: Arc<str>,
        grants: Arc<ResolvedGrants>,
        services: Arc<Services>,
        memory_cap: u64,
        output: Arc<output::InstanceOutput>,
    ) -> Self {
        Self {
            plugin,
            grants,
            services,
            output,
            abandoned: Arc::default(),
            limits: CallLimits {
                memory_cap,
                memory_cap_hit: false,
                ticks_left: 0,
                deadline_hit: false,
            },
        }
    }

    /// Mark host work of the call in progress abandoned (see `abandoned`).
    pub(crate) fn abandon(&self) {
        self.abandoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The root named by `file.root`, or access-denied.
    fn root(&self, root: &str) -> Result<&Root, WitError> {
        files::grant::root(&self.grants.roots, root, &self.plugin)
            .map_err(|e| self.denied("files", e))
    }

    /// Pass `e` on to the plugin; when it is a denial, count it and log it
    /// (plugin, capability, what was asked), within the instance's budget
    /// of such lines.
    pub(crate) fn denied(&self, capability: &str, e: WitError) -> WitError {
        if let WitError::AccessDenied(what) = &e {
            if self.output.denied() {
                tracing::warn!(plugin = %self.plugin, capability, "capability call denied: {what}");
            }
        }
        e
    }

    /// Resolve a file reference to its root and a checked relative path.
    fn file(&self, file: &FileRef) -> Result<(Root, PathBuf), WitError> {
        let root = self.root(&file.root)?.clone();
        let rel = relative_path(&file.path).map_err(|e| self.denied("files", e))?;
        Ok((root, rel))
    }
}

/// Limits enforced on every call: a memory cap and a budget of guest time.
#[derive(Debug)]
pub(crate) struct CallLimits {
    pub memory_cap: u64,
    pub memory_cap_hit: bool,
    /// Epoch ticks the current call may still spend in guest code.
    pub ticks_left: u32,
    pub deadline_hit: bool,
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_cap {
            self.memory_cap_hit = true;
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes reached (wanted {desired})",
                self.memory_cap
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Map an I/O error on `what` to a WIT error.
pub(crate) fn io_error(what: &str, e: std::io::Error) -> WitError {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => WitError::NotFound(format!("{what}: {e}")),
        AlreadyExists => WitError::Conflict(format!("{what}: already exists")),
        PermissionDenied => WitError::AccessDenied(format!("{what}: {e}")),
        InvalidInput => WitError::InvalidArgument(format!("{what}: {e}")),
        _ => WitError::Other(format!("{what}: {e}")),
    }
}

impl HostState {
    /// [`blocking`] file work for this instance; a denial it ends in (a
    /// path the OS refused, e.g. a symbolic link leading out of a root) is
    /// counted and logged like a grant's.
    pub(crate) async fn blocking_files<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, WitError> + Send + 'static,
    ) -> Result<T, WitError> {
        blocking(f).await.map_err(|e| self.denied("files", e))
    }
}

/// Run blocking work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WitError> + Send + 'static,
) -> Result<T, WitError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(WitError::Other(format!("host task failed: {e}"))))
}

impl crate::wit::strategy::standby::plugin::types::Host for HostState {}
