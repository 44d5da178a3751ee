//! The reconnect state machine of one device: which endpoint to dial next
//! and when. Pure (no I/O): the agent feeds it outcomes and asks for the next
//! step, and tests drive it on tokio's paused clock.

use rand::Rng;
use tokio::time::Instant;

use crate::backoff::Backoff;

/// Where the link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Dialling `endpoint` (index into the ordered list).
    Connecting {
        /// The endpoint being dialled.
        endpoint: usize,
        /// Failed attempts since the link was last up.
        failures: u32,
    },
    /// Up through `endpoint` since `since`.
    Connected {
        /// The endpoint in use.
        endpoint: usize,
        /// When the link came up.
        since: Instant,
    },
    /// Waiting until `until` before dialling `next`.
    Backoff {
        /// The endpoint to dial next.
        next: usize,
        /// When to dial it.
        until: Instant,
        /// Failed attempts since the link was last up.
        failures: u32,
    },
}

/// What the agent should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Dial this endpoint.
    Connect(usize),
    /// Nothing until this instant.
    WaitUntil(Instant),
    /// The link is up; keep it.
    Stay,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Reconnect {
    state: LinkState,
    backoff: Backoff,
    endpoints: usize,
    /// Endpoints that failed in the current pass over the list.
    tried: usize,
}

