//! The capabilities a plugin can import, by name. A leaf: the registry,
//! the grants and the plugin runtime all use it.

/// The host capabilities a plugin can import. `Log` and `Clock` are always
/// granted; the rest need a grant in the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Logging.
    Log,
    /// Time.
    Clock,
    /// The database.
    Db,
    /// Files under granted roots.
    Files,
    /// The peer link.
    Peer,
    /// Commands named in the profile.
    Exec,
    /// Service addresses.
    Net,
    /// DNS updates.
    Dns,
}

impl Capability {
    /// Every capability, in WIT order.
    pub const ALL: [Capability; 8] = [
        Capability::Log,
        Capability::Clock,
        Capability::Db,
        Capability::Files,
        Capability::Peer,
        Capability::Exec,
        Capability::Net,
        Capability::Dns,
    ];

    /// The WIT interface name (`db`, `files`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Clock => "clock",
            Capability::Db => "db",
            Capability::Files => "files",
            Capability::Peer => "peer",
            Capability::Exec => "exec",
            Capability::Net => "net",
            Capability::Dns => "dns",
        }
    }

    /// Capabilities every plugin has without a grant.
    pub fn always_granted(self) -> bool {
        matches!(self, Capability::Log | Capability::Clock)
    }

    /// The capability named by a WIT interface name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
