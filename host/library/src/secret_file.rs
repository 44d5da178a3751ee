//! Files that hold secrets (the cluster key, TSIG keys): read only when no
//! one but their owner can read them.

use std::path::{Path, PathBuf};

/// Why a secret file was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// Its mode lets its group or everyone read or write it.
    #[error("{}: mode {mode:04o} lets other users read it; make it owner-only (chmod 600 {})", path.display(), path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It does not hold base64.
    #[error("{}: not base64 ({source}); make one with `standby keygen FILE`", path.display())]
    NotBase64 {
        /// The file.
        path: PathBuf,
        /// What the decoder found.
        #[source]
        source: data_encoding::DecodeError,
    },
    /// It could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The text of the secret file at `path`, refused when its group or others
/// have any access to it.
pub fn read_secret(path: &Path) -> Result<String, SecretFileError> {
    check_owner_only(path)?;
    std::fs::read_to_string(path).map_err(|source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The bytes of the base64 key in the owner-only file at `path` (what
/// `standby keygen` writes: the cluster key, the operators' token).
pub fn read_key(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let text = read_secret(path)?;
    decode_base64(text.trim()).map_err(|source| SecretFileError::NotBase64 {
        path: path.to_path_buf(),
        source,
    })
}

/// Base64, padded or not.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, data_encoding::DecodeError> {
    data_encoding::BASE64
        .decode(text.as_bytes())
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(text.as_bytes()))
}

/// Refuse the file at `path` when its group or others have any access to it
/// (for secrets read by another library, such as a TLS private key).
pub fn check_owner_only(path: &Path) -> Result<(), SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Write `text` to a new owner-only (0600) file at `path`; an existing file
/// is replaced only when `replace` is set.
pub fn write_secret(path: &Path, text: &str, replace: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options.open(path)?;
    // An existing file keeps its mode when opened: make it owner-only.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_secret_readable_by_others_is_refused_naming_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "s").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_secret(&path).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{mode:04o}")) && e.contains("chmod 600"),
                "{e}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&path).unwrap(), "s");
    }

    #[test]
    fn a_written_secret_is_owner_only_and_not_overwritten_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_secret(&path, "one", false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_secret(&path, "two", false).is_err());
        write_secret(&path, "two", true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
    }
}
