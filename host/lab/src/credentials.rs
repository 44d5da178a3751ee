//! Device credentials for tests and benchmarks, issued as `standby devices
//! enroll` issues them: the enrolment key and the register in one folder
//! (what [`crate::server::ServerSpec::auth`] names).
//!
//! Test harness: a failure here is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use standby_device::auth::Credential;
use standby_host::enrolment::{EnrolmentKey, Register};

/// The enrolment key's file name in the folder.
pub const KEY_FILE: &str = "device-enrolment.key";
/// The register's file name in the folder.
pub const REGISTER: &str = "enrolled-devices.json";

/// Issue the next generation of each device's credential, valid for
/// `valid_for` (the key is made when the folder has none).
pub fn enrol(
    dir: &Path,
    ids: impl IntoIterator<Item = u32>,
    valid_for: Duration,
) -> Vec<Credential> {
    std::fs::create_dir_all(dir).unwrap();
    let key_path = dir.join(KEY_FILE);
    let key = if key_path.exists() {
        EnrolmentKey::load(&key_path).unwrap()
    } else {
        EnrolmentKey::create(&key_path).unwrap()
    };
    let mut register = Register::load(&dir.join(REGISTER)).unwrap();
    let now = standby_host::store::unix_ms();
    let issued: Vec<Credential> = ids
        .into_iter()
        .map(|id| key.credential(&register.enroll(id, now, valid_for)))
        .collect();
    register.save(&dir.join(REGISTER)).unwrap();
    issued
}

/// A day.
pub const DAY: Duration = Duration::from_secs(86_400);
