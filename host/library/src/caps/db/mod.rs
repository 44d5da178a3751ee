//! `db`: consistent snapshots (see [`crate::store`]), integrity checks, atomic
//! install, statistics. Files the database reads or writes are named relative
//! to granted roots and opened through the root's directory handle first.
//! The grant and its call-time check are in [`grant`].

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cap_std::fs::OpenOptions;

use crate::role::Role;
use crate::store::{Store, StoreError};
use crate::wit::strategy::standby::plugin::db::{
    DbInfo, DurableMark as WitMark, Host, IntegrityReport, SnapshotInfo,
    StreamPosition as WitPosition,
};
use crate::wit::strategy::standby::plugin::types::{ChangeBatch, Error as WitError, FileRef};

use super::batches::{HeldBatch, MAX_BATCH_BYTES};
use super::files::grant::Root;
use super::{blocking, io_error, DurableMark, HostState};

pub(crate) mod freeze;
pub(crate) mod grant;

use grant::DbSwitch;

pub(super) fn store_error(e: StoreError) -> WitError {
    match e {
        StoreError::Detached { .. } => WitError::Unavailable(e.to_string()),
        StoreError::Corrupt { .. } | StoreError::Incompatible { .. } => {
            WitError::InvalidArgument(e.to_string())
        }
        StoreError::Capture { ref error, .. }
            if matches!(error.as_ref(), crate::store::CaptureError::Pruned { .. }) =>
        {
            WitError::NotFound(e.to_string())
        }
        StoreError::Capture { ref error, .. }
            if matches!(
                error.as_ref(),
                crate::store::CaptureError::Diverged { .. }
                    | crate::store::CaptureError::StaleEpoch { .. }
            ) =>
        {
            WitError::Conflict(e.to_string())
        }
        StoreError::Capture { ref error, .. }
            if matches!(error.as_ref(), crate::store::CaptureError::Sqlite(s)
                if s.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    || s.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseLocked)) =>
        {
            WitError::Unavailable(e.to_string())
        }
        StoreError::Capture { .. } => WitError::Other(e.to_string()),
        other => WitError::Other(other.to_string()),
    }
}

/// Open `rel` through the root's handle (so it cannot lead out of the root),
/// and return the open file with the real path of what was opened. SQLite
/// needs a path; it gets this one, and the open handle pins the file.
pub(crate) fn confined_real_path(
    root: &Root,
    rel: &Path,
    what: &str,
) -> Result<(cap_std::fs::File, PathBuf), WitError> {
    let file = root.dir.open(rel).map_err(|e| io_error(what, e))?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| io_error(what, e))?;
    if !real.starts_with(&root.path) {
        return Err(WitError::AccessDenied(format!(
            "{what} resolves outside its root"
        )));
    }
    Ok((file, real))
}

impl HostState {
    pub(super) fn db_grant(&self, switch: Option<DbSwitch>) -> Result<Arc<Store>, WitError> {
        grant::check(self.grants.granted.db.as_ref(), switch, &self.plugin)
            .map_err(|e| self.denied("db", e))?;
        self.services
            .store()
            .cloned()
            .ok_or_else(|| WitError::Unavailable("no database is open on this node".into()))
    }

    /// `db.install` (the copy at `file` copied into place and left where it
    /// is) or, `moving`, `db.install-moving` (the file itself moved into
    /// place: consumed, even on failure).
    async fn replace_live_database(&mut self, file: FileRef, moving: bool) -> Result<(), WitError> {
        let store = self.db_grant(Some(DbSwitch::Install))?;
        if self.services.role() == Role::Active {
            return Err(WitError::Conflict(
                "an active node does not replace its live database".into(),
            ));
        }
        let (root, rel) = self.file(&file)?;
        let what = format!("{}:{}", file.root, file.path);
        let plugin = self.plugin.clone();
        let abandoned = self.abandoned.clone();
        let services = self.services.clone();
        blocking(move || {
            let (_pin, real) = confined_real_path(&root, &rel, &what)?;
            // Back from an older epoch: keep what this node committed then
            // before the copy replaces it.
            if let Some(epoch) = services.returning_from_epoch() {
                let summary = store
                    .set_aside_before_install(&real, services.data_dir(), epoch)
                    .map_err(store_error)?;
                let differing: u64 = summary.tables.iter().map(|t| t.not_in_the_new_copy).sum();
                tracing::warn!(
                    file = %summary.file.display(),
                    active_at_epoch = epoch,
                    rows_not_in_the_new_copy = differing,
                    divergent_changes = summary.divergent_total,
                    "this node was active at an older epoch: its database is set aside before a copy from the new active replaces it"
                );
            }
            // A call stopped for a promotion or its time limit must not
            // replace the live database afterwards.
            let abandoned = || abandoned.load(std::sync::atomic::Ordering::SeqCst);
            if moving {
                store.install_moving_unless(&real, abandoned)
            } else {
                store.install_from_unless(&real, abandoned)
            }
            .map_err(store_error)?;
            services.forget_active_epoch();
            // The copy counts as applied at this node's epoch (the active
            // node's): that node recognises the position when it is told.
            store
                .adopt_applied_epoch(services.epoch())
                .map_err(store_error)?;
            tracing::info!(plugin = &*plugin, file = %what, moved = moving, "installed a copy as the live database");
            Ok(())
        })
        .await
    }
}

