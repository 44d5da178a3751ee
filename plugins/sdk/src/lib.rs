//! Write standby plugins as Rust traits.
//!
//! A replication strategy implements [`Strategy`] and calls [`export_strategy!`];
//! a failover action implements [`FailoverAction`] and calls [`export_action!`].
//! The host capabilities are plain functions in [`caps`] (`caps::db::snapshot`,
//! `caps::files::sha256`, ...); each needs a grant in the profile except `log`
//! and `clock`. A plugin imports only the capabilities it calls.
//!
//! ```ignore
//! #[derive(Default)]
//! struct Mine;
//! impl standby_plugin_sdk::Strategy for Mine { /* ... */ }
//! standby_plugin_sdk::export_strategy!(Mine);
//! ```

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

/// Bindings generated from the `platform` world: the capability imports and
/// the shared types.
#[doc(hidden)]
pub mod platform {
    wit_bindgen::generate!({
        path: "wit",
        world: "platform",
        generate_all,
    });
}

// wit-bindgen names the glue of an exported interface after the interface
// alone, so two worlds exporting `lifecycle` cannot both be generated in one
// crate. The SDK generates a plugin's world in parts instead: `lifecycle`
// once, and `strategy` or `action` (with the platform's imports) alone; each
// part embeds its piece of the world, and componentizing merges them into the
// contract's `replication-strategy` or `failover-action`.

/// Bindings of the shared `lifecycle` export.
#[doc(hidden)]
pub mod lifecycle_part {
    wit_bindgen::generate!({
        path: "wit",
        inline: "package standby:sdk; world lifecycle-part { export standby:plugin/lifecycle@0.1.0; }",
        world: "standby:sdk/lifecycle-part",
        with: {
            "standby:plugin/types@0.1.0": crate::platform::standby::plugin::types,
        },
        pub_export_macro: true,
        export_macro_name: "export_lifecycle_part",
        default_bindings_module: "standby_plugin_sdk::lifecycle_part",
    });
}

/// Bindings of the `strategy` export (imports and types come from
/// [`platform`]).
#[doc(hidden)]
pub mod strategy_world {
    wit_bindgen::generate!({
        path: "wit",
        inline: "package standby:sdk; world strategy-part { include standby:plugin/platform@0.1.0; export standby:plugin/strategy@0.1.0; }",
        world: "standby:sdk/strategy-part",
        with: {
            "standby:plugin/types@0.1.0": crate::platform::standby::plugin::types,
            "standby:plugin/log@0.1.0": crate::platform::standby::plugin::log,
            "standby:plugin/clock@0.1.0": crate::platform::standby::plugin::clock,
            "standby:plugin/db@0.1.0": crate::platform::standby::plugin::db,
            "standby:plugin/files@0.1.0": crate::platform::standby::plugin::files,
            "standby:plugin/peer@0.1.0": crate::platform::standby::plugin::peer,
            "standby:plugin/exec@0.1.0": crate::platform::standby::plugin::exec,
            "standby:plugin/net@0.1.0": crate::platform::standby::plugin::net,
            "standby:plugin/dns@0.1.0": crate::platform::standby::plugin::dns,
        },
        pub_export_macro: true,
        export_macro_name: "export_strategy_world",
        default_bindings_module: "standby_plugin_sdk::strategy_world",
    });
}

/// Bindings of the `action` export (imports and types come from [`platform`]).
#[doc(hidden)]
pub mod action_world {
    wit_bindgen::generate!({
        path: "wit",
        inline: "package standby:sdk; world action-part { include standby:plugin/platform@0.1.0; export standby:plugin/action@0.1.0; }",
        world: "standby:sdk/action-part",
        with: {
            "standby:plugin/types@0.1.0": crate::platform::standby::plugin::types,
            "standby:plugin/log@0.1.0": crate::platform::standby::plugin::log,
            "standby:plugin/clock@0.1.0": crate::platform::standby::plugin::clock,
            "standby:plugin/db@0.1.0": crate::platform::standby::plugin::db,
            "standby:plugin/files@0.1.0": crate::platform::standby::plugin::files,
            "standby:plugin/peer@0.1.0": crate::platform::standby::plugin::peer,
            "standby:plugin/exec@0.1.0": crate::platform::standby::plugin::exec,
            "standby:plugin/net@0.1.0": crate::platform::standby::plugin::net,
            "standby:plugin/dns@0.1.0": crate::platform::standby::plugin::dns,
        },
        pub_export_macro: true,
        export_macro_name: "export_action_world",
        default_bindings_module: "standby_plugin_sdk::action_world",
    });
}

