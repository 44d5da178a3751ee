//! Whole-file copies at the disk's speed, two ways:
//!
//! - [`copy_cached`], for a copy read next (a snapshot: the plugin verifies
//!   it, the peer link sends it): the bytes go from file to file inside the
//!   kernel (`copy_file_range` where the filesystem offers it, through the
//!   standard library's `io::copy`), the copy stays in the page cache, and
//!   a second thread hashes what landed while the copy moves on;
//! - [`copy_direct`], for a copy nobody reads soon (the live database being
//!   replaced, which SQLite reads page by page when it needs them): read
//!   through the page cache and written with direct I/O (`O_DIRECT`), from a
//!   few reused buffers straight to the disk, without filling the page cache
//!   with a second copy of the file, which on the machines measured cost
//!   more than the disk write itself (docs/benchmarks.md, issue 15). One
//!   thread reads, another writes, a few pieces behind; where direct I/O is
//!   refused (a filesystem without it, a tail shorter than a block) the
//!   bytes go through the page cache.
//!
//! Either way the copy is synced before it counts.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

/// Alignment of direct I/O buffers, offsets and lengths.
const ALIGN: usize = 4096;
/// Bytes read, hashed and written at a time (direct writes this large keep
/// the disk busy; 4 MiB ones left it idle part of the time).
const PIECE: usize = 16 << 20;
/// Pieces in flight between the reading and the writing thread.
const BUFFERS: usize = 3;
/// Bytes a cached copy copies before the hashing thread is told about them.
const CACHED_PIECE: u64 = 8 << 20;

/// A buffer whose usable part starts at an address aligned for direct I/O.
pub(crate) struct Aligned {
    v: Vec<u8>,
    off: usize,
}

impl Aligned {
    /// `len` usable bytes.
    pub(crate) fn new(len: usize) -> Self {
        let v = vec![0u8; len + ALIGN];
        // Always possible for bytes; were it not, direct I/O would refuse
        // the buffer and the page cache would be used.
        let off = v.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { v, off }
    }

    fn capacity(&self) -> usize {
        self.v.len() - ALIGN
    }

    fn get(&self, n: usize) -> &[u8] {
        &self.v[self.off..self.off + n]
    }

    fn get_mut(&mut self, n: usize) -> &mut [u8] {
        &mut self.v[self.off..self.off + n]
    }
}

/// `path` opened with `O_DIRECT` (for writing, or for reading), if the
/// filesystem allows it.
fn open_direct(path: &Path, write: bool) -> Option<File> {
    let mut o = OpenOptions::new();
    if write {
        o.write(true);
    } else {
        o.read(true);
    }
    o.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
        .ok()
}

/// Open `dest` as a new, empty file for reading and writing (replacing
/// what is there).
pub(crate) fn create(dest: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
}

/// Where a copy's bytes go: direct while it can, through the page cache
/// otherwise.
struct Sink<'a> {
    plain: &'a File,
    direct: Option<File>,
}

impl Sink<'_> {
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let aligned = data.len() / ALIGN * ALIGN;
        let mut done = 0;
        if offset % ALIGN as u64 == 0 && aligned > 0 {
            if let Some(direct) = &self.direct {
                match direct.write_all_at(&data[..aligned], offset) {
                    Ok(()) => done = aligned,
                    // Refused (alignment, filesystem): the page cache from here on.
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                        self.direct = None
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.plain.write_all_at(&data[done..], offset + done as u64)
    }
}

/// Copy the first `len` bytes of `src` into `dest` (an empty file at
/// `dest_path`) with direct writes, then sync it.
pub(crate) fn copy_direct(src: &File, dest: &File, dest_path: &Path, len: u64) -> io::Result<()> {
    let sink = Sink {
        plain: dest,
        direct: open_direct(dest_path, true),
    };
    let (full_tx, full_rx) = mpsc::sync_channel::<(u64, Aligned, usize)>(BUFFERS);
    let (free_tx, free_rx) = mpsc::channel::<Aligned>();
    for _ in 0..BUFFERS {
        let _ = free_tx.send(Aligned::new(PIECE));
    }
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_pieces(sink, full_rx, free_tx));
        let read = read_pieces(src, len, &full_tx, &free_rx);
        drop(full_tx);
        let written = writer
            .join()
            .map_err(|_| io::Error::other("the writing thread panicked"))?;
        // A failed write stops the reader too: the writer's error is the cause.
        written.and(read)
    })?;
    dest.sync_all()
}

/// The reading side: piece by piece into free buffers, handed to the
/// writer.
fn read_pieces(
    src: &File,
    len: u64,
    full: &mpsc::SyncSender<(u64, Aligned, usize)>,
    free: &mpsc::Receiver<Aligned>,
) -> io::Result<()> {
    let mut offset = 0u64;
    while offset < len {
        let Ok(mut buf) = free.recv() else {
            // The writer stopped: its error tells why.
            return Ok(());
        };
        let n = ((len - offset) as usize).min(buf.capacity());
        src.read_exact_at(buf.get_mut(n), offset)
            .map_err(short(len))?;
        if full.send((offset, buf, n)).is_err() {
            return Ok(());
        }
        offset += n as u64;
    }
    Ok(())
}