/// Functions of `db` the WIT declares but this host does not implement
/// yet (marked so in the WIT): a plugin that imports one is refused at load.
pub(crate) const NOT_IMPLEMENTED: &[&str] = &["attach", "detach"];

/// Add `db`'s host functions to `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    crate::wit::strategy::standby::plugin::db::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(linker, |s| s)
}

impl Host for HostState {
    async fn snapshot(&mut self, dest: FileRef) -> Result<SnapshotInfo, WitError> {
        let store = self.db_grant(None)?;
        let (root, rel) = self.file(&dest)?;
        if rel.as_os_str().is_empty() {
            return Err(WitError::InvalidArgument(
                "snapshot destination names no file".into(),
            ));
        }
        let id = self.services.next_snapshot_id();
        let staging = self.services.staging.clone();
        let services = self.services.clone();
        let what = format!("{}:{}", dest.root, dest.path);
        blocking(move || {
            if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                root.dir
                    .create_dir_all(parent)
                    .map_err(|e| io_error(&what, e))?;
            }
            // Claim the name first: an existing file is a conflict, and nobody
            // else can take the name while the copy runs.
            let placeholder = root
                .dir
                .open_with(&rel, OpenOptions::new().write(true).create_new(true))
                .map_err(|e| io_error(&what, e))?;
            let result = take_snapshot(
                &store,
                &services,
                &staging,
                id,
                &root,
                &rel,
                placeholder,
                &what,
            );
            if result.is_err() {
                let _ = root.dir.remove_file(&rel);
            }
            let (stats, sha256, marks) = result?;
            services.record_snapshot_marks(id, marks);
            Ok(SnapshotInfo {
                file: dest,
                id,
                size: stats.size,
                sha256,
                taken_at: stats.taken_at_ms,
                duration_ms: stats.duration_ms,
            })
        })
        .await
    }

    async fn integrity_check(&mut self, file: FileRef) -> Result<IntegrityReport, WitError> {
        let store = self.db_grant(None)?;
        let (root, rel) = self.file(&file)?;
        let what = format!("{}:{}", file.root, file.path);
        blocking(move || {
            let (_pin, real) = confined_real_path(&root, &rel, &what)?;
            // Remembered: installing this file unchanged does not check it again.
            let r = store.check_copy(&real).map_err(store_error)?;
            Ok(IntegrityReport {
                ok: r.ok,
                problems: r.problems,
                page_count: r.page_count,
            })
        })
        .await
    }

    async fn install(&mut self, file: FileRef) -> Result<(), WitError> {
        self.replace_live_database(file, false).await
    }

    async fn install_moving(&mut self, file: FileRef) -> Result<(), WitError> {
        self.replace_live_database(file, true).await
    }

    async fn info(&mut self) -> Result<DbInfo, WitError> {
        let store = self.db_grant(None)?;
        blocking(move || {
            let i = store.info().map_err(store_error)?;
            Ok(DbInfo {
                journal_mode: i.journal_mode,
                size: i.size,
                event_count: i.event_count,
                last_change: store.last_change().map_err(store_error)?,
            })
        })
        .await
    }

    async fn checkpoint(&mut self) -> Result<(), WitError> {
        let store = self.db_grant(None)?;
        blocking(move || store.checkpoint().map_err(store_error)).await
    }

    async fn freeze(&mut self, max_ms: u32) -> Result<(), WitError> {
        let store = self.db_grant(None)?;
        let max = Duration::from_millis(u64::from(max_ms));
        if max.is_zero() || max > freeze::MAX_FREEZE {
            return Err(WitError::InvalidArgument(format!(
                "max-ms = {max_ms}: a freeze lasts 1 to {} ms",
                freeze::MAX_FREEZE.as_millis()
            )));
        }
        if self.services.freeze.extend(max, &self.plugin) {
            return Ok(());
        }
        let frozen = blocking(move || store.freeze().map_err(store_error)).await?;
        self.services.freeze.hold(frozen, max, &self.plugin);
        Ok(())
    }

    async fn thaw(&mut self) -> Result<(), WitError> {
        self.db_grant(None)?;
        self.services.freeze.thaw(&self.plugin);
        Ok(())
    }

    async fn confirm_durable(&mut self, mark: WitMark) -> Result<(), WitError> {
        self.db_grant(None)?;
        let mark = match mark {
            WitMark::Snapshot(id) => DurableMark::Snapshot(id),
            WitMark::Changes(seq) => DurableMark::Changes(seq),
        };
        self.services
            .durable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(mark);
        Ok(())
    }

    async fn enable_capture(&mut self) -> Result<(), WitError> {
        let store = self.db_grant(Some(DbSwitch::Capture))?;
        let tables = self
            .grants
            .granted
            .db
            .as_ref()
            .and_then(|g| g.tables.clone());
        let plugin = self.plugin.clone();
        blocking(move || {
            let captured = store
                .enable_capture(tables.as_deref())
                .map_err(store_error)?;
            tracing::info!(plugin = &*plugin, tables = ?captured, "change capture on");
            Ok(())
        })
        .await
    }

    async fn read_changes(
        &mut self,
        after: u64,
        max_changes: u32,
    ) -> Result<Option<ChangeBatch>, WitError> {
        let store = self.db_grant(Some(DbSwitch::Capture))?;
        let services = self.services.clone();
        blocking(move || {
            let changes = store
                .read_changes(after, max_changes.clamp(1, 100_000), MAX_BATCH_BYTES)
                .map_err(store_error)?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                return Ok(None);
            };
            let batch = HeldBatch { epoch: 0, changes };
            services.record_change_marks(last, batch.device_marks());
            let handle = batch.handle(0);
            let id = services.batches.hold(batch);
            Ok(Some(ChangeBatch { id, ..handle }))
        })
        .await
    }

    async fn apply_changes(&mut self, batch_id: u64) -> Result<u64, WitError> {
        let store = self.db_grant(Some(DbSwitch::Capture))?;
        if self.services.role() == Role::Active {
            return Err(WitError::Conflict(
                "an active node does not apply the other site's changes".into(),
            ));
        }
        let batch = self.services.batches.get(batch_id).ok_or_else(|| {
            WitError::NotFound(format!(
                "no change batch {batch_id} is held (applied or released already?)"
            ))
        })?;
        if let Some(stop) = self.services.stream.current() {
            // Order is kept: nothing after the stopped batch is applied.
            if batch
                .changes
                .last()
                .is_some_and(|c| c.seq >= stop.first_seq)
            {
                self.services.batches.release(batch_id);
                return Err(WitError::Conflict(format!(
                    "the change stream is stopped at batch {}..{} since {}: {}; \
                     `standby replication retry` or `skip`",
                    stop.first_seq, stop.last_seq, stop.since_ms, stop.cause
                )));
            }
        }
        let services = self.services.clone();
        blocking(move || {
            let applied = store.apply_changes(&batch.changes, batch.epoch);
            services.batches.release(batch_id);
            match applied {
                Ok(mark) => Ok(mark),
                Err(e) => {
                    if matches!(&e, StoreError::Capture { error, .. }
                        if matches!(error.as_ref(), crate::store::CaptureError::Apply { .. }))
                    {
                        services.stream.stop(&batch.changes, batch.epoch, &e);
                    }
                    Err(store_error(e))
                }
            }
        })
        .await
    }

    async fn applied_mark(&mut self) -> Result<u64, WitError> {
        let store = self.db_grant(Some(DbSwitch::Capture))?;
        blocking(move || Ok(store.applied_mark().map_err(store_error)?.0)).await
    }

    async fn prune_changes(&mut self, through: u64) -> Result<(), WitError> {
        let store = self.db_grant(Some(DbSwitch::Capture))?;
        blocking(move || {
            store.prune_changes(through).map_err(store_error)?;
            Ok(())
        })
        .await
    }

    async fn position(&mut self) -> Result<WitPosition, WitError> {
        let store = self.db_grant(Some(DbSwitch::Capture))?;
        let own_epoch = if self.services.role() == Role::Active {
            self.services.epoch()
        } else {
            self.services.active_epoch().unwrap_or(0)
        };
        blocking(move || {
            let p = store.position(own_epoch).map_err(store_error)?;
            Ok(WitPosition {
                seq: p.seq,
                epoch: p.epoch,
                captured_here: p.own,
            })
        })
        .await
    }

    async fn release_batch(&mut self, batch_id: u64) {
        self.services.batches.release(batch_id);
    }

    async fn attach(&mut self) -> Result<(), WitError> {
        self.db_grant(Some(DbSwitch::Attach))?;
        Err(not_yet(
            "attaching a shared file",
            "the shared-file strategy",
        ))
    }

    async fn detach(&mut self) -> Result<(), WitError> {
        self.db_grant(Some(DbSwitch::Attach))?;
        Err(not_yet(
            "detaching a shared file",
            "the shared-file strategy",
        ))
    }
}

