//! `dns-ip`: a failover action that makes devices reach the active node. In
//! DNS mode (the only mode so far; an address mode comes later) `activate`
//! replaces the A record of the service name with this node's address, by an
//! RFC 2136 update through the host's `dns` capability, and queries the server
//! to check that it now answers exactly that address.
//!
//! Settings:
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `mode` | `dns` | how devices are moved; only `dns` for now |
//! | `server` | — (required) | name of a DNS server in this entry's `grants.dns` |
//! | `name` | — (required) | the service name, e.g. `door.example.test` (made absolute: `door.example.test.`) |
//! | `ttl` | 5 | TTL of the record in seconds, 0..=86400 |
//! | `attempts` | 3 | update-and-check attempts in `activate`, 1..=20 |
//! | `address.<site>` | — (at least one) | IPv4 address of the node at `<site>` (a key of the profile's `sites`) |
//!
//! The addresses are a table in the profile, one line per site:
//!
//! ```toml
//! [failover.settings.address]
//! onsite = "192.0.2.10"
//! dr = "198.51.100.10"
//! ```
//!
//! `deactivate` leaves the name alone: the node stepping down cannot know that
//! the peer is up, so the node that becomes active repoints the name. `verify`
//! queries the name and fails with `conflict` unless it points at this node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use standby_plugin_sdk::caps::dns::{self, RecordType};
use standby_plugin_sdk::{
    descriptor, ActionReport, Descriptor, Error, FailoverAction, NodeContext, Result, Settings,
};

/// Setting keys besides the `address.<site>` ones.
const KEYS: &[&str] = &["mode", "server", "name", "ttl", "attempts"];
/// Prefix of the per-site address keys.
const ADDRESS: &str = "address.";

/// The checked settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Name of the granted DNS server.
    pub server: String,
    /// The service name, absolute (ends with `.`).
    pub name: String,
    /// TTL of the record, seconds.
    pub ttl: u32,
    /// Update-and-check attempts in `activate`.
    pub attempts: u32,
    /// IPv4 address of the node at each site, by site name.
    pub addresses: BTreeMap<String, Ipv4Addr>,
}

impl Config {
    /// Check the settings; errors are `invalid-argument` naming the key.
    pub fn parse(settings: &Settings) -> Result<Self> {
        let unknown: Vec<String> = settings
            .unknown_keys(KEYS)
            .into_iter()
            .filter(|k| !k.starts_with(ADDRESS))
            .collect();
        if unknown.iter().any(|k| k == "address") {
            return Err(invalid(String::from(
                "setting `address` must be a table of site = IPv4 address \
                 (`[failover.settings.address]` with e.g. `onsite = \"192.0.2.10\"`)",
            )));
        }
        if !unknown.is_empty() {
            return Err(invalid(format!(
                "unknown setting(s) {}; known: {}, address.<site>",
                unknown.join(", "),
                KEYS.join(", ")
            )));
        }
        let mode = settings.text("mode", "dns")?;
        if mode != "dns" {
            return Err(invalid(format!(
                "setting `mode` = {mode:?} is not supported; the only mode so far is \"dns\""
            )));
        }
        let server = required(settings, "server")?;
        let name = absolute_name(&required(settings, "name")?)?;
        let ttl = settings.integer("ttl", 5, 0, 86_400)? as u32;
        let attempts = settings.integer("attempts", 3, 1, 20)? as u32;

        let mut addresses: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
        // Every key left over is an `address.<site>` key.
        for key in settings.unknown_keys(KEYS) {
            let site = &key[ADDRESS.len()..];
            if site.is_empty() {
                return Err(invalid(format!("setting `{key}` names no site")));
            }
            let text = settings.text(&key, "")?;
            let addr: Ipv4Addr = text.trim().parse().map_err(|_| {
                invalid(format!(
                    "setting `{key}` = {text:?} is not an IPv4 address (e.g. \"192.0.2.10\")"
                ))
            })?;
            if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
                return Err(invalid(format!(
                    "setting `{key}` = {text:?} is not a unicast IPv4 address"
                )));
            }
            if let Some((other, _)) = addresses.iter().find(|(_, a)| **a == addr) {
                return Err(invalid(format!(
                    "setting `{key}` = {text:?} is also `address.{other}`; each site needs its own address"
                )));
            }
            addresses.insert(String::from(site), addr);
        }
        if addresses.is_empty() {
            return Err(invalid(String::from(
                "setting `address.<site>` is required: give this node's IPv4 address for each site \
                 (`[failover.settings.address]` with e.g. `onsite = \"192.0.2.10\"`)",
            )));
        }
        Ok(Self {
            server,
            name,
            ttl,
            attempts,
            addresses,
        })
    }
}

