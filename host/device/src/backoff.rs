//! Jittered exponential backoff, validated when built: one type for every
//! retry in standby (a device redialling its servers, a node redialling its
//! peer, a faulted plugin instance re-instantiated, an abandoned promotion
//! tried again).

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Backoff parameters. Built with [`Backoff::new`] (or read from a
/// configuration, which checks them the same way), so a value of this type is
/// always sane: a first delay above zero, a cap at or above it, a growth of
/// at least 1 and a jitter fraction between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BackoffParams", into = "BackoffParams")]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

/// The parameters as a configuration holds them, before they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffParams {
    /// Delay scale of the first retry.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth per failed attempt (at least 1).
    pub multiplier: f64,
    /// Fraction of each delay that is random: 0 (none) to 1 (full jitter).
    pub jitter: f64,
}

/// Parameters that make no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BackoffError {
    /// The first delay is zero.
    #[error("invalid backoff: the initial delay must be above zero")]
    ZeroInitial,
    /// The cap is below the first delay.
    #[error("invalid backoff: the max delay {max:?} is below the initial delay {initial:?}")]
    MaxBelowInitial {
        /// The first delay.
        initial: Duration,
        /// The cap.
        max: Duration,
    },
    /// The growth is below 1 or not a number.
    #[error("invalid backoff: the multiplier {0} must be at least 1")]
    Multiplier(f64),
    /// The jitter is outside 0..=1.
    #[error("invalid backoff: the jitter {0} must be between 0 and 1")]
    Jitter(f64),
}

impl Default for Backoff {
    /// 200 ms doubling up to 5 s, fully jittered.
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
    /// Delays from `initial` doubling up to `max`, fully jittered.
    pub fn new(initial: Duration, max: Duration) -> Result<Self, BackoffError> {
        Self::try_from(BackoffParams {
            initial,
            max,
            multiplier: 2.0,
            jitter: 1.0,
        })
    }

    /// The same delays with growth `multiplier` per failed attempt.
    pub fn with_multiplier(self, multiplier: f64) -> Result<Self, BackoffError> {
        Self::try_from(BackoffParams {
            multiplier,
            ..self.into()
        })
    }

    /// The same delays with a `jitter` fraction of each drawn at random (0:
    /// none, 1: anywhere from zero to the delay).
    pub fn with_jitter(self, jitter: f64) -> Result<Self, BackoffError> {
        Self::try_from(BackoffParams {
            jitter,
            ..self.into()
        })
    }

    /// The delay scale of the first retry.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry number `attempt` (0 for the first): the capped
    /// exponential delay, of which the jitter fraction is drawn at random, so
    /// that thousands of devices losing the same server spread their retries.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let fixed = capped * (1.0 - self.jitter);
        let random = capped * self.jitter * rng.random::<f64>();
        Duration::from_secs_f64(fixed + random)
    }
}

impl TryFrom<BackoffParams> for Backoff {
    type Error = BackoffError;

    fn try_from(p: BackoffParams) -> Result<Self, BackoffError> {
        if p.initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if p.max < p.initial {
            return Err(BackoffError::MaxBelowInitial {
                initial: p.initial,
                max: p.max,
            });
        }
        if !(p.multiplier.is_finite() && p.multiplier >= 1.0) {
            return Err(BackoffError::Multiplier(p.multiplier));
        }
        if !(0.0..=1.0).contains(&p.jitter) {
            return Err(BackoffError::Jitter(p.jitter));
        }
        Ok(Self {
            initial: p.initial,
            max: p.max,
            multiplier: p.multiplier,
            jitter: p.jitter,
        })
    }
}

impl From<Backoff> for BackoffParams {
    fn from(b: Backoff) -> Self {
        Self {
            initial: b.initial,
            max: b.max,
            multiplier: b.multiplier,
            jitter: b.jitter,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bad_parameters_are_refused_when_built_and_when_read() {
        assert_eq!(
            Backoff::new(Duration::ZERO, MS),
            Err(BackoffError::ZeroInitial)
        );
        assert!(matches!(
            Backoff::new(10 * MS, MS),
            Err(BackoffError::MaxBelowInitial { .. })
        ));
        let ok = Backoff::new(MS, 10 * MS).unwrap();
        assert_eq!(ok.with_multiplier(0.5), Err(BackoffError::Multiplier(0.5)));
        assert!(ok.with_multiplier(f64::NAN).is_err());
        assert_eq!(ok.with_jitter(1.5), Err(BackoffError::Jitter(1.5)));
        // A configuration goes through the same checks.
        let text = r#"{"initial":{"secs":0,"nanos":0},"max":{"secs":1,"nanos":0},"multiplier":2.0,"jitter":1.0}"#;
        let read: Result<Backoff, _> = serde_json::from_str(text);
        assert!(read.unwrap_err().to_string().contains("above zero"));
        let back: Backoff = serde_json::from_str(&serde_json::to_string(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
    }

    #[test]
    fn delays_grow_stay_under_the_cap_and_spread() {
        let b = Backoff::default();
        let mut rng = rand::rng();
        for attempt in 0..40 {
            let d = b.delay(attempt, &mut rng);
            assert!(d <= b.max(), "{d:?}");
        }
        // Full jitter spreads the first retry across [0, initial).
        let spread: Vec<Duration> = (0..1000).map(|_| b.delay(0, &mut rng)).collect();
        let below_half = spread.iter().filter(|d| **d < b.initial() / 2).count();
        assert!((300..700).contains(&below_half), "{below_half}");
        // Without jitter the delays are exact and double.
        let exact = Backoff::new(100 * MS, 350 * MS)
            .unwrap()
            .with_jitter(0.0)
            .unwrap();
        let delays: Vec<Duration> = (0..4).map(|a| exact.delay(a, &mut rng)).collect();
        assert_eq!(delays, [100 * MS, 200 * MS, 350 * MS, 350 * MS]);
    }
}
