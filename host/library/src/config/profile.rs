//! The profile's structure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cluster::ClusterSection;
use super::{ConfigError, GrantsConfig, LoadedProfile};
use crate::plugin::runtime::{PluginSource, RuntimeOptions};
use crate::store::JournalMode;

/// The profile format version this build reads.
pub const PROFILE_VERSION: u32 = 1;

/// A whole profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile format version (must be 1).
    pub version: u32,
    /// Short name, e.g. `case1-wan-copy`.
    pub name: String,
    /// What the profile is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The two sites, by name (`onsite`, `dr`, ...).
    pub sites: BTreeMap<String, Site>,
    /// The database.
    #[serde(default)]
    pub store: StoreSection,
    /// The plugin runtime.
    #[serde(default)]
    pub plugins: RuntimeOptions,
    /// The device link (both sites).
    #[serde(default)]
    pub devices: DevicesSection,
    /// The replication pipeline, in order.
    #[serde(default)]
    pub strategy: Vec<PluginEntry>,
    /// The failover actions, in order.
    #[serde(default)]
    pub failover: Vec<PluginEntry>,
    /// The two-node cluster: peer link, witness, lease, detector, fencing.
    /// Without it each site keeps the role it starts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSection>,
}

/// The role a site starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SiteRole {
    /// Serves devices and replicates.
    Active,
    /// Receives replicated data.
    #[default]
    Standby,
}

/// One site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Node id, unique within the profile.
    pub node_id: String,
    /// Where this node keeps its database, snapshots and state (relative paths
    /// are relative to the profile file).
    pub data_dir: PathBuf,
    /// The role the node starts in.
    #[serde(default)]
    pub role: SiteRole,
    /// The epoch the node presents until the failover sequence sets one.
    #[serde(default)]
    pub epoch: u64,
    /// Where this node accepts device connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySection>,
    /// Where this node accepts the peer link (the other site dials it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<std::net::SocketAddr>,
    /// An admin endpoint over TCP. Alone: read-only (`GET /status`) and on
    /// loopback only; state-changing calls (`standby promote`) go through
    /// `admin_socket`. With `admin_tls_cert`, `admin_tls_key` and
    /// `admin_token_file`: HTTPS, any address, every call for holders of
    /// the operators' token (`standby status|promote --remote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Certificate chain (PEM) of the TCP admin endpoint, relative to the
    /// profile's folder: with it (and `admin_tls_key`) `admin_listen` speaks
    /// HTTPS only. Clients trust this file (`--remote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `admin_tls_cert`; owner-only (0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls_key: Option<PathBuf>,
    /// The operators' token (base64 of at least 32 bytes, owner-only;
    /// `standby keygen FILE` makes one), relative to the profile's folder:
    /// the TCP endpoint then answers nothing without it (`401`) and every
    /// call with it. Needs `admin_tls_cert` and `admin_tls_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// The admin endpoint's Unix socket, relative to `data_dir` (default
    /// `admin/admin.sock`). Its folder is made owner-only (0700) and the
    /// socket 0600: only the node's own user (and root) can connect, and
    /// every call is logged with the caller's uid and pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<PathBuf>,
}

/// The longest path a Unix socket may have on Linux (`sun_path` less its
/// terminating zero).
const MAX_SOCKET_PATH: usize = 107;

/// The admin socket's path under a site's data directory when the profile
/// names none.
pub(crate) const DEFAULT_ADMIN_SOCKET: &str = "admin/admin.sock";

/// A site's device listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Plain TCP listener (BioStar's device port is 51212). Loopback only,
    /// unless `allow_plain_remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
    /// TLS listener (51213 by convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<std::net::SocketAddr>,
    /// Server certificate chain (PEM), for `tls_listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM), for `tls_listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Allow the plain listener on a non-loopback address.
    #[serde(default)]
    pub allow_plain_remote: bool,
}

/// Which devices may connect: `"all"` or a list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AcceptSetting {
    /// `"all"`.
    Keyword(AcceptKeyword),
    /// Only these ids.
    Ids(Vec<u32>),
}

/// The keyword form of [`AcceptSetting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptKeyword {
    /// Any device.
    All,
}