fn not_yet(what: &str, with: &str) -> WitError {
    WitError::Unavailable(format!(
        "{what} is not available in this host version (it comes with {with})"
    ))
}

/// A snapshot of the live database at `staged` (in the host's staging
/// folder; anything there before is replaced), and what it holds for each
/// device, read from the copy itself: once the other site confirms it,
/// those events are durable there. On failure nothing is left at `staged`.
pub(super) fn snapshot_staged(
    store: &Store,
    staged: &Path,
) -> Result<(crate::store::SnapshotStats, Vec<crate::store::DeviceMark>), WitError> {
    let _ = std::fs::remove_file(staged);
    let stats = store.snapshot_to(staged).map_err(store_error)?;
    let marks = crate::store::device_marks(staged).map_err(|e| {
        let _ = std::fs::remove_file(staged);
        store_error(e)
    })?;
    Ok((stats, marks))
}

/// Snapshot into the staging directory (with its checksum) and move into
/// place over the placeholder.
#[allow(clippy::too_many_arguments)]
fn take_snapshot(
    store: &Store,
    services: &super::Services,
    staging: &Path,
    id: u64,
    root: &Root,
    rel: &Path,
    mut placeholder: cap_std::fs::File,
    what: &str,
) -> Result<
    (
        crate::store::SnapshotStats,
        String,
        Vec<crate::store::DeviceMark>,
    ),
    WitError,
