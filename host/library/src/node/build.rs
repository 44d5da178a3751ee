//! Assembling a node from its profile: the database, the plugins, the
//! witness client and the node's first role, the device gateway, the peer
//! link, and the admin endpoint, in that order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use standby_device::codec::CodecLimits;
use tokio::sync::{mpsc, watch};

use super::core::{ClusterSettings, Core, Inbox};
use super::handle::NodeHandle;
use super::{runtime_options, Node, NodeError};
use crate::caps::Services;
use crate::cluster::{AckGate, DetectorSettings, RoleMachine, WitnessClient};
use crate::config::{
    end_of_day_ms, flatten_settings, AcceptSetting, AuthMode, ClusterSection, ConfigError,
    DurableAck, LoadedProfile, PluginEntry, Site, SiteRole,
};
use crate::enrolment::EnrolmentKey;
use crate::failover::control;
use crate::failover::state::ControlState;
use crate::gateway::{AcceptFilter, DeviceAuth, Gateway, GatewayConfig, Policy, ReplicatedMarks};
use crate::peer::{Incoming, PeerConfig, PeerLink, Psk};
use crate::plugin::runtime::PluginSpec;
use crate::plugin::{FailoverAction, LoadError, PluginRuntime, Strategy};
use crate::role::Role;
use crate::store::{Store, StoreOptions};

/// Build and start the node of `site` (the profile's first site when None).
pub(super) async fn assemble(
    loaded: LoadedProfile,
    site: Option<String>,
    runtime: Option<Arc<PluginRuntime>>,
) -> Result<Node, NodeError> {
    let site_name = match site {
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
    let runtime = match runtime {
        Some(r) => r,
        None => Arc::new(PluginRuntime::new(runtime_options(&loaded, &data_dir))?),
    };
    let (store, services) = open_storage(&loaded, (&site_name, &site), &data_dir)?;
    let cluster = loaded.profile.cluster.clone();
    let psk = match &cluster {
        Some(c) => Some(Psk::from_file(&loaded.base_dir.join(&c.psk_file))?),
        None => None,
    };
    let witness = match (cluster.as_ref().and_then(|c| c.witness), &psk) {
        (Some(addr), Some(psk)) => Some(Arc::new(WitnessClient::new(
            addr,
            psk.clone(),
            &site.node_id,
            Duration::from_millis(500),
        ))),
        _ => None,
    };
    let (role, epoch) = first_role(&site, &data_dir, witness.as_deref()).await;
    services.set_epoch(epoch);
    services.set_role(role);
    let (strategies, inboxes) = load_strategies(&loaded, &runtime, &services, &data_dir).await?;
    let actions = load_actions(&loaded, &runtime, &services, &data_dir).await?;
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
            let gw = Arc::new(match &marks {
                Some(m) => gw.with_durability(m.clone()),
                None => gw,
            });
            if role == Role::Active {
                gw.open()
                    .await
                    .map_err(|e| NodeError::Gateway(Box::new(e)))?;
            }
            Some(gw)
        }
        None => None,
    };
    let (local_tx, local_rx) = watch::channel((epoch, role));
    let (incoming_tx, incoming_rx) = mpsc::channel(64);
    let peer = match (&cluster, &psk) {
        (Some(c), Some(psk)) => {
            let peer = PeerSite {
                loaded: &loaded,
                name: &site_name,
                site: &site,
                cluster: c,
                psk,
                data_dir: &data_dir,
            };
            Some(peer.start(local_rx, incoming_tx).await?)
        }
        _ => None,
    };
    if let Some(link) = &peer {
        services.attach_peer(link.clone());
    }
    let settings = cluster
        .as_ref()
        .map(|c| cluster_settings(&loaded, c, &site));
    let (commands_tx, commands_rx) = mpsc::channel(8);
    let (control, control_view) = ControlState::new(
        RoleMachine::new(role, epoch),
        local_tx,
        services.clone(),
        gateway.clone(),
    );
    let peer_site = loaded.other_site(&site_name).map(|(n, _)| n.clone());
    let core = Arc::new(Core {
        node_id: site.node_id.clone(),
        peer_site,
        site: site_name,
        data_dir,
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
        control: control_view,
        commands: commands_tx.clone(),
    });
    let admin = crate::api::serve(
        &loaded.admin_socket(&site),
        admin_tcp(&loaded, &site)?,
        NodeHandle::new(core.clone(), commands_tx),
    )
    .await?;
    Ok(Node {
        core,
        incoming: incoming_rx,
        commands: commands_rx,
        control,
        admin,
    })
}

