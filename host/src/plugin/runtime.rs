//! The WebAssembly component runtime: one shared engine with wasmtime's
//! compilation cache, an epoch ticker for per-call deadlines, and loading with
//! world and grant checks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine};

use super::bindings::{action as action_world, strategy as strategy_world};
use super::builtin;
use super::health::{Health, HealthCell};
use super::types::{CallError, Setting};
use super::wasm::{ActionWorld, Slot, StrategyWorld, WasmAction, WasmStrategy};
use super::Capability;
use crate::caps::{HostState, ResolvedGrants, Services};
use crate::config::GrantCheck;

/// WIT package this host implements.
pub const WIT_PACKAGE: &str = "standby:plugin";
/// Its version.
pub const WIT_VERSION: &str = "0.1.0";
/// How often the epoch advances; the unit of per-call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Runtime settings (the `[plugins]` table of a profile).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeOptions {
    /// Largest linear memory one instance may grow to, in bytes.
    pub memory_cap: u64,
    /// Guest time one call may use, in milliseconds (time spent in host
    /// capabilities does not count).
    pub call_deadline_ms: u64,
    /// First wait before re-instantiating a faulted instance, in milliseconds;
    /// doubles with each consecutive fault.
    pub backoff_initial_ms: u64,
    /// Longest wait before re-instantiating.
    pub backoff_max_ms: u64,
    /// Where wasmtime caches compiled code; `None` uses wasmtime's default
    /// location. Relative paths are under the site's data directory.
    pub cache_dir: Option<PathBuf>,
    /// Turn the compilation cache off.
    pub cache: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            memory_cap: 64 << 20,
            call_deadline_ms: 5_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            cache_dir: None,
            cache: true,
        }
    }
}

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Embedded in this binary: `builtin:NAME`.
    Builtin(String),
    /// A component file.
    Path(PathBuf),
}

impl PluginSource {
    /// Parse a profile's `plugin = "..."`: `builtin:NAME`, or a path relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Self {
        match text.strip_prefix("builtin:") {
            Some(name) => PluginSource::Builtin(name.to_string()),
            None => PluginSource::Path(base.join(text)),
        }
    }
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Builtin(n) => write!(f, "builtin:{n}"),
            PluginSource::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The engine could not be set up.
    #[error("plugin runtime: {0}")]
    Engine(String),
    /// No built-in plugin by that name.
    #[error("plugin {plugin}: there is no built-in plugin `{name}` (built in: {known})")]
    UnknownBuiltin {
        /// Instance name.
        plugin: String,
        /// The name asked for.
        name: String,
        /// What exists.
        known: String,
    },
    /// The file could not be read.
    #[error("plugin {plugin}: cannot read {path}: {error}")]
    Read {
        /// Instance name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The bytes are not a WebAssembly component.
    #[error("plugin {plugin}: {source_name} is not a WebAssembly component: {reason}")]
    NotComponent {
        /// Instance name.
        plugin: String,
        /// Where the bytes came from.
        source_name: String,
        /// What it is instead.
        reason: String,
    },
    /// Compilation failed.
    #[error("plugin {plugin}: {source_name} does not compile: {reason}")]
    Compile {
        /// Instance name.
        plugin: String,
        /// Where the bytes came from.
        source_name: String,
        /// Compiler message.
        reason: String,
    },
    /// The component targets another world.
    #[error("plugin {plugin}: {source_name} is built for world `{found}`, but it is configured as a {expected} (it must export {wanted})")]
    WrongWorld {
        /// Instance name.
        plugin: String,
        /// Where the bytes came from.
        source_name: String,
        /// The world expected.
        expected: &'static str,
        /// The interface that should be exported.
        wanted: String,
        /// What the component is.
        found: String,
    },
    /// The component imports a capability the profile does not grant.
    #[error("plugin {plugin}: imports capability `{capability}` ({import}), which its grants do not include (granted: {granted}); add `[...grants.{capability}]` to the profile or use another plugin")]
    Ungranted {
        /// Instance name.
        plugin: String,
        /// The capability.
        capability: Capability,
        /// The full import name.
        import: String,
        /// What is granted.
        granted: String,
    },
    /// The component imports something this host does not provide.
    #[error("plugin {plugin}: imports `{import}`, which this host does not provide (it provides {WIT_PACKAGE}@{WIT_VERSION})")]
    UnknownImport {
        /// Instance name.
        plugin: String,
        /// The import name.
        import: String,
    },
    /// Instantiation failed.
    #[error("plugin {plugin}: cannot instantiate: {reason}")]
    Instantiate {
        /// Instance name.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The plugin refused its settings.
    #[error("plugin {plugin}: rejected its settings: {error}")]
    Configure {
        /// Instance name.
        plugin: String,
        /// What it said.
        error: CallError,
    },
}

/// One plugin to load: instance name, source, grants and settings.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Instance name (for logs, health and errors).
    pub name: String,
    /// Where the component comes from.
    pub source: PluginSource,
    /// What it may do.
    pub grants: Arc<ResolvedGrants>,
    /// Its settings.
    pub settings: Vec<Setting>,
}

