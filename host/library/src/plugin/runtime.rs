//! The WebAssembly component runtime: one shared engine with wasmtime's
//! compilation cache, an epoch ticker for per-call deadlines, and loading with
//! world and grant checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine};

use super::builtin;
use super::health::{Health, HealthCell};
use super::types::Setting;
use super::wasm::{ActionWorld, Slot, StrategyWorld, WasmAction, WasmStrategy};
use crate::caps::output::InstanceOutput;
use crate::caps::GrantCheck;
use crate::caps::{HostState, ResolvedGrants, Services};
use crate::wit::{action as action_world, strategy as strategy_world};

pub use super::shape::{classify_import, shape, ComponentShape, ImportKind, WorldKind};
pub use super::spec::{
    EngineFault, LoadError, PluginSource, PluginSpec, RuntimeOptions, EPOCH_TICK, WIT_PACKAGE,
    WIT_VERSION,
};

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
    /// Serves every capability to both plugin worlds.
    linker: Linker<HostState>,
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
        options.restart_backoff()?;
        let engine_err = |e: wasmtime::Error| LoadError::Engine(e.into());
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

        // Both worlds import the same capabilities: one linker, built from
        // the registry, serves them.
        let linker = crate::caps::registry::linker(&engine).map_err(engine_err)?;

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
            .map_err(LoadError::EpochThread)?;

        Ok(Self {
            engine,
            linker,
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
        if let Some(reason) = super::shape::not_a_component(bytes) {
            return Err(LoadError::NotComponent {
                plugin: plugin.to_string(),
                source_name: source_name.to_string(),
                reason,
            });
        }
        Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile {
            plugin: plugin.to_string(),
            source_name: source_name.to_string(),
            fault: e.into(),
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
        if !shape.lifecycle {
            return Err(LoadError::NoLifecycle {
                plugin: plugin.to_string(),
                source_name: source_name.to_string(),
                wanted: super::shape::lifecycle_export(),
            });
        }
        if !shape.not_implemented.is_empty() {
            return Err(LoadError::NotImplemented {
                plugin: plugin.to_string(),
                functions: shape.not_implemented.clone(),
            });
        }
        if let Some(cap) = crate::caps::registry::ungranted(&shape.capabilities, grants) {
            let import = format!("{WIT_PACKAGE}/{cap}@{WIT_VERSION}");
            let granted: Vec<String> = grants.granted().iter().map(|c| c.to_string()).collect();
            return Err(LoadError::Ungranted {
                plugin: plugin.to_string(),
                capability: cap,
                import,
                granted: granted.join(", "),
            });
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
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Instantiate {
                plugin: spec.name.clone(),
                fault: e.into(),
            })?;
        let pre = strategy_world::ReplicationStrategyPre::new(pre).map_err(|e| {
            LoadError::Instantiate {
                plugin: spec.name.clone(),
                fault: e.into(),
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
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Instantiate {
                plugin: spec.name.clone(),
                fault: e.into(),
            })?;
        let pre =
            action_world::FailoverActionPre::new(pre).map_err(|e| LoadError::Instantiate {
                plugin: spec.name.clone(),
                fault: e.into(),
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
        let services = Services::new(None, &staging).map_err(|source| LoadError::Directory {
            path: staging.clone(),
            source,
        })?;
        let state = HostState::new(
            Arc::from(plugin),
            Arc::new(ResolvedGrants::default()),
            services,
            self.options.memory_cap,
            Arc::default(),
        );
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.set_epoch_deadline(u64::from(u32::MAX));
        let fail = |e: wasmtime::Error| LoadError::Instantiate {
            plugin: plugin.to_string(),
            fault: e.into(),
        };
        let settings: Option<Vec<_>> =
            settings.map(|s| s.iter().map(super::convert::setting).collect());
        let (d, configured) = match shape.world {
            Some(WorldKind::ReplicationStrategy) => {
                let b = strategy_world::ReplicationStrategy::instantiate_async(
                    &mut store,
                    &component,
                    &self.linker,
                )
                .await
                .map_err(fail)?;
                let g = b.standby_plugin_lifecycle();
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
                    &self.linker,
                )
                .await
                .map_err(fail)?;
                let g = b.standby_plugin_lifecycle();
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
            error: super::convert::error(e, &InstanceOutput::default()),
        })?;
        Ok((
            super::convert::descriptor(d, &InstanceOutput::default()),
            shape,
        ))
    }
}
