//! Mutual authentication with a pre-shared key that no message lets anyone
//! guess offline, and the keys that encrypt every later frame.
//!
//! Handshake (both sides know the cluster key; neither sends it nor anything
//! a guess of it could be checked against):
//!
//! ```text
//! dialler  -> listener  Hello   { node_id, spake: X* }    SPAKE2 side A
//! listener -> dialler   Reply   { node_id, spake: Y* }    SPAKE2 side B
//! dialler  -> listener  Confirm { dialler proof }         the dialler proves itself first
//! listener -> dialler   Confirm { listener proof }        sent only once that proof checked out
//! ```
//!
//! A listener that finds the dialler's proof wrong answers an empty Confirm
//! (so the dialler can say why) and closes.
//!
//! SPAKE2 (RFC 9382, over Ed25519) is a password-authenticated key exchange:
//! `X*` and `Y*` are Diffie-Hellman shares blinded by the key, and reveal
//! nothing about it. Both sides derive, with HKDF-SHA256 from the SPAKE2
//! secret and a hash of the transcript (both node ids, both shares), two
//! proofs and two traffic keys (one per direction). A listener that is
//! dialled by a stranger never sends its proof (the stranger's proof fails
//! first); a stranger posing as the listener gets the dialler's proof, which
//! checks one guess only, the one it made in its own share. So an attacker
//! gets one guess per connection ([`super::admission`] bounds those), never
//! an offline search. Every later frame is sealed with AES-256-GCM
//! ([`super::cipher`]) under a counter nonce: frames are secret, and cannot
//! be forged, replayed or reordered. Anything else (a wrong proof, a frame
//! that does not open) closes the connection.

use hkdf::Hkdf;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

use super::cipher::FrameCipher;

/// Length of proofs and keys.
const KEY_LEN: usize = 32;

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
    /// The key file holds too short a key.
    #[error("peer authentication: {}: the pre-shared key has {len} bytes; at least {MIN_KEY_LEN} are needed (make one with `standby keygen FILE`)", path.display())]
    ShortKeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Its key's length, decoded.
        len: usize,
    },
    /// The other side's key-exchange share is not a valid one.
    #[error("peer authentication: the other side's key-exchange message is malformed ({0})")]
    MalformedShare(String),
    /// The listener's proof does not match: it does not know the key.
    #[error("peer authentication: the other side does not know the shared key (or runs a release with another peer protocol version)")]
    ListenerUnproven,
    /// The dialler's proof does not match: it does not know the key.
    #[error("peer authentication: the dialler does not know the shared key (or runs a release with another peer protocol version)")]
    DiallerUnproven,
    /// The listener refused this node's proof: the two hold different keys.
    #[error("peer authentication: the other side refused this node's proof: the two do not hold the same shared key (or run releases with different peer protocol versions)")]
    ProofRefused,
    /// The other side is not the node expected.
    #[error("peer authentication: expected node {expected}, found {found}")]
    UnexpectedNode {
        /// The node expected.
        expected: String,
        /// The node found.
        found: String,
    },
    /// The session's keys could not be made (HKDF or the cipher refused them).
    #[error("peer authentication: the session's keys could not be derived")]
    KeySchedule,
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
        let bytes = crate::secret_file::read_key(path).map_err(AuthError::KeyFile)?;
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
}

/// First handshake message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The dialler's node id.
    pub node_id: String,
    /// The dialler's SPAKE2 share.
    #[serde(with = "serde_bytes")]
    pub spake: Vec<u8>,
}

/// Second handshake message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reply {
    /// The listener's node id.
    pub node_id: String,
    /// The listener's SPAKE2 share.
    #[serde(with = "serde_bytes")]
    pub spake: Vec<u8>,
}

/// Third (dialler's) and fourth (listener's) handshake messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Confirm {
    /// The sender's proof of the session's secret (empty: the listener
    /// refused the dialler's).
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
}