/// Which plugin world a component is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorldKind {
    /// Exports `strategy`.
    ReplicationStrategy,
    /// Exports `action`.
    FailoverAction,
}

impl WorldKind {
    /// The WIT world name.
    pub fn name(self) -> &'static str {
        match self {
            WorldKind::ReplicationStrategy => "replication-strategy",
            WorldKind::FailoverAction => "failover-action",
        }
    }

    /// The interface the world exports, fully qualified.
    pub fn export(self) -> String {
        let iface = match self {
            WorldKind::ReplicationStrategy => "strategy",
            WorldKind::FailoverAction => "action",
        };
        format!("{WIT_PACKAGE}/{iface}@{WIT_VERSION}")
    }
}

/// Imports and exports of a compiled component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentShape {
    /// Names of imported instances/functions.
    pub imports: Vec<String>,
    /// Names of exported instances/functions.
    pub exports: Vec<String>,
    /// The world it targets, if it is one of ours.
    pub world: Option<WorldKind>,
    /// Capabilities it needs granted, from its imports.
    pub capabilities: Vec<Capability>,
    /// Imports this host does not provide.
    pub unknown_imports: Vec<String>,
}

/// What a component's import is, to this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    /// A capability interface.
    Capability(Capability),
    /// The function-less `types` interface (needs no grant).
    Types,
    /// Something this host does not provide.
    Unknown,
}

/// Classify a fully qualified import name (`standby:plugin/db@0.1.0`).
pub fn classify_import(import: &str) -> ImportKind {
    let Some((iface, version)) = import
        .strip_prefix(WIT_PACKAGE)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.split_once('@'))
    else {
        return ImportKind::Unknown;
    };
    if version != WIT_VERSION {
        return ImportKind::Unknown;
    }
    if iface == "types" {
        return ImportKind::Types;
    }
    Capability::from_name(iface).map_or(ImportKind::Unknown, ImportKind::Capability)
}

/// The shape of a compiled component.
pub fn shape(engine: &Engine, component: &Component) -> ComponentShape {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let world = [WorldKind::ReplicationStrategy, WorldKind::FailoverAction]
        .into_iter()
        .find(|w| exports.iter().any(|n| *n == w.export()));
    let mut capabilities = Vec::new();
    let mut unknown_imports = Vec::new();
    for i in &imports {
        match classify_import(i) {
            ImportKind::Capability(c) => capabilities.push(c),
            ImportKind::Types => {}
            ImportKind::Unknown => unknown_imports.push(i.clone()),
        }
    }
    capabilities.sort();
    ComponentShape {
        imports,
        exports,
        world,
        capabilities,
        unknown_imports,
    }
}

/// Stops the epoch ticker thread when dropped.
#[derive(Debug)]
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The plugin runtime: one engine, linkers for both worlds, the epoch ticker,
/// and the health of every instance it loaded.
pub struct PluginRuntime {
    engine: Engine,
    strategy_linker: Linker<HostState>,
    action_linker: Linker<HostState>,
    options: RuntimeOptions,
    registry: Mutex<Vec<Arc<HealthCell>>>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Set up the engine (with the compilation cache unless turned off), both
    /// linkers and the epoch ticker.
    pub fn new(options: RuntimeOptions) -> Result<Self, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        if options.cache {
            let mut cc = CacheConfig::new();
            if let Some(dir) = &options.cache_dir {
                cc.with_directory(dir);
            }
            config.cache(Some(Cache::new(cc).map_err(engine_err)?));
        }
        let engine = Engine::new(&config).map_err(engine_err)?;

