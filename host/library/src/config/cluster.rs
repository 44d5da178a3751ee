//! The profile's `[cluster]` table and its validation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, LoadedProfile};

/// The `[cluster]` table: how the two sites find each other, who decides
/// which one is active, and how fast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// File holding the pre-shared key of the peer link and the witness
    /// (at least 32 bytes; relative to the profile file).
    pub psk_file: PathBuf,
    /// The witness on a third site. Without one, failover is manual
    /// (`standby promote --force`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<std::net::SocketAddr>,
    /// Heartbeat interval on the peer link, ms.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Silence from the active peer after which the standby suspects it, ms.
    #[serde(default = "default_suspect_after_ms")]
    pub suspect_after_ms: u64,
    /// Lease length asked of the witness, ms.
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// How often the active node renews its lease, ms.
    #[serde(default = "default_lease_renew_ms")]
    pub lease_renew_ms: u64,
    /// The active node stops acknowledging this long before its lease ends, ms.
    #[serde(default = "default_lease_margin_ms")]
    pub lease_margin_ms: u64,
    /// How long a site that starts as standby and has heard no active peer
    /// since it started waits before it competes for the lease, ms. Once it
    /// has heard an active peer, detection runs from the last heartbeat
    /// heard and this grace no longer applies.
    #[serde(default = "default_startup_grace_ms")]
    pub startup_grace_ms: u64,
    /// A command run (without a shell) before promotion, for sites that can
    /// power off the old server. It gets STANDBY_EPOCH, STANDBY_NODE and
    /// STANDBY_PEER in its environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fence_command: Vec<String>,
    /// How long the fencing command may run, ms.
    #[serde(default = "default_fence_timeout_ms")]
    pub fence_timeout_ms: u64,
    /// Abandon the promotion when the fencing command fails (otherwise the
    /// failure is logged and the lease alone keeps the old node out). An
    /// abandoned promotion gives the lease back and is tried again after a
    /// pause (1 s, doubling up to 30 s).
    #[serde(default)]
    pub fence_required: bool,
    /// What a promotion does when a plugin's `on-promote` or `activate` runs
    /// out of `[plugins] failover_call_limit_ms`: `"continue"` (the default:
    /// the step fails in the timeline and the promotion goes on, so the site
    /// gets an active node even with one slow plugin) or `"abandon"` (the
    /// node undoes its failover actions, tells its strategies it is demoted,
    /// goes back to standby and gives the lease back; it tries again after a
    /// pause, as after a failed required fencing command).
    #[serde(default)]
    pub failover_step_timeout: StepTimeout,
    /// A file transfer to the peer fails when the peer has confirmed no
    /// progress for this long, ms (a message, when it is not acknowledged
    /// within this long). A whole transfer has no time limit: a large copy
    /// over a slow link finishes as long as it keeps moving.
    #[serde(default = "default_transfer_stall_ms")]
    pub transfer_stall_ms: u64,
    /// How long a planned switchover (`standby switchover`) waits for the
    /// other node to confirm it holds everything, ms; past it the switchover
    /// is abandoned and this node stays active (1 s to 10 min).
    #[serde(default = "default_switchover_timeout_ms")]
    pub switchover_timeout_ms: u64,
}

/// What a promotion does when a plugin step runs out of time
/// (`[cluster] failover_step_timeout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepTimeout {
    /// Fail the step in the timeline and go on.
    #[default]
    Continue,
    /// Undo the promotion, go back to standby and give the lease back.
    Abandon,
}

/// Smallest `transfer_stall_ms` accepted.
const MIN_TRANSFER_STALL_MS: u64 = 1_000;
/// Largest `transfer_stall_ms` accepted (a strategy waits this long on a dead link).
const MAX_TRANSFER_STALL_MS: u64 = 3_600_000;

fn default_heartbeat_ms() -> u64 {
    100
}
fn default_suspect_after_ms() -> u64 {
    400
}
fn default_lease_ttl_ms() -> u64 {
    crate::cluster::LeaseSettings::default().ttl.as_millis() as u64
}
fn default_lease_renew_ms() -> u64 {
    crate::cluster::LeaseSettings::default()
        .renew_every
        .as_millis() as u64
}
fn default_lease_margin_ms() -> u64 {
    crate::cluster::LeaseSettings::default().margin.as_millis() as u64
}
fn default_startup_grace_ms() -> u64 {
    3_000
}
fn default_fence_timeout_ms() -> u64 {
    5_000
}
fn default_switchover_timeout_ms() -> u64 {
    30_000
}
/// Smallest and largest `switchover_timeout_ms` accepted.
const SWITCHOVER_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1_000..=600_000;
fn default_transfer_stall_ms() -> u64 {
    crate::peer::DEFAULT_TRANSFER_STALL.as_millis() as u64
}

impl LoadedProfile {
    pub(super) fn validate_cluster(&self, c: &ClusterSection) -> Result<(), ConfigError> {
        let p = &self.profile;
        if p.sites.len() != 2 {
            return Err(self.invalid(
                "cluster",
                format!(
                    "a cluster has exactly two sites; this profile has {}",
                    p.sites.len()
                ),
            ));
        }
        for (name, site) in &p.sites {
            if site.peer_listen.is_none() {
                return Err(self.invalid(
                    format!("sites.{name}.peer_listen"),
                    "every site of a cluster needs the address where it accepts the peer link",
                ));
            }
        }
        let detector = crate::cluster::DetectorSettings {
            heartbeat: std::time::Duration::from_millis(c.heartbeat_ms),
            suspect_after: std::time::Duration::from_millis(c.suspect_after_ms),
        };
        detector
            .validate()
            .map_err(|e| self.invalid("cluster.suspect_after_ms", e.0))?;
        let lease = self.lease_settings(c);
        lease
            .validate()
            .map_err(|e| self.invalid("cluster.lease_ttl_ms", e.0))?;
        if c.fence_required && c.fence_command.is_empty() {
            return Err(self.invalid(
                "cluster.fence_required",
                "is true but no fence_command is given",
            ));
        }
        if !(MIN_TRANSFER_STALL_MS..=MAX_TRANSFER_STALL_MS).contains(&c.transfer_stall_ms) {
            return Err(self.invalid(
                "cluster.transfer_stall_ms",
                format!(
                    "{} ms is out of range: a transfer with no progress for this long fails, so it must be between {MIN_TRANSFER_STALL_MS} ms and {MAX_TRANSFER_STALL_MS} ms (1 s to 1 h)",
                    c.transfer_stall_ms
                ),
            ));
        }
        if !SWITCHOVER_TIMEOUT_MS.contains(&c.switchover_timeout_ms) {
            return Err(self.invalid(
                "cluster.switchover_timeout_ms",
                format!(
                    "{} ms is out of range: it must be between {} ms and {} ms (1 s to 10 min)",
                    c.switchover_timeout_ms,
                    SWITCHOVER_TIMEOUT_MS.start(),
                    SWITCHOVER_TIMEOUT_MS.end()
                ),
            ));
        }
        Ok(())
    }
}
