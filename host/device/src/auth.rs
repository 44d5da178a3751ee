//! Device authentication: a key per device proves the device's identity by
//! challenge and response, and then keys a MAC on every message of the link,
//! so nobody on the path can take the link over afterwards.
//!
//! The exchange (docs/protocol.md, "Authentication"):
//!
//! 1. The device's HANDSHAKE names its key's generation and a fresh nonce
//!    ([`HelloAuth`](crate::messages::HelloAuth)).
//! 2. The server answers with status [`CHALLENGE`](crate::frame::status::CHALLENGE):
//!    its own nonce and a proof that it knows the device's key.
//! 3. The device checks that proof and sends AUTHENTICATE with its own.
//! 4. The server checks it and answers AUTHENTICATE with its welcome. From
//!    AUTHENTICATE on, every message in each direction carries a 16-byte tag
//!    over its header fields, its payload and its position in the stream.
//!
//! Both proofs and both MAC keys are HMAC-SHA256 of the device's key over a
//! transcript of the handshake (the device id, the generation, both nonces and
//! the handshake payload as sent), each with its own label.

use std::path::{Path, PathBuf};

use ring::hmac;
use serde::{Deserialize, Serialize};
/// Bytes of a device key.
pub const KEY_LEN: usize = 32;
/// Bytes of each side's nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of a proof.
pub const PROOF_LEN: usize = 32;
/// Bytes of the tag each message carries on an authenticated link.
pub const TAG_LEN: usize = 16;

/// A device's credential: its id, the generation of its key and the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The device the key belongs to.
    pub device_id: u32,
    /// Which of the device's keys this is (a rotation issues the next one).
    pub generation: u32,
    /// When the server stops accepting it (Unix ms).
    pub expires_at_ms: u64,
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("device_id", &self.device_id)
            .field("generation", &self.generation)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A credential holding `key`.
    pub fn new(device_id: u32, generation: u32, key: [u8; KEY_LEN], expires_at_ms: u64) -> Self {
        Self {
            device_id,
            generation,
            expires_at_ms,
            key,
        }
    }

    /// The key.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

/// A credentials file: one device's credential, or a fleet's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFile {
    /// The credentials.
    pub credentials: Vec<CredentialRecord>,
}

/// One credential as a file holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRecord {
    /// The device.
    pub device_id: u32,
    /// The key's generation.
    pub generation: u32,
    /// The key, hex.
    pub key: String,
    /// When the server stops accepting it (Unix ms).
    pub expires_at_ms: u64,
}

impl From<&Credential> for CredentialRecord {
    fn from(c: &Credential) -> Self {
        Self {
            device_id: c.device_id,
            generation: c.generation,
            key: hex::encode(c.key),
            expires_at_ms: c.expires_at_ms,
        }
    }
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The file could not be read.
    #[error("device credentials {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a credentials file.
    #[error("device credentials {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: serde_json::Error,
    },
    /// A key is not 64 hex digits.
    #[error("device credentials {}: the key of device {device_id} is not {} hex digits", path.display(), KEY_LEN * 2)]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The device.
        device_id: u32,
    },
}

