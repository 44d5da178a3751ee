//! The failure detector: the peer is suspected once nothing has come from it
//! for `suspect_after`. With heartbeats every 100 ms, the default 400 ms
//! tolerates 200 ms of jitter on any heartbeat (a gap of at most 300 ms)
//! with 100 ms to spare, and still suspects a dead peer well inside the
//! lease length, which bounds promotion anyway.

use std::time::Duration;

/// Failure-detector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorSettings {
    /// Heartbeat interval on the peer link.
    pub heartbeat: Duration,
    /// Silence after which the peer is suspected.
    pub suspect_after: Duration,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            suspect_after: Duration::from_millis(400),
        }
    }
}

/// Settings that would suspect a healthy peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failure detector: {0}")]
pub struct DetectorError(pub String);

impl DetectorSettings {
    /// The silence must exceed two heartbeat intervals.
    pub fn validate(&self) -> Result<(), DetectorError> {
        if self.heartbeat.is_zero() {
            return Err(DetectorError(
                "the heartbeat interval must be above zero".into(),
            ));
        }
        if self.suspect_after <= 2 * self.heartbeat {
            return Err(DetectorError(format!(
                "suspecting after {:?} of silence would trip on one late heartbeat (interval {:?}); use more than twice the interval",
                self.suspect_after, self.heartbeat
            )));
        }
        Ok(())
    }

    /// The largest jitter on a heartbeat these settings tolerate.
    pub fn tolerated_jitter(&self) -> Duration {
        self.suspect_after.saturating_sub(self.heartbeat)
    }

    /// Whether `silence` (time since the last frame, None before the first)
    /// means the peer is suspected.
    pub fn suspects(&self, silence: Option<Duration>) -> bool {
        silence.is_none_or(|s| s >= self.suspect_after)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_tolerate_200_ms_of_jitter_and_bad_settings_are_refused() {
        let d = DetectorSettings::default();
        assert!(d.validate().is_ok());
        assert!(d.tolerated_jitter() >= Duration::from_millis(200));
        assert!(!d.suspects(Some(Duration::from_millis(399))));
        assert!(d.suspects(Some(Duration::from_millis(400))));
        assert!(d.suspects(None), "a peer never heard from is suspected");
        let tight = DetectorSettings {
            heartbeat: Duration::from_millis(100),
            suspect_after: Duration::from_millis(200),
        };
        assert!(tight.validate().unwrap_err().to_string().contains("twice"));
    }
}