/// A required, non-empty text setting.
fn required(settings: &Settings, key: &str) -> Result<String> {
    match settings.text_opt(key)? {
        None => Err(invalid(format!("setting `{key}` is required"))),
        Some(t) if t.trim().is_empty() => {
            Err(invalid(format!("setting `{key}` must not be empty")))
        }
        Some(t) => Ok(String::from(t.trim())),
    }
}

/// Check a domain name and return it absolute (with the trailing `.`).
fn absolute_name(name: &str) -> Result<String> {
    let bad = |why: &str| invalid(format!("setting `name` = {name:?} {why}"));
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err(bad("is not a domain name"));
    }
    if bare.len() > 253 {
        return Err(bad("is longer than 253 characters"));
    }
    if !bare.contains('.') {
        return Err(bad(
            "must be a fully qualified name with its zone (e.g. \"door.example.test\")",
        ));
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("has an empty label or one longer than 63 characters"));
        }
        let ok = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok || label.starts_with('-') || label.ends_with('-') {
            return Err(bad(&format!(
                "has a bad label `{label}` (letters, digits, `-` inside, `_`)"
            )));
        }
    }
    Ok(format!("{bare}."))
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// The text of an error, without its kind.
fn message(e: &Error) -> &str {
    match e {
        Error::AccessDenied(s)
        | Error::NotFound(s)
        | Error::InvalidArgument(s)
        | Error::Unavailable(s)
        | Error::Conflict(s)
        | Error::Other(s) => s,
    }
}

/// The same kind of error with another text.
fn with_message(e: &Error, text: String) -> Error {
    match e {
        Error::AccessDenied(_) => Error::AccessDenied(text),
        Error::NotFound(_) => Error::NotFound(text),
        Error::InvalidArgument(_) => Error::InvalidArgument(text),
        Error::Unavailable(_) => Error::Unavailable(text),
        Error::Conflict(_) => Error::Conflict(text),
        Error::Other(_) => Error::Other(text),
    }
}

/// Whether retrying cannot help (a refused grant, a rejected argument).
fn permanent(e: &Error) -> bool {
    matches!(e, Error::AccessDenied(_) | Error::InvalidArgument(_))
}

/// Whether a query answer is exactly `addr`.
fn points_at(answer: &[String], addr: Ipv4Addr) -> bool {
    matches!(answer, [one] if one.trim().parse::<Ipv4Addr>() == Ok(addr))
}

/// A query answer for messages.
fn show(answer: &[String]) -> String {
    if answer.is_empty() {
        String::from("no A record")
    } else {
        answer.join(", ")
    }
}

fn detail(key: &str, value: impl ToString) -> (String, String) {
    (String::from(key), value.to_string())
}

/// What the action needs from the host: A-record updates and queries, and a
/// log line. The plugin uses [`Host`]; the unit tests use a fake.
pub trait Backend {
    /// Replace every A record at `name` on `server` with `addresses`.
    fn replace(&mut self, server: &str, name: &str, addresses: &[String], ttl: u32) -> Result<()>;
    /// The A records at `name`, asked of `server`.
    fn query(&mut self, server: &str, name: &str) -> Result<Vec<String>>;
    /// Write a warning to the node's log.
    fn warn(&mut self, message: &str);
}

/// The host's `dns` and `log` capabilities.
pub struct Host;

impl Backend for Host {
    fn replace(&mut self, server: &str, name: &str, addresses: &[String], ttl: u32) -> Result<()> {
        dns::replace(server, name, RecordType::A, addresses, ttl)
    }
    fn query(&mut self, server: &str, name: &str) -> Result<Vec<String>> {
        dns::query(server, name, RecordType::A)
    }
    fn warn(&mut self, message: &str) {
        standby_plugin_sdk::warn(message);
    }
}

/// The action's state: its settings.
#[derive(Debug, Default)]
pub struct DnsIp {
    config: Config,
}

impl DnsIp {
    /// The checked settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's address: the one set for its site.
    fn address(&self, ctx: &NodeContext) -> Result<Ipv4Addr> {
        self.config
            .addresses
            .get(&ctx.site)
            .copied()
            .ok_or_else(|| {
                let known: Vec<&str> = self.config.addresses.keys().map(|s| s.as_str()).collect();
                invalid(format!(
                    "no address for site `{site}`: set `address.{site}` in the settings \
                     (addresses are set for: {})",
                    if known.is_empty() {
                        String::from("no site")
                    } else {
                        known.join(", ")
                    },
                    site = ctx.site
                ))
            })
    }

