//! The receiving side of one file transfer: staged in a `.part` file that a
//! later connection resumes, written chunk by chunk in order by a thread of
//! its own while another hashes the same chunks (on a resumed transfer, the
//! writer first hashes what an earlier connection stored), then synced
//! and checked against the offered checksum, and handed to the node.
//!
//! The connection decrypts the next chunks while the writer stores and
//! hashes earlier ones; the writer confirms what it stored to the sender
//! every few MiB, and at least every 100 ms while chunks come (the sender's
//! stall bound counts from the last confirmation). One lock
//! per transfer keeps a later connection's writer off the `.part` file until
//! an earlier connection's writer is done with it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, Mutex, OwnedMutexGuard};

use super::state::ReceiptReply;
use super::Incoming;

/// Chunks queued for the writer at most.
const QUEUED: usize = 8;
/// Bytes written between two background syncs.
const SYNC_EVERY: u64 = 64 << 20;
/// The sender hears how much is stored once this much more is, or once
/// this long has passed since it last heard (for every chunk on a slow
/// link): enough to keep its stall bound, without a frame back per chunk.
const CONFIRM_EVERY: u64 = 4 << 20;
const CONFIRM_AFTER: Duration = Duration::from_millis(100);

/// What the sender offered.
pub(super) struct Offer {
    pub(super) plugin: String,
    pub(super) tag: String,
    pub(super) name: String,
    pub(super) size: u64,
    /// None until a streamed transfer's `Checksum` frame comes.
    pub(super) sha256: Option<String>,
    /// The sender's epoch when it offered the file.
    pub(super) epoch: u64,
}

/// What the writer is asked to do.
enum ToWriter {
    /// Store (and hash) the next bytes.
    Chunk(Vec<u8>),
    /// Sync the file; answer its length and SHA-256.
    Finish(oneshot::Sender<std::io::Result<(u64, String)>>),
}

/// A file being received.
pub(super) struct Receiving {
    pub(super) offer: Offer,
    path: PathBuf,
    /// The offset of the next byte expected (what was handed to the writer).
    pub(super) next: u64,
    writer: mpsc::Sender<ToWriter>,
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
    /// It goes past the offered size.
    #[error("a chunk ends at {end}, past the offered {size} bytes")]
    TooLong {
        /// Where it ends.
        end: u64,
        /// The offered size.
        size: u64,
    },
    /// The writer stopped (a write or a read of the stored part failed; it
    /// logged why).
    #[error("cannot write an incoming file: its writer stopped")]
    WriterStopped,
}

