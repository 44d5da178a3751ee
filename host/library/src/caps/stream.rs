//! The change stream stopped at a batch the standby could not apply. Order
//! is kept: while it is stopped, no later batch is applied. It stays
//! stopped until an operator decides (`standby replication retry|skip`):
//! retry applies the batch again; skip sets the change that failed aside in
//! a file (with the whole batch, for the record) and applies the rest.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::store::{CaptureError, Change, Store, StoreError};

/// What status shows of a stopped stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStopped {
    /// The batch's first change.
    pub first_seq: u64,
    /// The batch's last change.
    pub last_seq: u64,
    /// Changes in the batch.
    pub count: usize,
    /// The change that failed, when the store named one.
    pub failed_seq: Option<u64>,
    /// Why.
    pub cause: String,
    /// Since when (Unix ms).
    pub since_ms: u64,
    /// The epoch of the node that captured it.
    pub epoch: u64,
}

/// A stopped batch: what status shows, and the changes to retry.
#[derive(Debug, Clone)]
struct Stopped {
    info: StreamStopped,
    changes: Arc<Vec<Change>>,
}

/// The operator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Apply the batch again (its cause was fixed).
    Retry,
    /// Set the failing change aside and apply the rest.
    Skip,
}

/// What the decision did.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The decision.
    pub decision: Decision,
    /// The applied mark afterwards.
    pub applied_through: u64,
    /// The file the skipped change was set aside in.
    pub set_aside: Option<PathBuf>,
    /// The stream stopped again (at another change of the batch), when it did.
    pub stopped_again: Option<StreamStopped>,
}