    /// One update followed by a query that must answer exactly `addr`.
    fn repoint_once(&self, host: &mut impl Backend, addr: Ipv4Addr) -> Result<()> {
        let c = &self.config;
        host.replace(&c.server, &c.name, &[addr.to_string()], c.ttl)
            .map_err(|e| with_message(&e, format!("update: {}", message(&e))))?;
        let answer = host
            .query(&c.server, &c.name)
            .map_err(|e| with_message(&e, format!("query after the update: {}", message(&e))))?;
        if points_at(&answer, addr) {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "after the update the server answers {}",
                show(&answer)
            )))
        }
    }

    /// `activate` against any backend.
    pub fn activate_with(
        &self,
        host: &mut impl Backend,
        ctx: &NodeContext,
    ) -> Result<ActionReport> {
        let addr = self.address(ctx)?;
        let c = &self.config;
        let what = format!("repointing {} A -> {addr} on server `{}`", c.name, c.server);
        let mut last = Error::Other(String::from("no attempt made"));
        let mut used = 0;
        while used < c.attempts {
            used += 1;
            match self.repoint_once(host, addr) {
                Ok(()) => {
                    return Ok(ActionReport {
                        summary: format!("repointed {} A -> {addr} (verified)", c.name),
                        details: vec![
                            detail("attempts", format!("{used}/{}", c.attempts)),
                            detail("ttl", c.ttl),
                            detail("server", &c.server),
                        ],
                    })
                }
                Err(e) if permanent(&e) => {
                    return Err(with_message(
                        &e,
                        format!(
                            "{what} failed on attempt {used} of {} (not retried): {}",
                            c.attempts,
                            message(&e)
                        ),
                    ))
                }
                Err(e) => {
                    if used < c.attempts {
                        host.warn(&format!(
                            "{what}: attempt {used} of {} failed: {}; retrying",
                            c.attempts,
                            message(&e)
                        ));
                    }
                    last = e;
                }
            }
        }
        Err(with_message(
            &last,
            format!("{what} failed after {used} attempt(s): {}", message(&last)),
        ))
    }

    /// `verify` against any backend.
    pub fn verify_with(&self, host: &mut impl Backend, ctx: &NodeContext) -> Result<ActionReport> {
        let addr = self.address(ctx)?;
        let c = &self.config;
        let answer = host.query(&c.server, &c.name).map_err(|e| {
            with_message(
                &e,
                format!(
                    "querying {} A on server `{}`: {}",
                    c.name,
                    c.server,
                    message(&e)
                ),
            )
        })?;
        if !points_at(&answer, addr) {
            return Err(Error::Conflict(format!(
                "{} A is {}, not this node's {addr} (site `{}`)",
                c.name,
                show(&answer),
                ctx.site
            )));
        }
        Ok(ActionReport {
            summary: format!("{} A -> {addr}: points at this node", c.name),
            details: vec![detail("server", &c.server), detail("site", &ctx.site)],
        })
    }
}

impl FailoverAction for DnsIp {
    fn describe(&self) -> Descriptor {
        descriptor(
            "dns-ip",
            env!("CARGO_PKG_VERSION"),
            "repoints a DNS name at the active node (RFC 2136 update, checked by a query)",
        )
    }

    fn configure(&mut self, settings: &Settings) -> Result<()> {
        self.config = Config::parse(settings)?;
        Ok(())
    }

    fn activate(&mut self, ctx: &NodeContext) -> Result<ActionReport> {
        self.activate_with(&mut Host, ctx)
    }

    fn deactivate(&mut self, _ctx: &NodeContext) -> Result<ActionReport> {
        // Pointing the name elsewhere needs the peer's address and knowledge
        // that the peer is up; the node that becomes active does it.
        Ok(ActionReport {
            summary: format!(
                "left {} for the new active node to repoint (DNS mode)",
                self.config.name
            ),
            details: vec![detail("mode", "dns")],
        })
    }

    fn verify(&mut self, ctx: &NodeContext) -> Result<ActionReport> {
        self.verify_with(&mut Host, ctx)
    }
}

#[cfg(feature = "export")]
standby_plugin_sdk::export_action!(DnsIp);

