//! The shape of a compiled component: which world it targets, what it
//! imports and exports, and the capabilities those imports need.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

use super::spec::{WIT_PACKAGE, WIT_VERSION};
use super::Capability;

/// Why `bytes` is not a component, or `None` if it is one.
pub(super) fn not_a_component(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Some("it does not start with the WebAssembly magic bytes".into());
    }
    if wasmparser::Parser::is_component(bytes) {
        None
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        Some("it is a core WebAssembly module; wrap it with `standby plugin componentize`".into())
    } else {
        Some("its WebAssembly header has an unknown version or layer".into())
    }
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
    /// Imported functions the WIT declares but this host does not implement
    /// yet (`db.freeze`, ...); a plugin that imports one is refused at load.
    pub not_implemented: Vec<String>,
    /// Whether it exports the shared `lifecycle` interface.
    pub lifecycle: bool,
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
    let mut not_implemented = Vec::new();
    for (name, item) in ty.imports(engine) {
        match classify_import(name) {
            ImportKind::Capability(c) => {
                capabilities.push(c);
                let missing = crate::caps::registry::not_implemented(c);
                if let ComponentItem::ComponentInstance(instance) = item.ty {
                    for (function, _) in instance.exports(engine) {
                        if missing.contains(&function) {
                            not_implemented.push(format!("{c}.{function}"));
                        }
                    }
                }
            }
            ImportKind::Types => {}
            ImportKind::Unknown => unknown_imports.push(name.to_string()),
        }
    }
    capabilities.sort();
    not_implemented.sort();
    let lifecycle = exports.iter().any(|n| *n == lifecycle_export());
    ComponentShape {
        imports,
        exports,
        world,
        capabilities,
        unknown_imports,
        not_implemented,
        lifecycle,
    }
}

/// The shared `lifecycle` export, fully qualified.
pub(super) fn lifecycle_export() -> String {
    format!("{WIT_PACKAGE}/lifecycle@{WIT_VERSION}")
}
