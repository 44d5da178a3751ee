//! Device enrolment: the enrolment key every device key derives from, and
//! the register of the credentials issued (device, generation, expiry,
//! revocation).
//!
//! A device's key is HMAC-SHA256 of the enrolment key over the device id and
//! the key's generation, so a server holds one secret for the whole fleet
//! (kept like the cluster key, owner-only, at both sites) and derives each
//! device's key when it connects. Whether a key is accepted is the register's
//! business: a credential is valid while it is enrolled, not revoked and not
//! expired. The register holds no secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ring::hmac;
use serde::{Deserialize, Serialize};
use standby_device::auth::{Credential, KEY_LEN};

use crate::secret_file::{read_key, write_secret, SecretFileError};

/// The shortest enrolment key accepted, bytes.
pub const MIN_KEY_LEN: usize = 32;

/// An enrolment problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrolmentError {
    /// The enrolment key could not be read.
    #[error("device enrolment key: {0}")]
    Key(#[from] SecretFileError),
    /// The enrolment key is too short.
    #[error("device enrolment key {}: {len} bytes; at least {MIN_KEY_LEN} are needed (`standby keygen FILE` makes one)", path.display())]
    ShortKey {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The register is not a register.
    #[error("device register {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: serde_json::Error,
    },
    /// A list of device ids did not parse.
    #[error("device ids `{0}`: expected ids and ranges such as `5` or `1-100,205`")]
    BadIds(String),
}

/// The secret every device key derives from.
pub struct EnrolmentKey(hmac::Key);

impl std::fmt::Debug for EnrolmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrolmentKey(..)")
    }
}