#[cfg(test)]
mod tests {
    use super::*;
    use standby_plugin_sdk::{Role, Setting, Value};

    fn text(key: &str, value: &str) -> Setting {
        Setting {
            key: String::from(key),
            value: Value::Text(String::from(value)),
        }
    }

    fn int(key: &str, value: i64) -> Setting {
        Setting {
            key: String::from(key),
            value: Value::Integer(value),
        }
    }

    fn base() -> Vec<Setting> {
        vec![
            text("server", "primary"),
            text("name", "door.example.test"),
            text("address.onsite", "127.0.0.1"),
            text("address.dr", "127.0.0.2"),
        ]
    }

    fn parse(items: Vec<Setting>) -> Result<Config> {
        Config::parse(&Settings::new(items))
    }

    /// The error's text, for an `invalid-argument`.
    fn invalid_text(r: Result<Config>) -> String {
        match r {
            Err(Error::InvalidArgument(s)) => s,
            other => panic!("expected invalid-argument, got {other:?}"),
        }
    }

    fn without(key: &str) -> Vec<Setting> {
        base().into_iter().filter(|s| s.key != key).collect()
    }

    fn with(extra: Setting) -> Vec<Setting> {
        let mut v = without(&extra.key);
        v.push(extra);
        v
    }

    #[test]
    fn defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.server, "primary");
        assert_eq!(c.name, "door.example.test.");
        assert_eq!(c.ttl, 5);
        assert_eq!(c.attempts, 3);
        assert_eq!(c.addresses.len(), 2);
        assert_eq!(c.addresses["onsite"], Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(c.addresses["dr"], Ipv4Addr::new(127, 0, 0, 2));
        let c = parse(with(text("name", "door.example.test."))).unwrap();
        assert_eq!(c.name, "door.example.test.");
        let c = parse(with(text("mode", "dns"))).unwrap();
        assert_eq!(c.attempts, 3);
        let c = parse(with(int("ttl", 0))).unwrap();
        assert_eq!(c.ttl, 0);
        let c = parse(with(int("attempts", 20))).unwrap();
        assert_eq!(c.attempts, 20);
    }

    #[test]
    fn errors_name_the_key() {
        assert!(invalid_text(parse(with(text("colour", "x")))).contains("colour"));
        assert!(invalid_text(parse(with(text("address", "127.0.0.1")))).contains("`address`"));
        assert!(invalid_text(parse(with(text("mode", "address")))).contains("`mode`"));
        assert!(invalid_text(parse(without("server"))).contains("`server`"));
        assert!(invalid_text(parse(with(text("server", " ")))).contains("`server`"));
        assert!(invalid_text(parse(without("name"))).contains("`name`"));
        assert!(invalid_text(parse(with(text("name", "door")))).contains("`name`"));
        assert!(invalid_text(parse(with(text("name", "a..b")))).contains("`name`"));
        assert!(invalid_text(parse(with(text("name", "-a.b")))).contains("`name`"));
        assert!(invalid_text(parse(with(int("ttl", 86_401)))).contains("`ttl`"));
        assert!(invalid_text(parse(with(int("ttl", -1)))).contains("`ttl`"));
        assert!(invalid_text(parse(with(text("ttl", "5")))).contains("`ttl`"));
        assert!(invalid_text(parse(with(int("attempts", 0)))).contains("`attempts`"));
        assert!(invalid_text(parse(with(int("attempts", 21)))).contains("`attempts`"));
        let bad = invalid_text(parse(with(text("address.dr", "127.0.0.256"))));
        assert!(bad.contains("`address.dr`"), "{bad}");
        assert!(invalid_text(parse(with(text("address.dr", "::1")))).contains("`address.dr`"));
        assert!(invalid_text(parse(with(int("address.dr", 1)))).contains("`address.dr`"));
        assert!(invalid_text(parse(with(text("address.dr", "0.0.0.0")))).contains("`address.dr`"));
        assert!(
            invalid_text(parse(with(text("address.dr", "127.0.0.1")))).contains("address.onsite")
        );
        let none = without("address.onsite")
            .into_iter()
            .filter(|s| s.key != "address.dr")
            .collect();
        assert!(invalid_text(parse(none)).contains("address.<site>"));
    }

    /// A DNS server in memory: fails the first `failures` calls with
    /// `unavailable` (or always with `error`), and can ignore updates.
    #[derive(Default)]
    struct Fake {
        records: Vec<String>,
        failures: u32,
        error: Option<Error>,
        ignore_updates: bool,
        updates: u32,
        warnings: Vec<String>,
    }

    impl Fake {
        fn fail(&mut self) -> Result<()> {
            if let Some(e) = &self.error {
                return Err(e.clone());
            }
            if self.failures > 0 {
                self.failures -= 1;
                return Err(Error::Unavailable(String::from("server timed out")));
            }
            Ok(())
        }
    }

    impl Backend for Fake {
        fn replace(
            &mut self,
            server: &str,
            name: &str,
            addresses: &[String],
            ttl: u32,
        ) -> Result<()> {
            assert_eq!((server, name, ttl), ("primary", "door.example.test.", 5));
            self.fail()?;
            self.updates += 1;
            if !self.ignore_updates {
                self.records = addresses.to_vec();
            }
            Ok(())
        }
        fn query(&mut self, _server: &str, _name: &str) -> Result<Vec<String>> {
            self.fail()?;
            Ok(self.records.clone())
        }
        fn warn(&mut self, message: &str) {
            self.warnings.push(String::from(message));
        }
    }

    fn ctx(site: &str) -> NodeContext {
        NodeContext {
            node_id: format!("{site}-1"),
            site: String::from(site),
            role: Role::Active,
            epoch: 7,
            now: 0,
        }
    }

    fn action() -> DnsIp {
        let mut a = DnsIp::default();
        a.configure(&Settings::new(base())).unwrap();
        a
    }

    #[test]
    fn activate_repoints_and_checks() {
        let mut dns = Fake {
            records: vec![String::from("127.0.0.1")],
            ..Fake::default()
        };
        let r = action().activate_with(&mut dns, &ctx("dr")).unwrap();
        assert_eq!(
            r.summary,
            "repointed door.example.test. A -> 127.0.0.2 (verified)"
        );
        assert!(r.details.contains(&detail("attempts", "1/3")));
        assert_eq!(dns.records, vec![String::from("127.0.0.2")]);
        assert!(dns.warnings.is_empty());
        assert!(action().verify_with(&mut dns, &ctx("dr")).is_ok());
        match action().verify_with(&mut dns, &ctx("onsite")) {
            Err(Error::Conflict(s)) => assert!(s.contains("127.0.0.2"), "{s}"),
            other => panic!("expected conflict, got {other:?}"),
        }
    }

    #[test]
    fn activate_retries() {
        let mut dns = Fake {
            failures: 2,
            ..Fake::default()
        };
        let r = action().activate_with(&mut dns, &ctx("onsite")).unwrap();
        assert!(r.details.contains(&detail("attempts", "3/3")));
        assert_eq!(dns.warnings.len(), 2);

        let mut dns = Fake {
            failures: 100,
            ..Fake::default()
        };
        match action().activate_with(&mut dns, &ctx("onsite")) {
            Err(Error::Unavailable(s)) => {
                assert!(s.contains("after 3 attempt"), "{s}");
                assert!(s.contains("server timed out"), "{s}");
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
        assert_eq!(dns.warnings.len(), 2);

        // The update is accepted but the server keeps answering the old address.
        let mut dns = Fake {
            records: vec![String::from("127.0.0.2")],
            ignore_updates: true,
            ..Fake::default()
        };
        match action().activate_with(&mut dns, &ctx("onsite")) {
            Err(Error::Conflict(s)) => assert!(s.contains("answers 127.0.0.2"), "{s}"),
            other => panic!("expected conflict, got {other:?}"),
        }
        assert_eq!(dns.updates, 3);
    }

    #[test]
    fn activate_does_not_retry_a_refusal() {
        let mut dns = Fake {
            error: Some(Error::AccessDenied(String::from("not granted"))),
            ..Fake::default()
        };
        match action().activate_with(&mut dns, &ctx("onsite")) {
            Err(Error::AccessDenied(s)) => assert!(s.contains("not retried"), "{s}"),
            other => panic!("expected access-denied, got {other:?}"),
        }
        assert!(dns.warnings.is_empty());
    }

    #[test]
    fn unknown_site_and_deactivate() {
        let mut dns = Fake::default();
        match action().activate_with(&mut dns, &ctx("elsewhere")) {
            Err(Error::InvalidArgument(s)) => assert!(s.contains("`elsewhere`"), "{s}"),
            other => panic!("expected invalid-argument, got {other:?}"),
        }
        assert_eq!(dns.updates, 0);
        assert!(action().deactivate(&ctx("onsite")).is_ok());
        assert!(DnsIp::default().deactivate(&ctx("onsite")).is_ok());
    }
}
