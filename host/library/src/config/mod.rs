//! Profiles: one TOML file describes both sites, the store, the plugin
//! runtime, the strategy pipeline and the failover actions with their grants.
//!
//! Layers, lowest first: built-in defaults < the profile file < `STANDBY_*`
//! environment variables (`STANDBY_STORE__JOURNAL=rollback-exclusive`, `__`
//! separating levels) < `--set key=value` flags. Unknown keys are errors,
//! except that a `STANDBY_*` variable whose first level names no profile
//! section (`STANDBY_LOG`, or a test harness's own switch) is not a profile
//! key and is left alone.

mod cluster;
mod device_auth;
mod profile;
mod settings;

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;

pub use crate::caps::{GrantCheck, GrantsConfig};
pub use cluster::{ClusterSection, StepTimeout};
pub(crate) use device_auth::end_of_day_ms;
pub use device_auth::{AuthMode, DeviceAuthSection};
pub use profile::{
    AcceptKeyword, AcceptSetting, DevicesSection, DurableAck, GatewaySection, PluginEntry, Profile,
    Site, SiteRole, StoreSection, PROFILE_VERSION,
};
pub use settings::{flatten_settings, SettingError};

/// The profile's top-level sections: a `STANDBY_*` environment variable is
/// a profile key only when its first level is one of these. Others (logging,
/// what a fencing command is given, any other tool's switch) are not read.
const PROFILE_SECTIONS: &[&str] = &[
    "version",
    "name",
    "description",
    "sites",
    "store",
    "plugins",
    "devices",
    "strategy",
    "failover",
    "cluster",
];

/// Whether `key` (the part after `STANDBY_`, levels split by `__`, as figment
/// lowers it to `a.b.c`) names a key inside the profile.
fn is_profile_key(key: &str) -> bool {
    let first = key.split('.').next().unwrap_or_default();
    PROFILE_SECTIONS
        .iter()
        .any(|s| first.eq_ignore_ascii_case(s))
}

/// What is wrong with a profile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The profile file does not exist or cannot be read.
    #[error("{file}: cannot read the profile: {source}")]
    Unreadable {
        /// The profile file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key is unknown, has the wrong type, or is missing.
    #[error("{0}")]
    Parse(String),
    /// A value is well-typed but not acceptable.
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        /// The profile file.
        file: PathBuf,
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A plugin failed its checks (missing file, wrong world, ungranted capability).
    #[error("{file}: `{key}`: {error}")]
    Plugin {
        /// The profile file.
        file: PathBuf,
        /// Dotted key of the plugin entry.
        key: String,
        /// The loader's error.
        error: Box<crate::plugin::LoadError>,
    },
}

/// A profile with the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    /// The merged, validated profile.
    pub profile: Profile,
    /// The profile file.
    pub file: PathBuf,
    /// Its directory: relative paths in the profile are relative to it.
    pub base_dir: PathBuf,
}

/// A `--set` flag that is not `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    /// No `=` in it.
    #[error("`{0}` is not key=value")]
    NotKeyValue(String),
    /// Nothing before the `=`.
    #[error("`{0}` has an empty key")]
    EmptyKey(String),
}

/// Parse a `--set key=value` flag; the value is read as TOML when it parses,
/// else as a string.
pub fn parse_override(text: &str) -> Result<(String, toml::Value), OverrideError> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| OverrideError::NotKeyValue(text.to_string()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(OverrideError::EmptyKey(text.to_string()));
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key.to_string(), parsed))
}

/// Load a profile: defaults < file < environment < overrides, then validate.
pub fn load(
    file: &Path,
    overrides: &[(String, toml::Value)],
) -> Result<LoadedProfile, ConfigError> {
    if let Err(source) = std::fs::metadata(file) {
        return Err(ConfigError::Unreadable {
            file: file.to_path_buf(),
            source,
        });
    }
    let mut figment = Figment::new().merge(Toml::file_exact(file)).merge(
        Env::prefixed("STANDBY_")
            .split("__")
            .filter(|k| is_profile_key(k.as_str())),
    );
    for (key, value) in overrides {
        figment = figment.merge(figment::providers::Serialized::global(key, value));
    }
    let profile: Profile = figment.extract().map_err(|e| parse_error(file, e))?;
    let base_dir = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let base_dir = base_dir.canonicalize().unwrap_or(base_dir);
    let loaded = LoadedProfile {
        profile,
        file: file.to_path_buf(),
        base_dir,
    };
    loaded.validate()?;
    Ok(loaded)
}

/// `strategy.0.grants` -> `strategy[0].grants`, the form the other errors use.
fn dotted_key(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.chars().all(|c| c.is_ascii_digit()) && !key.is_empty() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

/// Render figment's errors as `origin: `key`: what`, one per line, where the
/// origin is the file, the environment variable, or the `--set` flag.
fn parse_error(file: &Path, err: figment::Error) -> ConfigError {
    let mut lines = Vec::new();
    for e in err {
        let key = dotted_key(&e.path);
        let origin = match &e.metadata {
            Some(m) if m.name.contains("environment") => {
                format!(
                    "environment variable STANDBY_{}",
                    e.path.join("__").to_uppercase()
                )
            }
            Some(m) if matches!(m.source, Some(figment::Source::Code(_))) => {
                "--set flag".to_string()
            }
            _ => file.display().to_string(),
        };
        let what = e.kind.to_string();
        if key.is_empty() {
            lines.push(format!("{origin}: {what}"));
        } else {
            lines.push(format!("{origin}: `{key}`: {what}"));
        }
    }
    ConfigError::Parse(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::is_profile_key;

    #[test]
    fn only_keys_under_a_profile_section_are_profile_keys() {
        for key in ["store.journal", "STRATEGY", "cluster.lease_ms", "version"] {
            assert!(is_profile_key(key), "{key}");
        }
        for key in [
            "log",
            "log_format",
            "epoch",
            "node",
            "peer",
            "require_wasm_toolchain",
        ] {
            assert!(!is_profile_key(key), "{key}");
        }
    }
}