/// The site's TCP admin endpoint: its address, TLS and operators' token as
/// the profile sets them (paths relative to the profile's folder).
fn admin_tcp(
    loaded: &LoadedProfile,
    site: &Site,
) -> Result<Option<crate::api::TcpEndpoint>, crate::api::AdminServeError> {
    use crate::api::AdminServeError;
    let Some(addr) = site.admin_listen else {
        return Ok(None);
    };
    let tls = match (&site.admin_tls_cert, &site.admin_tls_key) {
        (Some(cert), Some(key)) => {
            let key = loaded.base_dir.join(key);
            crate::secret_file::check_owner_only(&key).map_err(AdminServeError::KeyFile)?;
            let config = standby_device::tls::server_config(&loaded.base_dir.join(cert), &key)
                .map_err(AdminServeError::Tls)?;
            Some(config)
        }
        _ => None,
    };
    let token = match &site.admin_token_file {
        Some(path) => Some(
            crate::api::AdminToken::from_file(&loaded.base_dir.join(path))
                .map_err(AdminServeError::Token)?,
        ),
        None => None,
    };
    Ok(Some(crate::api::TcpEndpoint { addr, tls, token }))
}

/// The site's database and the services its plugins' capabilities share.
fn open_storage(
    loaded: &LoadedProfile,
    (site_name, site): (&str, &Site),
    data_dir: &Path,
) -> Result<(Arc<Store>, Arc<Services>), NodeError> {
    let store = Arc::new(Store::open(
        loaded.store_path(site),
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
    services
        .supervisor
        .set_env(crate::caps::exec::service::ServiceEnv {
            node_id: site.node_id.clone(),
            site: site_name.to_string(),
            data_dir: data_dir.to_path_buf(),
            db: store.path().to_path_buf(),
        });
    Ok((store, services))
}

/// The node's role and epoch at start. A node's epoch comes from the
/// witness, never from its own disk alone: with a witness every node starts
/// as standby and asks it.
async fn first_role(site: &Site, data_dir: &Path, witness: Option<&WitnessClient>) -> (Role, u64) {
    match witness {
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
            site.epoch.max(control::read_manual_epoch(data_dir)),
        ),
    }
}

/// The strategy pipeline, and the inbox of every strategy with a `peer` grant.
async fn load_strategies(
    loaded: &LoadedProfile,
    runtime: &PluginRuntime,
    services: &Arc<Services>,
    data_dir: &Path,
) -> Result<(Vec<Arc<dyn Strategy>>, BTreeMap<String, Inbox>), NodeError> {
    let mut strategies: Vec<Arc<dyn Strategy>> = Vec::new();
    let mut inboxes = BTreeMap::new();
    for (i, entry) in loaded.profile.strategy.iter().enumerate() {
        let key = format!("strategy[{i}]");
        let spec = plugin_spec(loaded, entry, &key, data_dir)?;
        let inbox = spec.grants.granted.peer.as_ref().and_then(|g| {
            spec.grants
                .roots
                .get(&g.inbox)
                .map(|root| (g.inbox.clone(), root.path.clone()))
        });
        let s = runtime
            .load_strategy(spec, services.clone())
            .await
            .map_err(|source| plugin_error(loaded, &key, source))?;
        let s: Arc<dyn Strategy> = Arc::new(s);
        if let Some((root, dir)) = inbox {
            inboxes.insert(
                s.name().to_string(),
                Inbox {
                    strategy: s.clone(),
                    root,
                    dir,
                },
            );
        }
        strategies.push(s);
    }
    Ok((strategies, inboxes))
}

/// The failover actions.
async fn load_actions(
    loaded: &LoadedProfile,
    runtime: &PluginRuntime,
    services: &Arc<Services>,
    data_dir: &Path,
) -> Result<Vec<Arc<dyn FailoverAction>>, NodeError> {
    let mut actions: Vec<Arc<dyn FailoverAction>> = Vec::new();
    for (i, entry) in loaded.profile.failover.iter().enumerate() {
        let key = format!("failover[{i}]");
        let spec = plugin_spec(loaded, entry, &key, data_dir)?;
        let a = runtime
            .load_action(spec, services.clone())
            .await
            .map_err(|source| plugin_error(loaded, &key, source))?;
        actions.push(Arc::new(a));
    }
    Ok(actions)
}

/// The resolved `[cluster]` settings of a site.
fn cluster_settings(loaded: &LoadedProfile, c: &ClusterSection, site: &Site) -> ClusterSettings {
    ClusterSettings {
        detector: DetectorSettings {
            heartbeat: Duration::from_millis(c.heartbeat_ms),
            suspect_after: Duration::from_millis(c.suspect_after_ms),
        },
        lease: loaded.lease_settings(c),
        startup_grace: Duration::from_millis(c.startup_grace_ms),
        fence_command: c.fence_command.clone(),
        fence_timeout: Duration::from_millis(c.fence_timeout_ms),
        fence_required: c.fence_required,
        step_timeout: c.failover_step_timeout,
        switchover_timeout: Duration::from_millis(c.switchover_timeout_ms),
        prefer_active: site.role == SiteRole::Active,
    }
}

/// What the peer link of a site is started from.
struct PeerSite<'a> {
    loaded: &'a LoadedProfile,
    name: &'a str,
    site: &'a Site,
    cluster: &'a ClusterSection,
    psk: &'a Psk,
    data_dir: &'a Path,
}