> {
    let name = format!("snapshot-{}-{id}.db", std::process::id());
    let (stats, marks) = snapshot_staged(store, &staging.join(&name))?;
    let staging_dir = cap_std::fs::Dir::open_ambient_dir(staging, cap_std::ambient_authority())
        .map_err(|e| io_error("staging directory", e))?;
    let sha256 = stats.sha256.clone();
    match staging_dir.rename(&name, &root.dir, rel) {
        // Renamed, the file keeps its stamp: sent to the peer unchanged, its
        // checksum need not be read again.
        Ok(()) => services.record_digest(crate::peer::KnownDigest {
            sha256: stats.sha256.clone(),
            stamp: stats.stamp,
        }),
        Err(e) if e.raw_os_error() == Some(18) => {
            // Different filesystems (EXDEV): copy into the placeholder instead.
            let mut from = staging_dir.open(&name).map_err(|e| io_error(what, e))?;
            std::io::copy(&mut from, &mut placeholder).map_err(|e| io_error(what, e))?;
            placeholder.sync_all().map_err(|e| io_error(what, e))?;
            let _ = staging_dir.remove_file(&name);
        }
        Err(e) => {
            let _ = staging_dir.remove_file(&name);
            return Err(io_error(what, e));
        }
    }
    if let Ok(dir) = std::fs::File::open(&root.path) {
        let _ = dir.sync_all();
    }
    Ok((stats, sha256, marks))
}
