//! Group commit: one writer thread takes every write waiting in its queue and
//! commits them together, so thousands of devices reconnecting at once cost a
//! few transactions instead of thousands (and no pile of blocking threads
//! waiting on the database lock).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, Write, Written};

/// Most writes committed in one transaction.
pub(super) const MAX_GROUP: usize = 1_024;

type Job = (Write, oneshot::Sender<Result<Written, StoreError>>);

/// An async front for the store's hot writes, committing them in groups.
/// Cloning shares the writer thread; it stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct GroupWriter {
    queue: mpsc::UnboundedSender<Job>,
    store: Arc<Store>,
}

impl GroupWriter {
    /// Start the writer thread for `store`.
    #[cfg(test)]
    pub(crate) fn start(store: Arc<Store>) -> Result<Self, StoreError> {
        Self::start_guarded(store, Arc::new(|| true))
    }

    /// Start the writer thread for `store`, committing each group only if
    /// `may_commit` says yes just before the commit (else the group is rolled
    /// back and every write in it fails with [`StoreError::NotAllowed`]).
    pub(crate) fn start_guarded(
        store: Arc<Store>,
        may_commit: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::unbounded_channel();
        let worker = store.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&worker, jobs, &*may_commit))
            .map_err(|error| StoreError::Io {
                what: "starting the writer thread for",
                path: store.path().to_path_buf(),
                error,
            })?;
        Ok(Self { queue, store })
    }

    /// Commit `write` (with whatever else is waiting) and return what it did.
    pub(crate) async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Detached {
            path: self.store.path().to_path_buf(),
        };
        self.queue.send((write, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(store: &Store, mut jobs: mpsc::UnboundedReceiver<Job>, may_commit: &dyn Fn() -> bool) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<Write>, Vec<_>) = group.into_iter().unzip();
        match store.write_group_if(&writes, may_commit) {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(StoreError::NotAllowed { path }) => {
                tracing::warn!(
                    writes = writes.len(),
                    "group rolled back: this node may no longer write"
                );
                for reply in replies {
                    let _ = reply.send(Err(StoreError::NotAllowed { path: path.clone() }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = writes.len(), "group commit failed");
                let reason = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Incompatible {
                        path: store.path().to_path_buf(),
                        reason: format!("group commit failed: {reason}"),
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::store::{AccessEvent, StoreOptions};

    fn event(device_id: u32, seq: u64) -> AccessEvent {
        AccessEvent {
            device_id,
            incarnation: 1,
            seq,
            event_code: 0x1000,
            user_id: None,
            occurred_at_ms: seq,
            payload: vec![seq as u8; 8],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_in_groups_with_correct_watermarks() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(dir.path().join("biostar2.db"), StoreOptions::default()).unwrap());
        let writer = GroupWriter::start(store.clone()).unwrap();
        let mut tasks = Vec::new();
        for device in 1..=200u32 {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                let hs = w
                    .write(Write::Handshake {
                        device_id: device,
                        model: "m".into(),
                        firmware: "f".into(),
                        incarnation: 1,
                        floor: 2,
                    })
                    .await
                    .unwrap();
                assert_eq!(hs, Written::Handshake(2));
                let events = (3..=5).map(|s| event(device, s)).collect();
                let done = w
                    .write(Write::Ingest {
                        device_id: device,
                        incarnation: 1,
                        events,
                        received_by: "a".into(),
                    })
                    .await
                    .unwrap();
                assert_eq!(
                    done,
                    Written::Ingest(
                        crate::store::IngestOutcome {
                            inserted: 3,
                            duplicates: 0
                        },
                        5
                    )
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for device in 1..=200u32 {
            assert_eq!(store.watermark(device, 1).unwrap(), 5);
        }
        assert_eq!(store.info().unwrap().event_count, 600);
    }

    #[test]
    fn a_failing_write_is_rolled_back_alone_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("biostar2.db");
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        // Another connection installs a trigger that rejects device 666's
        // events after its first one was inserted by the same write.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER reject BEFORE INSERT ON access_events
                 WHEN NEW.device_id = 666 AND NEW.seq = 2
                 BEGIN SELECT RAISE(ABORT, 'rejected by test'); END;",
            )
            .unwrap();
        let ingest = |device_id, seqs: &[u64]| Write::Ingest {
            device_id,
            incarnation: 1,
            events: seqs.iter().map(|s| event(device_id, *s)).collect(),
            received_by: "a".into(),
        };
        let results = store
            .write_group(&[ingest(1, &[1, 2]), ingest(666, &[1, 2]), ingest(2, &[1])])
            .unwrap();
        assert!(matches!(results[0], Ok(Written::Ingest(_, 2))));
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("rejected by test"), "{err}");
        assert!(matches!(results[2], Ok(Written::Ingest(_, 1))));
        // Device 666's first event went with its savepoint.
        assert_eq!(store.watermark(666, 1).unwrap(), 0);
        assert_eq!(store.info().unwrap().event_count, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_may_no_longer_write_rolls_the_group_back() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(dir.path().join("biostar2.db"), StoreOptions::default()).unwrap());
        let allowed = Arc::new(AtomicBool::new(true));
        let flag = allowed.clone();
        let writer = GroupWriter::start_guarded(
            store.clone(),
            Arc::new(move || flag.load(Ordering::SeqCst)),
        )
        .unwrap();
        let ingest = |seq| Write::Ingest {
            device_id: 1,
            incarnation: 1,
            events: vec![event(1, seq)],
            received_by: "a".into(),
        };
        assert!(matches!(
            writer.write(ingest(1)).await,
            Ok(Written::Ingest(_, 1))
        ));
        allowed.store(false, Ordering::SeqCst);
        let refused = writer.write(ingest(2)).await;
        assert!(
            matches!(refused, Err(StoreError::NotAllowed { .. })),
            "{refused:?}"
        );
        assert_eq!(store.watermark(1, 1).unwrap(), 1);
        assert_eq!(store.info().unwrap().event_count, 1);
    }
}
