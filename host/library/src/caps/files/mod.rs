//! `files`: directory-handle-relative access inside granted roots (cap-std).
//! cap-std refuses `..` and symlinks that lead out of the root at open time,
//! so there is no check-then-open race.

use std::io::{Read, Write};

use cap_std::fs::{Dir, OpenOptions};
use sha2::{Digest, Sha256};

use crate::wit::strategy::standby::plugin::files::{Entry, Host};
use crate::wit::strategy::standby::plugin::types::{Error as WitError, FileRef};

use super::{io_error, HostState};

pub(crate) mod grant;

/// Largest file `read-small` and `write-small` handle.
const SMALL_MAX: usize = 65_536;

fn entry(name: String, meta: &cap_std::fs::Metadata) -> Entry {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Entry {
        name,
        is_dir: meta.is_dir(),
        size: if meta.is_dir() { 0 } else { meta.len() },
        modified,
    }
}

fn display(file: &FileRef) -> String {
    format!("{}:{}", file.root, file.path)
}

/// SHA-256 of a file opened through `dir`, streamed.
pub(crate) fn sha256_of(dir: &Dir, rel: &std::path::Path) -> std::io::Result<String> {
    let mut f = dir.open(rel)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Add `files`'s host functions to `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    crate::wit::strategy::standby::plugin::files::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(linker, |s| s)
}

impl Host for HostState {
    async fn roots(&mut self) -> Vec<String> {
        self.grants.roots.keys().cloned().collect()
    }

    async fn list_dir(&mut self, dir: FileRef) -> Result<Vec<Entry>, WitError> {
        let (root, rel) = self.file(&dir)?;
        let what = display(&dir);
        self.blocking_files(move || {
            let read = if rel.as_os_str().is_empty() {
                root.dir.entries()
            } else {
                root.dir.read_dir(&rel)
            };
            let mut out = Vec::new();
            for item in read.map_err(|e| io_error(&what, e))? {
                let item = item.map_err(|e| io_error(&what, e))?;
                let meta = item.metadata().map_err(|e| io_error(&what, e))?;
                out.push(entry(
                    item.file_name().to_string_lossy().into_owned(),
                    &meta,
                ));
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn stat(&mut self, file: FileRef) -> Result<Entry, WitError> {
        let (root, rel) = self.file(&file)?;
        let what = display(&file);
        self.blocking_files(move || {
            let meta = root
                .dir
                .symlink_metadata(&rel)
                .map_err(|e| io_error(&what, e))?;
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(entry(name, &meta))
        })
        .await
    }

    async fn sha256(&mut self, file: FileRef) -> Result<String, WitError> {
        let (root, rel) = self.file(&file)?;
        let what = display(&file);
        self.blocking_files(move || sha256_of(&root.dir, &rel).map_err(|e| io_error(&what, e)))
            .await
    }

    async fn read_small(&mut self, file: FileRef, max_bytes: u32) -> Result<Vec<u8>, WitError> {
        let (root, rel) = self.file(&file)?;
        let what = display(&file);
        let max = (max_bytes as usize).min(SMALL_MAX);
        self.blocking_files(move || {
            let f = root.dir.open(&rel).map_err(|e| io_error(&what, e))?;
            let mut data = Vec::new();
            f.take(max as u64 + 1)
                .read_to_end(&mut data)
                .map_err(|e| io_error(&what, e))?;
            if data.len() > max {
                return Err(WitError::InvalidArgument(format!(
                    "{what} is larger than {max} bytes"
                )));
            }
            Ok(data)
        })
        .await
    }

    async fn write_small(&mut self, file: FileRef, data: Vec<u8>) -> Result<(), WitError> {
        let (root, rel) = self.file(&file)?;
        let what = display(&file);
        if data.len() > SMALL_MAX {
            return Err(WitError::InvalidArgument(format!(
                "{what}: {} bytes is more than write-small takes ({SMALL_MAX})",
                data.len()
            )));
        }
        self.blocking_files(move || {
            let name = rel
                .file_name()
                .ok_or_else(|| WitError::InvalidArgument(format!("{what} names no file")))?;
            let tmp = rel.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
            let mut f = root
                .dir
                .open_with(
                    &tmp,
                    OpenOptions::new().write(true).create(true).truncate(true),
                )
                .map_err(|e| io_error(&what, e))?;
            f.write_all(&data).map_err(|e| io_error(&what, e))?;
            f.sync_all().map_err(|e| io_error(&what, e))?;
            root.dir
                .rename(&tmp, &root.dir, &rel)
                .map_err(|e| io_error(&what, e))?;
            Ok(())
        })
        .await
    }

    async fn create_dir(&mut self, dir: FileRef) -> Result<(), WitError> {
        let (root, rel) = self.file(&dir)?;
        let what = display(&dir);
        self.blocking_files(move || {
            root.dir
                .create_dir_all(&rel)
                .map_err(|e| io_error(&what, e))
        })
        .await
    }

    async fn copy(&mut self, src: FileRef, dest: FileRef) -> Result<u64, WitError> {
        let (sroot, srel) = self.file(&src)?;
        let (droot, drel) = self.file(&dest)?;
        let (swhat, dwhat) = (display(&src), display(&dest));
        self.blocking_files(move || {
            let mut from = sroot.dir.open(&srel).map_err(|e| io_error(&swhat, e))?;
            let mut to = droot
                .dir
                .open_with(&drel, OpenOptions::new().write(true).create_new(true))
                .map_err(|e| io_error(&dwhat, e))?;
            let n = std::io::copy(&mut from, &mut to).map_err(|e| io_error(&dwhat, e))?;
            to.sync_all().map_err(|e| io_error(&dwhat, e))?;
            Ok(n)
        })
        .await
    }

    async fn rename(&mut self, src: FileRef, dest: FileRef) -> Result<(), WitError> {
        let (sroot, srel) = self.file(&src)?;
        let (droot, drel) = self.file(&dest)?;
        let what = format!("{} -> {}", display(&src), display(&dest));
        self.blocking_files(move || {
            sroot
                .dir
                .rename(&srel, &droot.dir, &drel)
                .map_err(|e| io_error(&what, e))
        })
        .await
    }

    async fn remove(&mut self, file: FileRef) -> Result<(), WitError> {
        let (root, rel) = self.file(&file)?;
        let what = display(&file);
        if rel.as_os_str().is_empty() {
            return Err(WitError::AccessDenied(format!(
                "{what}: a root itself cannot be removed"
            )));
        }
        self.blocking_files(move || {
            let meta = root
                .dir
                .symlink_metadata(&rel)
                .map_err(|e| io_error(&what, e))?;
            if meta.is_dir() {
                root.dir.remove_dir(&rel)
            } else {
                root.dir.remove_file(&rel)
            }
            .map_err(|e| io_error(&what, e))
        })
        .await
    }
}
