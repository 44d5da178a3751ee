//! What the gateway knows of device credentials: the policy, the enrolment
//! key, and the register as last read; a watcher reads the register again
//! when it changes and closes the links whose credential is no longer valid
//! (revoked or expired).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::registry::ToConn;
use super::Shared;
use crate::enrolment::{DeviceAuthStatus, EnrolmentKey, Register};
use crate::store::unix_ms;

/// Who may connect without a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Everyone (loopback only).
    Off,
    /// Devices never enrolled, until `until_ms`.
    Migrate {
        /// The end of the migration period (Unix ms).
        until_ms: u64,
    },
    /// No one.
    Required,
}

/// How devices authenticate to the gateway.
#[derive(Clone)]
pub(crate) struct DeviceAuth {
    /// Who may connect without a credential.
    pub policy: Policy,
    /// Every device key derives from it; without it no device can
    /// authenticate.
    pub key: Option<Arc<EnrolmentKey>>,
    /// The register of issued credentials.
    pub register: Option<PathBuf>,
    /// Status lists valid credentials expiring within this.
    pub expiry_warning: Duration,
}

impl DeviceAuth {
    /// No authentication.
    pub(crate) fn off() -> Self {
        Self {
            policy: Policy::Off,
            key: None,
            register: None,
            expiry_warning: Duration::from_secs(30 * 86_400),
        }
    }
}

/// What a file looked like when it was read (a change of any of these is a
/// new file).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn fingerprint(path: &std::path::Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// The policy and the register as last read.
pub(crate) struct Credentials {
    pub(crate) auth: DeviceAuth,
    register: RwLock<Arc<Register>>,
    seen: Mutex<Option<Fingerprint>>,
}

impl Credentials {
    /// Read the register now (an unreadable one is logged and taken as
    /// empty: every device is refused until it is fixed).
    pub(crate) fn new(auth: DeviceAuth) -> Self {
        let c = Self {
            auth,
            register: RwLock::new(Arc::new(Register::default())),
            seen: Mutex::new(None),
        };
        c.reload_if_changed();
        c
    }

    /// The register as last read.
    pub(crate) fn register(&self) -> Arc<Register> {
        self.register
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Read the register again if its file changed; true if it was read.
    pub(crate) fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.auth.register else {
            return false;
        };
        let now = fingerprint(path);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.is_some() && *seen == now {
            return false;
        }
        *seen = now;
        match Register::load(path) {
            Ok(r) => {
                tracing::info!(
                    register = %path.display(),
                    credentials = r.entries().count(),
                    "device register read"
                );
                *self.register.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(r);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the device register; keeping the one read before");
                false
            }
        }
    }
}

/// The status of device authentication on `shared`'s gateway.
pub(super) fn status(shared: &Shared) -> DeviceAuthStatus {
    let auth = &shared.credentials.auth;
    let (mode, migrate_until_ms) = match auth.policy {
        Policy::Off => ("off", None),
        Policy::Migrate { until_ms } => ("migrate", Some(until_ms)),
        Policy::Required => ("required", None),
    };
    let devices = shared.registry.list();
    DeviceAuthStatus {
        mode,
        migrate_until_ms,
        credentials: shared
            .credentials
            .register()
            .summary(unix_ms(), auth.expiry_warning),
        unauthenticated_links: devices
            .iter()
            .filter(|d| d.credential_generation.is_none())
            .count(),
        refused: shared
            .stats
            .auth_refused
            .load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// How often the watcher looks at the register and at expiries.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// While the gateway is open: read the register again when it changes, and
/// close the link of every device whose credential is no longer valid.
pub(super) async fn watch(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.credentials.reload_if_changed();
        close_invalid(&shared);
    }
}

/// Close the link of every authenticated device whose credential the
/// register no longer accepts.
pub(super) fn close_invalid(shared: &Shared) {
    let register = shared.credentials.register();
    let now = unix_ms();
    for (device_id, generation, tx) in shared.registry.authenticated() {
        if let Err(why) = register.check(device_id, generation, now) {
            tracing::warn!(device_id, generation, reason = %why, "closing the link of a device whose credential is no longer valid");
            let _ = tx.try_send(ToConn::Invalid(why));
        }
    }
}
