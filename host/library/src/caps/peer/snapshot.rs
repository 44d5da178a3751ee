//! `peer.send-snapshot`: a snapshot of the live database streamed to the
//! peer straight from the database (pinned in one transaction's state while
//! it is read), or, where it cannot be pinned, staged by the host as a
//! snapshot file and sent as one.

use crate::store::{DeviceMark, PinnedSnapshot, Store};
use crate::wit::strategy::standby::plugin::peer::{SentSnapshot, TransferReceipt};
use crate::wit::strategy::standby::plugin::types::Error as WitError;

use super::super::db::{snapshot_staged, store_error};
use super::super::{blocking, io_error, HostState};
use super::peer_error;

/// What a snapshot about to be sent is read from.
enum Taken {
    /// The live database, pinned; what it holds for each device.
    Pinned(PinnedSnapshot, Vec<DeviceMark>),
    /// A snapshot file in the host's staging folder (removed once sent).
    Staged {
        path: std::path::PathBuf,
        stats: crate::store::SnapshotStats,
        marks: Vec<DeviceMark>,
    },
}

impl HostState {
    /// `peer.send-snapshot`.
    pub(super) async fn send_live_snapshot(
        &mut self,
        name: String,
        tag: String,
    ) -> Result<SentSnapshot, WitError> {
        let link = self.peer_link()?;
        let store = self.db_grant(None)?;
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(WitError::InvalidArgument(format!(
                "snapshot name {name:?} is not a plain file name"
            )));
        }
        let id = self.services.next_snapshot_id();
        let staged = self
            .services
            .staging
            .join(format!("send-snapshot-{}-{id}.db", std::process::id()));
        let taken = blocking(move || take(&store, staged)).await?;
        let plugin = self.plugin.clone();
        let (size, sha256, taken_at, receipt, marks) = match taken {
            Taken::Pinned(pinned, marks) => {
                let (size, taken_at) = (pinned.len(), pinned.taken_at_ms());
                let (receipt, sha256) = link
                    .send_snapshot(&plugin, pinned, &name, &tag)
                    .await
                    .map_err(peer_error)?;
                tracing::info!(
                    plugin = &*plugin,
                    bytes = size,
                    ms = receipt.duration_ms,
                    "snapshot sent to the peer, streamed from the live database"
                );
                (size, sha256, taken_at, receipt, marks)
            }
            Taken::Staged { path, stats, marks } => {
                let known = crate::peer::KnownDigest {
                    sha256: stats.sha256.clone(),
                    stamp: stats.stamp,
                };
                let sent = link
                    .send_file(&plugin, &path, &name, &tag, Some(&known))
                    .await;
                let _ = tokio::fs::remove_file(&path).await;
                let receipt = sent.map_err(peer_error)?;
                tracing::info!(plugin = &*plugin, bytes = stats.size, ms = receipt.duration_ms, "snapshot sent to the peer from a staged file (the live database could not be pinned)");
                (stats.size, stats.sha256, stats.taken_at_ms, receipt, marks)
            }
        };
        // Once the peer confirms it installed this snapshot, what it holds
        // for each device is durable there.
        self.services.record_snapshot_marks(id, marks);
        Ok(SentSnapshot {
            id,
            size,
            sha256,
            taken_at,
            receipt: TransferReceipt {
                bytes: receipt.bytes,
                sha256: receipt.sha256,
                duration_ms: receipt.duration_ms,
            },
        })
    }
}

/// Pin the live database, or take a snapshot file at `staged` when it
/// cannot be pinned.
fn take(store: &Store, staged: std::path::PathBuf) -> Result<Taken, WitError> {
    if let Some(pinned) = store.pin_snapshot().map_err(store_error)? {
        let marks = pinned.device_marks().map_err(store_error)?;
        return Ok(Taken::Pinned(pinned, marks));
    }
    if let Some(dir) = staged.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error("staging directory", e))?;
    }
    let (stats, marks) = snapshot_staged(store, &staged)?;
    Ok(Taken::Staged {
        path: staged,
        stats,
        marks,
    })
}
