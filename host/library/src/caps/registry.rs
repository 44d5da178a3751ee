//! The registry of capabilities: the list a plugin may import, and, from
//! each capability's own module, the linker that serves them and the
//! load-time check that a plugin imports only what its grants allow.

use wasmtime::component::Linker;
use wasmtime::Engine;

use super::capability::Capability;
use super::grants::GrantCheck;
use super::HostState;

/// Add `cap`'s host functions to `linker`.
fn link(cap: Capability, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    match cap {
        Capability::Log => super::log::link(linker),
        Capability::Clock => super::clock::link(linker),
        Capability::Db => super::db::link(linker),
        Capability::Files => super::files::link(linker),
        Capability::Peer => super::peer::link(linker),
        Capability::Exec => super::exec::link(linker),
        Capability::Net => super::net::link(linker),
        Capability::Dns => super::dns::link(linker),
    }
}

/// A linker serving every capability (and the function-less `types`
/// interface); both plugin worlds import from the same set.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    crate::wit::strategy::standby::plugin::types::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(&mut linker, |s| s)?;
    for cap in Capability::ALL {
        link(cap, &mut linker)?;
    }
    Ok(linker)
}

/// The functions of `cap` that the WIT declares and this host does not
/// implement yet (marked so in the WIT); importing one fails the load.
pub(crate) fn not_implemented(cap: Capability) -> &'static [&'static str] {
    match cap {
        Capability::Db => super::db::NOT_IMPLEMENTED,
        Capability::Peer => super::peer::NOT_IMPLEMENTED,
        Capability::Net => super::net::NOT_IMPLEMENTED,
        Capability::Log
        | Capability::Clock
        | Capability::Files
        | Capability::Exec
        | Capability::Dns => &[],
    }
}

/// The load-time check: the first of `imports` that `grants` do not allow.
pub(crate) fn ungranted(imports: &[Capability], grants: &dyn GrantCheck) -> Option<Capability> {
    imports.iter().copied().find(|c| !grants.allows(*c))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::caps::GrantsConfig;

    #[test]
    fn names_round_trip_and_only_log_and_clock_come_free() {
        for cap in Capability::ALL {
            assert_eq!(Capability::from_name(cap.name()), Some(cap));
        }
        assert_eq!(Capability::from_name("types"), None);
        let none = GrantsConfig::default();
        let free: Vec<_> = Capability::ALL
            .into_iter()
            .filter(|c| c.always_granted())
            .collect();
        assert_eq!(free, [Capability::Log, Capability::Clock]);
        assert_eq!(none.granted(), free);
        assert_eq!(
            ungranted(&[Capability::Log, Capability::Db], &none),
            Some(Capability::Db)
        );
        let db = GrantsConfig {
            db: Some(Default::default()),
            ..GrantsConfig::default()
        };
        assert_eq!(ungranted(&[Capability::Db], &db), None);
    }

    #[test]
    fn one_linker_serves_every_capability() {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        assert!(linker(&engine).is_ok());
    }
}
