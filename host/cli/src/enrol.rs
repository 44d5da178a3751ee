//! `standby devices enroll|revoke|credentials`: issue device credentials,
//! revoke them, list them. They work on the profile's files (the enrolment
//! key and the register), not through a running node: each node reads the
//! register again within a second of a change.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use standby_device::auth::{CredentialFile, CredentialRecord};
use standby_host::config::{self, LoadedProfile};
use standby_host::enrolment::{parse_device_ids, EnrolmentKey, Register};
use standby_host::secret_file::write_secret;
use standby_host::store::unix_ms;

fn key_file(loaded: &LoadedProfile) -> Result<std::path::PathBuf> {
    loaded.device_key_file().with_context(|| {
        format!(
            "{} names no devices.auth.key_file (the enrolment key device keys derive from)",
            loaded.file.display()
        )
    })
}

/// A UTC date for people.
fn date(ms: u64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    i64::try_from(ms / 1_000)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&f).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// `standby devices enroll PROFILE --device IDS --out FILE [--days N] [--force]`.
pub(crate) fn enroll(profile: &Path, ids: &str, out: &Path, days: u32, force: bool) -> Result<()> {
    let loaded = config::load(profile, &[])?;
    let ids = parse_device_ids(ids)?;
    if days == 0 {
        bail!("--days must be at least 1");
    }
    let key_path = key_file(&loaded)?;
    let key = if key_path.exists() {
        EnrolmentKey::load(&key_path)?
    } else {
        let key = EnrolmentKey::create(&key_path)?;
        eprintln!(
            "created the device enrolment key {} (owner-only); every node of the profile needs the same file",
            key_path.display()
        );
        key
    };
    let register_path = loaded.device_register();
    let mut register = Register::load(&register_path)?;
    let now = unix_ms();
    let valid_for = Duration::from_secs(u64::from(days) * 86_400);
    let mut file = CredentialFile::default();
    for id in &ids {
        let entry = register.enroll(*id, now, valid_for);
        file.credentials
            .push(CredentialRecord::from(&key.credential(&entry)));
    }
    let json = serde_json::to_string_pretty(&file)?;
    write_secret(out, &format!("{json}\n"), force).with_context(|| {
        format!(
            "writing the credentials to {}{}",
            out.display(),
            if out.exists() && !force {
                " (it exists; --force replaces it)"
            } else {
                ""
            }
        )
    })?;
    register.save(&register_path)?;
    let generations: std::collections::BTreeSet<u32> =
        file.credentials.iter().map(|c| c.generation).collect();
    eprintln!(
        "enrolled {} device(s), key generation(s) {:?}, valid until {}: credentials in {} (owner-only; install each device's on it). Earlier generations stay valid until they expire or `standby devices revoke --generation N`. Running nodes read {} within a second; copy it to the other site if it is not shared.",
        ids.len(),
        generations,
        date(now + valid_for.as_millis() as u64),
        out.display(),
        register_path.display()
    );
    Ok(())
}

/// `standby devices revoke PROFILE --device IDS [--generation N]`.
pub(crate) fn revoke(profile: &Path, ids: &str, generation: Option<u32>) -> Result<()> {
    let loaded = config::load(profile, &[])?;
    let ids = parse_device_ids(ids)?;
    let register_path = loaded.device_register();
    let mut register = Register::load(&register_path)?;
    let now = unix_ms();
    let revoked: usize = ids
        .iter()
        .map(|id| register.revoke(*id, generation, now))
        .sum();
    if revoked == 0 {
        bail!(
            "nothing to revoke: no valid credential of device(s) {ids:?}{} in {}",
            generation.map_or(String::new(), |g| format!(" of generation {g}")),
            register_path.display()
        );
    }
    register.save(&register_path)?;
    eprintln!(
        "revoked {revoked} credential(s); running nodes refuse them and close their links within a second (copy {} to the other site if it is not shared)",
        register_path.display()
    );
    Ok(())
}

/// `standby devices credentials PROFILE [--json]`.
pub(crate) fn list(profile: &Path, json: bool) -> Result<()> {
    let loaded = config::load(profile, &[])?;
    let register = Register::load(&loaded.device_register())?;
    let now = unix_ms();
    let warn =
        Duration::from_secs(u64::from(loaded.profile.devices.auth.expiry_warning_days) * 86_400);
    if json {
        let entries: Vec<_> = register.entries().collect();
        let summary = register.summary(now, warn);
        println!(
            "{}",
            serde_json::json!({ "credentials": entries, "summary": summary })
        );
        return Ok(());
    }
    let expiring = register.summary(now, warn).expiring;
    for e in register.entries() {
        let state = match (e.revoked_at_ms, now >= e.expires_at_ms) {
            (Some(at), _) => format!("revoked {}", date(at)),
            (None, true) => "expired".into(),
            (None, false) if expiring.contains(e) => "valid, expiring soon".into(),
            (None, false) => "valid".into(),
        };
        println!(
            "device {:>6}  generation {:>3}  issued {}  expires {}  {state}",
            e.device_id,
            e.generation,
            date(e.issued_at_ms),
            date(e.expires_at_ms)
        );
    }
    Ok(())
}
