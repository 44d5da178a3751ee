//! The receiving side of one file transfer: staged in a `.part` file that a
//! later connection resumes, written chunk by chunk in order, synced and
//! checked against the offered checksum, then handed to the node.

use std::path::PathBuf;

use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::state::{hash_file, ReceiptReply};
use super::Incoming;

/// What the sender offered.
pub(super) struct Offer {
    pub(super) plugin: String,
    pub(super) tag: String,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha256: String,
    /// The sender's epoch when it offered the file.
    pub(super) epoch: u64,
}

/// A file being received.
pub(super) struct Receiving {
    pub(super) offer: Offer,
    file: tokio::fs::File,
    path: PathBuf,
    /// The offset of the next byte expected (what is stored so far).
    pub(super) next: u64,
}

/// A chunk that cannot be stored.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChunkError {
    /// It does not start where the last one ended.
    #[error("out-of-order chunk at {offset}, expected {expected}")]
    OutOfOrder {
        /// Where it starts.
        offset: u64,
        /// Where it should start.
        expected: u64,
    },
    /// It could not be written.
    #[error("cannot write an incoming file: {0}")]
    Write(#[source] std::io::Error),
}

impl Receiving {
    /// Stage `offer` at `path`, keeping what an earlier connection stored
    /// there (when it is not longer than the file).
    pub(super) async fn stage(offer: Offer, path: PathBuf) -> std::io::Result<Self> {
        let have = match tokio::fs::metadata(&path).await {
            Ok(m) if m.len() <= offer.size => m.len(),
            _ => 0,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .await?;
        let _ = file.set_len(have).await;
        let _ = file.seek(std::io::SeekFrom::Start(have)).await;
        Ok(Self {
            offer,
            file,
            path,
            next: have,
        })
    }

    /// Store the chunk at `offset`, which must be where the last one ended.
    pub(super) async fn append(&mut self, offset: u64, data: &[u8]) -> Result<(), ChunkError> {
        if offset != self.next {
            return Err(ChunkError::OutOfOrder {
                offset,
                expected: self.next,
            });
        }
        self.file.write_all(data).await.map_err(ChunkError::Write)?;
        self.next += data.len() as u64;
        Ok(())
    }

    /// All bytes are here: sync, check the checksum, hand the file over to
    /// `incoming` (renamed `.done`), and say what the receipt says.
    pub(super) async fn finish(mut self, incoming: &mpsc::Sender<Incoming>) -> ReceiptReply {
        let _ = self.file.flush().await;
        let _ = self.file.sync_all().await;
        drop(self.file);
        let offer = self.offer;
        let (ok, bytes, sha, error) = match hash_file(&self.path).await {
            Ok((size, sha)) if size == offer.size && sha == offer.sha256 => (true, size, sha, None),
            Ok((size, sha)) => {
                let _ = tokio::fs::remove_file(&self.path).await;
                let error = format!("checksum mismatch: offered {}, stored {sha}", offer.sha256);
                (false, size, sha, Some(error))
            }
            Err(e) => (false, 0, String::new(), Some(e.to_string())),
        };
        if ok {
            let done = self.path.with_extension("done");
            if tokio::fs::rename(&self.path, &done).await.is_ok() {
                let _ = incoming
                    .send(Incoming::File {
                        plugin: offer.plugin,
                        path: done,
                        name: offer.name,
                        tag: offer.tag,
                        size: bytes,
                        sha256: sha.clone(),
                        epoch: offer.epoch,
                    })
                    .await;
            }
        }
        (ok, bytes, sha, error)
    }
}
