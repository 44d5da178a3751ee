//! Jittered exponential backoff with validated parameters.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay scale of the first retry.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth per failed attempt (>= 1).
    pub multiplier: f64,
    /// Fraction of each delay that is random, 0 (none) to 1 (full jitter).
    pub jitter: f64,
}

/// Parameters that make no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid backoff: {0}")]
pub struct BackoffError(String);

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 1.0,
        }
    }
}

impl Backoff {
    /// Check the parameters.
    pub fn validate(&self) -> Result<(), BackoffError> {
        if self.initial.is_zero() {
            return Err(BackoffError("initial delay must be above zero".into()));
        }
        if self.max < self.initial {
            return Err(BackoffError(format!(
                "max delay {:?} is below the initial delay {:?}",
                self.max, self.initial
            )));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(BackoffError(format!(
                "multiplier {} must be at least 1",
                self.multiplier
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(BackoffError(format!(
                "jitter {} must be between 0 and 1",
                self.jitter
            )));
        }
        Ok(())
    }

    /// The delay before retry number `attempt` (0 for the first): the capped
    /// exponential delay, of which a `jitter` fraction is drawn at random, so
    /// that thousands of devices losing the same server spread their retries.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let fixed = capped * (1.0 - self.jitter);
        let random = capped * self.jitter * rng.random::<f64>();
        Duration::from_secs_f64(fixed + random)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_stays_within_bounds() {
        assert!(Backoff::default().validate().is_ok());
        let bad = Backoff {
            max: Duration::from_millis(1),
            ..Backoff::default()
        };
        assert!(bad.validate().is_err());
        assert!(Backoff {
            multiplier: 0.5,
            ..Backoff::default()
        }
        .validate()
        .is_err());
        assert!(Backoff {
            jitter: 1.5,
            ..Backoff::default()
        }
        .validate()
        .is_err());
        let b = Backoff::default();
        let mut rng = rand::rng();
        for attempt in 0..40 {
            let d = b.delay(attempt, &mut rng);
            assert!(d <= b.max, "{d:?}");
        }
        // Full jitter spreads the first retry across [0, initial).
        let spread: Vec<Duration> = (0..1000).map(|_| b.delay(0, &mut rng)).collect();
        let below_half = spread.iter().filter(|d| **d < b.initial / 2).count();
        assert!((300..700).contains(&below_half), "{below_half}");
    }
}
