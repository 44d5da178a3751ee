//! The failure detector: the peer is suspected once nothing has come from it
//! for `suspect_after`. With heartbeats every 100 ms, the default 400 ms
//! tolerates 200 ms of jitter on any heartbeat (a gap of at most 300 ms)
//! with 100 ms to spare, and still suspects a dead peer well inside the
//! lease length, which bounds promotion anyway.
//!
//! [`PeerWatch`] applies the settings to what the standby actually heard. A
//! standby that has heard no active peer since it started waits out a startup
//! grace (the active peer may still be starting); once it has heard one,
//! detection runs from the last heartbeat heard, grace or no grace.

use std::time::Duration;

use tokio::time::Instant;

/// Failure-detector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DetectorSettings {
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
pub(crate) struct DetectorError(pub String);

impl DetectorSettings {
    /// The silence must exceed two heartbeat intervals.
    pub(crate) fn validate(&self) -> Result<(), DetectorError> {
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
    #[cfg(test)]
    pub(crate) fn tolerated_jitter(&self) -> Duration {
        self.suspect_after.saturating_sub(self.heartbeat)
    }

    /// Whether `silence` (time since the last frame, None before the first)
    /// means the peer is suspected.
    pub(crate) fn suspects(&self, silence: Option<Duration>) -> bool {
        silence.is_none_or(|s| s >= self.suspect_after)
    }
}

/// Why the standby suspects the active peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suspicion {
    /// The active peer was heard, and has been silent this long since.
    Silent(Duration),
    /// No active peer was heard since the watch began (and its grace ran out).
    NoneHeard,
}

impl Suspicion {
    /// The silence in ms, or None when no active peer was heard at all.
    pub(crate) fn silence_ms(&self) -> Option<u64> {
        match self {
            Suspicion::Silent(d) => Some(d.as_millis() as u64),
            Suspicion::NoneHeard => None,
        }
    }
}

/// The standby's view of the active peer: when it was last heard, and how
/// long a standby that has heard nobody waits before it suspects.
#[derive(Debug, Clone)]
pub(crate) struct PeerWatch {
    settings: DetectorSettings,
    /// When a frame from the active peer was last heard; None when none has
    /// been heard since the watch began.
    last_heard: Option<Instant>,
    /// Until then, a watch that has heard no active peer suspects nobody.
    grace_until: Instant,
}

impl PeerWatch {
    /// A watch beginning at `now` that, while it has heard no active peer,
    /// suspects nobody for `grace`.
    pub(crate) fn new(settings: DetectorSettings, now: Instant, grace: Duration) -> Self {
        Self {
            settings,
            last_heard: None,
            grace_until: now + grace,
        }
    }

    /// The active peer was heard at `at` (a later hearing replaces an
    /// earlier one; an earlier one is ignored).
    pub(crate) fn heard(&mut self, at: Instant) {
        if self.last_heard.is_none_or(|t| at > t) {
            self.last_heard = Some(at);
        }
    }

    /// Forget what was heard and begin again at `now` with a grace of one
    /// suspicion period (after a role change: what was heard before it says
    /// nothing about the peer now).
    pub(crate) fn restart(&mut self, now: Instant) {
        self.last_heard = None;
        self.grace_until = now + self.settings.suspect_after;
    }

    /// When the active peer was last heard, if it was.
    #[cfg(test)]
    pub(crate) fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// Whether the active peer is suspected at `now`, and why.
    pub(crate) fn suspicion(&self, now: Instant) -> Option<Suspicion> {
        match self.last_heard {
            Some(t) => {
                let silence = now.saturating_duration_since(t);
                self.settings
                    .suspects(Some(silence))
                    .then_some(Suspicion::Silent(silence))
            }
            None if now < self.grace_until => None,
            None => Some(Suspicion::NoneHeard),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Heartbeats every 100 ms until `until` (inclusive), as the standby hears them.
    async fn hear_until(watch: &mut PeerWatch, until: Instant) {
        while Instant::now() <= until {
            watch.heard(Instant::now());
            assert_eq!(watch.suspicion(Instant::now()), None);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_dies_inside_the_startup_grace_is_suspected_after_the_usual_silence() {
        let settings = DetectorSettings::default();
        let start = Instant::now();
        let mut watch = PeerWatch::new(settings, start, Duration::from_secs(5));
        // The active peer is heard from 200 ms after start; it dies 1 s
        // after that, deep inside the 5 s grace.
        tokio::time::advance(Duration::from_millis(200)).await;
        let death = start + Duration::from_millis(1_200);
        hear_until(&mut watch, death).await;
        let last = watch.last_heard().unwrap();
        assert!(last <= death && death - last < settings.heartbeat);
        tokio::time::advance(last + Duration::from_millis(399) - Instant::now()).await;
        assert_eq!(watch.suspicion(Instant::now()), None, "399 ms of silence");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            watch.suspicion(Instant::now()),
            Some(Suspicion::Silent(Duration::from_millis(400))),
            "suspected 400 ms after the last heartbeat, not when the grace ends"
        );
        assert!(Instant::now() < start + Duration::from_secs(5));
        assert_eq!(
            watch.suspicion(Instant::now()).unwrap().silence_ms(),
            Some(400)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_that_heard_nobody_waits_out_the_grace_then_says_so() {
        let start = Instant::now();
        let watch = PeerWatch::new(DetectorSettings::default(), start, Duration::from_secs(3));
        tokio::time::advance(Duration::from_millis(2_999)).await;
        assert_eq!(watch.suspicion(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        let s = watch.suspicion(Instant::now()).unwrap();
        assert_eq!(s, Suspicion::NoneHeard);
        assert_eq!(s.silence_ms(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_a_peer_trusted_and_a_restart_forgets_them() {
        let settings = DetectorSettings::default();
        let start = Instant::now();
        let mut watch = PeerWatch::new(settings, start, Duration::ZERO);
        assert_eq!(watch.suspicion(start), Some(Suspicion::NoneHeard));
        // 300 ms gaps (200 ms of jitter on a 100 ms heartbeat) never trip it.
        for _ in 0..20 {
            watch.heard(Instant::now());
            tokio::time::advance(Duration::from_millis(300)).await;
            assert_eq!(watch.suspicion(Instant::now()), None);
        }
        // An older hearing does not replace a newer one.
        let newest = watch.last_heard().unwrap();
        watch.heard(newest - Duration::from_millis(50));
        assert_eq!(watch.last_heard(), Some(newest));
        // After a restart, nothing old counts, and one suspicion period of grace applies.
        watch.restart(Instant::now());
        assert_eq!(watch.last_heard(), None);
        tokio::time::advance(Duration::from_millis(399)).await;
        assert_eq!(watch.suspicion(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(watch.suspicion(Instant::now()), Some(Suspicion::NoneHeard));
    }

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
