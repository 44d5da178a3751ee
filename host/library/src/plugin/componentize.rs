//! Turn a core wasm module built with the plugin SDK (wit-bindgen) into a
//! component. Used by `plugins/build`; third-party authors can use it too.

/// Why componentizing failed.
#[derive(Debug, thiserror::Error)]
#[error("componentize: {0}")]
pub struct ComponentizeError(String);

/// Encode a core module (with its embedded `component-type` section) as a component.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>, ComponentizeError> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .map_err(|e| ComponentizeError(format!("{e:#}")))?
        .validate(true)
        .encode()
        .map_err(|e| ComponentizeError(format!("{e:#}")))
}
