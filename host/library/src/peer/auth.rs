//! Mutual authentication with a pre-shared key, and a MAC on every frame.
//!
//! Handshake (both sides know the key; neither sends it):
//!
//! ```text
//! dialler  -> listener  Hello     { node_id, nonce_d }
//! listener -> dialler   Challenge { node_id, nonce_l, proof_l = HMAC(k, "listener" | nonce_d | nonce_l | ids) }
//! dialler  -> listener  Proof     { proof_d = HMAC(k, "dialler" | nonce_d | nonce_l | ids) }
//! ```
//!
//! Both derive a session key `HMAC(k, "session" | nonce_d | nonce_l)`. Every
//! later frame carries `HMAC(session, direction | counter | body)`, with a
//! counter per direction, so frames cannot be forged, replayed or reordered.
//! Anything else (a wrong proof, a bad tag) closes the connection.

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of nonces, keys and tags.
pub(crate) const TAG_LEN: usize = 32;

/// The shortest pre-shared key accepted, in bytes (after decoding).
pub const MIN_KEY_LEN: usize = 32;

/// A pre-shared key (at least [`MIN_KEY_LEN`] bytes).
#[derive(Clone)]
pub struct Psk(Vec<u8>);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// Authentication failed or a key is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The key is too short.
    #[error(
        "peer authentication: the pre-shared key has {0} bytes; at least {MIN_KEY_LEN} are needed"
    )]
    ShortKey(usize),
    /// The key file could not be read, or others can read it.
    #[error("peer authentication: the key file {0}")]
    KeyFile(#[source] crate::secret_file::SecretFileError),
    /// The key file does not hold base64.
    #[error("peer authentication: {}: the key is not base64 ({source}); make one with `standby keygen FILE`", path.display())]
    NotBase64 {
        /// The file.
        path: std::path::PathBuf,
        /// What the decoder found.
        #[source]
        source: data_encoding::DecodeError,
    },
    /// The key file holds too short a key.
    #[error("peer authentication: {}: the pre-shared key has {len} bytes; at least {MIN_KEY_LEN} are needed (make one with `standby keygen FILE`)", path.display())]
    ShortKeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Its key's length, decoded.
        len: usize,
    },
    /// The listener's proof does not match: it does not know the key.
    #[error("peer authentication: the other side does not know the shared key")]
    ListenerUnproven,
    /// The dialler's proof does not match: it does not know the key.
    #[error("peer authentication: the dialler does not know the shared key")]
    DiallerUnproven,
    /// The other side is not the node expected.
    #[error("peer authentication: expected node {expected}, found {found}")]
    UnexpectedNode {
        /// The node expected.
        expected: String,
        /// The node found.
        found: String,
    },
    /// A frame's MAC does not verify.
    #[error("peer authentication: frame {0} has a bad MAC (forged, replayed or reordered)")]
    BadMac(u64),
}

impl Psk {
    /// A key from raw bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, AuthError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(AuthError::ShortKey(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// A key from a file that only its owner can read: base64 of at least
    /// [`MIN_KEY_LEN`] bytes (what `standby keygen` writes).
    pub fn from_file(path: &std::path::Path) -> Result<Self, AuthError> {
        let text = crate::secret_file::read_secret(path).map_err(AuthError::KeyFile)?;
        let text = text.trim();
        let bytes = data_encoding::BASE64
            .decode(text.as_bytes())
            .or_else(|_| data_encoding::BASE64_NOPAD.decode(text.as_bytes()))
            .map_err(|source| AuthError::NotBase64 {
                path: path.to_path_buf(),
                source,
            })?;
        let len = bytes.len();
        Self::new(bytes).map_err(|_| AuthError::ShortKeyFile {
            path: path.to_path_buf(),
            len,
        })
    }

    /// A fresh random key of [`MIN_KEY_LEN`] bytes, as the base64 text a key
    /// file holds.
    pub fn generate() -> String {
        let mut bytes = [0u8; MIN_KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        data_encoding::BASE64.encode(&bytes)
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        mac_with(&self.0, parts)
    }
}

fn mac_with(key: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    // HMAC takes keys of any length, so this cannot fail; if it ever did, an
    // all-zero tag fails every check (fail closed).
    let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(key) else {
        return [0; TAG_LEN];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// A fresh random nonce.
pub(crate) fn nonce() -> [u8; TAG_LEN] {
    let mut n = [0u8; TAG_LEN];
    rand::rng().fill_bytes(&mut n);
    n
}

/// First handshake message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The dialler's node id.
    pub node_id: String,
    /// The dialler's nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
}

/// Second handshake message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Challenge {
    /// The listener's node id.
    pub node_id: String,
    /// The listener's nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The listener's proof of the key.
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
}

/// Third handshake message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Proof {
    /// The dialler's proof of the key.
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
}