/// An early end of the source, said as such.
fn short(len: u64) -> impl Fn(io::Error) -> io::Error {
    move |e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(e.kind(), format!("the file ends before {len} bytes"))
        } else {
            e
        }
    }
}

/// The writing side: each piece at its offset, its buffer given back.
fn write_pieces(
    mut sink: Sink<'_>,
    full: mpsc::Receiver<(u64, Aligned, usize)>,
    free: mpsc::Sender<Aligned>,
) -> io::Result<()> {
    for (offset, buf, n) in full {
        sink.write_at(buf.get(n), offset)?;
        let _ = free.send(buf);
    }
    Ok(())
}

/// Copy the first `len` bytes of `src` (read from its current position,
/// normally 0) into `dest` (an empty file, written from its start) inside
/// the kernel, then sync `dest`. `fix` runs on `dest` once the first piece
/// has landed and before anything is hashed (a header patch). Returns the
/// SHA-256 (hex) of the first `len` bytes of `dest` as they read back,
/// computed beside the copy.
pub(crate) fn copy_cached(
    src: &File,
    dest: &File,
    len: u64,
    fix: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<String> {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<(u64, u64)>(256);
        let hasher = scope.spawn(move || hash_pieces(dest, rx));
        let copied = kernel_copy(src, dest, len, fix, tx);
        let synced = copied.and_then(|()| dest.sync_all());
        let sha256 = hasher
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))??;
        synced.map(|()| sha256)
    })
}

/// The copying side of [`copy_cached`]: piece by piece, telling `tx` (the
/// hasher) about each piece once it is in `dest`.
fn kernel_copy(
    src: &File,
    dest: &File,
    len: u64,
    fix: impl FnOnce(&File) -> io::Result<()>,
    tx: mpsc::SyncSender<(u64, u64)>,
) -> io::Result<()> {
    let mut fix = Some(fix);
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(CACHED_PIECE);
        let mut reader = src.take(want);
        let mut writer = dest;
        let n = io::copy(&mut reader, &mut writer)?;
        if n < want {
            return Err(short(len)(io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some(f) = fix.take() {
            f(dest)?;
        }
        // The hasher stopped (a read failed): its error is what counts.
        if tx.send((done, n)).is_err() {
            return Ok(());
        }
        done += n;
    }
    Ok(())
}

/// The hashing side of [`copy_cached`]: read each piece back and hash it.
fn hash_pieces(dest: &File, rx: mpsc::Receiver<(u64, u64)>) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (offset, n) in rx {
        let end = offset + n;
        let mut at = offset;
        while at < end {
            let take = ((end - at) as usize).min(buf.len());
            dest.read_exact_at(&mut buf[..take], at)?;
            h.update(&buf[..take]);
            at += take as u64;
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// SHA-256 (hex) and length of the whole file `file`, read from its start.
pub(crate) fn hash_file(file: &File) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok((at, hex::encode(h.finalize())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    /// A source file of `len` bytes and an empty destination.
    fn files(dir: &Path, len: usize) -> (Vec<u8>, File, File, std::path::PathBuf) {
        let bytes = data(len);
        let src_path = dir.join("src");
        std::fs::write(&src_path, &bytes).unwrap();
        let dest_path = dir.join("dest");
        let dest = create(&dest_path).unwrap();
        (bytes, File::open(&src_path).unwrap(), dest, dest_path)
    }

    #[test]
    fn a_cached_copy_holds_the_bytes_asked_for_and_its_checksum_is_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, src, dest, dest_path) = files(dir.path(), CACHED_PIECE as usize * 2 + 12_345);
        // All but the last 345 bytes, bytes 18 and 19 patched.
        let len = bytes.len() as u64 - 345;
        let sha = copy_cached(&src, &dest, len, |f| f.write_all_at(&[1, 1], 18)).unwrap();
        let mut want = bytes[..len as usize].to_vec();
        want[18] = 1;
        want[19] = 1;
        assert!(std::fs::read(&dest_path).unwrap() == want);
        assert_eq!(sha, hex::encode(Sha256::digest(&want)));
        assert_eq!(hash_file(&dest).unwrap(), (len, sha));
    }

    #[test]
    fn a_direct_copy_holds_the_bytes_asked_for_with_an_unaligned_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, src, dest, dest_path) = files(dir.path(), PIECE * 2 + 12_345);
        let len = bytes.len() as u64 - 345;
        copy_direct(&src, &dest, &dest_path, len).unwrap();
        assert!(std::fs::read(&dest_path).unwrap() == bytes[..len as usize]);
    }

    #[test]
    fn a_source_shorter_than_asked_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_, src, dest, dest_path) = files(dir.path(), 1000);
        let err = copy_direct(&src, &dest, &dest_path, 5000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        let err = copy_cached(&src, &dest, 5000, |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
