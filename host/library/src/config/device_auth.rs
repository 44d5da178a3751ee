//! The `[devices.auth]` table: how devices prove who they are.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, LoadedProfile};

/// Whether devices must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every device proves its key; a device without a valid credential is
    /// refused.
    #[default]
    Required,
    /// As `required` for enrolled devices; devices never enrolled are also
    /// admitted without a credential until `migrate_until` (each such
    /// connection is logged), so an existing fleet keeps working while it is
    /// enrolled.
    Migrate,
    /// No device authenticates. Only when every device listener of every
    /// site is on loopback.
    Off,
}

/// The `[devices.auth]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceAuthSection {
    /// `required` (default), `migrate` or `off`.
    pub mode: AuthMode,
    /// The enrolment key every device key derives from (base64 of at least
    /// 32 bytes, owner-only; `standby devices enroll` makes it when it is
    /// missing), relative to the profile's folder. The same file at both
    /// sites.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The register of issued credentials (`standby devices enroll`,
    /// `revoke`), relative to the profile's folder. The same file at both
    /// sites; a running node reads it again within a second of a change.
    pub register: PathBuf,
    /// Last day (UTC, `YYYY-MM-DD`) devices without a credential are
    /// admitted in `migrate` mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrate_until: Option<String>,
    /// `standby status` lists credentials expiring within this many days.
    pub expiry_warning_days: u32,
}

impl Default for DeviceAuthSection {
    fn default() -> Self {
        Self {
            mode: AuthMode::Required,
            key_file: None,
            register: PathBuf::from("enrolled-devices.json"),
            migrate_until: None,
            expiry_warning_days: 30,
        }
    }
}

/// The first millisecond after the day `date` (`YYYY-MM-DD`, UTC) ends.
pub(crate) fn end_of_day_ms(date: &str) -> Option<u64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(date.trim(), &format).ok()?;
    let next = day.next_day()?.midnight().assume_utc();
    u64::try_from(next.unix_timestamp()).ok().map(|s| s * 1_000)
}

impl LoadedProfile {
    /// The enrolment key's path, when one is set.
    pub fn device_key_file(&self) -> Option<PathBuf> {
        let a = &self.profile.devices.auth;
        a.key_file.as_ref().map(|k| self.base_dir.join(k))
    }

    /// The register's path.
    pub fn device_register(&self) -> PathBuf {
        self.base_dir.join(&self.profile.devices.auth.register)
    }

    pub(super) fn validate_device_auth(&self) -> Result<(), ConfigError> {
        let a = &self.profile.devices.auth;
        let takes_devices = self.profile.sites.values().any(|s| s.gateway.is_some());
        match a.mode {
            AuthMode::Required | AuthMode::Migrate if a.key_file.is_none() && takes_devices => {
                return Err(self.invalid_key(
                    "devices.auth.key_file",
                    "devices authenticate by default: name the enrolment key (e.g. key_file = \"device-enrolment.key\"; `standby devices enroll` creates it), or set devices.auth.mode = \"off\" (loopback listeners only)",
                ));
            }
            AuthMode::Migrate => match &a.migrate_until {
                None => {
                    return Err(self.invalid_key(
                        "devices.auth.migrate_until",
                        "migrate mode needs the last day devices without a credential are admitted (YYYY-MM-DD)",
                    ))
                }
                Some(d) if end_of_day_ms(d).is_none() => {
                    return Err(self.invalid_key(
                        "devices.auth.migrate_until",
                        format!("`{d}` is not a date (YYYY-MM-DD)"),
                    ))
                }
                Some(_) => {}
            },
            AuthMode::Off => {
                for (name, site) in &self.profile.sites {
                    let Some(g) = &site.gateway else { continue };
                    for addr in [g.listen, g.tls_listen].into_iter().flatten() {
                        if !addr.ip().is_loopback() {
                            return Err(self.invalid_key(
                                "devices.auth.mode",
                                format!("\"off\" is for loopback only, and site `{name}` takes devices on {addr}: enrol the devices (`standby devices enroll`), or use \"migrate\" for a stated period"),
                            ));
                        }
                    }
                }
            }
            AuthMode::Required => {}
        }
        if a.expiry_warning_days == 0 {
            return Err(self.invalid_key("devices.auth.expiry_warning_days", "must be above 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn migration_dates_end_at_the_end_of_their_day() {
        assert_eq!(end_of_day_ms("1970-01-01"), Some(86_400_000));
        assert_eq!(end_of_day_ms("2027-03-31"), Some(1_806_537_600_000));
        assert_eq!(end_of_day_ms("2027-02-30"), None);
        assert_eq!(end_of_day_ms("tomorrow"), None);
    }
}