impl Reconnect {
    /// Start by dialling the first (highest-priority) endpoint at once.
    pub fn new(endpoints: usize, backoff: Backoff) -> Self {
        Self {
            state: LinkState::Connecting {
                endpoint: 0,
                failures: 0,
            },
            backoff,
            endpoints: endpoints.max(1),
            tried: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The next step at `now`.
    pub fn step(&mut self, now: Instant) -> Step {
        match self.state {
            LinkState::Connected { .. } => Step::Stay,
            LinkState::Connecting { endpoint, .. } => Step::Connect(endpoint),
            LinkState::Backoff {
                next,
                until,
                failures,
            } => {
                if now >= until {
                    self.state = LinkState::Connecting {
                        endpoint: next,
                        failures,
                    };
                    Step::Connect(next)
                } else {
                    Step::WaitUntil(until)
                }
            }
        }
    }

    /// The attempt on the current endpoint failed: dial the next one in
    /// priority order at once, or, when every endpoint has failed in this
    /// pass over the list, start the next pass after a jittered delay that
    /// grows with each failed pass. (Waiting between the entries of one pass
    /// would only delay the device's move to a server that is up.)
    pub fn failed(&mut self, now: Instant, rng: &mut impl Rng) {
        if let LinkState::Connecting { endpoint, failures } = self.state {
            let next = (endpoint + 1) % self.endpoints;
            self.tried += 1;
            if self.tried < self.endpoints {
                self.state = LinkState::Connecting {
                    endpoint: next,
                    failures,
                };
                return;
            }
            self.tried = 0;
            let until = now + self.backoff.delay(failures, rng);
            self.state = LinkState::Backoff {
                next,
                until,
                failures: failures.saturating_add(1),
            };
        }
    }

    /// The attempt succeeded (handshake accepted).
    pub fn connected(&mut self, now: Instant) {
        self.tried = 0;
        if let LinkState::Connecting { endpoint, .. } = self.state {
            self.state = LinkState::Connected {
                endpoint,
                since: now,
            };
        }
    }

    /// The link died: start again from the highest-priority endpoint after a
    /// short jittered delay (so a fleet does not reconnect in lockstep).
    pub fn lost(&mut self, now: Instant, rng: &mut impl Rng) {
        self.tried = 0;
        if let LinkState::Connected { .. } = self.state {
            self.state = LinkState::Backoff {
                next: 0,
                until: now + self.backoff.delay(0, rng),
                failures: 0,
            };
        }
    }

    /// The link went silent (no keep-alive answer within the dead-link
    /// timeout): the server hangs with its socket open, and its kernel still
    /// completes TCP handshakes, so dialling it again would cost a whole
    /// connect timeout. Walk the list in priority order starting after it;
    /// it is tried again last (and first again after the next loss). It is
    /// not left out of later walks: a server that was only slow to answer in
    /// a reconnection storm would then be out of reach for that long.
    pub fn went_silent(&mut self, now: Instant, rng: &mut impl Rng) {
        self.tried = 0;
        if let LinkState::Connected { endpoint, .. } = self.state {
            self.state = LinkState::Backoff {
                next: (endpoint + 1) % self.endpoints,
                until: now + self.backoff.delay(0, rng),
                failures: 0,
            };
        }
    }

    /// Leave the current link for `endpoint` (fail-back, or a new server list).
    pub fn switch_to(&mut self, endpoint: usize) {
        self.tried = 0;
        self.state = LinkState::Connecting {
            endpoint: endpoint.min(self.endpoints - 1),
            failures: 0,
        };
    }

    /// The server list changed to `endpoints` entries; dial from the top next time.
    pub fn set_endpoints(&mut self, endpoints: usize) {
        self.endpoints = endpoints.max(1);
        self.tried = 0;
        match &mut self.state {
            LinkState::Connecting { endpoint, .. } => *endpoint = 0,
            LinkState::Backoff { next, .. } => *next = 0,
            LinkState::Connected { .. } => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
            .unwrap()
            .with_jitter(0.5)
            .unwrap()
    }

    /// Fail the current attempt and return the step that follows.
    fn fail(r: &mut Reconnect) -> Step {
        r.failed(Instant::now(), &mut rand::rng());
        r.step(Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn walks_the_list_at_once_then_waits_a_growing_delay_between_passes() {
        let mut r = Reconnect::new(3, backoff());
        assert_eq!(r.step(Instant::now()), Step::Connect(0));
        let mut waits = Vec::new();
        for pass in 0..6 {
            // Within a pass the next endpoint is dialled at once.
            assert_eq!(fail(&mut r), Step::Connect(1), "pass {pass}");
            assert_eq!(fail(&mut r), Step::Connect(2), "pass {pass}");
            // After the whole list failed, a delay before the next pass.
            let Step::WaitUntil(until) = fail(&mut r) else {
                panic!("pass {pass}: expected a wait after the last endpoint")
            };
            waits.push(until - Instant::now());
            tokio::time::advance(until - Instant::now()).await;
            assert_eq!(r.step(Instant::now()), Step::Connect(0), "pass {pass}");
        }
        // Delay n lies in [d/2, d] for d = min(100ms * 2^n, 1s).
        for (n, w) in waits.iter().enumerate() {
            let d = Duration::from_millis(100 * (1 << n)).min(Duration::from_secs(1));
            assert!(
                *w >= d / 2 && *w <= d,
                "wait {n}: {w:?} not in [{:?}, {d:?}]",
                d / 2
            );
        }
        r.connected(Instant::now());
        assert_eq!(r.step(Instant::now()), Step::Stay);
        assert!(matches!(
            r.state(),
            LinkState::Connected { endpoint: 0, .. }
        ));

        // Losing the link restarts from the first endpoint after a short
        // delay, with a fresh pass.
        r.lost(Instant::now(), &mut rand::rng());
        let Step::WaitUntil(until) = r.step(Instant::now()) else {
            panic!()
        };
        assert!(until - Instant::now() <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(r.step(Instant::now()), Step::Connect(0));
        assert_eq!(fail(&mut r), Step::Connect(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_tried_last_in_the_next_walk() {
        let mut rng = rand::rng();
        let mut r = Reconnect::new(3, backoff());
        r.connected(Instant::now());
        r.went_silent(Instant::now(), &mut rng);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(r.step(Instant::now()), Step::Connect(1));
        // 1 and 2 fail: the walk comes back to 0, the silent one, last.
        assert_eq!(fail(&mut r), Step::Connect(2));
        assert_eq!(fail(&mut r), Step::Connect(0));
        // The pass is over: the next one waits.
        assert!(matches!(fail(&mut r), Step::WaitUntil(_)));
        // With one endpoint there is nothing else to try.
        let mut one = Reconnect::new(1, backoff());
        one.connected(Instant::now());
        one.went_silent(Instant::now(), &mut rng);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(one.step(Instant::now()), Step::Connect(0));
        assert!(matches!(fail(&mut one), Step::WaitUntil(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn fail_back_and_new_lists_restart_cleanly() {
        let mut r = Reconnect::new(2, backoff());
        assert_eq!(fail(&mut r), Step::Connect(1));
        r.connected(Instant::now());
        r.switch_to(0);
        assert_eq!(r.step(Instant::now()), Step::Connect(0));
        r.set_endpoints(5);
        for next in 1..5 {
            assert_eq!(fail(&mut r), Step::Connect(next));
        }
        assert!(matches!(fail(&mut r), Step::WaitUntil(_)));
    }
}
