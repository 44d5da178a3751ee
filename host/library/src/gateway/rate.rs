//! Each device's event rate: a token bucket per device id, kept across its
//! reconnections (a device cannot refill it by reconnecting). A bucket
//! starts full, so a device re-sending what it held through a failover
//! (a new node, new buckets) is not held back by it; afterwards it may send
//! `rate` events a second on average.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The buckets of every device id seen.
#[derive(Debug)]
pub(crate) struct EventRates {
    rate: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_device: HashMap<u32, Bucket>,
    /// When full buckets were last dropped.
    pruned: Option<Instant>,
}

/// How often full buckets are dropped (each pass walks them all).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Over its rate: how long until the batch would fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttled {
    /// Wait at least this long before sending it again.
    pub(crate) retry_after: Duration,
}

impl EventRates {
    /// `rate` events a second on average, `burst` at once.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// Take `events` from `device`'s bucket, or say how long to wait.
    pub(crate) fn take(&self, device: u32, events: usize, now: Instant) -> Result<(), Throttled> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (rate, burst) = (self.rate, self.burst);
        // Full buckets carry no state: drop them now and then, so ids seen
        // once cost nothing for long.
        if buckets
            .pruned
            .is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY)
        {
            buckets.pruned = Some(now);
            buckets
                .by_device
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.by_device.entry(device).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        let want = events as f64;
        if want <= b.tokens {
            b.tokens -= want;
            return Ok(());
        }
        // A batch larger than the burst can never fit whole: let it through
        // once the bucket is full, leaving it in debt.
        if want > burst && b.tokens >= burst {
            b.tokens -= want;
            return Ok(());
        }
        let missing = want.min(burst) - b.tokens;
        Err(Throttled {
            retry_after: Duration::from_secs_f64(missing / rate),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_reconnecting_refills_nothing() {
        let rates = EventRates::new(100, 1_000);
        let t0 = Instant::now();
        // A full bucket: a catch-up of 1,000 passes at once.
        rates.take(7, 1_000, t0).unwrap();
        // Then 100 a second.
        let e = rates.take(7, 50, t0).unwrap_err();
        assert_eq!(e.retry_after, Duration::from_millis(500));
        rates.take(7, 50, t0 + Duration::from_millis(500)).unwrap();
        // Another device has its own bucket.
        rates.take(8, 1_000, t0).unwrap();
        // The bucket is the device's, not the connection's: the same id
        // later gets only what its rate refilled.
        assert!(rates.take(7, 200, t0 + Duration::from_secs(1)).is_err());
        rates.take(7, 50, t0 + Duration::from_secs(1)).unwrap();
    }
}