impl EnrolmentKey {
    /// Read the key (base64, owner-only) at `path`.
    pub fn load(path: &Path) -> Result<Self, EnrolmentError> {
        let bytes = read_key(path)?;
        if bytes.len() < MIN_KEY_LEN {
            return Err(EnrolmentError::ShortKey {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// Write a fresh key to `path` (0600; an existing file is kept and an
    /// error returned).
    pub fn create(path: &Path) -> Result<Self, EnrolmentError> {
        let bytes: [u8; 32] = rand::random();
        let text = format!("{}\n", data_encoding::BASE64.encode(&bytes));
        write_secret(path, &text, false).map_err(|source| EnrolmentError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// The key of generation `generation` of device `device_id`.
    pub fn device_key(&self, device_id: u32, generation: u32) -> [u8; KEY_LEN] {
        let mut c = hmac::Context::with_key(&self.0);
        c.update(b"standby device key v1");
        c.update(&device_id.to_be_bytes());
        c.update(&generation.to_be_bytes());
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(c.sign().as_ref());
        out
    }

    /// The credential a device installs for `entry`.
    pub fn credential(&self, entry: &Enrolled) -> Credential {
        Credential::new(
            entry.device_id,
            entry.generation,
            self.device_key(entry.device_id, entry.generation),
            entry.expires_at_ms,
        )
    }
}

/// One issued credential, as the register keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrolled {
    /// The device.
    pub device_id: u32,
    /// The key's generation (1, then one more at each rotation).
    pub generation: u32,
    /// When it was issued (Unix ms).
    pub issued_at_ms: u64,
    /// When servers stop accepting it (Unix ms).
    pub expires_at_ms: u64,
    /// When it was revoked (Unix ms), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

/// Why a credential is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The device holds no credential.
    #[error("device {0} is not enrolled")]
    NotEnrolled(u32),
    /// The device holds credentials, not this generation.
    #[error("device {device_id} has no credential of generation {generation}")]
    UnknownGeneration {
        /// The device.
        device_id: u32,
        /// The generation presented.
        generation: u32,
    },
    /// The credential was revoked.
    #[error("the credential of device {device_id} (generation {generation}) was revoked")]
    Revoked {
        /// The device.
        device_id: u32,
        /// Its generation.
        generation: u32,
    },
    /// The credential expired.
    #[error("the credential of device {device_id} (generation {generation}) expired")]
    Expired {
        /// The device.
        device_id: u32,
        /// Its generation.
        generation: u32,
    },
}

/// The register file's layout.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterFile {
    version: u32,
    credentials: Vec<Enrolled>,
}

/// Every credential issued, by device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Register {
    by_device: BTreeMap<u32, Vec<Enrolled>>,
}

/// A register's state, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterSummary {
    /// Devices holding at least one valid credential.
    pub devices: usize,
    /// Valid credentials.
    pub valid: usize,
    /// Revoked credentials.
    pub revoked: usize,
    /// Expired credentials.
    pub expired: usize,
    /// Valid credentials that expire within the warning period, soonest first.
    pub expiring: Vec<Enrolled>,
}

impl Register {
    /// Read the register at `path`; a missing file is an empty register.
    pub fn load(path: &Path) -> Result<Self, EnrolmentError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(EnrolmentError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let file: RegisterFile =
            serde_json::from_slice(&bytes).map_err(|source| EnrolmentError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let mut register = Self::default();
        for e in file.credentials {
            register.by_device.entry(e.device_id).or_default().push(e);
        }
        Ok(register)
    }

    /// Write the register to `path` (beside it first, synced, then renamed
    /// over it: a node reading it sees the old register or the new one).
    pub fn save(&self, path: &Path) -> Result<(), EnrolmentError> {
        use std::io::Write;
        let io = |source| EnrolmentError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = RegisterFile {
            version: 1,
            credentials: self.entries().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Every credential, by device then generation.
    pub fn entries(&self) -> impl Iterator<Item = &Enrolled> {
        self.by_device.values().flatten()
    }

    /// Whether device `device_id` holds any credential (valid or not): such
    /// a device must authenticate, even during a migration.
    pub fn is_enrolled(&self, device_id: u32) -> bool {
        self.by_device.contains_key(&device_id)
    }

    /// Whether generation `generation` of device `device_id` is accepted at
    /// `now_ms`.
    pub fn check(&self, device_id: u32, generation: u32, now_ms: u64) -> Result<(), Invalid> {
        let entries = self
            .by_device
            .get(&device_id)
            .ok_or(Invalid::NotEnrolled(device_id))?;
        let e = entries.iter().find(|e| e.generation == generation).ok_or(
            Invalid::UnknownGeneration {
                device_id,
                generation,
            },
        )?;
        if e.revoked_at_ms.is_some() {
            return Err(Invalid::Revoked {
                device_id,
                generation,
            });
        }
        if now_ms >= e.expires_at_ms {
            return Err(Invalid::Expired {
                device_id,
                generation,
            });
        }
        Ok(())
    }

    /// Issue the next generation of device `device_id`'s credential, valid
    /// for `valid_for` from `now_ms`. Earlier generations stay valid until
    /// they expire or are revoked (a device moves to the new key when it is
    /// installed).
    pub fn enroll(&mut self, device_id: u32, now_ms: u64, valid_for: Duration) -> Enrolled {
        let entries = self.by_device.entry(device_id).or_default();
        let generation = entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
        let e = Enrolled {
            device_id,
            generation,
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(valid_for.as_millis() as u64),
            revoked_at_ms: None,
        };
        entries.push(e.clone());
        e
    }

    /// Revoke device `device_id`'s credentials (only `generation`, when
    /// given) not revoked yet; returns how many were.
    pub fn revoke(&mut self, device_id: u32, generation: Option<u32>, now_ms: u64) -> usize {
        let Some(entries) = self.by_device.get_mut(&device_id) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.iter_mut() {
            if generation.is_none_or(|g| g == e.generation) && e.revoked_at_ms.is_none() {
                e.revoked_at_ms = Some(now_ms);
                n += 1;
            }
        }
        n
    }

    /// Counts, and the valid credentials expiring within `warn_within` of `now_ms`.
    pub fn summary(&self, now_ms: u64, warn_within: Duration) -> RegisterSummary {
        let horizon = now_ms.saturating_add(warn_within.as_millis() as u64);
        let mut s = RegisterSummary::default();
        for entries in self.by_device.values() {
            let mut any_valid = false;
            for e in entries {
                if e.revoked_at_ms.is_some() {
                    s.revoked += 1;
                } else if now_ms >= e.expires_at_ms {
                    s.expired += 1;
                } else {
                    s.valid += 1;
                    any_valid = true;
                    if e.expires_at_ms <= horizon {
                        s.expiring.push(e.clone());
                    }
                }
            }
            s.devices += usize::from(any_valid);
        }
        s.expiring.sort_by_key(|e| (e.expires_at_ms, e.device_id));
        s
    }
}

/// Device authentication as `standby status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceAuthStatus {
    /// `required`, `migrate` or `off`.
    pub mode: &'static str,
    /// The end of the migration period (Unix ms), in `migrate` mode.
    pub migrate_until_ms: Option<u64>,
    /// The register: counts and the credentials expiring soon.
    pub credentials: RegisterSummary,
    /// Devices connected now without a credential.
    pub unauthenticated_links: usize,
    /// Handshakes refused since start for want of a valid credential or proof.
    pub refused: u64,
}

/// Parse device ids and ranges: `5`, `1-100`, `1-100,205`.
pub fn parse_device_ids(text: &str) -> Result<Vec<u32>, EnrolmentError> {
    let bad = || EnrolmentError::BadIds(text.to_string());
    let mut ids = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse(), b.trim().parse()),
            None => (part.parse(), part.parse()),
        };
        let (first, last): (u32, u32) = (first.map_err(|_| bad())?, last.map_err(|_| bad())?);
        if first > last || last - first >= 1_000_000 {
            return Err(bad());
        }
        ids.extend(first..=last);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_credential_is_valid_until_it_is_revoked_or_expires() {
        let mut r = Register::default();
        let one = r.enroll(5, 1_000, DAY);
        assert_eq!(one.generation, 1);
        assert_eq!(r.check(5, 1, 2_000), Ok(()));
        assert_eq!(r.check(6, 1, 2_000), Err(Invalid::NotEnrolled(6)));
        assert!(matches!(
            r.check(5, 2, 2_000),
            Err(Invalid::UnknownGeneration { .. })
        ));
        assert!(matches!(
            r.check(5, 1, 1_000 + DAY.as_millis() as u64),
            Err(Invalid::Expired { .. })
        ));
        // Rotation: generation 2; generation 1 stays valid until revoked.
        let two = r.enroll(5, 3_000, DAY);
        assert_eq!(two.generation, 2);
        assert_eq!(r.check(5, 1, 4_000), Ok(()));
        assert_eq!(r.revoke(5, Some(1), 5_000), 1);
        assert!(matches!(r.check(5, 1, 6_000), Err(Invalid::Revoked { .. })));
        assert_eq!(r.check(5, 2, 6_000), Ok(()));
        assert_eq!(r.revoke(5, None, 7_000), 1);
        assert!(r.is_enrolled(5));
        let s = r.summary(8_000, DAY);
        assert_eq!((s.devices, s.valid, s.revoked, s.expired), (0, 0, 2, 0));
    }

    #[test]
    fn the_register_survives_a_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enrolled-devices.json");
        assert_eq!(Register::load(&path).unwrap(), Register::default());
        let mut r = Register::default();
        for id in [3, 1, 2] {
            r.enroll(id, 1_000, DAY);
        }
        r.revoke(2, None, 2_000);
        r.save(&path).unwrap();
        assert_eq!(Register::load(&path).unwrap(), r);
        std::fs::write(&path, b"{not json").unwrap();
        let e = Register::load(&path).unwrap_err();
        assert!(e.to_string().contains("enrolled-devices.json"), "{e}");
    }

    #[test]
    fn expiring_credentials_are_listed_soonest_first() {
        let mut r = Register::default();
        r.enroll(1, 0, DAY * 365);
        r.enroll(2, 0, DAY * 10);
        r.enroll(3, 0, DAY * 5);
        let s = r.summary(0, DAY * 30);
        let ids: Vec<u32> = s.expiring.iter().map(|e| e.device_id).collect();
        assert_eq!(ids, [3, 2]);
        assert_eq!(s.devices, 3);
    }

    #[test]
    fn device_keys_differ_by_device_generation_and_enrolment_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = EnrolmentKey::create(&dir.path().join("a.key")).unwrap();
        let b = EnrolmentKey::create(&dir.path().join("b.key")).unwrap();
        assert_ne!(a.device_key(1, 1), a.device_key(2, 1));
        assert_ne!(a.device_key(1, 1), a.device_key(1, 2));
        assert_ne!(a.device_key(1, 1), b.device_key(1, 1));
        let again = EnrolmentKey::load(&dir.path().join("a.key")).unwrap();
        assert_eq!(a.device_key(7, 3), again.device_key(7, 3));
        // An existing key is never overwritten.
        assert!(EnrolmentKey::create(&dir.path().join("a.key")).is_err());
    }

    #[test]
    fn device_id_lists_parse() {
        assert_eq!(parse_device_ids("5").unwrap(), [5]);
        assert_eq!(parse_device_ids("3-5,1, 4").unwrap(), [1, 3, 4, 5]);
        for bad in ["", "a", "5-3", "1-", "0-4000000"] {
            assert!(parse_device_ids(bad).is_err(), "{bad}");
        }
    }
}
