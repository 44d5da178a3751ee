//! The plugins embedded in this binary (`builtin:NAME`), built from `plugins/`
//! and committed as components under `plugins/dist/`.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The bytes of the built-in plugin `name`.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Names of the built-in plugins, sorted.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(n, _)| *n).collect()
}
