//! One node of a profile: its database, its plugins, and the loop that drives
//! them. Embedding programs use [`Node::builder`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::caps::Services;
use crate::config::{flatten_settings, ConfigError, LoadedProfile, PluginEntry, SiteRole};
use crate::config::{AcceptSetting, DurableAck};
use crate::device::codec::CodecLimits;
use crate::device::gateway::{AcceptFilter, Gateway, GatewayConfig, ReplicatedMarks};
use crate::plugin::runtime::{PluginSpec, RuntimeOptions};
use crate::plugin::{
    FailoverAction, Health, LoadError, NodeContext, PluginRuntime, Role, Strategy,
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
        let role = match site.role {
            SiteRole::Active => Role::Active,
            SiteRole::Standby => Role::Standby,
        };
        services.set_role(role);

        let mut strategies: Vec<Arc<dyn Strategy>> = Vec::new();
        for (i, entry) in loaded.profile.strategy.iter().enumerate() {
            let key = format!("strategy[{i}]");
            let spec = plugin_spec(&loaded, entry, &key, &data_dir)?;
            let s = runtime
                .load_strategy(spec, services.clone())
                .await
                .map_err(|source| plugin_error(&loaded, &key, source))?;
            strategies.push(Arc::new(s));
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
        let gateway = match &site.gateway {
            Some(g) => {
                let gw = Arc::new(build_gateway(&loaded, &site, g, store.clone(), role)?);
                if role == Role::Active {
                    gw.open()
                        .await
                        .map_err(|e| NodeError::Gateway(e.to_string()))?;
                }
                Some(gw)
            }
            None => None,
        };
        Ok(Node {
            gateway,
            epoch: site.epoch,
            node_id: site.node_id.clone(),
            site: site_name,
            role,
            runtime,
            services,
            store,
            strategies,
            actions,
        })
    }
}

fn build_gateway(
    loaded: &LoadedProfile,
    site: &crate::config::Site,
    g: &crate::config::GatewaySection,
    store: Arc<Store>,
    role: Role,
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
    let gateway = Gateway::new(config, store, role, site.epoch)
        .map_err(|e| NodeError::Gateway(e.to_string()))?;
    Ok(match d.durable_ack {
        DurableAck::LocalCommit => gateway,
        DurableAck::Replication => gateway.with_durability(Arc::new(ReplicatedMarks::default())),
    })
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
        .resolve(data_dir)
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

/// One running node.
pub struct Node {
    gateway: Option<Arc<Gateway>>,
    epoch: u64,
    node_id: String,
    site: String,
    role: Role,
    runtime: Arc<PluginRuntime>,
    services: Arc<Services>,
    store: Arc<Store>,
    strategies: Vec<Arc<dyn Strategy>>,
    actions: Vec<Arc<dyn FailoverAction>>,
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
        NodeContext {
            node_id: self.node_id.clone(),
            site: self.site.clone(),
            role: self.role,
            epoch: self.epoch,
            now_ms: crate::store::unix_ms(),
        }
    }

    /// The node's database.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The services shared by the node's plugins.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The strategy pipeline.
    pub fn strategies(&self) -> &[Arc<dyn Strategy>] {
        &self.strategies
    }

    /// The device gateway, if the site has one.
    pub fn gateway(&self) -> Option<&Arc<Gateway>> {
        self.gateway.as_ref()
    }

    /// The failover actions.
    pub fn actions(&self) -> &[Arc<dyn FailoverAction>] {
        &self.actions
    }

    /// Health of every plugin instance.
    pub fn health(&self) -> Vec<Health> {
        self.runtime.health()
    }

    /// Tick every strategy when it asks to be ticked, until `shutdown` completes.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let node = Arc::new(self);
        tracing::info!(
            node = %node.node_id,
            site = %node.site,
            role = %node.role,
            strategies = node.strategies.len(),
            failover = node.actions.len(),
            "node running"
        );
        let mut tasks = tokio::task::JoinSet::new();
        for strategy in node.strategies.clone() {
            let node = node.clone();
            tasks.spawn(async move {
                loop {
                    let wait = match strategy.tick(&node.context()).await {
                        Ok(report) => {
                            if !report.did.is_empty() {
                                tracing::info!(plugin = strategy.name(), "{}", report.did);
                            }
                            Duration::from_millis(u64::from(report.next_tick_ms).clamp(10, 60_000))
                        }
                        Err(e) => {
                            tracing::warn!(plugin = strategy.name(), error = %e, "tick failed");
                            Duration::from_secs(1)
                        }
                    };
                    tokio::time::sleep(wait).await;
                }
            });
        }
        shutdown.await;
        tasks.abort_all();
        if let Some(g) = &node.gateway {
            g.close().await;
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!(node = %node.node_id, "node stopped");
        Ok(())
    }
}