/// The host capabilities, one module per WIT interface.
pub mod caps {
    pub use crate::platform::standby::plugin::{clock, db, dns, exec, files, log, net, peer};
}

pub use action_world::exports::standby::plugin::action::ActionReport;
pub use platform::standby::plugin::types::{
    ChangeBatch, Descriptor, Error, FileRef, NodeContext, Role, Setting, Value,
};
pub use strategy_world::exports::standby::plugin::strategy::{
    HandoverProgress, PromoteReport, Received, ReceivedFile, StrategyStatus, TickReport,
};

mod settings;
pub use settings::Settings;

/// Result type of every plugin entry point.
pub type Result<T> = core::result::Result<T, Error>;

/// Write an `info` line to the host log.
pub fn info(message: &str) {
    caps::log::write(caps::log::Level::Info, message);
}

/// Write a `warn` line to the host log.
pub fn warn(message: &str) {
    caps::log::write(caps::log::Level::Warn, message);
}

/// One line for an error, for status output and logs.
pub fn describe_error(e: &Error) -> String {
    match e {
        Error::AccessDenied(s) => format!("access denied: {s}"),
        Error::NotFound(s) => format!("not found: {s}"),
        Error::InvalidArgument(s) => format!("invalid argument: {s}"),
        Error::Unavailable(s) => format!("unavailable: {s}"),
        Error::Conflict(s) => format!("conflict: {s}"),
        Error::Other(s) => s.clone(),
    }
}

/// Write an `error` line to the host log.
pub fn error(message: &str) {
    caps::log::write(caps::log::Level::Error, message);
}

/// A replication strategy. One value lives per plugin instance; the host calls
/// it on both nodes and passes the node's role in every context.
pub trait Strategy: Default + 'static {
    /// Name, version and summary.
    fn describe(&self) -> Descriptor;
    /// Take the settings from the profile; reject bad ones with `invalid-argument`.
    fn configure(&mut self, settings: &Settings) -> Result<()>;
    /// Periodic call; decide whether work is due and do it.
    fn tick(&mut self, ctx: &NodeContext) -> Result<TickReport>;
    /// The peer's plugin sent something.
    fn on_receive(&mut self, ctx: &NodeContext, item: Received) -> Result<()>;
    /// This node is becoming active.
    fn on_promote(&mut self, ctx: &NodeContext) -> Result<PromoteReport>;
    /// This node is no longer active.
    fn on_demote(&mut self, ctx: &NodeContext) -> Result<()>;
    /// Health and progress.
    fn status(&self, ctx: &NodeContext) -> StrategyStatus;
    /// A planned switchover on the active node, the database frozen: send
    /// the other node what it lacks when `first`, and say `done` once it has
    /// confirmed holding all of it. The default refuses: a strategy that
    /// cannot hand over makes the switchover fail before anything moves.
    fn handover(&mut self, _ctx: &NodeContext, _first: bool) -> Result<HandoverProgress> {
        Err(Error::Conflict(String::from(
            "this strategy cannot hand over for a planned switchover",
        )))
    }
}

/// A failover action. One value lives per plugin instance.
pub trait FailoverAction: Default + 'static {
    /// Name, version and summary.
    fn describe(&self) -> Descriptor;
    /// Take the settings from the profile; reject bad ones with `invalid-argument`.
    fn configure(&mut self, settings: &Settings) -> Result<()>;
    /// Make devices reach this node.
    fn activate(&mut self, ctx: &NodeContext) -> Result<ActionReport>;
    /// Undo `activate` on this node.
    fn deactivate(&mut self, ctx: &NodeContext) -> Result<ActionReport>;
    /// Check that devices would reach this node.
    fn verify(&mut self, ctx: &NodeContext) -> Result<ActionReport>;
}

/// Build a [`Descriptor`].
pub fn descriptor(name: &str, version: &str, summary: &str) -> Descriptor {
    Descriptor {
        name: String::from(name),
        version: String::from(version),
        summary: String::from(summary),
    }
}

/// Build an [`ActionReport`] with no details.
pub fn report(summary: String) -> ActionReport {
    ActionReport {
        summary,
        details: Vec::new(),
    }
}