impl PeerSite<'_> {
    /// Start the link to the other site.
    async fn start(
        &self,
        local: watch::Receiver<(u64, Role)>,
        incoming: mpsc::Sender<Incoming>,
    ) -> Result<PeerLink, NodeError> {
        let (other_name, other) = self
            .loaded
            .other_site(self.name)
            .ok_or(NodeError::OneSite)?;
        let (Some(listen), Some(peer_addr)) = (self.site.peer_listen, other.peer_listen) else {
            return Err(NodeError::NoPeerListen {
                site: self.name.to_string(),
                other: other_name.to_string(),
            });
        };
        let mut config = PeerConfig::new(
            &self.site.node_id,
            listen,
            &other.node_id,
            peer_addr,
            self.psk.clone(),
            self.data_dir.join(".peer-staging"),
        );
        config.heartbeat = Duration::from_millis(self.cluster.heartbeat_ms);
        config.transfer_stall = Duration::from_millis(self.cluster.transfer_stall_ms);
        PeerLink::start(config, local, incoming)
            .await
            .map_err(|source| NodeError::Listen {
                what: "peer link on",
                addr: listen,
                source,
            })
    }
}

fn build_gateway(
    loaded: &LoadedProfile,
    site: &Site,
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
        max_message: d.max_message,
        ..CodecLimits::default()
    };
    config.buffer_budget = d.buffer_budget;
    config.max_event_payload = d.max_event_payload;
    config.event_rate = d.max_event_rate;
    config.event_burst = d.event_burst;
    config.auth = device_auth(loaded)?;
    if let (Some(addr), Some(cert), Some(key)) = (g.tls_listen, &g.cert, &g.key) {
        let tls = standby_device::tls::server_config(
            &loaded.base_dir.join(cert),
            &loaded.base_dir.join(key),
        )
        .map_err(|e| NodeError::Gateway(Box::new(e)))?;
        config.tls_listen = Some((addr, tls));
    }
    Gateway::with_lease_gate(config, store, role, epoch, gate.clone())
        .map_err(|e| NodeError::Gateway(Box::new(e)))
}

/// The profile's device authentication: policy, enrolment key, register.
fn device_auth(loaded: &LoadedProfile) -> Result<DeviceAuth, NodeError> {
    let a = &loaded.profile.devices.auth;
    let policy = match a.mode {
        AuthMode::Off => Policy::Off,
        AuthMode::Required => Policy::Required,
        AuthMode::Migrate => Policy::Migrate {
            // Validated with the profile.
            until_ms: a
                .migrate_until
                .as_deref()
                .and_then(end_of_day_ms)
                .unwrap_or(0),
        },
    };
    // With authentication off the key is optional: devices that have a
    // credential still prove it when the key is there.
    let key = match loaded.device_key_file() {
        Some(path) if policy == Policy::Off && !path.exists() => None,
        Some(path) => Some(Arc::new(EnrolmentKey::load(&path)?)),
        None => None,
    };
    let register = key.as_ref().map(|_| loaded.device_register());
    if let Policy::Migrate { until_ms } = policy {
        tracing::warn!(
            until_ms,
            "devices.auth.mode = \"migrate\": devices without a credential are admitted until devices.auth.migrate_until"
        );
    }
    Ok(DeviceAuth {
        policy,
        key,
        register,
        expiry_warning: Duration::from_secs(u64::from(a.expiry_warning_days) * 86_400),
    })
}

pub(super) fn plugin_error(loaded: &LoadedProfile, key: &str, source: LoadError) -> ConfigError {
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
    data_dir: &Path,
) -> Result<PluginSpec, ConfigError> {
    let invalid = |k: String, message: String| ConfigError::Invalid {
        file: loaded.file.clone(),
        key: format!("{key}.{k}"),
        message,
    };
    let grants = entry
        .grants
        .resolve(data_dir, &loaded.base_dir)
        .map_err(|e| invalid(format!("grants.{}", e.key), e.to_string()))?;
    let settings = flatten_settings(&entry.settings)
        .map_err(|e| invalid(format!("settings.{}", e.key), e.to_string()))?;
    Ok(PluginSpec {
        name: entry.instance_name(),
        source: loaded.plugin_source(entry),
        grants: Arc::new(grants),
        settings,
    })
}
