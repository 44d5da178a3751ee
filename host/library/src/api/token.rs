//! The operators' bearer token for the TCP admin endpoint: base64 of at
//! least 32 random bytes in an owner-only file (`standby keygen FILE` makes
//! one), sent as `Authorization: Bearer <base64>` over TLS only.

use std::path::{Path, PathBuf};

use crate::secret_file::{decode_base64, read_key, SecretFileError};

/// The shortest token accepted, in bytes (after decoding).
pub const MIN_TOKEN_LEN: usize = 32;

/// Why a token file was not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The file could not be read, or others can read it.
    #[error("admin token: {0}")]
    File(#[source] SecretFileError),
    /// The token is too short.
    #[error("admin token: {}: the token has {len} bytes; at least {MIN_TOKEN_LEN} are needed (make one with `standby keygen FILE`)", path.display())]
    Short {
        /// The file.
        path: PathBuf,
        /// Its length, decoded.
        len: usize,
    },
}

/// An operator credential for the TCP admin endpoint.
#[derive(Clone)]
pub struct AdminToken(Vec<u8>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The token in an owner-only file: base64 of at least
    /// [`MIN_TOKEN_LEN`] bytes.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let bytes = read_key(path).map_err(TokenError::File)?;
        if bytes.len() < MIN_TOKEN_LEN {
            return Err(TokenError::Short {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        Ok(Self(bytes))
    }

    /// The value of an `Authorization` header carrying this token.
    pub fn header(&self) -> String {
        format!("Bearer {}", data_encoding::BASE64.encode(&self.0))
    }

    /// Whether an `Authorization` header value carries this token (compared
    /// in constant time).
    pub(crate) fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let Some(encoded) = value.trim().strip_prefix("Bearer ") else {
            return false;
        };
        let Ok(presented) = decode_base64(encoded.trim()) else {
            return false;
        };
        crate::peer::auth::same(&presented, &self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_token_admits_its_own_header_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        crate::secret_file::write_secret(&path, &crate::peer::Psk::generate(), false).unwrap();
        let token = AdminToken::from_file(&path).unwrap();
        assert!(token.admits(Some(token.header().as_bytes())));
        assert!(!token.admits(None));
        assert!(!token.admits(Some(b"Bearer AAAA")));
        assert!(!token.admits(Some(token.header().replace("Bearer ", "Basic ").as_bytes())));
        let other = dir.path().join("other.token");
        crate::secret_file::write_secret(&other, &crate::peer::Psk::generate(), false).unwrap();
        let other = AdminToken::from_file(&other).unwrap();
        assert!(!token.admits(Some(other.header().as_bytes())));
        crate::secret_file::write_secret(&path, &data_encoding::BASE64.encode(&[1; 16]), true)
            .unwrap();
        let e = AdminToken::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("16 bytes") && e.contains("32"), "{e}");
    }
}
