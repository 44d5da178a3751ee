//! The peer and witness links' frame encryption: AES-256-GCM with one
//! key per direction (from the handshake, [`super::auth`]) and the frame's
//! sequence number as its nonce, as TLS 1.3 records do. A frame that was
//! forged, replayed, reordered or dropped does not open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

/// A frame could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CipherError {
    /// A frame does not open under the session's key.
    #[error("peer link: frame {0} does not decrypt (forged, replayed or reordered)")]
    BadFrame(u64),
    /// A session sealed as many frames as its nonces allow.
    #[error("peer link: the session's nonces are used up; reconnect")]
    NoncesExhausted,
    /// The key is not an AES-256-GCM key.
    #[error("peer link: the session's key is unusable")]
    BadKey,
}

/// Bytes a sealed frame adds to its body (the GCM tag).
pub(crate) const TAG_LEN: usize = 16;

/// One direction of a session.
pub(crate) struct FrameCipher {
    key: LessSafeKey,
    counter: u64,
}

impl FrameCipher {
    /// A cipher for a 32-byte key, from frame 0.
    pub(crate) fn new(key: &[u8; 32]) -> Result<Self, CipherError> {
        let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| CipherError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            counter: 0,
        })
    }

    fn nonce(&self) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n[NONCE_LEN - 8..].copy_from_slice(&self.counter.to_le_bytes());
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypt the next outgoing body in place; its tag (sent after it).
    pub(crate) fn seal(&mut self, body: &mut [u8]) -> Result<[u8; TAG_LEN], CipherError> {
        if self.counter == u64::MAX {
            return Err(CipherError::NoncesExhausted);
        }
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(), Aad::empty(), body)
            .map_err(|_| CipherError::NoncesExhausted)?;
        self.counter += 1;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypt and check the next incoming frame in place; its body.
    pub(crate) fn open<'a>(&mut self, frame: &'a mut [u8]) -> Result<&'a [u8], CipherError> {
        if self.counter == u64::MAX {
            return Err(CipherError::NoncesExhausted);
        }
        let body = self
            .key
            .open_in_place(self.nonce(), Aad::empty(), frame)
            .map_err(|_| CipherError::BadFrame(self.counter))?;
        self.counter += 1;
        Ok(body)
    }
}
