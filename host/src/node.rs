//! One node of a profile: its database, its plugins, and the loop that drives
//! them. Embedding programs use [`Node::builder`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::caps::Services;
use crate::cluster::{AckGate, DetectorSettings, LeaseSettings, RoleMachine, WitnessClient};
use crate::config::{flatten_settings, ConfigError, LoadedProfile, PluginEntry, SiteRole};
use crate::config::{AcceptSetting, ClusterSection, DurableAck};
use crate::device::codec::CodecLimits;
use crate::device::gateway::{AcceptFilter, Gateway, GatewayConfig, ReplicatedMarks};
use crate::failover::control::{self, Command};
use crate::failover::Timeline;
use crate::peer::{Incoming, PeerConfig, PeerLink, Psk};
use crate::plugin::runtime::{PluginSpec, RuntimeOptions};
use crate::plugin::{
    FailoverAction, Health, LoadError, NodeContext, PluginRuntime, PromoteReport, Role, Strategy,
};
use crate::store::{Store, StoreError, StoreOptions};

/// Why a node could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The profile is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The plugin runtime could not start.
    #[error(transparent)]
    Runtime(#[from] LoadError),
    /// The device gateway could not start.
    #[error("device gateway: {0}")]
    Gateway(String),
    /// The peer link, the witness or the admin endpoint could not start.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A directory could not be created.
    #[error("{what} {path}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

/// Builds a [`Node`].
pub struct NodeBuilder {
    profile: LoadedProfile,
    site: Option<String>,
    runtime: Option<Arc<PluginRuntime>>,
}

impl NodeBuilder {
    /// Which site of the profile this node is.
    pub fn site(mut self, name: impl Into<String>) -> Self {
        self.site = Some(name.into());
        self
    }

    /// Share an existing plugin runtime (one engine per process is best).
    pub fn runtime(mut self, runtime: Arc<PluginRuntime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Open the database and load every plugin.
    pub async fn start(self) -> Result<Node, NodeError> {
        let loaded = self.profile;
        let site_name = match self.site {
            Some(s) => s,
            None => loaded
                .profile
                .sites
                .keys()
                .next()
                .cloned()
                .unwrap_or_default(),
        };
        let site = loaded.site(&site_name)?.clone();
        let data_dir = loaded.data_dir(&site);
        std::fs::create_dir_all(&data_dir).map_err(|source| NodeError::Io {
            what: "creating data directory",
            path: data_dir.clone(),
            error: source,
        })?;
        let runtime = match self.runtime {
            Some(r) => r,
            None => Arc::new(PluginRuntime::new(runtime_options(&loaded, &data_dir))?),
        };
        let store = Arc::new(Store::open(
            loaded.store_path(&site),
            StoreOptions {
                journal: loaded.profile.store.journal,
                busy_timeout: Duration::from_millis(loaded.profile.store.busy_timeout_ms),
            },
        )?);
        let staging = data_dir.join(".staging");
        let services =
            Services::new(Some(store.clone()), &staging).map_err(|source| NodeError::Io {
                what: "creating staging directory",
                path: staging.clone(),
                error: source,
            })?;
        let cluster = loaded.profile.cluster.clone();
        let witness_addr = cluster.as_ref().and_then(|c| c.witness);
        let psk = match &cluster {
            Some(c) => Some(
                Psk::from_file(&loaded.base_dir.join(&c.psk_file))
                    .map_err(|e| NodeError::Cluster(e.to_string()))?,
            ),
            None => None,
        };
        let witness = match (witness_addr, &psk) {
            (Some(addr), Some(psk)) => Some(Arc::new(WitnessClient::new(
                addr,
                psk.clone(),
                &site.node_id,
                Duration::from_millis(500),
            ))),
            _ => None,
        };
        // A node's epoch comes from the witness, never from its own disk alone:
        // with a witness every node starts as standby and asks it.
        let manual_epoch = control::read_manual_epoch(&data_dir);
        let (role, epoch) = match &witness {
            Some(w) => {
                let epoch = match w.query().await {
                    Ok(view) => view.epoch,
                    Err(e) => {
                        tracing::warn!(error = %e, "witness not reachable at start; starting as standby at epoch 0");
                        0
                    }
                };
                (Role::Standby, epoch)
            }
            None => (
                match site.role {
                    SiteRole::Active => Role::Active,
                    SiteRole::Standby => Role::Standby,
                },
                site.epoch.max(manual_epoch),
            ),
        };
        services.set_role(role);

        let mut strategies: Vec<Arc<dyn Strategy>> = Vec::new();
        let mut inboxes = BTreeMap::new();
        for (i, entry) in loaded.profile.strategy.iter().enumerate() {
            let key = format!("strategy[{i}]");
            let spec = plugin_spec(&loaded, entry, &key, &data_dir)?;
            let inbox = spec.grants.peer.as_ref().and_then(|g| {
                spec.grants
                    .roots
                    .get(&g.inbox)
                    .map(|root| (g.inbox.clone(), root.path.clone()))
            });
            let s = runtime
                .load_strategy(spec, services.clone())
                .await
                .map_err(|source| plugin_error(&loaded, &key, source))?;
            let s: Arc<dyn Strategy> = Arc::new(s);
            if let Some((root, dir)) = inbox {
                inboxes.insert(
                    s.name().to_string(),
                    control::Inbox {
                        strategy: s.clone(),
                        root,
                        dir,
                    },
                );
            }
            strategies.push(s);
        }
        let mut actions: Vec<Arc<dyn FailoverAction>> = Vec::new();
        for (i, entry) in loaded.profile.failover.iter().enumerate() {
            let key = format!("failover[{i}]");
            let spec = plugin_spec(&loaded, entry, &key, &data_dir)?;
            let a = runtime
                .load_action(spec, services.clone())
                .await
                .map_err(|source| plugin_error(&loaded, &key, source))?;
            actions.push(Arc::new(a));
        }
        let gate = Arc::new(if witness.is_some() {
            AckGate::closed()
        } else {
            AckGate::always_open()
        });
        let marks = match loaded.profile.devices.durable_ack {
            DurableAck::LocalCommit => None,
            DurableAck::Replication => Some(Arc::new(ReplicatedMarks::default())),
        };
        let gateway = match &site.gateway {
            Some(g) => {
                let gw = build_gateway(&loaded, &site, g, store.clone(), role, epoch, &gate)?;
                let gw = match &marks {
                    Some(m) => gw.with_durability(m.clone()),
                    None => gw,
                };
                let gw = Arc::new(gw);
                if role == Role::Active {
                    gw.open()
                        .await
                        .map_err(|e| NodeError::Gateway(e.to_string()))?;
                }
                Some(gw)
            }
            None => None,
        };
        let (local_tx, local_rx) = watch::channel((epoch, role));
        let (incoming_tx, incoming_rx) = mpsc::channel(64);
        let peer = match (&cluster, &psk) {
            (Some(c), Some(psk)) => Some(
                start_peer(
                    &loaded,
                    &site_name,
                    &site,
                    c,
                    psk,
                    &data_dir,
                    local_rx,
                    incoming_tx,
                )
                .await?,
            ),
            _ => None,
        };
        if let Some(link) = &peer {
            services.attach_peer(link.clone());
        }
        let settings = cluster.as_ref().map(|c| ClusterSettings {
            detector: DetectorSettings {
                heartbeat: Duration::from_millis(c.heartbeat_ms),
                suspect_after: Duration::from_millis(c.suspect_after_ms),
            },
            lease: loaded.lease_settings(c),
            startup_grace: Duration::from_millis(c.startup_grace_ms),
            fence_command: c.fence_command.clone(),
            fence_timeout: Duration::from_millis(c.fence_timeout_ms),
            fence_required: c.fence_required,
            prefer_active: site.role == SiteRole::Active,
        });
        let (commands_tx, commands_rx) = mpsc::channel(8);
        let core = Arc::new(Core {
            node_id: site.node_id.clone(),
            site: site_name,
            data_dir,
            machine: Mutex::new(RoleMachine::new(role, epoch)),
            local: local_tx,
            runtime,
            services,
            store,
            strategies,
            actions,
            gateway,
            gate,
            marks,
            peer,
            witness,
            settings,
            inboxes,
            last_failover: Mutex::new(None),
            last_demotion: Mutex::new(None),
            promoted_from: Mutex::new(Vec::new()),
            lease: Mutex::new(None),
            commands: commands_tx,
        });
        let admin = match site.admin_listen {
            Some(addr) => Some(
                crate::api::serve(addr, core.clone())
                    .await
                    .map_err(|e| NodeError::Cluster(format!("admin endpoint {addr}: {e}")))?,
            ),
            None => None,
        };
        Ok(Node {
            core,
            incoming: incoming_rx,
            commands: commands_rx,
            admin,
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_peer(
    loaded: &LoadedProfile,
    site_name: &str,
    site: &crate::config::Site,
    c: &ClusterSection,
    psk: &Psk,
    data_dir: &std::path::Path,
    local: watch::Receiver<(u64, Role)>,
    incoming: mpsc::Sender<Incoming>,
) -> Result<PeerLink, NodeError> {
    let (other_name, other) = loaded
        .other_site(site_name)
        .ok_or_else(|| NodeError::Cluster("a cluster needs two sites".into()))?;
    let (Some(listen), Some(peer_addr)) = (site.peer_listen, other.peer_listen) else {
        return Err(NodeError::Cluster(format!(
            "sites `{site_name}` and `{other_name}` both need `peer_listen`"
        )));
    };
    let mut config = PeerConfig::new(
        &site.node_id,
        listen,
        &other.node_id,
        peer_addr,
        psk.clone(),
        data_dir.join(".peer-staging"),
    );
    config.heartbeat = Duration::from_millis(c.heartbeat_ms);
    config.transfer_stall = Duration::from_millis(c.transfer_stall_ms);
    PeerLink::start(config, local, incoming)
        .await
        .map_err(|e| NodeError::Cluster(format!("peer link on {listen}: {e}")))
}

fn build_gateway(
    loaded: &LoadedProfile,
    site: &crate::config::Site,
    g: &crate::config::GatewaySection,
    store: Arc<Store>,
    role: Role,
    epoch: u64,
    gate: &Arc<AckGate>,
) -> Result<Gateway, NodeError> {
    let d = &loaded.profile.devices;
    let mut config = GatewayConfig::new(site.node_id.clone());
    config.listen = g.listen;
    config.allow_plain_remote = g.allow_plain_remote;
    config.accept = match &d.accept {
        AcceptSetting::Keyword(_) => AcceptFilter::All,
        AcceptSetting::Ids(ids) => AcceptFilter::Only(ids.iter().copied().collect()),
    };
    config.keepalive = Duration::from_millis(d.keepalive_ms);
    config.dead_link = Duration::from_millis(d.dead_link_ms);
    config.handshake_timeout = Duration::from_millis(d.handshake_timeout_ms);
    config.limits = CodecLimits {
        max_packet_payload: d.max_payload,
        ..CodecLimits::default()
    };
    if let (Some(addr), Some(cert), Some(key)) = (g.tls_listen, &g.cert, &g.key) {
        let tls = crate::device::tls::server_config(
            &loaded.base_dir.join(cert),
            &loaded.base_dir.join(key),
        )
        .map_err(|e| NodeError::Gateway(e.to_string()))?;
        config.tls_listen = Some((addr, tls));
    }
    Gateway::with_lease_gate(config, store, role, epoch, gate.clone())
        .map_err(|e| NodeError::Gateway(e.to_string()))
}

/// The runtime options of a profile, with the cache under the site's data
/// directory unless the profile names one.
pub fn runtime_options(loaded: &LoadedProfile, data_dir: &std::path::Path) -> RuntimeOptions {
    let mut options = loaded.profile.plugins.clone();
    options.cache_dir = Some(match &options.cache_dir {
        Some(dir) => data_dir.join(dir),
        None => data_dir.join("plugin-cache"),
    });
    options
}

fn plugin_error(loaded: &LoadedProfile, key: &str, source: LoadError) -> ConfigError {
    ConfigError::Plugin {
        file: loaded.file.clone(),
        key: key.to_string(),
        error: Box::new(source),
    }
}

fn plugin_spec(
    loaded: &LoadedProfile,
    entry: &PluginEntry,
    key: &str,
    data_dir: &std::path::Path,
) -> Result<PluginSpec, ConfigError> {
    let invalid = |k: String, message: String| ConfigError::Invalid {
        file: loaded.file.clone(),
        key: format!("{key}.{k}"),
        message,
    };
    let grants = entry
        .grants
        .resolve(data_dir, &loaded.base_dir)
        .map_err(|(k, m)| invalid(format!("grants.{k}"), m))?;
    let settings =
        flatten_settings(&entry.settings).map_err(|(k, m)| invalid(format!("settings.{k}"), m))?;
    Ok(PluginSpec {
        name: entry.instance_name(),
        source: loaded.plugin_source(entry),
        grants: Arc::new(grants),
        settings,
    })
}

/// What `check-config` found about one plugin entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginCheck {
    /// Profile key (`strategy[0]`).
    pub key: String,
    /// Instance name.
    pub name: String,
    /// Where it comes from.
    pub source: String,
    /// The world it is built for.
    pub world: String,
    /// Capabilities it imports.
    pub capabilities: Vec<String>,
}

/// Compile every plugin of a profile, check its world and grants, and let it
/// check its settings, without opening any database or directory.
pub async fn check_plugins(
    loaded: &LoadedProfile,
    runtime: &PluginRuntime,
) -> Result<Vec<PluginCheck>, ConfigError> {
    use crate::plugin::runtime::WorldKind;
    let mut out = Vec::new();
    for (section, world, entries) in [
        (
            "strategy",
            WorldKind::ReplicationStrategy,
            &loaded.profile.strategy,
        ),
        (
            "failover",
            WorldKind::FailoverAction,
            &loaded.profile.failover,
        ),
    ] {
        for (i, entry) in entries.iter().enumerate() {
            let key = format!("{section}[{i}]");
            let name = entry.instance_name();
            let source = loaded.plugin_source(entry);
            let component = runtime
                .compile(&name, &source)
                .map_err(|e| plugin_error(loaded, &key, e))?;
            let shape = runtime
                .check(&name, &source.to_string(), &component, world, &entry.grants)
                .map_err(|e| plugin_error(loaded, &key, e))?;
            let settings =
                flatten_settings(&entry.settings).map_err(|(k, m)| ConfigError::Invalid {
                    file: loaded.file.clone(),
                    key: format!("{key}.settings.{k}"),
                    message: m,
                })?;
            runtime
                .probe(&name, &source, Some(&settings))
                .await
                .map_err(|e| plugin_error(loaded, &key, e))?;
            out.push(PluginCheck {
                key,
                name,
                source: source.to_string(),
                world: world.name().to_string(),
                capabilities: shape.capabilities.iter().map(|c| c.to_string()).collect(),
            });
        }
    }
    Ok(out)
}

/// The resolved `[cluster]` settings.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    pub detector: DetectorSettings,
    pub lease: LeaseSettings,
    pub startup_grace: Duration,
    pub fence_command: Vec<String>,
    pub fence_timeout: Duration,
    pub fence_required: bool,
    /// The site starts as `active` in the profile: it competes for the lease
    /// at once instead of waiting out the startup grace.
    pub prefer_active: bool,
}

/// Everything a running node shares between its control loop, its admin
/// endpoint and its plugins' capabilities.
pub(crate) struct Core {
    pub node_id: String,
    pub site: String,
    pub data_dir: PathBuf,
    pub machine: Mutex<RoleMachine>,
    /// This node's (epoch, role), as the peer link announces it.
    pub local: watch::Sender<(u64, Role)>,
    pub runtime: Arc<PluginRuntime>,
    pub services: Arc<Services>,
    pub store: Arc<Store>,
    pub strategies: Vec<Arc<dyn Strategy>>,
    pub actions: Vec<Arc<dyn FailoverAction>>,
    pub gateway: Option<Arc<Gateway>>,
    pub gate: Arc<AckGate>,
    pub marks: Option<Arc<ReplicatedMarks>>,
    pub peer: Option<PeerLink>,
    pub witness: Option<Arc<WitnessClient>>,
    pub settings: Option<ClusterSettings>,
    pub inboxes: BTreeMap<String, control::Inbox>,
    pub last_failover: Mutex<Option<Timeline>>,
    pub last_demotion: Mutex<Option<Timeline>>,
    pub promoted_from: Mutex<Vec<(String, PromoteReport)>>,
    pub lease: Mutex<Option<crate::cluster::Lease>>,
    pub commands: mpsc::Sender<Command>,
}

impl Core {
    pub(crate) fn role(&self) -> Role {
        self.lock_machine().role()
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.lock_machine().epoch()
    }

    pub(crate) fn lock_machine(&self) -> std::sync::MutexGuard<'_, RoleMachine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn context(&self) -> NodeContext {
        let (role, epoch) = {
            let m = self.lock_machine();
            (m.role(), m.epoch())
        };
        NodeContext {
            node_id: self.node_id.clone(),
            site: self.site.clone(),
            role,
            epoch,
            now_ms: crate::store::unix_ms(),
        }
    }

    /// Tell the capabilities, the gateway and the peer what the machine says now.
    pub(crate) fn publish(&self) {
        let (role, epoch) = {
            let m = self.lock_machine();
            (m.role(), m.epoch())
        };
        self.services.set_role(role);
        if let Some(g) = &self.gateway {
            g.set_identity(role, epoch);
        }
        self.local.send_replace((epoch, role));
    }
}

/// One running node.
pub struct Node {
    core: Arc<Core>,
    incoming: mpsc::Receiver<Incoming>,
    commands: mpsc::Receiver<Command>,
    admin: Option<crate::api::AdminServer>,
}

impl Node {
    /// Start building a node of `profile`.
    pub fn builder(profile: LoadedProfile) -> NodeBuilder {
        NodeBuilder {
            profile,
            site: None,
            runtime: None,
        }
    }

    /// The context plugins see now.
    pub fn context(&self) -> NodeContext {
        self.core.context()
    }

    /// The node's role now.
    pub fn role(&self) -> Role {
        self.core.role()
    }

    /// The node's epoch now.
    pub fn epoch(&self) -> u64 {
        self.core.epoch()
    }

    /// The node's database.
    pub fn store(&self) -> &Arc<Store> {
        &self.core.store
    }

    /// The services shared by the node's plugins.
    pub fn services(&self) -> &Arc<Services> {
        &self.core.services
    }

    /// The strategy pipeline.
    pub fn strategies(&self) -> &[Arc<dyn Strategy>] {
        &self.core.strategies
    }

    /// The device gateway, if the site has one.
    pub fn gateway(&self) -> Option<&Arc<Gateway>> {
        self.core.gateway.as_ref()
    }

    /// The failover actions.
    pub fn actions(&self) -> &[Arc<dyn FailoverAction>] {
        &self.core.actions
    }

    /// The peer link, if the profile has a cluster.
    pub fn peer(&self) -> Option<&PeerLink> {
        self.core.peer.as_ref()
    }

    /// Where the admin endpoint listens, if the site has one.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr())
    }

    /// Health of every plugin instance.
    pub fn health(&self) -> Vec<Health> {
        self.core.runtime.health()
    }

    /// The node's full status, as `standby status` shows it.
    pub async fn status(&self) -> crate::failover::NodeStatus {
        crate::failover::status::collect(&self.core).await
    }

    /// Run the node (strategy ticks, the peer link's deliveries, the
    /// failure detector and the failover sequence) until `shutdown` completes.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let Node {
            core,
            incoming,
            commands,
            admin,
        } = self;
        tracing::info!(
            node = %core.node_id,
            site = %core.site,
            role = %core.role(),
            epoch = core.epoch(),
            strategies = core.strategies.len(),
            failover = core.actions.len(),
            peer = core.peer.is_some(),
            witness = ?core.witness.as_ref().map(|w| w.addr()),
            "node running"
        );
        let mut tasks = tokio::task::JoinSet::new();
        for strategy in core.strategies.clone() {
            tasks.spawn(control::tick_loop(core.clone(), strategy));
        }
        tasks.spawn(control::deliver(core.clone(), incoming));
        let control_task = tokio::spawn(control::run(core.clone(), commands));
        shutdown.await;
        control_task.abort();
        let _ = control_task.await;
        tasks.abort_all();
        control::shut_down(&core).await;
        while tasks.join_next().await.is_some() {}
        drop(admin);
        tracing::info!(node = %core.node_id, "node stopped");
        Ok(())
    }
}