/// SPAKE2 identities: the roles, not the nodes (a dialler need not know
/// whom it reaches); the node ids are bound by the transcript hash.
const SIDE_DIALLER: &[u8] = b"standby peer link dialler";
const SIDE_LISTENER: &[u8] = b"standby peer link listener";
/// HKDF salt: this protocol and its version (v3: frames sealed with
/// AES-256-GCM; v2 sealed them with ChaCha20-Poly1305). Nodes of different
/// versions derive different proofs and do not connect.
const SALT: &[u8] = b"standby peer link v3";

/// The dialler's half-finished exchange.
pub(crate) struct DiallerExchange {
    spake: Spake2<Ed25519Group>,
    hello: Hello,
}

impl DiallerExchange {
    /// Start as `node_id`: the state to keep, and the hello to send.
    pub(crate) fn start(psk: &Psk, node_id: &str) -> (Self, Hello) {
        let (spake, share) = Spake2::<Ed25519Group>::start_a(
            &Password::new(&psk.0),
            &Identity::new(SIDE_DIALLER),
            &Identity::new(SIDE_LISTENER),
        );
        let hello = Hello {
            node_id: node_id.to_string(),
            spake: share,
        };
        (
            Self {
                spake,
                hello: hello.clone(),
            },
            hello,
        )
    }

    /// The session's keys, from the listener's reply.
    pub(crate) fn finish(self, reply: &Reply) -> Result<SessionKeys, AuthError> {
        let secret = self
            .spake
            .finish(&reply.spake)
            .map_err(|e| AuthError::MalformedShare(format!("{e:?}")))?;
        SessionKeys::derive(&secret, &self.hello, reply)
    }
}

/// The listener's answer to a hello: the reply to send, and the session's keys.
pub(crate) fn answer(
    psk: &Psk,
    node_id: &str,
    hello: &Hello,
) -> Result<(Reply, SessionKeys), AuthError> {
    let (spake, share) = Spake2::<Ed25519Group>::start_b(
        &Password::new(&psk.0),
        &Identity::new(SIDE_DIALLER),
        &Identity::new(SIDE_LISTENER),
    );
    let reply = Reply {
        node_id: node_id.to_string(),
        spake: share,
    };
    let secret = spake
        .finish(&hello.spake)
        .map_err(|e| AuthError::MalformedShare(format!("{e:?}")))?;
    let keys = SessionKeys::derive(&secret, hello, &reply)?;
    Ok((reply, keys))
}

/// What both sides derive from one exchange.
pub(crate) struct SessionKeys {
    /// The dialler's proof.
    pub dialler_proof: [u8; KEY_LEN],
    /// The listener's proof.
    pub listener_proof: [u8; KEY_LEN],
    dialler_to_listener: [u8; KEY_LEN],
    listener_to_dialler: [u8; KEY_LEN],
}

impl SessionKeys {
    fn derive(secret: &[u8], hello: &Hello, reply: &Reply) -> Result<Self, AuthError> {
        let mut transcript = Sha256::new();
        for part in [
            hello.node_id.as_bytes(),
            &hello.spake,
            reply.node_id.as_bytes(),
            &reply.spake,
        ] {
            transcript.update((part.len() as u64).to_le_bytes());
            transcript.update(part);
        }
        let transcript = transcript.finalize();
        let hkdf = Hkdf::<Sha256>::new(Some(SALT), secret);
        let expand = |label: &[u8]| {
            let mut out = [0u8; KEY_LEN];
            hkdf.expand_multi_info(&[label, &transcript], &mut out)
                .map(|()| out)
                .map_err(|_| AuthError::KeySchedule)
        };
        Ok(Self {
            dialler_proof: expand(b"dialler proof")?,
            listener_proof: expand(b"listener proof")?,
            dialler_to_listener: expand(b"dialler to listener")?,
            listener_to_dialler: expand(b"listener to dialler")?,
        })
    }