/// Why a decision could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream is not stopped.
    #[error("the change stream is not stopped: nothing to retry or skip")]
    NotStopped,
    /// Skip, but the store did not name the failing change.
    #[error("the store did not name the change that failed ({0}); retry once its cause is fixed")]
    NoFailedChange(String),
    /// The set-aside file could not be written.
    #[error("writing the set-aside file {path}: {source}")]
    SetAside {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store failed otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's change stream stop, if any.
#[derive(Debug, Default)]
pub struct StreamStop {
    stopped: Mutex<Option<Stopped>>,
}

/// The change a store error names, if it names one.
fn failed_seq(e: &StoreError) -> Option<u64> {
    match e {
        StoreError::Capture { error, .. } => match error.as_ref() {
            CaptureError::Apply { seq, .. } => Some(*seq),
            _ => None,
        },
        _ => None,
    }
}

impl StreamStop {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Stopped>> {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stop status shows, if stopped.
    pub fn current(&self) -> Option<StreamStopped> {
        self.lock().as_ref().map(|s| s.info.clone())
    }

    /// Stop at `changes` (captured at `epoch`), which failed with `error`.
    pub(crate) fn stop(&self, changes: &[Change], epoch: u64, error: &StoreError) {
        let info = StreamStopped {
            first_seq: changes.first().map_or(0, |c| c.seq),
            last_seq: changes.last().map_or(0, |c| c.seq),
            count: changes.len(),
            failed_seq: failed_seq(error),
            cause: error.to_string(),
            since_ms: crate::store::unix_ms(),
            epoch,
        };
        tracing::error!(
            first = info.first_seq,
            last = info.last_seq,
            failed = ?info.failed_seq,
            cause = %info.cause,
            "the change stream stops at a batch that cannot be applied; \
             `standby replication retry` or `standby replication skip` once decided"
        );
        *self.lock() = Some(Stopped {
            info,
            changes: Arc::new(changes.to_vec()),
        });
    }

    /// Carry out `decision` on the stopped batch against `store`, setting
    /// skipped changes aside under `data_dir`.
    pub fn resolve(
        &self,
        decision: Decision,
        store: &Store,
        data_dir: &Path,
    ) -> Result<Resolution, StreamError> {
        let stopped = self.lock().clone().ok_or(StreamError::NotStopped)?;
        let mut changes: Vec<Change> = stopped.changes.as_ref().clone();
        let mut set_aside = None;
        if decision == Decision::Skip {
            let failed = stopped
                .info
                .failed_seq
                .ok_or_else(|| StreamError::NoFailedChange(stopped.info.cause.clone()))?;
            set_aside = Some(write_set_aside(data_dir, &stopped, failed)?);
            changes.retain(|c| c.seq != failed);
        }
        let result = if changes.is_empty() {
            store.mark_applied(stopped.info.last_seq, stopped.info.epoch)
        } else {
            store
                .apply_changes(&changes, stopped.info.epoch)
                .and_then(|mark| {
                    // A skipped last change: the mark covers it too.
                    store.mark_applied(mark.max(stopped.info.last_seq), stopped.info.epoch)
                })
        };
        match result {
            Ok(mark) => {
                *self.lock() = None;
                tracing::warn!(?decision, applied_through = mark, set_aside = ?set_aside, "the change stream goes on");
                Ok(Resolution {
                    decision,
                    applied_through: mark,
                    set_aside,
                    stopped_again: None,
                })
            }
            Err(e) => {
                self.stop(&changes, stopped.info.epoch, &e);
                Ok(Resolution {
                    decision,
                    applied_through: store.applied_mark()?.0,
                    set_aside,
                    stopped_again: self.current(),
                })
            }
        }
    }
}

/// Write the stopped batch, naming the change set aside, to
/// `DATA_DIR/set-aside/changes-FIRST-LAST-seqFAILED.json` (synced).
fn write_set_aside(data_dir: &Path, s: &Stopped, failed: u64) -> Result<PathBuf, StreamError> {
    let dir = data_dir.join(crate::store::SET_ASIDE_DIR);
    let path = dir.join(format!(
        "changes-{}-{}-seq{failed}.json",
        s.info.first_seq, s.info.last_seq
    ));
    let err = |source| StreamError::SetAside {
        path: path.clone(),
        source,
    };
    let set_aside: Vec<&Change> = s.changes.iter().filter(|c| c.seq == failed).collect();
    let body = serde_json::json!({
        "what": "a change the standby could not apply, skipped by an operator; the rest of its batch was applied",
        "skipped_seq": failed,
        "cause": s.info.cause,
        "stopped_since_ms": s.info.since_ms,
        "skipped_at_ms": crate::store::unix_ms(),
        "epoch": s.info.epoch,
        "skipped": set_aside,
        "batch": s.changes.as_ref(),
    });
    std::fs::create_dir_all(&dir).map_err(err)?;
    let text = serde_json::to_vec_pretty(&body).map_err(|e| err(e.into()))?;
    write_synced(&path, &text).map_err(err)?;
    Ok(path)
}

/// Write `bytes` to a new file at `path`, synced with its directory.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    /// Three captured user inserts, the middle one poisoned.
    fn poisoned(dir: &Path) -> (Store, Vec<Change>) {
        let a = Store::open(dir.join("a.db"), StoreOptions::default()).unwrap();
        a.enable_capture(None).unwrap();
        let app = rusqlite::Connection::open(a.path()).unwrap();
        app.execute_batch(
            "INSERT INTO users (user_id, name, updated_at) VALUES ('u1', 'A', 1), ('u2', 'B', 1), ('u3', 'C', 1);",
        )
        .unwrap();
        let mut changes = a.read_changes(0, 100, u64::MAX).unwrap();
        changes[1].row = Some("{\"user_id\": \"u2\", \"no_such_column\": 1}".into());
        let b = Store::open(dir.join("b.db"), StoreOptions::default()).unwrap();
        (b, changes)
    }

    #[test]
    fn retry_applies_again_and_skip_sets_the_failing_change_aside_and_applies_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (b, changes) = poisoned(dir.path());
        let stop = StreamStop::default();
        assert!(matches!(
            stop.resolve(Decision::Retry, &b, dir.path()),
            Err(StreamError::NotStopped)
        ));
        let e = b.apply_changes(&changes, 1).unwrap_err();
        stop.stop(&changes, 1, &e);
        let seen = stop.current().unwrap();
        assert_eq!(
            (seen.first_seq, seen.last_seq, seen.count, seen.failed_seq),
            (changes[0].seq, changes[2].seq, 3, Some(changes[1].seq))
        );
        // The cause is not fixed: a retry stops again, nothing applied.
        let r = stop.resolve(Decision::Retry, &b, dir.path()).unwrap();
        assert!(r.stopped_again.is_some() && r.applied_through == 0, "{r:?}");
        assert!(b.user("u1").unwrap().is_none());
        // Skip: the poisoned change goes to a file, the others are applied.
        let r = stop.resolve(Decision::Skip, &b, dir.path()).unwrap();
        assert!(r.stopped_again.is_none(), "{r:?}");
        assert_eq!(r.applied_through, changes[2].seq);
        assert!(b.user("u1").unwrap().is_some() && b.user("u3").unwrap().is_some());
        assert!(b.user("u2").unwrap().is_none());
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(r.set_aside.unwrap()).unwrap()).unwrap();
        assert_eq!(file["skipped_seq"], changes[1].seq);
        assert_eq!(file["skipped"][0]["pk"], changes[1].pk.as_str());
        assert_eq!(file["batch"].as_array().unwrap().len(), 3);
        assert!(stop.current().is_none());
    }
}
