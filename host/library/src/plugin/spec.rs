//! What the runtime is asked to load, with what settings, and what can go
//! wrong: the runtime's options, a plugin's source and spec, load errors, and
//! the WIT package this host implements.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use standby_device::backoff::{Backoff, BackoffError};

use super::health::FaultCause;
use super::types::{CallError, Setting};
use super::Capability;
use crate::caps::ResolvedGrants;

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
    /// Wall-clock limit of each plugin call on the promotion and demotion
    /// path (on-promote, on-demote, activate, deactivate, verify), in
    /// milliseconds: waiting for the instance and time spent inside host
    /// capabilities count. A call that runs out fails its step; the
    /// instance is made afresh for its next call (not a fault).
    pub failover_call_limit_ms: u64,
}

impl RuntimeOptions {
    /// How long a faulted instance waits before it is re-instantiated:
    /// `backoff_initial_ms` doubling up to `backoff_max_ms`, a fifth of each
    /// wait drawn at random.
    pub fn restart_backoff(&self) -> Result<Backoff, LoadError> {
        Backoff::new(
            Duration::from_millis(self.backoff_initial_ms),
            Duration::from_millis(self.backoff_max_ms),
        )
        .and_then(|b| b.with_jitter(0.2))
        .map_err(LoadError::Backoff)
    }
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
            failover_call_limit_ms: 5_000,
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

/// A fault of the WebAssembly engine (setting it up, compiling, linking,
/// instantiating). Its message carries every cause; the causes are also its
/// source chain.
#[derive(Debug)]
pub struct EngineFault(Box<dyn std::error::Error + Send + Sync>);

impl From<wasmtime::Error> for EngineFault {
    fn from(e: wasmtime::Error) -> Self {
        Self(e.into())
    }
}

impl std::fmt::Display for EngineFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for EngineFault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The engine could not be set up.
    #[error("plugin runtime: {0}")]
    Engine(#[source] EngineFault),
    /// The thread that enforces call deadlines could not be started.
    #[error("plugin runtime: starting the epoch thread: {0}")]
    EpochThread(#[source] std::io::Error),
    /// A directory the runtime needs could not be made.
    #[error("plugin runtime: cannot create {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The re-instantiation backoff is not sane.
    #[error("plugin runtime: {0}")]
    Backoff(#[source] BackoffError),
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
        #[source]
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
    #[error("plugin {plugin}: {source_name} does not compile: {fault}")]
    Compile {
        /// Instance name.
        plugin: String,
        /// Where the bytes came from.
        source_name: String,
        /// What the compiler found.
        #[source]
        fault: EngineFault,
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
    /// The component imports functions this host does not implement yet.
    #[error("plugin {plugin}: imports {}, which this host does not implement yet (marked so in the WIT); a plugin may import them only once a host version implements them", functions.join(", "))]
    NotImplemented {
        /// Instance name.
        plugin: String,
        /// The functions, as `interface.function`.
        functions: Vec<String>,
    },
    /// The component does not export the shared `lifecycle` interface
    /// (built against an older draft of the contract).
    #[error("plugin {plugin}: {source_name} does not export `{wanted}` (describe, configure): rebuild it against this WIT")]
    NoLifecycle {
        /// Instance name.
        plugin: String,
        /// Where the bytes came from.
        source_name: String,
        /// The export expected.
        wanted: String,
    },
    /// The component could not be linked or instantiated.
    #[error("plugin {plugin}: cannot instantiate: {fault}")]
    Instantiate {
        /// Instance name.
        plugin: String,
        /// What the engine found.
        #[source]
        fault: EngineFault,
    },
    /// The component trapped while starting (instantiation or `configure`).
    #[error("plugin {plugin}: cannot instantiate: {cause}")]
    StartupFault {
        /// Instance name.
        plugin: String,
        /// The fault.
        #[source]
        cause: FaultCause,
    },
    /// The plugin refused its settings.
    #[error("plugin {plugin}: rejected its settings: {error}")]
    Configure {
        /// Instance name.
        plugin: String,
        /// What it said.
        #[source]
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