        let mut strategy_linker = Linker::new(&engine);
        strategy_world::ReplicationStrategy::add_to_linker::<_, HasSelf<_>>(
            &mut strategy_linker,
            |s| s,
        )
        .map_err(engine_err)?;
        let mut action_linker = Linker::new(&engine);
        action_world::FailoverAction::add_to_linker::<_, HasSelf<_>>(&mut action_linker, |s| s)
            .map_err(engine_err)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Engine(format!("starting the epoch thread: {e}")))?;

        Ok(Self {
            engine,
            strategy_linker,
            action_linker,
            options,
            registry: Mutex::new(Vec::new()),
            _ticker: EpochTicker { stop },
        })
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The runtime's options.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// Health of every instance this runtime loaded.
    pub fn health(&self) -> Vec<Health> {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.iter().map(|h| h.snapshot()).collect()
    }

    /// Read and compile a plugin, checking that it is a component.
    pub fn compile(&self, plugin: &str, source: &PluginSource) -> Result<Component, LoadError> {
        let bytes: std::borrow::Cow<'static, [u8]> = match source {
            PluginSource::Builtin(name) => builtin::get(name)
                .ok_or_else(|| LoadError::UnknownBuiltin {
                    plugin: plugin.to_string(),
                    name: name.clone(),
                    known: builtin::names().join(", "),
                })?
                .into(),
            PluginSource::Path(path) => std::fs::read(path)
                .map_err(|source| LoadError::Read {
                    plugin: plugin.to_string(),
                    path: path.clone(),
                    error: source,
                })?
                .into(),
        };
        self.compile_bytes(plugin, &source.to_string(), &bytes)
    }

    /// Compile component bytes; `source_name` is used in errors.
    pub fn compile_bytes(
        &self,
        plugin: &str,
        source_name: &str,
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        if let Some(reason) = super::inspect::not_a_component(bytes) {
            return Err(LoadError::NotComponent {
                plugin: plugin.to_string(),
                source_name: source_name.to_string(),
                reason,
            });
        }
        Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile {
            plugin: plugin.to_string(),
            source_name: source_name.to_string(),
            reason: format!("{e:#}"),
        })
    }

    /// Check a compiled component against the world it is loaded as and the
    /// grants it gets.
    pub fn check(
        &self,
        plugin: &str,
        source_name: &str,
        component: &Component,
        expected: WorldKind,
        grants: &dyn GrantCheck,
    ) -> Result<ComponentShape, LoadError> {
        let shape = shape(&self.engine, component);
        if shape.world != Some(expected) {
            let found = match shape.world {
                Some(w) => w.name().to_string(),
                None => format!("unknown (exports: {})", shape.exports.join(", ")),
            };
            return Err(LoadError::WrongWorld {
                plugin: plugin.to_string(),
                source_name: source_name.to_string(),
                expected: expected.name(),
                wanted: expected.export(),
                found,
            });
        }
        if let Some(import) = shape.unknown_imports.first() {
            return Err(LoadError::UnknownImport {
                plugin: plugin.to_string(),
                import: import.clone(),
            });
        }
        for cap in &shape.capabilities {
            if !grants.allows(*cap) {
                let import = format!("{WIT_PACKAGE}/{cap}@{WIT_VERSION}");
                let granted: Vec<String> = grants.granted().iter().map(|c| c.to_string()).collect();
                return Err(LoadError::Ungranted {
                    plugin: plugin.to_string(),
                    capability: *cap,
                    import,
                    granted: granted.join(", "),
                });
            }
        }
        Ok(shape)
    }

    fn register(&self, health: Arc<HealthCell>) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(health);
    }

    /// Load a replication strategy: compile, check world and grants,
    /// instantiate and configure.
    pub async fn load_strategy(
        &self,
        spec: PluginSpec,
        services: Arc<Services>,
    ) -> Result<WasmStrategy, LoadError> {
        let component = self.compile(&spec.name, &spec.source)?;
        self.check(
            &spec.name,
            &spec.source.to_string(),
            &component,
            WorldKind::ReplicationStrategy,
            &*spec.grants,
        )?;
        let pre = self
            .strategy_linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Instantiate {
                plugin: spec.name.clone(),
                reason: format!("{e:#}"),
            })?;
        let pre = strategy_world::ReplicationStrategyPre::new(pre).map_err(|e| {
            LoadError::Instantiate {
                plugin: spec.name.clone(),
                reason: format!("{e:#}"),
            }
        })?;
        let slot =
            Slot::<StrategyWorld>::start(&self.engine, &self.options, spec, services, pre).await?;
        self.register(slot.health_handle());
        Ok(WasmStrategy::new(slot))
    }

    /// Load a failover action: compile, check world and grants, instantiate
    /// and configure.
    pub async fn load_action(
        &self,
        spec: PluginSpec,
        services: Arc<Services>,
    ) -> Result<WasmAction, LoadError> {
        let component = self.compile(&spec.name, &spec.source)?;
        self.check(
            &spec.name,
            &spec.source.to_string(),
            &component,
            WorldKind::FailoverAction,
            &*spec.grants,
        )?;
        let pre = self
            .action_linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Instantiate {
                plugin: spec.name.clone(),
                reason: format!("{e:#}"),
            })?;
        let pre =
            action_world::FailoverActionPre::new(pre).map_err(|e| LoadError::Instantiate {
                plugin: spec.name.clone(),
                reason: format!("{e:#}"),
            })?;
        let slot =
            Slot::<ActionWorld>::start(&self.engine, &self.options, spec, services, pre).await?;
        self.register(slot.health_handle());
        Ok(WasmAction::new(slot))
    }
}

