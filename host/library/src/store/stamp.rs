//! What identifies a file's content without reading it: device, inode,
//! length and modification time. A check made of a file (its checksum, its
//! integrity) is reused only while the file still has the stamp it had
//! when it was checked.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A file's identity and its last modification, as `stat` reports them.
///
/// Writing to a file, truncating or replacing it changes its stamp; a
/// rename within a filesystem keeps it. On filesystems with coarse
/// timestamps two writes within one clock tick (a few milliseconds) may
/// leave the same modification time; kernels with multi-grain timestamps
/// (Linux 6.13 and later on ext4, XFS, Btrfs and tmpfs) give a write after
/// the stamp was taken a later time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileStamp {
    /// The filesystem's device number.
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
    /// The length in bytes.
    pub len: u64,
    /// The modification time, in nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of an open file.
    pub fn of(file: &std::fs::File) -> std::io::Result<Self> {
        Ok(Self::from_metadata(&file.metadata()?))
    }

    /// The stamp of the file at `path` (following symlinks).
    pub fn of_path(path: &Path) -> std::io::Result<Self> {
        Ok(Self::from_metadata(&std::fs::metadata(path)?))
    }

    fn from_metadata(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_write_changes_the_stamp_and_a_rename_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let first = FileStamp::of_path(&path).unwrap();
        assert_eq!(first, FileStamp::of_path(&path).unwrap());
        let moved = dir.path().join("g");
        std::fs::rename(&path, &moved).unwrap();
        assert_eq!(first, FileStamp::of_path(&moved).unwrap());
        // Same length, new bytes: a later write.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&moved)
            .unwrap();
        f.write_all(b"two").unwrap();
        let second = FileStamp::of(&f).unwrap();
        assert_eq!(second.len, first.len);
        assert_ne!(first, second);
    }
}
