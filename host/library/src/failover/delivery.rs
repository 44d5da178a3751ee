//! What keeps running beside the control loop: each strategy's ticks, and
//! the delivery of what the peer sends to the strategy it is addressed to,
//! with the devices' DR-durable watermarks advanced as the other site
//! confirms its installs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::caps::batches::HeldBatch;
use crate::caps::DurableMark;
use crate::node::core::Core;
use crate::peer::Incoming;
use crate::plugin::{ChangeBatch, FileRef, PluginError, Received, ReceivedFile, Strategy};

/// Tick one strategy whenever it asks to be ticked.
pub(crate) async fn tick_loop(core: Arc<Core>, strategy: Arc<dyn Strategy>) {
    loop {
        let wait = match strategy.tick(&core.context()).await {
            Ok(report) => {
                if !report.did.is_empty() {
                    tracing::info!(plugin = strategy.name(), "{}", report.did);
                }
                Duration::from_millis(u64::from(report.next_tick_ms).clamp(10, 60_000))
            }
            Err(e @ PluginError::Preempted { .. }) => {
                tracing::info!(plugin = strategy.name(), "{e}");
                Duration::from_millis(100)
            }
            Err(e) => {
                tracing::warn!(plugin = strategy.name(), error = %e, "tick failed");
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Hand what the peer sends to the strategy instance it is addressed to.
pub(crate) async fn deliver(core: Arc<Core>, mut incoming: mpsc::Receiver<Incoming>) {
    while let Some(item) = incoming.recv().await {
        match item {
            Incoming::File {
                plugin,
                path,
                name,
                tag,
                size,
                sha256,
                ..
            } => {
                let Some(inbox) = core.inboxes.get(&plugin) else {
                    tracing::warn!(plugin = %plugin, file = %name, "the peer sent a file for a strategy without a `peer` inbox here; dropped");
                    let _ = tokio::fs::remove_file(&path).await;
                    continue;
                };
                let Some(file_name) = Path::new(&name).file_name().map(|n| n.to_owned()) else {
                    tracing::warn!(plugin = %plugin, file = %name, "the peer sent a file without a usable name; dropped");
                    let _ = tokio::fs::remove_file(&path).await;
                    continue;
                };
                let dest = inbox.dir.join(&file_name);
                if let Err(e) = move_file(&path, &dest).await {
                    tracing::warn!(plugin = %plugin, file = %dest.display(), error = %e, "could not move a received file into its inbox");
                    continue;
                }
                let item = Received::File(ReceivedFile {
                    file: FileRef {
                        root: inbox.root.clone(),
                        path: file_name.to_string_lossy().into_owned(),
                    },
                    tag,
                    size,
                    sha256,
                });
                match inbox.strategy.on_receive(&core.context(), item).await {
                    Ok(()) => {
                        tracing::info!(plugin = %plugin, file = %dest.display(), size, "received file handed to the strategy")
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %plugin, file = %dest.display(), error = %e, "the strategy refused a received file")
                    }
                }
            }
            Incoming::Batch {
                plugin,
                body,
                epoch,
            } => {
                let Some(strategy) = core.strategies.iter().find(|s| s.name() == plugin) else {
                    tracing::warn!(plugin = %plugin, "the peer sent a change batch for an unknown strategy; dropped");
                    continue;
                };
                let batch = match rmp_serde::from_slice::<HeldBatch>(&body) {
                    Ok(b) => HeldBatch { epoch, ..b },
                    Err(e) => {
                        tracing::error!(plugin = %plugin, error = %e, "the peer sent a change batch that does not decode; dropped");
                        continue;
                    }
                };
                let h = batch.handle(0);
                let id = core.services.batches.hold(batch);
                let handle = ChangeBatch {
                    id,
                    first_seq: h.first_seq,
                    last_seq: h.last_seq,
                    count: h.count,
                    bytes: h.bytes,
                    oldest_commit_ms: h.oldest_commit,
                };
                if let Err(e) = strategy
                    .on_receive(&core.context(), Received::Batch(handle))
                    .await
                {
                    tracing::warn!(plugin = %plugin, batch = id, error = %e, "the strategy refused a change batch from the peer");
                }
            }
            Incoming::TakeOver { from, epoch } => {
                let cmd = crate::node::core::Command::TakeOver { from, epoch };
                if core.commands.send(cmd).await.is_err() {
                    tracing::warn!("a take-over request came while the node is stopping; dropped");
                }
            }
            Incoming::Message {
                plugin, kind, body, ..
            } => {
                let Some(strategy) = core.strategies.iter().find(|s| s.name() == plugin) else {
                    tracing::warn!(plugin = %plugin, kind = %kind, "the peer sent a message for an unknown strategy; dropped");
                    continue;
                };
                if let Err(e) = strategy
                    .on_receive(&core.context(), Received::Message(kind.clone(), body))
                    .await
                {
                    tracing::warn!(plugin = %plugin, kind = %kind, error = %e, "the strategy refused a message from the peer");
                }
            }
        }
    }
}

async fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match tokio::fs::rename(from, to).await {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            tokio::fs::copy(from, to).await?;
            tokio::fs::remove_file(from).await
        }
        Err(e) => Err(e),
    }
}

/// Advance the devices' DR-durable watermarks by what the other site has
/// confirmed installed.
pub(crate) fn apply_durable_marks(core: &Core) {
    for mark in core.services.take_durable_marks() {
        let (device_marks, what) = match mark {
            DurableMark::Snapshot(id) => (core.services.take_snapshot_marks(id), "snapshot"),
            DurableMark::Changes(seq) => (core.services.take_change_marks(seq), "changes"),
        };
        if let Some(marks) = &core.marks {
            for m in &device_marks {
                marks.advance(m.device_id, m.incarnation, m.contiguous);
            }
        }
        tracing::debug!(
            ?mark,
            devices = device_marks.len(),
            "{what} held at the other site"
        );
    }
}
