//! Health of one plugin instance, readable without waiting for a running call.

use std::time::SystemTime;

use serde::Serialize;

use crate::caps::output::InstanceOutput;

/// What disabled an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FaultCause {
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    #[error("trap: {0}")]
    Trap(String),
    /// The guest ran past its per-call deadline.
    #[error("deadline: ran more than {0} ms of guest time in one call")]
    Deadline(u64),
    /// The guest tried to grow its memory past the cap.
    #[error("memory cap: tried to grow linear memory past {0} bytes")]
    MemoryCap(u64),
    /// Instantiating or configuring the plugin failed.
    #[error("start-up: {0}")]
    Startup(String),
}

/// Whether an instance can take calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Running normally.
    Healthy,
    /// Disabled by a fault; re-instantiated after a backoff.
    Degraded,
}

/// Health of one plugin instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Instance name.
    pub plugin: String,
    /// Current state.
    pub state: HealthState,
    /// The last fault, if any (kept after recovery, for status).
    pub last_fault: Option<FaultCause>,
    /// When the last fault happened (Unix ms).
    pub last_fault_at_ms: Option<u64>,
    /// Faults since the instance was last healthy for a whole call.
    pub consecutive_faults: u32,
    /// Times the instance was re-instantiated after a fault.
    pub restarts: u32,
    /// Calls completed (successfully or with an error value).
    pub calls: u64,
    /// Log lines the instance wrote over its budget (dropped).
    pub log_lines_dropped: u64,
    /// Capability calls the instance was denied.
    pub denials: u64,
    /// Strings and detail lists the instance returned that were cut to
    /// their bound (4 KiB a string, 64 details).
    pub strings_truncated: u64,
}

impl Health {
    pub(crate) fn new(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_string(),
            state: HealthState::Healthy,
            last_fault: None,
            last_fault_at_ms: None,
            consecutive_faults: 0,
            restarts: 0,
            calls: 0,
            log_lines_dropped: 0,
            denials: 0,
            strings_truncated: 0,
        }
    }

    pub(crate) fn fault(&mut self, cause: FaultCause) {
        self.state = HealthState::Degraded;
        self.last_fault = Some(cause);
        self.last_fault_at_ms = Some(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        );
        self.consecutive_faults += 1;
    }
}

/// Shared, cheap-to-update health of one instance: the call counter and the
/// degraded flag are atomics so a healthy call takes no lock.
#[derive(Debug)]
pub(crate) struct HealthCell {
    inner: std::sync::Mutex<Health>,
    calls: std::sync::atomic::AtomicU64,
    degraded: std::sync::atomic::AtomicBool,
    /// The instance's output budgets and counts, shared by its stores.
    output: std::sync::Arc<InstanceOutput>,
}

impl HealthCell {
    pub(crate) fn new(plugin: &str) -> Self {
        Self {
            inner: std::sync::Mutex::new(Health::new(plugin)),
            calls: std::sync::atomic::AtomicU64::new(0),
            degraded: std::sync::atomic::AtomicBool::new(false),
            output: std::sync::Arc::default(),
        }
    }

    /// The instance's output budgets, for each of its stores.
    pub(crate) fn output(&self) -> std::sync::Arc<InstanceOutput> {
        self.output.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the current health.
    pub(crate) fn snapshot(&self) -> Health {
        let mut h = self.lock().clone();
        h.calls = self.calls.load(std::sync::atomic::Ordering::Relaxed);
        h.log_lines_dropped = self.output.log_lines_dropped();
        h.denials = self.output.denials();
        h.strings_truncated = self.output.truncated();
        h
    }

    /// A call completed (with a value or an error value).
    pub(crate) fn call_ok(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls.fetch_add(1, Relaxed);
        if self.degraded.load(Relaxed) {
            let mut h = self.lock();
            h.consecutive_faults = 0;
            h.state = HealthState::Healthy;
            self.degraded.store(false, Relaxed);
        }
    }

    /// A fault disabled the instance; returns the consecutive fault count.
    pub(crate) fn fault(&self, cause: FaultCause) -> u32 {
        let mut h = self.lock();
        h.fault(cause);
        self.degraded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        h.consecutive_faults
    }

    /// The instance was re-instantiated after a fault.
    pub(crate) fn restarted(&self) {
        self.lock().restarts += 1;
    }
}