impl PluginRuntime {
    /// Instantiate a component with no grants, ask it to describe itself and,
    /// given settings, to configure itself (so a profile check catches bad
    /// settings). Capabilities are not reachable: calls get `access-denied`.
    pub async fn probe(
        &self,
        plugin: &str,
        source: &PluginSource,
        settings: Option<&[Setting]>,
    ) -> Result<(super::Descriptor, ComponentShape), LoadError> {
        let component = self.compile(plugin, source)?;
        let shape = shape(&self.engine, &component);
        let staging = std::env::temp_dir().join(format!("standby-probe-{}", std::process::id()));
        let services =
            Services::new(None, staging).map_err(|e| LoadError::Engine(e.to_string()))?;
        let state = HostState::new(
            Arc::from(plugin),
            Arc::new(ResolvedGrants::default()),
            services,
            self.options.memory_cap,
        );
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.set_epoch_deadline(u64::from(u32::MAX));
        let fail = |e: wasmtime::Error| LoadError::Instantiate {
            plugin: plugin.to_string(),
            reason: format!("{e:#}"),
        };
        let settings: Option<Vec<_>> =
            settings.map(|s| s.iter().map(super::convert::setting).collect());
        let (d, configured) = match shape.world {
            Some(WorldKind::ReplicationStrategy) => {
                let b = strategy_world::ReplicationStrategy::instantiate_async(
                    &mut store,
                    &component,
                    &self.strategy_linker,
                )
                .await
                .map_err(fail)?;
                let g = b.standby_plugin_strategy();
                let d = g.call_describe(&mut store).await.map_err(fail)?;
                let c = match &settings {
                    Some(s) => g.call_configure(&mut store, s).await.map_err(fail)?,
                    None => Ok(()),
                };
                (d, c)
            }
            Some(WorldKind::FailoverAction) => {
                let b = action_world::FailoverAction::instantiate_async(
                    &mut store,
                    &component,
                    &self.action_linker,
                )
                .await
                .map_err(fail)?;
                let g = b.standby_plugin_action();
                let d = g.call_describe(&mut store).await.map_err(fail)?;
                let c = match &settings {
                    Some(s) => g.call_configure(&mut store, s).await.map_err(fail)?,
                    None => Ok(()),
                };
                (d, c)
            }
            None => {
                return Err(LoadError::WrongWorld {
                    plugin: plugin.to_string(),
                    source_name: source.to_string(),
                    expected: "plugin",
                    wanted: format!(
                        "{} or {}",
                        WorldKind::ReplicationStrategy.export(),
                        WorldKind::FailoverAction.export()
                    ),
                    found: format!("unknown (exports: {})", shape.exports.join(", ")),
                })
            }
        };
        configured.map_err(|e| LoadError::Configure {
            plugin: plugin.to_string(),
            error: super::convert::error(e),
        })?;
        Ok((super::convert::descriptor(d), shape))
    }
}
