//! The `db` grant: `db = {}` grants snapshots, integrity checks, info,
//! checkpoints, freeze/thaw and durable confirmations; the switches add
//! installing a copy, change capture and a shared file.

use serde::{Deserialize, Serialize};

use crate::wit::strategy::standby::plugin::types::Error as WitError;

/// Switches of the `db` grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbGrant {
    /// May replace the live database with a verified copy (standby side).
    #[serde(default)]
    pub install: bool,
    /// May turn on change capture and read, apply and prune changes.
    #[serde(default)]
    pub capture: bool,
    /// May attach and detach a shared database file.
    #[serde(default)]
    pub attach: bool,
    /// The tables change capture covers (default: every table but the
    /// change log's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
}

/// What a `db` call needs beyond the grant itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbSwitch {
    /// `install = true`.
    Install,
    /// `capture = true`.
    Capture,
    /// `attach = true`.
    Attach,
}

impl DbSwitch {
    fn name(self) -> &'static str {
        match self {
            DbSwitch::Install => "install",
            DbSwitch::Capture => "capture",
            DbSwitch::Attach => "attach",
        }
    }
}

/// Whether the profile grants `db` at all.
pub(crate) fn granted(grant: &Option<DbGrant>) -> bool {
    grant.is_some()
}

/// The call-time check: `plugin` holds the `db` grant, and `switch` in it
/// when the call needs one.
pub(crate) fn check(
    grant: Option<&DbGrant>,
    switch: Option<DbSwitch>,
    plugin: &str,
) -> Result<(), WitError> {
    let grant = grant
        .ok_or_else(|| WitError::AccessDenied(format!("plugin {plugin} has no `db` grant")))?;
    let allowed = match switch {
        None => true,
        Some(DbSwitch::Install) => grant.install,
        Some(DbSwitch::Capture) => grant.capture,
        Some(DbSwitch::Attach) => grant.attach,
    };
    if allowed {
        Ok(())
    } else {
        Err(WitError::AccessDenied(format!(
            "plugin {plugin} needs `{}` = true in its `db` grant",
            switch.map(DbSwitch::name).unwrap_or_default()
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_checked_per_call() {
        assert!(matches!(
            check(None, None, "p"),
            Err(WitError::AccessDenied(m)) if m.contains("no `db` grant")
        ));
        let plain = DbGrant::default();
        assert!(check(Some(&plain), None, "p").is_ok());
        assert!(matches!(
            check(Some(&plain), Some(DbSwitch::Install), "p"),
            Err(WitError::AccessDenied(m)) if m.contains("`install` = true")
        ));
        let install = DbGrant {
            install: true,
            ..DbGrant::default()
        };
        assert!(check(Some(&install), Some(DbSwitch::Install), "p").is_ok());
        assert!(check(Some(&install), Some(DbSwitch::Capture), "p").is_err());
        assert!(granted(&Some(plain)) && !granted(&None));
        let parsed: DbGrant = toml::from_str("install = true").unwrap();
        assert_eq!(parsed, install);
        assert!(toml::from_str::<DbGrant>("instal = true").is_err());
    }
}
