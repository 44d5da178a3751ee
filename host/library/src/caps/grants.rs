//! The `grants` table of a plugin entry, as the profile writes it
//! ([`GrantsConfig`]) and as a plugin instance runs with it
//! ([`ResolvedGrants`]: directories opened, key files located). Each field's
//! type, its validation, its resolution and its call-time check belong to its
//! capability's module; this table only gathers them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::capability::Capability;
use super::db::grant::{self as db, DbGrant};
use super::dns::grant::{self as dns, DnsServerGrant};
use super::exec::grant::{self as exec, ExecGrant};
use super::files::grant::{self as files, FilesGrant, Root};
use super::net::grant::{self as net, NetGrant};
use super::peer::grant::{self as peer, PeerGrant};

pub use super::grant_error::GrantError;

/// What a plugin may do, as written in the profile. Empty = nothing beyond
/// `log` and `clock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// The database (`db = {}`, or with `install`, `capture`, `attach` switches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<DbGrant>,
    /// Directories by root name. Relative paths are under the site's data directory.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: FilesGrant,
    /// The peer link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerGrant>,
    /// Commands by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exec: BTreeMap<String, ExecGrant>,
    /// Service addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetGrant>,
    /// DNS servers by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dns: BTreeMap<String, DnsServerGrant>,
}

/// Answers "is this capability granted?" for load-time checks.
pub trait GrantCheck {
    /// Whether `cap` is granted.
    fn allows(&self, cap: Capability) -> bool;
    /// The granted capabilities, for messages.
    fn granted(&self) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| self.allows(*c))
            .collect()
    }
}

impl GrantCheck for GrantsConfig {
    fn allows(&self, cap: Capability) -> bool {
        match cap {
            Capability::Log | Capability::Clock => true,
            Capability::Db => db::granted(&self.db),
            Capability::Files => files::granted(&self.files),
            Capability::Peer => peer::granted(&self.peer),
            Capability::Exec => exec::granted(&self.exec),
            Capability::Net => net::granted(&self.net),
            Capability::Dns => dns::granted(&self.dns),
        }
    }
}

impl GrantsConfig {
    /// Check each capability's grant, and the references between them.
    pub(crate) fn validate(&self) -> Result<(), GrantError> {
        files::validate(&self.files)?;
        peer::validate(&self.peer, &self.files)?;
        exec::validate(&self.exec)?;
        dns::validate(&self.dns)
    }

    /// Open the granted directories (relative ones under `data_dir`,
    /// creating missing ones), locate key files (relative ones in
    /// `base_dir`, the profile's folder), and build the grants a plugin
    /// instance runs with.
    pub fn resolve(&self, data_dir: &Path, base_dir: &Path) -> Result<ResolvedGrants, GrantError> {
        self.validate()?;
        let roots = files::resolve(&self.files, data_dir)?;
        let mut granted = self.clone();
        granted.files = roots
            .iter()
            .map(|(name, root)| (name.clone(), root.path.clone()))
            .collect();
        granted.dns = dns::resolve(&self.dns, base_dir);
        Ok(ResolvedGrants { granted, roots })
    }
}

/// Everything one plugin instance may do beyond `log` and `clock`: the
/// grants with directories opened and paths made absolute.
#[derive(Debug, Clone, Default)]
pub struct ResolvedGrants {
    /// The grants, with absolute paths.
    pub granted: GrantsConfig,
    /// The `files` roots, opened.
    pub roots: BTreeMap<String, Root>,
}

impl GrantCheck for ResolvedGrants {
    fn allows(&self, cap: Capability) -> bool {
        self.granted.allows(cap)
    }
}
