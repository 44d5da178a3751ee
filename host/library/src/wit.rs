//! Host bindings generated from the WIT contract in `wit/`: the capability
//! interfaces the host implements (`caps`) and the worlds plugins export
//! (`plugin`). A leaf of the crate.
//!
//! The capability imports and the shared types are generated once, with the
//! `replication-strategy` world; the `failover-action` world reuses them.
#![allow(unsafe_code, missing_docs, clippy::all)]

/// The `replication-strategy` world: all capability imports, `strategy` export.
pub(crate) mod strategy {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "replication-strategy",
        // `log` and `clock` never block: plain calls, no future per call.
        imports: {
            "standby:plugin/log.write": exact,
            "standby:plugin/clock.now": exact,
            "standby:plugin/clock.monotonic-ms": exact,
            default: async,
        },
        exports: { default: async },
    });
}

/// The `failover-action` world: the same imports, `action` export.
pub(crate) mod action {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "failover-action",
        imports: { default: async },
        exports: { default: async },
        with: {
            "standby:plugin/types": super::strategy::standby::plugin::types,
            "standby:plugin/log": super::strategy::standby::plugin::log,
            "standby:plugin/clock": super::strategy::standby::plugin::clock,
            "standby:plugin/db": super::strategy::standby::plugin::db,
            "standby:plugin/files": super::strategy::standby::plugin::files,
            "standby:plugin/peer": super::strategy::standby::plugin::peer,
            "standby:plugin/exec": super::strategy::standby::plugin::exec,
            "standby:plugin/net": super::strategy::standby::plugin::net,
            "standby:plugin/dns": super::strategy::standby::plugin::dns,
        },
    });
}
