//! The `grants` table of a plugin entry, and its resolution into open handles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::caps::{DbGrant, DnsServerGrant, ExecGrant, NetGrant, PeerGrant, ResolvedGrants, Root};
use crate::plugin::Capability;

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
    pub files: BTreeMap<String, PathBuf>,
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

impl GrantCheck for ResolvedGrants {
    fn allows(&self, cap: Capability) -> bool {
        ResolvedGrants::allows(self, cap)
    }
}

impl GrantCheck for GrantsConfig {
    fn allows(&self, cap: Capability) -> bool {
        match cap {
            Capability::Log | Capability::Clock => true,
            Capability::Db => self.db.is_some(),
            Capability::Files => !self.files.is_empty(),
            Capability::Peer => self.peer.is_some(),
            Capability::Exec => !self.exec.is_empty(),
            Capability::Net => self.net.is_some(),
            Capability::Dns => !self.dns.is_empty(),
        }
    }
}

impl GrantsConfig {
    /// Check references between grants; errors are (key, message).
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        for (name, path) in &self.files {
            if name.is_empty() || name.contains('/') {
                return Err((
                    format!("files.{name}"),
                    "root names must be non-empty and contain no `/`".into(),
                ));
            }
            if path.as_os_str().is_empty() {
                return Err((format!("files.{name}"), "needs a directory".into()));
            }
        }
        if let Some(peer) = &self.peer {
            if !self.files.contains_key(&peer.inbox) {
                return Err((
                    "peer.inbox".into(),
                    format!("names root `{}`, which is not in `files`", peer.inbox),
                ));
            }
        }
        for (name, cmd) in &self.exec {
            if cmd.command.is_empty() {
                return Err((format!("exec.{name}.command"), "must name a program".into()));
            }
        }
        for (name, dns) in &self.dns {
            if dns.zones.is_empty() {
                return Err((
                    format!("dns.{name}.zones"),
                    "must list at least one zone".into(),
                ));
            }
        }
        Ok(())
    }

    /// Open the granted directories (creating them if missing) and build the
    /// grants a plugin instance runs with.
    /// Files roots are relative to `data_dir`; DNS key files to `base_dir`
    /// (the profile's folder).
    pub fn resolve(
        &self,
        data_dir: &Path,
        base_dir: &Path,
    ) -> Result<ResolvedGrants, (String, String)> {
        let mut roots = BTreeMap::new();
        for (name, path) in &self.files {
            let full = data_dir.join(path);
            let root = Root::open(&full).map_err(|e| {
                (
                    format!("files.{name}"),
                    format!("cannot open {}: {e}", full.display()),
                )
            })?;
            roots.insert(name.clone(), root);
        }
        Ok(ResolvedGrants {
            db: self.db.clone(),
            roots,
            peer: self.peer.clone(),
            exec: self.exec.clone(),
            net: self.net.clone(),
            dns: self
                .dns
                .iter()
                .map(|(name, g)| {
                    let mut g = g.clone();
                    g.key_file = base_dir.join(&g.key_file);
                    (name.clone(), g)
                })
                .collect(),
        })
    }
}
