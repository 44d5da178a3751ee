//! When the node that dials (the one with the lower id) dials its peer, as
//! an explicit state machine: at once when the link is lost, then after a
//! growing, jittered delay while dials fail; nothing while the link is up,
//! whichever side made it.

use std::time::Duration;

use rand::Rng;
use standby_device::backoff::Backoff;
use tokio::time::Instant;

/// The pause between failed dials: 100 ms doubling up to 1 s, half of each
/// drawn at random. The peer is one node, so the cap stays low: a returning
/// peer is found within a second.
pub(super) fn peer_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
        .and_then(|b| b.with_jitter(0.5))
        .unwrap_or_default()
}

/// Where the dialler stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RedialState {
    /// A connection is up; nothing to dial.
    Up,
    /// Dial at `at`; `failures` dials failed since the link was last up.
    Waiting {
        /// When to dial.
        at: Instant,
        /// Failed dials in a row.
        failures: u32,
    },
}

/// The dialler's state machine.
#[derive(Debug, Clone)]
pub(super) struct Redial {
    backoff: Backoff,
    state: RedialState,
}

impl Redial {
    /// A dialler that dials at once.
    pub(super) fn new(backoff: Backoff, now: Instant) -> Self {
        Self {
            backoff,
            state: RedialState::Waiting {
                at: now,
                failures: 0,
            },
        }
    }

    /// Where it stands.
    #[cfg(test)]
    pub(super) fn state(&self) -> RedialState {
        self.state
    }

    /// When to dial next; None while the link is up.
    pub(super) fn next_dial(&self) -> Option<Instant> {
        match self.state {
            RedialState::Up => None,
            RedialState::Waiting { at, .. } => Some(at),
        }
    }

    /// A connection is up (dialled, or accepted from the peer).
    pub(super) fn up(&mut self) {
        self.state = RedialState::Up;
    }

    /// The link went down: dial again at once.
    pub(super) fn down(&mut self, now: Instant) {
        if self.state == RedialState::Up {
            self.state = RedialState::Waiting {
                at: now,
                failures: 0,
            };
        }
    }

    /// A dial failed: wait longer before the next.
    pub(super) fn failed(&mut self, now: Instant, rng: &mut impl Rng) {
        let failures = match self.state {
            RedialState::Waiting { failures, .. } => failures,
            RedialState::Up => 0,
        };
        self.state = RedialState::Waiting {
            at: now + self.backoff.delay(failures, rng),
            failures: failures.saturating_add(1),
        };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn exact() -> Backoff {
        Backoff::new(100 * MS, 1_000 * MS)
            .unwrap()
            .with_jitter(0.0)
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn failed_dials_wait_longer_each_time_up_to_the_cap() {
        let mut rng = rand::rng();
        let start = Instant::now();
        let mut r = Redial::new(exact(), start);
        assert_eq!(r.next_dial(), Some(start), "the first dial is at once");
        let mut waits = Vec::new();
        for _ in 0..6 {
            let now = Instant::now();
            r.failed(now, &mut rng);
            let at = r.next_dial().unwrap();
            waits.push(at - now);
            tokio::time::advance(at - now).await;
        }
        assert_eq!(
            waits,
            [
                100 * MS,
                200 * MS,
                400 * MS,
                800 * MS,
                1_000 * MS,
                1_000 * MS
            ]
        );
        // The loop waited out the last pause: the next dial is due now.
        assert_eq!(
            r.state(),
            RedialState::Waiting {
                at: Instant::now(),
                failures: 6
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_link_is_redialled_at_once_and_the_delays_start_over() {
        let mut rng = rand::rng();
        let mut r = Redial::new(exact(), Instant::now());
        for _ in 0..4 {
            r.failed(Instant::now(), &mut rng);
        }
        r.up();
        assert_eq!(r.next_dial(), None, "nothing to dial while up");
        tokio::time::advance(5_000 * MS).await;
        let lost_at = Instant::now();
        r.down(lost_at);
        assert_eq!(r.next_dial(), Some(lost_at));
        r.failed(lost_at, &mut rng);
        assert_eq!(
            r.next_dial(),
            Some(lost_at + 100 * MS),
            "back to the first delay"
        );
        // A second "down" while waiting does not reset the count.
        r.down(Instant::now());
        assert_eq!(r.next_dial(), Some(lost_at + 100 * MS));
    }

    #[test]
    fn the_peer_backoff_is_jittered_and_capped() {
        let b = peer_backoff();
        assert_eq!((b.initial(), b.max()), (100 * MS, 1_000 * MS));
        let mut rng = rand::rng();
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(0, &mut rng)).collect();
        assert!(delays.iter().all(|d| (50 * MS..=100 * MS).contains(d)));
        assert!(delays.iter().any(|d| *d < 90 * MS), "some jitter");
    }
}