/// Read every credential in a credentials file.
pub fn load_credentials(path: &Path) -> Result<Vec<Credential>, CredentialError> {
    let text = std::fs::read(path).map_err(|source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: CredentialFile =
        serde_json::from_slice(&text).map_err(|source| CredentialError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    file.credentials
        .into_iter()
        .map(|r| {
            let key = hex::decode(&r.key)
                .ok()
                .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
                .ok_or_else(|| CredentialError::BadKey {
                    path: path.to_path_buf(),
                    device_id: r.device_id,
                })?;
            Ok(Credential::new(
                r.device_id,
                r.generation,
                key,
                r.expires_at_ms,
            ))
        })
        .collect()
}

/// A fresh nonce.
pub fn nonce() -> [u8; NONCE_LEN] {
    rand::random()
}

/// One handshake's transcript: what both proofs and both MAC keys are bound to.
#[derive(Debug, Clone, Copy)]
pub struct Transcript([u8; 32]);

impl Transcript {
    /// The transcript of device `device_id` presenting key `generation`,
    /// with both nonces and the HANDSHAKE payload as it was sent.
    pub fn new(
        device_id: u32,
        generation: u32,
        hello_payload: &[u8],
        device_nonce: &[u8],
        server_nonce: &[u8],
    ) -> Self {
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        h.update(b"standby device auth v1");
        h.update(&device_id.to_be_bytes());
        h.update(&generation.to_be_bytes());
        for part in [device_nonce, server_nonce, hello_payload] {
            h.update(&(part.len() as u32).to_be_bytes());
            h.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finish().as_ref());
        Self(out)
    }

    fn derive(&self, key: &[u8; KEY_LEN], label: &[u8]) -> [u8; 32] {
        let k = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut c = hmac::Context::with_key(&k);
        c.update(label);
        c.update(&self.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(c.sign().as_ref());
        out
    }

    /// The server's proof that it knows `key`.
    pub fn server_proof(&self, key: &[u8; KEY_LEN]) -> [u8; PROOF_LEN] {
        self.derive(key, b"server proof")
    }

    /// The device's proof that it knows `key`.
    pub fn device_proof(&self, key: &[u8; KEY_LEN]) -> [u8; PROOF_LEN] {
        self.derive(key, b"device proof")
    }

    /// Whether `proof` is the server's proof for `key` (in constant time).
    pub fn is_server_proof(&self, key: &[u8; KEY_LEN], proof: &[u8]) -> bool {
        same(&self.server_proof(key), proof)
    }

    /// Whether `proof` is the device's proof for `key` (in constant time).
    pub fn is_device_proof(&self, key: &[u8; KEY_LEN], proof: &[u8]) -> bool {
        same(&self.device_proof(key), proof)
    }

    /// The device end's message authentication.
    pub fn device_mac(&self, key: &[u8; KEY_LEN]) -> LinkMac {
        LinkMac::new(
            &self.derive(key, b"device to server"),
            &self.derive(key, b"server to device"),
        )
    }

    /// The server end's message authentication.
    pub fn server_mac(&self, key: &[u8; KEY_LEN]) -> LinkMac {
        LinkMac::new(
            &self.derive(key, b"server to device"),
            &self.derive(key, b"device to server"),
        )
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The MAC of an authenticated link, one key and one message counter per
/// direction: a message that was altered, replayed, dropped, reordered or
/// made up fails its check.
pub struct LinkMac {
    send: hmac::Key,
    recv: hmac::Key,
    sent: u64,
    received: u64,
}

impl std::fmt::Debug for LinkMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkMac")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// A message whose tag does not check (or that has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message {index} on this authenticated link (command {command:#06x}) fails its authentication tag")]
pub struct BadTag {
    /// Which message of the link (counting from 0 after AUTHENTICATE).
    pub index: u64,
    /// Its command.
    pub command: u16,
}

impl LinkMac {
    fn new(send: &[u8], recv: &[u8]) -> Self {
        Self {
            send: hmac::Key::new(hmac::HMAC_SHA256, send),
            recv: hmac::Key::new(hmac::HMAC_SHA256, recv),
            sent: 0,
            received: 0,
        }
    }

    fn tag(key: &hmac::Key, index: u64, header: &[u8], payload: &[u8]) -> hmac::Tag {
        let mut c = hmac::Context::with_key(key);
        c.update(&index.to_be_bytes());
        c.update(header);
        c.update(&(payload.len() as u64).to_be_bytes());
        c.update(payload);
        c.sign()
    }

    /// The tag of the next outgoing message: its header fields (as the
    /// codec lays them out) and its payload.
    pub fn seal(&mut self, header: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
        let tag = Self::tag(&self.send, self.sent, header, payload);
        self.sent += 1;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag.as_ref()[..TAG_LEN]);
        out
    }

    /// How many messages were checked so far (the index of the next one).
    pub fn received_count(&self) -> u64 {
        self.received
    }

    /// Check the tag of the next incoming message; the error holds the
    /// message's index on the link.
    pub fn open(&mut self, header: &[u8], payload: &[u8], tag: &[u8]) -> Result<(), u64> {
        let expected = Self::tag(&self.recv, self.received, header, payload);
        if !same(&expected.as_ref()[..TAG_LEN], tag) {
            return Err(self.received);
        }
        self.received += 1;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pair() -> (LinkMac, LinkMac, Transcript, [u8; KEY_LEN]) {
        let key = [7u8; KEY_LEN];
        let t = Transcript::new(5, 1, b"hello", &[1; NONCE_LEN], &[2; NONCE_LEN]);
        (t.device_mac(&key), t.server_mac(&key), t, key)
    }

    #[test]
    fn proofs_check_only_with_the_same_key_and_transcript() {
        let (_, _, t, key) = pair();
        assert!(t.is_device_proof(&key, &t.device_proof(&key)));
        assert!(t.is_server_proof(&key, &t.server_proof(&key)));
        // The two proofs differ: one cannot be reflected as the other.
        assert!(!t.is_device_proof(&key, &t.server_proof(&key)));
        assert!(!t.is_device_proof(&[8; KEY_LEN], &t.device_proof(&key)));
        let other = Transcript::new(5, 1, b"hello", &[1; NONCE_LEN], &[3; NONCE_LEN]);
        assert!(!other.is_device_proof(&key, &t.device_proof(&key)));
        let other_device = Transcript::new(6, 1, b"hello", &[1; NONCE_LEN], &[2; NONCE_LEN]);
        assert!(!other_device.is_device_proof(&key, &t.device_proof(&key)));
    }

    #[test]
    fn tags_check_once_in_order_and_unaltered() {
        let (mut device, mut server, _, _) = pair();
        let a = device.seal(b"header a", b"events");
        let b = device.seal(b"header b", b"");
        // Reordered: b first fails.
        assert!(pair().1.open(b"header b", b"", &b).is_err());
        assert!(server.open(b"header a", b"events", &a).is_ok());
        // Replayed: a again fails.
        assert_eq!(server.open(b"header a", b"events", &a), Err(1));
        // Altered header or payload.
        let (mut d, mut s, _, _) = pair();
        let c = d.seal(b"header c", b"x");
        assert!(s.open(b"header C", b"x", &c).is_err());
        assert!(pair().1.open(b"header c", b"y", &c).is_err());
        // Direction matters: a device's own tag does not open at the device.
        let e = pair().0.seal(b"h", b"");
        assert!(pair().0.open(b"h", b"", &e).is_err());
        // A short tag.
        assert!(pair().1.open(b"h", b"", &e[..4]).is_err());
    }
}