/// When the gateway tells devices their events are safe at the DR site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DurableAck {
    /// At the local commit (no replication configured).
    #[default]
    LocalCommit,
    /// When replication confirms the other site holds them.
    Replication,
}

/// The `[devices]` table: the device link on both sites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesSection {
    /// Which devices may connect.
    pub accept: AcceptSetting,
    /// Keep-alive interval announced to devices, ms.
    pub keepalive_ms: u64,
    /// A device link with no frame for this long is dropped, ms.
    pub dead_link_ms: u64,
    /// Time a new connection has to complete its handshake, ms.
    pub handshake_timeout_ms: u64,
    /// Largest packet payload accepted, bytes.
    pub max_payload: u32,
    /// Largest message (all its packets together) accepted from a device,
    /// bytes. An event batch of 256 events is about 30 KiB.
    pub max_message: usize,
    /// Largest payload of one access event, bytes: a batch holding a
    /// larger one is refused. BioStar 2 event records are 32-byte
    /// structures; the default leaves room for vendor extensions.
    pub max_event_payload: usize,
    /// Events one device may send a second, on average; a batch over it is
    /// answered "rate limited, try again in N ms" (the device waits and
    /// sends it again).
    pub max_event_rate: u32,
    /// Events one device may send at once, over its rate: a node's buckets
    /// start full, so a device re-sending what it held through a failover
    /// is not held back up to this many.
    pub event_burst: u32,
    /// Bytes of unfinished messages all device connections may hold
    /// together beyond 64 KiB each; a connection that would overdraw it is
    /// closed (the device reconnects and re-sends).
    pub buffer_budget: usize,
    /// When devices may forget events.
    pub durable_ack: DurableAck,
    /// How devices prove who they are.
    pub auth: super::DeviceAuthSection,
}

impl Default for DevicesSection {
    fn default() -> Self {
        Self {
            accept: AcceptSetting::Keyword(AcceptKeyword::All),
            keepalive_ms: 10_000,
            dead_link_ms: 30_000,
            handshake_timeout_ms: 3_000,
            max_payload: standby_device::frame::DEFAULT_MAX_PAYLOAD,
            max_message: 1 << 20,
            max_event_payload: 4 << 10,
            max_event_rate: 1_000,
            event_burst: 200_000,
            buffer_budget: 64 << 20,
            durable_ack: DurableAck::LocalCommit,
            auth: super::DeviceAuthSection::default(),
        }
    }
}

/// The `[store]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Database file, relative to the site's data directory.
    pub file: PathBuf,
    /// `wal` for a local disk; `rollback-exclusive` for a file on a network share.
    pub journal: JournalMode,
    /// How long a statement waits for a lock, in milliseconds.
    pub busy_timeout_ms: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            file: PathBuf::from("biostar2.db"),
            journal: JournalMode::Wal,
            busy_timeout_ms: 5_000,
        }
    }
}

/// One plugin in `[[strategy]]` or `[[failover]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// `builtin:NAME` or a path to a component (relative to the profile file).
    pub plugin: String,
    /// Instance name; defaults to the built-in name or the file stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Settings passed to the plugin's `configure`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// What the plugin may do beyond logging and reading the clock.
    #[serde(default)]
    pub grants: GrantsConfig,
}

impl PluginEntry {
    /// The instance name.
    pub fn instance_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match self.plugin.strip_prefix("builtin:") {
            Some(n) => n.to_string(),
            None => std::path::Path::new(&self.plugin)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.plugin.clone()),
        }
    }
}

impl LoadedProfile {
    pub(super) fn invalid_key(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.invalid(key, message)
    }