fn proof(
    psk: &Psk,
    role: &[u8],
    nonce_d: &[u8],
    nonce_l: &[u8],
    id_d: &str,
    id_l: &str,
) -> [u8; TAG_LEN] {
    psk.mac(&[
        role,
        nonce_d,
        nonce_l,
        id_d.as_bytes(),
        b"|",
        id_l.as_bytes(),
    ])
}

/// The listener's proof for a Hello.
pub(crate) fn listener_proof(psk: &Psk, hello: &Hello, nonce_l: &[u8], id_l: &str) -> Vec<u8> {
    proof(
        psk,
        b"listener",
        &hello.nonce,
        nonce_l,
        &hello.node_id,
        id_l,
    )
    .to_vec()
}

/// The dialler's proof.
pub(crate) fn dialler_proof(
    psk: &Psk,
    nonce_d: &[u8],
    challenge: &Challenge,
    id_d: &str,
) -> Vec<u8> {
    proof(
        psk,
        b"dialler",
        nonce_d,
        &challenge.nonce,
        id_d,
        &challenge.node_id,
    )
    .to_vec()
}

/// Constant-time equality.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The per-session MAC state of one direction.
#[derive(Clone)]
pub(crate) struct FrameMac {
    key: [u8; TAG_LEN],
    direction: u8,
    counter: u64,
}

impl FrameMac {
    /// Both directions of a session: (what this side sends, what it receives).
    pub(crate) fn session(
        psk: &Psk,
        nonce_d: &[u8],
        nonce_l: &[u8],
        dialler: bool,
    ) -> (FrameMac, FrameMac) {
        let key = psk.mac(&[b"session", nonce_d, nonce_l]);
        let (out, inn) = if dialler { (0, 1) } else { (1, 0) };
        (
            FrameMac {
                key,
                direction: out,
                counter: 0,
            },
            FrameMac {
                key,
                direction: inn,
                counter: 0,
            },
        )
    }

    /// Tag the next outgoing body.
    pub(crate) fn sign(&mut self, body: &[u8]) -> [u8; TAG_LEN] {
        let tag = mac_with(
            &self.key,
            &[&[self.direction], &self.counter.to_le_bytes(), body],
        );
        self.counter += 1;
        tag
    }

    /// Check the next incoming body's tag.
    pub(crate) fn verify(&mut self, body: &[u8], tag: &[u8]) -> Result<(), AuthError> {
        let want = mac_with(
            &self.key,
            &[&[self.direction], &self.counter.to_le_bytes(), body],
        );
        if !same(&want, tag) {
            return Err(AuthError::BadMac(self.counter));
        }
        self.counter += 1;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proofs_and_frames_check_out_only_with_the_same_key() {
        let k = Psk::new(b"0123456789abcdef0123456789abcdef-shared".to_vec()).unwrap();
        let wrong = Psk::new(b"0123456789abcdef0123456789abcdef-other!".to_vec()).unwrap();
        let (nd, nl) = (nonce(), nonce());
        let hello = Hello {
            node_id: "a".into(),
            nonce: nd.to_vec(),
        };
        let p = listener_proof(&k, &hello, &nl, "b");
        assert!(same(&p, &listener_proof(&k, &hello, &nl, "b")));
        assert!(!same(&p, &listener_proof(&wrong, &hello, &nl, "b")));
        let (mut d_out, _) = FrameMac::session(&k, &nd, &nl, true);
        let (_, mut l_in) = FrameMac::session(&k, &nd, &nl, false);
        let t1 = d_out.sign(b"one");
        let t2 = d_out.sign(b"two");
        // Out of order fails; in order passes; a replay fails.
        assert!(l_in.clone().verify(b"two", &t2).is_err());
        l_in.verify(b"one", &t1).unwrap();
        l_in.verify(b"two", &t2).unwrap();
        assert!(l_in.verify(b"two", &t2).is_err());
        assert!(Psk::new(b"short".to_vec()).is_err());
    }

    #[test]
    fn a_key_file_is_base64_of_32_bytes_readable_by_its_owner_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&Psk::generate(), 0o600);
        Psk::from_file(&path).unwrap();
        write(&Psk::generate(), 0o644);
        let e = Psk::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("0644"), "{e}");
        write(&data_encoding::BASE64.encode(&[7u8; 31]), 0o600);
        let e = Psk::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("has 31 bytes") && e.contains("32"), "{e}");
        write("a passphrase, not base64!", 0o600);
        let e = Psk::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("not base64"), "{e}");
    }
}
