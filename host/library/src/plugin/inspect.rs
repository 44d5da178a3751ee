//! What a component file is: its world, imports, exports, and the grants it
//! needs, so an operator knows what to put in the profile.

use serde::Serialize;

use super::runtime::PluginRuntime;
use super::shape::{shape, ComponentShape};
use super::spec::LoadError;

/// A component's shape, for `standby plugin inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The file or built-in name.
    pub source: String,
    /// Size in bytes.
    pub size: usize,
    /// World name, or `unknown`.
    pub world: String,
    /// Imports, exports and needed capabilities.
    #[serde(flatten)]
    pub shape: ComponentShape,
}

impl Inspection {
    /// Human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n  size:    {} bytes\n  world:   {}\n",
            self.source, self.size, self.world
        );
        s.push_str("  imports:\n");
        for i in &self.shape.imports {
            s.push_str(&format!("    {i}\n"));
        }
        s.push_str("  exports:\n");
        for e in &self.shape.exports {
            s.push_str(&format!("    {e}\n"));
        }
        let grants: Vec<String> = self
            .shape
            .capabilities
            .iter()
            .filter(|c| !c.always_granted())
            .map(|c| c.to_string())
            .collect();
        s.push_str(&format!(
            "  grants needed: {}\n",
            if grants.is_empty() {
                "none".to_string()
            } else {
                grants.join(", ")
            }
        ));
        if !self.shape.not_implemented.is_empty() {
            s.push_str(&format!(
                "  NOT IMPLEMENTED by this host yet (the plugin will be refused at load): {}\n",
                self.shape.not_implemented.join(", ")
            ));
        }
        if !self.shape.lifecycle {
            s.push_str(&format!(
                "  WARNING: does not export {} (built against an older draft; it will be refused at load)\n",
                super::shape::lifecycle_export()
            ));
        }
        if !self.shape.unknown_imports.is_empty() {
            s.push_str(&format!(
                "  WARNING: imports this host does not provide: {}\n",
                self.shape.unknown_imports.join(", ")
            ));
        }
        s
    }
}

/// Compile `bytes` and describe them.
pub fn inspect(
    runtime: &PluginRuntime,
    source: &str,
    bytes: &[u8],
) -> Result<Inspection, LoadError> {
    let component = runtime.compile_bytes("inspect", source, bytes)?;
    let shape = shape(runtime.engine(), &component);
    Ok(Inspection {
        source: source.to_string(),
        size: bytes.len(),
        world: shape
            .world
            .map(|w| w.name().to_string())
            .unwrap_or_else(|| "unknown".into()),
        shape,
    })
}