    pub(super) fn invalid(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Check what serde cannot: the version, site and instance names, plugin
    /// files, settings shapes, grant references.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.profile;
        if p.version != super::PROFILE_VERSION {
            return Err(self.invalid(
                "version",
                format!(
                    "profile version {} is not supported (this build reads version {})",
                    p.version,
                    super::PROFILE_VERSION
                ),
            ));
        }
        if p.sites.is_empty() {
            return Err(self.invalid("sites", "at least one site is needed"));
        }
        let mut ids = BTreeMap::new();
        for (name, site) in &p.sites {
            if site.node_id.trim().is_empty() {
                return Err(self.invalid(format!("sites.{name}.node_id"), "must not be empty"));
            }
            if let Some(other) = ids.insert(site.node_id.clone(), name.clone()) {
                return Err(self.invalid(
                    format!("sites.{name}.node_id"),
                    format!("`{}` is also the node id of site `{other}`", site.node_id),
                ));
            }
        }
        for (name, site) in &p.sites {
            if let Some(g) = &site.gateway {
                let key = format!("sites.{name}.gateway");
                if g.listen.is_none() && g.tls_listen.is_none() {
                    return Err(self.invalid(key, "needs `listen`, `tls_listen`, or both"));
                }
                if g.tls_listen.is_some() && (g.cert.is_none() || g.key.is_none()) {
                    return Err(self.invalid(key, "`tls_listen` needs `cert` and `key`"));
                }
                if let Some(addr) = g.listen {
                    if !addr.ip().is_loopback() && !g.allow_plain_remote {
                        return Err(self.invalid(
                            format!("{key}.listen"),
                            format!("plain (unencrypted) device listener on non-loopback {addr}: use tls_listen, or set allow_plain_remote = true"),
                        ));
                    }
                }
            }
        }
        for (name, site) in &p.sites {
            let socket = self.admin_socket(site);
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(self.invalid(
                    format!("sites.{name}.admin_socket"),
                    format!(
                        "{} is {} bytes long; a Unix socket's path may have at most {MAX_SOCKET_PATH}: set a shorter admin_socket (relative to data_dir) or data_dir",
                        socket.display(),
                        socket.as_os_str().len()
                    ),
                ));
            }
            self.validate_admin_tcp(name, site)?;
        }
        if let Some(c) = &p.cluster {
            self.validate_cluster(c)?;
        }
        let d = &p.devices;
        if d.keepalive_ms == 0 || d.dead_link_ms <= d.keepalive_ms {
            return Err(self.invalid(
                "devices.dead_link_ms",
                "must be longer than devices.keepalive_ms (and both above 0)",
            ));
        }
        if d.max_payload < 1024 {
            return Err(self.invalid("devices.max_payload", "must be at least 1024 bytes"));
        }
        if d.max_message < 4096 {
            return Err(self.invalid("devices.max_message", "must be at least 4096 bytes"));
        }
        if d.max_event_payload < 64 || d.max_event_payload > d.max_message {
            return Err(self.invalid(
                "devices.max_event_payload",
                "must be at least 64 bytes and not above devices.max_message",
            ));
        }
        if d.max_event_rate == 0 || d.event_burst == 0 {
            return Err(self.invalid(
                "devices.max_event_rate",
                "max_event_rate and event_burst must be above 0",
            ));
        }
        if d.buffer_budget < (1 << 20) {
            return Err(self.invalid("devices.buffer_budget", "must be at least 1 MiB (1048576)"));
        }
        self.validate_device_auth()?;
        if p.plugins.memory_cap < (1 << 20) {
            return Err(self.invalid("plugins.memory_cap", "must be at least 1 MiB (1048576)"));
        }
        if p.plugins.failover_call_limit_ms < 100 {
            return Err(self.invalid("plugins.failover_call_limit_ms", "must be at least 100 ms"));
        }
        if p.plugins.call_deadline_ms < 10 {
            return Err(self.invalid("plugins.call_deadline_ms", "must be at least 10 ms"));
        }
        if p.plugins.backoff_initial_ms == 0
            || p.plugins.backoff_max_ms < p.plugins.backoff_initial_ms
        {
            return Err(self.invalid(
                "plugins.backoff_initial_ms",
                "must be above 0 and not above plugins.backoff_max_ms",
            ));
        }
        let mut names = BTreeMap::new();
        for (section, entries) in [("strategy", &p.strategy), ("failover", &p.failover)] {
            for (i, entry) in entries.iter().enumerate() {
                let key = format!("{section}[{i}]");
                let name = entry.instance_name();
                if let Some(other) = names.insert(name.clone(), key.clone()) {
                    return Err(self.invalid(
                        format!("{key}.name"),
                        format!("instance name `{name}` is also used by {other}; set `name` to tell them apart"),
                    ));
                }
                if let PluginSource::Path(path) = self.plugin_source(entry) {
                    if !path.is_file() {
                        return Err(self.invalid(
                            format!("{key}.plugin"),
                            format!("plugin file {} does not exist", path.display()),
                        ));
                    }
                }
                super::flatten_settings(&entry.settings).map_err(|e| {
                    self.invalid(format!("{key}.settings.{}", e.key), e.to_string())
                })?;
                entry
                    .grants
                    .validate()
                    .map_err(|e| self.invalid(format!("{key}.grants.{}", e.key), e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The TCP admin endpoint: TLS needs both files, a token needs TLS (it
    /// never crosses TCP in clear), and only an endpoint with both may
    /// leave loopback.
    fn validate_admin_tcp(&self, name: &str, site: &Site) -> Result<(), ConfigError> {
        let key = |k: &str| format!("sites.{name}.{k}");
        let tls = match (&site.admin_tls_cert, &site.admin_tls_key) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            (Some(_), None) => {
                return Err(self.invalid(key("admin_tls_cert"), "needs `admin_tls_key` too"))
            }
            (None, Some(_)) => {
                return Err(self.invalid(key("admin_tls_key"), "needs `admin_tls_cert` too"))
            }
        };
        let token = site.admin_token_file.is_some();
        let Some(addr) = site.admin_listen else {
            if tls || token {
                let which = if token {
                    "admin_token_file"
                } else {
                    "admin_tls_cert"
                };
                return Err(self.invalid(
                    key(which),
                    "is for the TCP admin endpoint: set `admin_listen` too",
                ));
            }
            return Ok(());
        };
        if token && !tls {
            return Err(self.invalid(
                key("admin_token_file"),
                "needs `admin_tls_cert` and `admin_tls_key`: the token must never cross TCP in clear",
            ));
        }
        let authenticated = tls && token;
        if !addr.ip().is_loopback() && !authenticated {
            return Err(self.invalid(
                key("admin_listen"),
                format!("a TCP admin endpoint without TLS and an operators' token is read-only and unauthenticated and must be on loopback, not {addr}: set admin_tls_cert, admin_tls_key and admin_token_file, or use loopback"),
            ));
        }
        Ok(())
    }

    /// The lease settings of a cluster section.
    pub fn lease_settings(&self, c: &ClusterSection) -> crate::cluster::LeaseSettings {
        crate::cluster::LeaseSettings {
            ttl: std::time::Duration::from_millis(c.lease_ttl_ms),
            renew_every: std::time::Duration::from_millis(c.lease_renew_ms),
            margin: std::time::Duration::from_millis(c.lease_margin_ms),
        }
    }

    /// The name of the site that is not `name` (in a two-site profile).
    pub fn other_site(&self, name: &str) -> Option<(&String, &Site)> {
        self.profile.sites.iter().find(|(n, _)| n.as_str() != name)
    }

    /// Where an entry's plugin comes from.
    pub fn plugin_source(&self, entry: &PluginEntry) -> PluginSource {
        PluginSource::parse(&entry.plugin, &self.base_dir)
    }

    /// The site called `name`.
    pub fn site(&self, name: &str) -> Result<&Site, ConfigError> {
        self.profile.sites.get(name).ok_or_else(|| {
            self.invalid(
                "sites",
                format!(
                    "there is no site `{name}` (sites: {})",
                    self.profile
                        .sites
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    /// A site's data directory, absolute.
    pub fn data_dir(&self, site: &Site) -> PathBuf {
        self.base_dir.join(&site.data_dir)
    }

    /// A site's admin socket, absolute.
    pub fn admin_socket(&self, site: &Site) -> PathBuf {
        self.data_dir(site).join(
            site.admin_socket
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_ADMIN_SOCKET)),
        )
    }

    /// A site's database file, absolute.
    pub fn store_path(&self, site: &Site) -> PathBuf {
        self.data_dir(site).join(&self.profile.store.file)
    }
}
