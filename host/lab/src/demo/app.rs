//! The application's part of the demo: its writer's progress, and the
//! independent check of its writes (A's writer's log against B's database,
//! opened read-only).

use std::path::Path;

use anyhow::Result;

use crate::app_audit;
use crate::app_writer::LOG_FILE;

/// What the check found of the application's writes.
#[derive(Debug, Clone, Default)]
pub(super) struct AppSeen {
    /// Writes A's writer logged while A held its lease.
    pub writes: u64,
    /// Writes A's writer logged after that.
    pub divergent: u64,
    /// Of `writes`, absent from B at the end.
    pub unreplicated: u64,
    /// From the newest of A's writes B holds to the fault, ms.
    pub lag_ms_at_fault: Option<u64>,
    /// Writes B's writer logged (after B became active).
    pub writes_on_b: u64,
}

/// Commits a site's writer has logged so far.
pub(super) fn logged(dir: &Path, site: &str) -> usize {
    app_audit::read_log(&dir.join(site).join(LOG_FILE))
        .map(|w| w.len())
        .unwrap_or(0)
}

/// A's writer's log against B's database at `b_db`: writes before
/// `lease_end_ms` (the moment B answered active: A's lease had ended by
/// then) count, later ones are divergent; the lag is counted back from the
/// fault at `fault_ms`.
pub(super) fn check(dir: &Path, b_db: &Path, fault_ms: u64, lease_end_ms: u64) -> Result<AppSeen> {
    let a = app_audit::check(&dir.join("onsite").join(LOG_FILE), b_db, lease_end_ms)?;
    let on_b = app_audit::read_log(&dir.join("dr").join(LOG_FILE))?;
    Ok(AppSeen {
        writes: a.app_writes,
        divergent: a.app_writes_divergent,
        unreplicated: a.app_writes_unreplicated,
        lag_ms_at_fault: a
            .newest_held_ms
            .map(|newest| fault_ms.saturating_sub(newest)),
        writes_on_b: on_b.len() as u64,
    })
}
