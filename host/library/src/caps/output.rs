//! What one plugin instance may put into the host's log: its own lines (a
//! byte budget), and the host's lines about the capability calls it was
//! denied (a line budget). What goes over a budget is counted, not written,
//! and the counts show in the instance's health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Bytes of log lines an instance may write per second, on average.
const LOG_BYTES_PER_SECOND: f64 = 64.0 * 1024.0;
/// Bytes of log lines an instance may write in a burst.
const LOG_BURST_BYTES: f64 = 256.0 * 1024.0;
/// Denials of one instance the host logs per second, on average.
const DENIALS_PER_SECOND: f64 = 1.0;
/// Denials of one instance the host logs in a burst.
const DENIAL_BURST: f64 = 10.0;

/// The longest string a plugin may hand the host (an error, a summary, a
/// detail); longer ones are cut with a marker.
pub(crate) const MAX_TEXT: usize = 4096;
/// The most detail entries a plugin's report or status may carry.
pub(crate) const MAX_DETAILS: usize = 64;

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            burst,
            rate,
            last: Instant::now(),
        }
    }

    /// Take `cost` tokens if there are enough.
    fn take(&mut self, cost: f64) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// The output budgets and counts of one plugin instance (shared by its
/// stores across re-instantiations, and read by its health).
#[derive(Debug)]
pub(crate) struct InstanceOutput {
    log: Mutex<Bucket>,
    denial_log: Mutex<Bucket>,
    /// Log lines dropped over the budget, in all.
    log_lines_dropped: AtomicU64,
    /// Dropped since the last note about it.
    dropped_unsaid: AtomicU64,
    /// Capability calls denied, in all.
    denials: AtomicU64,
    /// Strings and detail lists cut to their bound, in all.
    truncated: AtomicU64,
}

impl Default for InstanceOutput {
    fn default() -> Self {
        Self {
            log: Mutex::new(Bucket::new(LOG_BYTES_PER_SECOND, LOG_BURST_BYTES)),
            denial_log: Mutex::new(Bucket::new(DENIALS_PER_SECOND, DENIAL_BURST)),
            log_lines_dropped: AtomicU64::new(0),
            dropped_unsaid: AtomicU64::new(0),
            denials: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
        }
    }
}

/// What an instance's log line may do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogAdmit {
    /// Write it.
    Write,
    /// Write it, and say first that this many lines were dropped before it.
    WriteAfterDropping(u64),
    /// Drop it (counted).
    Drop,
}

impl InstanceOutput {
    /// Whether a log line of `len` bytes fits the budget now.
    pub(crate) fn admit_log(&self, len: usize) -> LogAdmit {
        let fits = self
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(len.max(1) as f64);
        if !fits {
            self.log_lines_dropped.fetch_add(1, Ordering::Relaxed);
            self.dropped_unsaid.fetch_add(1, Ordering::Relaxed);
            return LogAdmit::Drop;
        }
        match self.dropped_unsaid.swap(0, Ordering::Relaxed) {
            0 => LogAdmit::Write,
            n => LogAdmit::WriteAfterDropping(n),
        }
    }

    /// Count a denied capability call; whether the host should log it now.
    pub(crate) fn denied(&self) -> bool {
        self.denials.fetch_add(1, Ordering::Relaxed);
        self.denial_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(1.0)
    }

    /// `text` cut to [`MAX_TEXT`] bytes with a marker saying how much went.
    pub(crate) fn bound(&self, mut text: String) -> String {
        if text.len() <= MAX_TEXT {
            return text;
        }
        self.truncated.fetch_add(1, Ordering::Relaxed);
        let mut cut = MAX_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let dropped = text.len() - cut;
        text.truncate(cut);
        text.push_str(&format!(" [truncated: {dropped} more bytes]"));
        text
    }

    /// At most [`MAX_DETAILS`] entries, each bounded.
    pub(crate) fn bound_details(
        &self,
        mut details: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        if details.len() > MAX_DETAILS {
            self.truncated.fetch_add(1, Ordering::Relaxed);
            let dropped = details.len() - MAX_DETAILS;
            details.truncate(MAX_DETAILS);
            details.push(("truncated".into(), format!("{dropped} more entries")));
        }
        details
            .into_iter()
            .map(|(k, v)| (self.bound(k), self.bound(v)))
            .collect()
    }

    /// Strings and detail lists cut so far.
    pub(crate) fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Log lines dropped over the budget so far.
    pub(crate) fn log_lines_dropped(&self) -> u64 {
        self.log_lines_dropped.load(Ordering::Relaxed)
    }

    /// Capability calls denied so far.
    pub(crate) fn denials(&self) -> u64 {
        self.denials.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_lines_is_cut_at_the_budget_and_counted_and_said_once_it_resumes() {
        let out = InstanceOutput::default();
        let mut written = 0usize;
        for _ in 0..1_000 {
            if out.admit_log(4096) != LogAdmit::Drop {
                written += 1;
            }
        }
        // The burst, and what trickled in while the loop ran.
        assert!(
            (64..=70).contains(&written),
            "{written} lines of 4 KiB written"
        );
        assert_eq!(out.log_lines_dropped(), 1_000 - written as u64);
        // Refill enough for one line: the next one says how many went.
        out.log.lock().unwrap_or_else(|p| p.into_inner()).tokens = 4096.0;
        assert_eq!(
            out.admit_log(4096),
            LogAdmit::WriteAfterDropping(1_000 - written as u64)
        );
    }

    #[test]
    fn denials_are_all_counted_and_a_burst_of_them_logged() {
        let out = InstanceOutput::default();
        let logged = (0..100).filter(|_| out.denied()).count();
        assert!((10..=11).contains(&logged), "{logged}");
        assert_eq!(out.denials(), 100);
    }

    #[test]
    fn long_strings_and_detail_lists_are_cut_with_a_marker_and_counted() {
        let out = InstanceOutput::default();
        assert_eq!(out.bound("short".into()), "short");
        let long = out.bound("é".repeat(5000));
        assert!(
            long.len() < MAX_TEXT + 64 && long.ends_with("more bytes]"),
            "{}",
            long.len()
        );
        let details = out.bound_details((0..100).map(|i| (i.to_string(), String::new())).collect());
        assert_eq!(details.len(), MAX_DETAILS + 1);
        assert_eq!(out.truncated(), 2);
    }
}
