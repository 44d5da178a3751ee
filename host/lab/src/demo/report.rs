//! The demo's outcome: the one-line JSON report (`--json`; fields are only
//! ever added) and its summary for people.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::{DemoProfile, Fault};

/// The outcome of a demo run, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The case run.
    pub profile: DemoProfile,
    /// The fault injected.
    pub fault: Fault,
    /// Simulated devices.
    pub devices: usize,
    /// Entries in the devices' own logs.
    pub events_generated: u64,
    /// Of those, found in B's database with the same payload hash.
    pub events_in_db: u64,
    /// Missing from B's database, or there with another payload.
    pub events_lost: u64,
    /// Entries logged twice, or rows no device logged.
    pub duplicate_events: u64,
    /// Entries B has that the copy it restored from lacked.
    pub recovered_from_devices: u64,
    /// Entries A had committed at the fault that the restored copy lacked.
    pub rpo_events: u64,
    /// Of those, entries B got back from the devices.
    pub rpo_recovered: u64,
    /// What B restored from, as its promotion reported it.
    pub restored_from: String,
    /// The silence B's detector measured before it suspected A (null when
    /// B had heard no active peer since it started).
    pub detect_ms: Option<u64>,
    /// B's promotion, from suspicion to an open gateway, by B's timeline.
    pub promote_ms: Option<u64>,
    /// From the moment the demo delivered the fault to the moment B answered
    /// that it is active with its promotion complete, by the demo's clock.
    pub fault_to_active_ms: u64,
    /// Fault to the moment every device was connected to B.
    pub reconnect_all_ms: Option<u64>,
    /// Fault to the moment half of the devices were connected to B.
    pub reconnect_p50_ms: Option<u64>,
    /// ... nine devices in ten.
    pub reconnect_p90_ms: Option<u64>,
    /// ... 99 devices in 100.
    pub reconnect_p99_ms: Option<u64>,
    /// Devices connected to B at the end.
    pub devices_on_b: usize,
    /// The longest time a device's server-dependent requests went
    /// unanswered; None when the fleet printed no summary (it did not stop
    /// in time).
    pub degraded_ms: Option<u64>,
    /// A's epoch before the fault.
    pub epoch_before: u64,
    /// B's epoch after its promotion.
    pub epoch_after: u64,
    /// What A was after the fault (`killed`, or its role after SIGCONT).
    pub a_after_fault: String,
    /// Whether A acknowledged device events after it resumed (hang only).
    pub a_acknowledging_after_resume: Option<bool>,
    /// Whether A's device port took connections after it resumed (hang only).
    pub a_accepts_devices_after_resume: Option<bool>,
    /// Entries A's database records as received by A that it did not hold
    /// when it was stopped, 3 s after it resumed (hang only; what it had
    /// queued from the devices must not be stored).
    pub a_entries_stored_after_resume: Option<u64>,
    /// The devices' server list.
    pub endpoints: String,
    /// Whether a verified copy (case 3: an applied batch) had reached B
    /// before the fault.
    pub copies_at_dr_before_fault: bool,
    /// Writes the application's writer logged as committed on A while A
    /// held its lease (before B answered active).
    pub app_writes: u64,
    /// Writes it logged as committed on A after that: divergent, never
    /// replicated.
    pub app_writes_divergent: u64,
    /// Of `app_writes`, absent from B's database at the end.
    pub app_writes_unreplicated: u64,
    /// From the commit of the newest of A's writes that B holds to the
    /// fault, ms (null when B holds none).
    pub lag_ms_at_fault: Option<u64>,
    /// Writes B's writer logged after B became active.
    pub app_writes_on_b: u64,
    /// A planned switchover (`--fault switchover`): from holding A's writes
    /// to B's confirmation that it holds everything, ms (A's report).
    pub switchover_handover_ms: Option<u64>,
    /// A planned switchover: from A's gateway closing to B announcing itself
    /// active, ms (devices could reach no active server meanwhile).
    pub switchover_no_active_server_ms: Option<u64>,
    /// The working directory, when kept.
    pub dir: Option<PathBuf>,
}

impl Outcome {
    /// The summary for people, on stderr.
    pub fn print_summary(&self) {
        eprintln!(
            "\nOUTCOME ({:?}, {:?}): {} devices, {} log entries, {} in B's database, {} lost, {} duplicated\n  \
             B started from {}; the copy lacked {} entries A had committed ({} of them came back from the devices); B got {} entries from the devices after promotion\n  \
             B active {} ms after the fault (detection {} ms + promotion {} ms); devices on B after the fault: half {} ms, 90 % {} ms, 99 % {} ms, all {} ms; epoch {} -> {}\n  \
             application: {} writes on A while it held its lease, {} of them not on B (lag at the fault {} ms), {} divergent; {} writes on B after the failover",
            self.profile,
            self.fault,
            self.devices,
            self.events_generated,
            self.events_in_db,
            self.events_lost,
            self.duplicate_events,
            self.restored_from,
            self.rpo_events,
            self.rpo_recovered,
            self.recovered_from_devices,
            self.fault_to_active_ms,
            opt(self.detect_ms),
            opt(self.promote_ms),
            opt(self.reconnect_p50_ms),
            opt(self.reconnect_p90_ms),
            opt(self.reconnect_p99_ms),
            opt(self.reconnect_all_ms),
            self.epoch_before,
            self.epoch_after,
            self.app_writes,
            self.app_writes_unreplicated,
            opt(self.lag_ms_at_fault),
            self.app_writes_divergent,
            self.app_writes_on_b
        );
        if let Some(ms) = self.switchover_handover_ms {
            eprintln!(
                "  switchover: handed over in {ms} ms; no active server for {} ms",
                opt(self.switchover_no_active_server_ms)
            );
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// For each device connected to B (dr-1) in the fleet's final status, the
/// time from the fault to its connection, in ms, sorted.
pub(super) fn reconnect_times(fleet_status: &Value, fault_ms: u64) -> Vec<u64> {
    let mut times: Vec<u64> = fleet_status["devices"]
        .as_array()
        .map(|devs| {
            devs.iter()
                .filter(|d| d["server"]["node_id"] == "dr-1")
                .filter_map(|d| d["connected_since_ms"].as_u64())
                .map(|t| t.saturating_sub(fault_ms))
                .collect()
        })
        .unwrap_or_default();
    times.sort_unstable();
    times
}

/// The time by which `fraction` of all `devices` were on B; None when fewer
/// than that many got there.
pub(super) fn percentile(sorted: &[u64], devices: usize, fraction: f64) -> Option<u64> {
    let needed = ((devices as f64) * fraction).ceil().max(1.0) as usize;
    sorted.get(needed - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_count_devices_that_never_reached_b() {
        let times = [100, 200, 300, 400];
        assert_eq!(percentile(&times, 4, 0.5), Some(200));
        assert_eq!(percentile(&times, 4, 1.0), Some(400));
        assert_eq!(percentile(&times, 4, 0.99), Some(400));
        // Five devices, four on B: the last one never came.
        assert_eq!(percentile(&times, 5, 1.0), None);
        assert_eq!(percentile(&times, 5, 0.5), Some(300));
        assert_eq!(percentile(&[], 1, 0.5), None);
    }
}
