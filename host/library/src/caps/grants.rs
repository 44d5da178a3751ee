//! Grants after resolution: directories opened, commands parsed. Built from a
//! profile by [`crate::config`], or directly by an embedding program.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

use crate::plugin::Capability;

/// Switches of the `db` grant. `db = {}` grants snapshots, integrity checks,
/// info, checkpoints, freeze/thaw and durable confirmations.
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
}

/// The `peer` grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerGrant {
    /// Name of a granted files root where files received from the peer land.
    pub inbox: String,
}

/// One command of the `exec` grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecGrant {
    /// Program and fixed arguments, e.g. `["/sbin/fsfreeze", "-f", "/mnt"]`.
    pub command: Vec<String>,
    /// Whether the plugin may append arguments of its own.
    #[serde(default)]
    pub extra_args: bool,
}

/// One interface and address pair of the `net` grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetAddress {
    /// Network interface, e.g. `eth0`.
    pub interface: String,
    /// Address in CIDR form, e.g. `192.168.1.10/24`.
    pub address: String,
}

/// The `net` grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetGrant {
    /// The pairs the plugin may add, remove and announce.
    pub addresses: Vec<NetAddress>,
}

/// One DNS server of the `dns` grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsServerGrant {
    /// Address of the primary server that takes RFC 2136 updates.
    pub server: SocketAddr,
    /// TSIG key name.
    pub key_name: String,
    /// File holding the TSIG secret (a BIND `key` clause or the base64 secret alone).
    pub key_file: PathBuf,
    /// TSIG algorithm.
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// Zones the plugin may change.
    pub zones: Vec<String>,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_string()
}

/// A granted directory, opened once; every access goes through the handle.
#[derive(Debug, Clone)]
pub struct Root {
    /// Where it is (canonical), for messages and for handing verified files to SQLite.
    pub path: PathBuf,
    /// The open directory.
    pub dir: Arc<Dir>,
}

impl Root {
    /// Open (creating if missing) the directory at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let path = path.canonicalize()?;
        let dir = Dir::open_ambient_dir(&path, ambient_authority())?;
        Ok(Self {
            path,
            dir: Arc::new(dir),
        })
    }
}

/// Everything one plugin instance may do beyond `log` and `clock`.
#[derive(Debug, Clone, Default)]
pub struct ResolvedGrants {
    /// The `db` grant.
    pub db: Option<DbGrant>,
    /// Granted roots by name (the `files` grant).
    pub roots: BTreeMap<String, Root>,
    /// The `peer` grant.
    pub peer: Option<PeerGrant>,
    /// Granted commands by name.
    pub exec: BTreeMap<String, ExecGrant>,
    /// The `net` grant.
    pub net: Option<NetGrant>,
    /// Granted DNS servers by name.
    pub dns: BTreeMap<String, DnsServerGrant>,
}

impl ResolvedGrants {
    /// Whether the capability is granted at all.
    pub fn allows(&self, cap: Capability) -> bool {
        match cap {
            Capability::Log | Capability::Clock => true,
            Capability::Db => self.db.is_some(),
            Capability::Files => !self.roots.is_empty(),
            Capability::Peer => self.peer.is_some(),
            Capability::Exec => !self.exec.is_empty(),
            Capability::Net => self.net.is_some(),
            Capability::Dns => !self.dns.is_empty(),
        }
    }
}
