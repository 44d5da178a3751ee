//! Where a transfer's bytes come from: a file (a snapshot the host placed,
//! or any file a plugin sends), or the live database pinned in one
//! transaction's state and read as it is sent, with no copy on this node's
//! disk first. A stream's SHA-256 is computed as its bytes are read and
//! sent after them.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::store::PinnedSnapshot;

/// What a transfer reads.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// A file, sent once: its pages may leave the page cache as they are
    /// read (a synced snapshot's go at once; the memory serves what comes
    /// next instead of a file nobody reads again).
    File {
        /// The open file.
        file: Arc<std::fs::File>,
        /// Its path, for errors.
        path: PathBuf,
    },
    /// The live database, pinned. Its pages stay cached: the database
    /// uses them.
    Pinned(Arc<PinnedSnapshot>),
}

impl Source {
    /// The path errors name.
    pub(super) fn path(&self) -> &Path {
        match self {
            Source::File { path, .. } => path,
            Source::Pinned(p) => p.path(),
        }
    }

    /// Up to `want` bytes from `offset` (fewer only at the end), read on a
    /// blocking thread into a buffer of their own (the chunk's); fed to
    /// `hash` when the transfer's checksum is computed as it goes.
    pub(super) async fn read(
        &self,
        offset: u64,
        want: usize,
        hash: Option<Arc<Mutex<RunningHash>>>,
    ) -> std::io::Result<Vec<u8>> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || {
            let data = match &source {
                Source::File { file, .. } => read_file(file, offset, want)?,
                Source::Pinned(pinned) => {
                    let mut data = vec![0u8; want];
                    let got = pinned.read_at(&mut data, offset)?;
                    data.truncate(got);
                    data
                }
            };
            if let Some(hash) = hash {
                hash.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .feed(offset, &data);
            }
            Ok(data)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Read a file's bytes and let the page cache drop them.
fn read_file(file: &std::fs::File, offset: u64, want: usize) -> std::io::Result<Vec<u8>> {
    // Read into the vector's spare room (nothing to zero first).
    let mut data = Vec::with_capacity(want);
    let mut f = file;
    f.seek(std::io::SeekFrom::Start(offset))?;
    f.take(want as u64).read_to_end(&mut data)?;
    if let Some(len) = std::num::NonZeroU64::new(data.len() as u64) {
        // Advice only: a refusal changes nothing that matters.
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
    Ok(data)
}

/// The SHA-256 of a stream of `len` bytes, fed its bytes as they are first
/// read (bytes read again after a resumed connection are not fed twice).
#[derive(Debug)]
pub(super) struct RunningHash {
    hasher: Sha256,
    hashed: u64,
    len: u64,
    digest: Option<String>,
}

impl RunningHash {
    /// A checksum of `len` bytes, none fed yet.
    pub(super) fn new(len: u64) -> Self {
        let mut h = Self {
            hasher: Sha256::new(),
            hashed: 0,
            len,
            digest: None,
        };
        h.complete_if_whole();
        h
    }

    /// `data`, read from `offset`: what goes past what was hashed so far
    /// counts (reads are in order; a resumed read starts at or before it).
    pub(super) fn feed(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        if offset > self.hashed || end <= self.hashed {
            return;
        }
        self.hasher.update(&data[(self.hashed - offset) as usize..]);
        self.hashed = end;
        self.complete_if_whole();
    }

    fn complete_if_whole(&mut self) {
        if self.digest.is_none() && self.hashed >= self.len {
            let whole = std::mem::take(&mut self.hasher);
            self.digest = Some(hex::encode(whole.finalize()));
        }
    }

    /// The stream's SHA-256 (hex), once every byte was fed.
    pub(super) fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_read_again_from_an_earlier_offset_is_hashed_once() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = RunningHash::new(data.len() as u64);
        h.feed(0, &data[..4_000]);
        // A resumed connection reads again from 3,000.
        h.feed(3_000, &data[3_000..7_000]);
        assert!(h.digest().is_none());
        // A gap is never fed (reads are in order).
        h.feed(9_000, &data[9_000..]);
        h.feed(7_000, &data[7_000..]);
        assert_eq!(
            h.digest().unwrap(),
            hex::encode(Sha256::digest(&data)),
            "the stream's checksum is its bytes', each once"
        );
    }
}
