//! One node of a profile: its database, its plugins, and the loop that drives
//! them. Embedding programs use [`Node::builder`].

mod build;
pub(crate) mod core;
pub(crate) mod handle;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use self::core::{Command, Core};
use crate::failover::state::ControlState;

use crate::config::{flatten_settings, ConfigError, LoadedProfile};
use crate::failover::{control, delivery, promotion};
use crate::peer::Incoming;
use crate::plugin::runtime::RuntimeOptions;
use crate::plugin::{
    FailoverAction, Health, LoadError, NodeContext, PluginRuntime, Role, Strategy,
};
use crate::store::{Store, StoreError};

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
    Gateway(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The node key (the peer link's and the witness's pre-shared key) is
    /// unusable.
    #[error(transparent)]
    NodeKey(#[from] crate::peer::AuthError),
    /// The device enrolment key is unusable.
    #[error(transparent)]
    Enrolment(#[from] crate::enrolment::EnrolmentError),
    /// A cluster profile names one site only.
    #[error("a cluster needs two sites")]
    OneSite,
    /// A site of a cluster has no `peer_listen`.
    #[error("sites `{site}` and `{other}` both need `peer_listen`")]
    NoPeerListen {
        /// This site.
        site: String,
        /// The other site.
        other: String,
    },
    /// The admin endpoint could not start.
    #[error(transparent)]
    Admin(#[from] crate::api::AdminServeError),
    /// A listener could not start.
    #[error("{what} {addr}: {source}")]
    Listen {
        /// Which listener (`peer link on`).
        what: &'static str,
        /// Its address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory could not be created.
    #[error("{what} {path}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
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

    /// Open the database, load every plugin, and start the gateway, the
    /// peer link and the admin endpoint the profile asks for.
    pub async fn start(self) -> Result<Node, NodeError> {
        build::assemble(self.profile, self.site, self.runtime).await
    }
}

/// The runtime options of a profile, with the cache under the site's data
/// directory unless the profile names one.
pub(crate) fn runtime_options(
    loaded: &LoadedProfile,
    data_dir: &std::path::Path,
) -> RuntimeOptions {
    let mut options = loaded.profile.plugins.clone();
    options.cache_dir = Some(match &options.cache_dir {
        Some(dir) => data_dir.join(dir),
        None => data_dir.join("plugin-cache"),
    });
    options
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
                .map_err(|e| build::plugin_error(loaded, &key, e))?;
            let shape = runtime
                .check(&name, &source.to_string(), &component, world, &entry.grants)
                .map_err(|e| build::plugin_error(loaded, &key, e))?;
            let settings = flatten_settings(&entry.settings).map_err(|e| ConfigError::Invalid {
                file: loaded.file.clone(),
                key: format!("{key}.settings.{}", e.key),
                message: e.to_string(),
            })?;
            runtime
                .probe(&name, &source, Some(&settings))
                .await
                .map_err(|e| build::plugin_error(loaded, &key, e))?;
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
    core: Arc<Core>,
    incoming: mpsc::Receiver<Incoming>,
    commands: mpsc::Receiver<Command>,
    /// The control loop's state, handed to the loop when the node runs.
    control: ControlState,
    admin: crate::api::AdminServer,
}

/// How long a stopping node waits for its control loop to finish what it is
/// doing and hand its lease back before it stops the loop outright (the
/// lease then expires on its own).
const CONTROL_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

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

    /// The strategy pipeline.
    pub fn strategies(&self) -> &[Arc<dyn Strategy>] {
        &self.core.strategies
    }

    /// The failover actions.
    pub fn actions(&self) -> &[Arc<dyn FailoverAction>] {
        &self.core.actions
    }

    /// Where the read-only TCP admin endpoint listens, if the site has one.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.tcp_addr()
    }

    /// The admin socket (every admin call; owner only).
    pub fn admin_socket(&self) -> &std::path::Path {
        self.admin.socket()
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
            control,
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
            tasks.spawn(delivery::tick_loop(core.clone(), strategy));
        }
        tasks.spawn(delivery::deliver(core.clone(), incoming));
        let (stop, stopped) = oneshot::channel();
        let mut control_task = tokio::spawn(control::run(core.clone(), control, commands, stopped));
        shutdown.await;
        // Stop acknowledging at once, whatever the control loop is doing.
        core.gate.close();
        let _ = stop.send(());
        if tokio::time::timeout(CONTROL_STOP_WAIT, &mut control_task)
            .await
            .is_err()
        {
            control_task.abort();
            let _ = control_task.await;
        }
        tasks.abort_all();
        promotion::close_gateway(&core).await;
        // Whatever the control loop managed, no service outlives the node.
        core.services
            .supervisor
            .stop_all(promotion::SERVICE_STOP_GRACE)
            .await;
        while tasks.join_next().await.is_some() {}
        drop(admin);
        tracing::info!(node = %core.node_id, "node stopped");
        Ok(())
    }
}