    /// This side's ciphers: (what it sends, what it receives).
    pub(crate) fn ciphers(&self, dialler: bool) -> Result<(FrameCipher, FrameCipher), AuthError> {
        let (out, inn) = if dialler {
            (&self.dialler_to_listener, &self.listener_to_dialler)
        } else {
            (&self.listener_to_dialler, &self.dialler_to_listener)
        };
        let cipher = |key| FrameCipher::new(key).map_err(|_| AuthError::KeySchedule);
        Ok((cipher(out)?, cipher(inn)?))
    }
}

/// Constant-time equality.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn exchange(dialler_key: &Psk, listener_key: &Psk) -> (SessionKeys, SessionKeys) {
        let (dialler, hello) = DiallerExchange::start(dialler_key, "a");
        let (reply, listener_keys) = answer(listener_key, "b", &hello).unwrap();
        (dialler.finish(&reply).unwrap(), listener_keys)
    }

    #[test]
    fn proofs_and_frames_check_out_only_with_the_same_key() {
        let k = Psk::new(b"0123456789abcdef0123456789abcdef-shared".to_vec()).unwrap();
        let wrong = Psk::new(b"0123456789abcdef0123456789abcdef-other!".to_vec()).unwrap();
        let (d, l) = exchange(&k, &k);
        assert!(same(&d.dialler_proof, &l.dialler_proof));
        assert!(same(&d.listener_proof, &l.listener_proof));
        let (bad_d, bad_l) = exchange(&k, &wrong);
        assert!(!same(&bad_d.dialler_proof, &bad_l.dialler_proof));
        assert!(!same(&bad_d.listener_proof, &bad_l.listener_proof));

        let (mut d_out, _) = d.ciphers(true).unwrap();
        let (_, mut l_in) = l.ciphers(false).unwrap();
        let seal = |c: &mut FrameCipher, body: &[u8]| {
            let mut v = body.to_vec();
            let tag = c.seal(&mut v).unwrap();
            v.extend_from_slice(&tag);
            v
        };
        let f1 = seal(&mut d_out, b"one");
        let f2 = seal(&mut d_out, b"two");
        // Sealed frames hide their bodies.
        assert!(!f1.windows(3).any(|w| w == b"one"));
        // Out of order fails; in order passes; a replay fails; so does a
        // flipped bit.
        let mut l_in_copy = FrameCipher::new(&l.dialler_to_listener).unwrap();
        assert!(l_in_copy.open(&mut f2.clone()).is_err());
        assert_eq!(l_in.open(&mut f1.clone()).unwrap(), b"one");
        assert_eq!(l_in.open(&mut f2.clone()).unwrap(), b"two");
        assert!(l_in.open(&mut f2.clone()).is_err());
        let (mut d_out, _) = d.ciphers(true).unwrap();
        let mut tampered = seal(&mut d_out, b"one");
        tampered[0] ^= 1;
        let (_, mut l_in) = l.ciphers(false).unwrap();
        assert!(matches!(
            l_in.open(&mut tampered),
            Err(super::super::cipher::CipherError::BadFrame(0))
        ));
        // A key the other side's cipher does not share opens nothing.
        let (_, mut bad_in) = bad_l.ciphers(false).unwrap();
        assert!(bad_in.open(&mut f1.clone()).is_err());
        assert!(Psk::new(b"short".to_vec()).is_err());
    }

    #[test]
    fn a_share_that_is_not_a_curve_point_is_refused_by_name() {
        let k = Psk::new(vec![7; 32]).unwrap();
        let hello = Hello {
            node_id: "a".into(),
            spake: vec![0xff; 33],
        };
        let e = answer(&k, "b", &hello).err().unwrap().to_string();
        assert!(e.contains("malformed"), "{e}");
        // A reflected share (the listener's own side) is refused too.
        let (dialler, hello) = DiallerExchange::start(&k, "a");
        let reflected = Reply {
            node_id: "b".into(),
            spake: hello.spake.clone(),
        };
        assert!(dialler.finish(&reflected).is_err());
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