impl Receiving {
    /// Stage `offer` at `path`, keeping what an earlier connection stored
    /// there (when it is not longer than the file), once `lock` (the
    /// transfer's) is free. `stored` hears the length stored, every few MiB
    /// and at least every 100 ms while chunks come.
    pub(super) async fn stage(
        offer: Offer,
        path: PathBuf,
        lock: Arc<Mutex<()>>,
        stored: impl Fn(u64) + Send + 'static,
    ) -> std::io::Result<Self> {
        let guard = lock.lock_owned().await;
        let size = offer.size;
        let open_path = path.clone();
        let (file, have) = tokio::task::spawn_blocking(move || {
            let have = match std::fs::metadata(&open_path) {
                Ok(m) if m.len() <= size => m.len(),
                _ => 0,
            };
            let file = std::fs::OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false)
                .open(&open_path)?;
            file.set_len(have)?;
            Ok::<_, std::io::Error>((file, have))
        })
        .await
        .map_err(std::io::Error::other)??;
        let (writer, rx) = mpsc::channel(QUEUED);
        let shown = path.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = write_loop(file, have, rx, stored, guard) {
                tracing::warn!(file = %shown.display(), error = %e, "an incoming file could not be stored");
            }
        });
        Ok(Self {
            offer,
            path,
            next: have,
            writer,
        })
    }

    /// Store the chunk at `offset`, which must be where the last one ended.
    pub(super) async fn append(&mut self, offset: u64, data: Vec<u8>) -> Result<(), ChunkError> {
        if offset != self.next {
            return Err(ChunkError::OutOfOrder {
                offset,
                expected: self.next,
            });
        }
        let end = self.next + data.len() as u64;
        if end > self.offer.size {
            return Err(ChunkError::TooLong {
                end,
                size: self.offer.size,
            });
        }
        self.writer
            .send(ToWriter::Chunk(data))
            .await
            .map_err(|_| ChunkError::WriterStopped)?;
        self.next = end;
        Ok(())
    }

    /// Every byte is here and the checksum to check them against is known.
    pub(super) fn complete(&self) -> bool {
        self.next >= self.offer.size && self.offer.sha256.is_some()
    }

    /// All bytes are here: sync, check the checksum, hand the file over to
    /// `incoming` (renamed `.done`), and say what the receipt says.
    pub(super) async fn finish(self, incoming: &mpsc::Sender<Incoming>) -> ReceiptReply {
        let (tx, rx) = oneshot::channel();
        let stored = match self.writer.send(ToWriter::Finish(tx)).await {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the file's writer stopped"))),
            Err(_) => Err(std::io::Error::other("the file's writer stopped")),
        };
        let offer = self.offer;
        let (ok, bytes, sha, error) = match stored {
            Ok((size, sha)) if size == offer.size && Some(&sha) == offer.sha256.as_ref() => {
                (true, size, sha, None)
            }
            Ok((size, sha)) => {
                let _ = tokio::fs::remove_file(&self.path).await;
                let error = format!(
                    "checksum mismatch: offered {} ({} bytes), stored {sha} ({size} bytes)",
                    offer.sha256.as_deref().unwrap_or("nothing"),
                    offer.size
                );
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

/// The writer: hash the `have` bytes stored already, then store each chunk
/// at the end of the file while a thread beside it hashes the same chunks
/// in order, telling `stored` how much is stored; on `Finish`, sync and
/// answer. Holds the transfer's lock until it ends. A second thread syncs
/// what is written every [`SYNC_EVERY`] bytes, so the disk writes while the
/// transfer goes on and the last sync has little left to do.
fn write_loop(
    file: File,
    have: u64,
    mut rx: mpsc::Receiver<ToWriter>,
    stored: impl Fn(u64),
    guard: OwnedMutexGuard<()>,
) -> std::io::Result<()> {
    let _guard = guard;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < have {
        let take = ((have - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..take], at)?;
        h.update(&buf[..take]);
        at += take as u64;
    }
    drop(buf);
    std::thread::scope(|scope| {
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let file = &file;
        scope.spawn(move || {
            while sync_rx.recv().is_ok() {
                // A failure shows in the last sync, which is checked.
                let _ = file.sync_data();
            }
        });
        // Hashing and writing a chunk take about as long each: side by side,
        // a transfer goes at the slower of the two instead of their sum.
        let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(QUEUED);
        let hasher = scope.spawn(move || {
            while let Ok(data) = hash_rx.recv() {
                h.update(&data[..]);
            }
            hex::encode(h.finalize())
        });
        let mut unsynced = 0u64;
        let (mut confirmed, mut confirmed_at) = (at, Instant::now());
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                ToWriter::Chunk(data) => {
                    let data = Arc::new(data);
                    hash_tx
                        .send(data.clone())
                        .map_err(|_| std::io::Error::other("the incoming file's hasher stopped"))?;
                    file.write_all_at(&data, at)?;
                    at += data.len() as u64;
                    unsynced += data.len() as u64;
                    if unsynced >= SYNC_EVERY {
                        // Busy syncing already: that sync takes these too.
                        let _ = sync_tx.try_send(());
                        unsynced = 0;
                    }
                    if at - confirmed >= CONFIRM_EVERY || confirmed_at.elapsed() >= CONFIRM_AFTER {
                        stored(at);
                        (confirmed, confirmed_at) = (at, Instant::now());
                    }
                }
                ToWriter::Finish(reply) => {
                    drop(sync_tx);
                    drop(hash_tx);
                    let synced = file.sync_all();
                    let digest = hasher
                        .join()
                        .map_err(|_| std::io::Error::other("the incoming file's hasher failed"));
                    let _ = reply.send(synced.and(digest).map(|sha| (at, sha)));
                    return Ok(());
                }
            }
        }
        // The connection ended: what is stored stays for a later one.
        Ok(())
    })
}
