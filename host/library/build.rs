//! Embeds the built-in plugin components (`plugins/dist/*.wasm`) in the binary.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut entries: Vec<(String, String)> = Vec::new();
    if let Ok(read) = std::fs::read_dir(&dist) {
        for item in read.flatten() {
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) == Some("wasm") {
                if let (Some(stem), Ok(abs)) = (
                    path.file_stem().and_then(|s| s.to_str()),
                    path.canonicalize(),
                ) {
                    entries.push((stem.to_string(), abs.display().to_string()));
                }
            }
        }
    }
    entries.sort();
    let mut out = String::from("/// Built-in plugin components: name and bytes.\npub(crate) static BUILTINS: &[(&str, &[u8])] = &[\n");
    for (name, path) in &entries {
        let _ = writeln!(out, "    ({name:?}, include_bytes!({path:?})),");
    }
    out.push_str("];\n");
    let target =
        Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("builtin_plugins.rs");
    if let Err(e) = std::fs::write(&target, out) {
        println!("cargo:warning=cannot write {}: {e}", target.display());
    }
}