/// Export a type implementing [`Strategy`] as this component's `strategy`.
#[macro_export]
macro_rules! export_strategy {
    ($plugin:ty) => {
        mod __standby_strategy_export {
            use super::*;
            use $crate::strategy_world::exports::standby::plugin::strategy as wit;
            use $crate::lifecycle_part::exports::standby::plugin::lifecycle;
            use $crate::Strategy as _;

            std::thread_local! {
                static PLUGIN: core::cell::RefCell<$plugin> =
                    core::cell::RefCell::new(<$plugin as Default>::default());
            }

            fn with<R>(f: impl FnOnce(&mut $plugin) -> R) -> R {
                PLUGIN.with(|cell| f(&mut cell.borrow_mut()))
            }

            pub struct Export;

            impl lifecycle::Guest for Export {
                fn describe() -> $crate::Descriptor {
                    with(|p| p.describe())
                }
                fn configure(settings: Vec<$crate::Setting>) -> ::core::result::Result<(), $crate::Error> {
                    let settings = $crate::Settings::new(settings);
                    with(|p| p.configure(&settings))
                }
            }

            impl wit::Guest for Export {
                fn tick(ctx: $crate::NodeContext) -> ::core::result::Result<wit::TickReport, $crate::Error> {
                    with(|p| p.tick(&ctx))
                }
                fn on_receive(ctx: $crate::NodeContext, item: wit::Received) -> ::core::result::Result<(), $crate::Error> {
                    with(|p| p.on_receive(&ctx, item))
                }
                fn on_promote(ctx: $crate::NodeContext) -> ::core::result::Result<wit::PromoteReport, $crate::Error> {
                    with(|p| p.on_promote(&ctx))
                }
                fn on_demote(ctx: $crate::NodeContext) -> ::core::result::Result<(), $crate::Error> {
                    with(|p| p.on_demote(&ctx))
                }
                fn status(ctx: $crate::NodeContext) -> wit::StrategyStatus {
                    with(|p| p.status(&ctx))
                }
                fn handover(ctx: $crate::NodeContext, first: bool) -> ::core::result::Result<wit::HandoverProgress, $crate::Error> {
                    with(|p| p.handover(&ctx, first))
                }
            }

            $crate::lifecycle_part::export_lifecycle_part!(Export with_types_in $crate::lifecycle_part);
            $crate::strategy_world::export_strategy_world!(Export with_types_in $crate::strategy_world);
        }
    };
}

/// Export a type implementing [`FailoverAction`] as this component's `action`.
#[macro_export]
macro_rules! export_action {
    ($plugin:ty) => {
        mod __standby_action_export {
            use super::*;
            use $crate::action_world::exports::standby::plugin::action as wit;
            use $crate::lifecycle_part::exports::standby::plugin::lifecycle;
            use $crate::FailoverAction as _;

            std::thread_local! {
                static PLUGIN: core::cell::RefCell<$plugin> =
                    core::cell::RefCell::new(<$plugin as Default>::default());
            }

            fn with<R>(f: impl FnOnce(&mut $plugin) -> R) -> R {
                PLUGIN.with(|cell| f(&mut cell.borrow_mut()))
            }

            pub struct Export;

            impl lifecycle::Guest for Export {
                fn describe() -> $crate::Descriptor {
                    with(|p| p.describe())
                }
                fn configure(settings: Vec<$crate::Setting>) -> ::core::result::Result<(), $crate::Error> {
                    let settings = $crate::Settings::new(settings);
                    with(|p| p.configure(&settings))
                }
            }

            impl wit::Guest for Export {
                fn activate(ctx: $crate::NodeContext) -> ::core::result::Result<wit::ActionReport, $crate::Error> {
                    with(|p| p.activate(&ctx))
                }
                fn deactivate(ctx: $crate::NodeContext) -> ::core::result::Result<wit::ActionReport, $crate::Error> {
                    with(|p| p.deactivate(&ctx))
                }
                fn verify(ctx: $crate::NodeContext) -> ::core::result::Result<wit::ActionReport, $crate::Error> {
                    with(|p| p.verify(&ctx))
                }
            }

            $crate::lifecycle_part::export_lifecycle_part!(Export with_types_in $crate::lifecycle_part);
            $crate::action_world::export_action_world!(Export with_types_in $crate::action_world);
        }
    };
}
