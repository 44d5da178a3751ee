//! Change batches the host holds for plugins: read from the change log on
//! the active node, or received from the peer on the standby. A plugin only
//! ever holds a handle (`change-batch`); the rows stay here. Bounded: past
//! [`MAX_HELD`] batches or [`MAX_HELD_BYTES`] the oldest handles are dropped
//! (a plugin that never releases its batches cannot grow the node).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::store::{Change, DeviceMark};
use crate::wit::strategy::standby::plugin::types::ChangeBatch;

/// Most batches held at once.
pub(crate) const MAX_HELD: usize = 256;
/// Most bytes of batches held at once.
pub(crate) const MAX_HELD_BYTES: u64 = 64 << 20;
/// Most bytes one batch read from the change log holds (it travels as one
/// peer frame).
pub(crate) const MAX_BATCH_BYTES: u64 = 1 << 20;

/// One batch: the changes, in commit order, and the epoch of the node that
/// captured them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HeldBatch {
    /// The capturing node's epoch.
    pub epoch: u64,
    /// The changes.
    pub changes: Vec<Change>,
}

impl HeldBatch {
    /// Its size as counted against the bounds.
    pub(crate) fn bytes(&self) -> u64 {
        self.changes.iter().map(change_bytes).sum()
    }

    /// The handle a plugin gets.
    pub(crate) fn handle(&self, id: u64) -> ChangeBatch {
        ChangeBatch {
            id,
            first_seq: self.changes.first().map_or(0, |c| c.seq),
            last_seq: self.changes.last().map_or(0, |c| c.seq),
            count: self.changes.len() as u32,
            bytes: self.bytes(),
            oldest_commit: self.changes.first().map_or(0, |c| c.committed_ms),
        }
    }

    /// What the batch holds for each device's events: the `device_logs`
    /// rows it writes (device, incarnation, contiguous watermark). Once the
    /// other site has applied it, those events are durable there.
    pub(crate) fn device_marks(&self) -> Vec<DeviceMark> {
        self.changes
            .iter()
            .filter(|c| c.table == "device_logs" && c.op != "D")
            .filter_map(|c| {
                let row: serde_json::Value = serde_json::from_str(c.row.as_deref()?).ok()?;
                Some(DeviceMark {
                    device_id: u32::try_from(row["device_id"].as_u64()?).ok()?,
                    incarnation: row["incarnation"].as_u64()?,
                    contiguous: row["contiguous"].as_u64()?,
                })
            })
            .collect()
    }
}

/// Bytes one change counts for.
pub(crate) fn change_bytes(c: &Change) -> u64 {
    (32 + c.table.len()
        + c.pk.len()
        + c.old_pk.as_ref().map_or(0, String::len)
        + c.row.as_ref().map_or(0, String::len)) as u64
}

/// The batches held, by handle.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    held: Mutex<BTreeMap<u64, Arc<HeldBatch>>>,
    next: AtomicU64,
}

impl Batches {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<HeldBatch>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold `batch`; its handle. The oldest batches go when the bounds are
    /// passed.
    pub(crate) fn hold(&self, batch: HeldBatch) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut held = self.lock();
        held.insert(id, Arc::new(batch));
        let mut total: u64 = held.values().map(|b| b.bytes()).sum();
        while held.len() > MAX_HELD || (total > MAX_HELD_BYTES && held.len() > 1) {
            let Some((&oldest, _)) = held.iter().next() else {
                break;
            };
            if let Some(b) = held.remove(&oldest) {
                total -= b.bytes();
                tracing::warn!(
                    batch = oldest,
                    "a change batch was never applied or released; dropped (too many held)"
                );
            }
        }
        id
    }

    /// The batch behind `id`.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<HeldBatch>> {
        self.lock().get(&id).cloned()
    }

    /// Forget `id`.
    pub(crate) fn release(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// How many are held (for tests and status).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn change(seq: u64, table: &str, row: &str) -> Change {
        Change {
            seq,
            table: table.into(),
            op: "U".into(),
            pk: "[1]".into(),
            old_pk: None,
            row: Some(row.into()),
            committed_ms: 1_000 + seq,
        }
    }

    #[test]
    fn handles_describe_their_batch_and_the_oldest_go_past_the_bound() {
        let b = Batches::default();
        let batch = HeldBatch {
            epoch: 3,
            changes: vec![
                change(7, "users", "{}"),
                change(
                    8,
                    "device_logs",
                    r#"{"device_id": 5, "incarnation": 2, "contiguous": 40, "updated_at": 1}"#,
                ),
            ],
        };
        let id = b.hold(batch.clone());
        let h = b.get(id).unwrap().handle(id);
        assert_eq!(
            (h.first_seq, h.last_seq, h.count, h.oldest_commit),
            (7, 8, 2, 1_007)
        );
        let marks = batch.device_marks();
        assert_eq!(marks.len(), 1);
        assert_eq!(
            (
                marks[0].device_id,
                marks[0].incarnation,
                marks[0].contiguous
            ),
            (5, 2, 40)
        );
        for _ in 0..MAX_HELD + 10 {
            b.hold(batch.clone());
        }
        assert_eq!(b.len(), MAX_HELD);
        assert!(b.get(id).is_none(), "the oldest batch is still held");
        b.release(id + 20);
        assert!(b.get(id + 20).is_none());
    }
}
