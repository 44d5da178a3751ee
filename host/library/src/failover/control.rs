//! The node's control loop: the failure detector over peer heartbeats and the
//! witness's view, the fenced node's rejoin, operator promotions, and the
//! epochs a peer or the witness presents. The sequences it runs are in
//! [`super::promotion`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::delivery::apply_durable_marks;
use super::promotion::{
    complete_promotion, demote, promote_holding, shut_down, Held, PromoteError,
};
use super::state::ControlState;
use super::switchover::switch_over;
use super::timeline::{Timeline, TimelineBuilder};
use standby_device::backoff::Backoff;

use crate::cluster::{DetectorSettings, LeaseEnd, LeaseError, PeerWatch, Suspicion};
use crate::node::core::{Command, Core};
use crate::role::Role;

const MANUAL_EPOCH_FILE: &str = "manual-epoch";

/// How long after the end of another node's lease, as the witness counted
/// it, a suspecting standby asks for the lease.
const LEASE_END_SLACK: Duration = Duration::from_millis(2);

/// The epoch of the last forced promotion on this node (no witness), or 0.
pub(crate) fn read_manual_epoch(data_dir: &Path) -> u64 {
    std::fs::read_to_string(data_dir.join(MANUAL_EPOCH_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_manual_epoch(data_dir: &Path, epoch: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = data_dir.join(format!("{MANUAL_EPOCH_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{epoch}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(MANUAL_EPOCH_FILE))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// The pause before a promotion abandoned by a failed fencing command is
/// tried again: about 1 s, doubling with each further failure up to about
/// 30 s (a tenth of each drawn at random).
fn retry_abandoned() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
        .and_then(|b| b.with_jitter(0.1))
        .unwrap_or_default()
}

/// What the standby's failure detector has seen.
struct Watch {
    /// When the active peer was last heard, and the startup grace.
    peer: PeerWatch,
    /// When the peer was first suspected, and why.
    suspected: Option<(Instant, Suspicion)>,
    next_try: Instant,
    /// What was last said about waiting (said once, not every tick).
    said: String,
    next_fenced_query: Instant,
    /// Promotions abandoned in a row (the next attempt waits longer).
    abandoned: u32,
}

impl Watch {
    fn new(core: &Core) -> Self {
        let now = Instant::now();
        // A standby that has heard no active peer since it started waits out
        // the startup grace (the preferred active waits for nobody).
        let (detector, grace) = match &core.settings {
            Some(s) if !s.prefer_active => (s.detector, s.startup_grace),
            Some(s) => (s.detector, Duration::ZERO),
            None => (DetectorSettings::default(), Duration::ZERO),
        };
        Self {
            peer: PeerWatch::new(detector, now.into(), grace),
            suspected: None,
            next_try: now,
            said: String::new(),
            next_fenced_query: now,
            abandoned: 0,
        }
    }

    /// After a role change: what was heard before says nothing now.
    fn reset(&mut self) {
        self.peer.restart(Instant::now().into());
        self.suspected = None;
        self.said.clear();
        self.abandoned = 0;
    }

    fn say(&mut self, what: String) {
        if what != self.said {
            tracing::warn!("{what}");
            self.said = what;
        }
    }
}

/// The control loop and everything it owns.
struct Controller {
    core: Arc<Core>,
    /// The role machine, the lease, the last sequences.
    state: ControlState,
    /// The lease's keeper while the node holds one.
    held: Option<Held>,
    /// What the failure detector has seen.
    watch: Watch,
}

/// Run the control loop until `stop` fires (or its sender is dropped); then
/// stop acknowledging, close the gateway and hand back a held lease.
pub(crate) async fn run(
    core: Arc<Core>,
    state: ControlState,
    mut commands: mpsc::Receiver<Command>,
    mut stop: oneshot::Receiver<()>,
) {
    let tick = core
        .settings
        .as_ref()
        .map(|s| {
            (s.detector.heartbeat / 2).clamp(Duration::from_millis(10), Duration::from_millis(100))
        })
        .unwrap_or(Duration::from_millis(100));
    let watch = Watch::new(&core);
    let mut c = Controller {
        core,
        state,
        held: None,
        watch,
    };
    loop {
        tokio::select! {
            _ = &mut stop => {
                if let Some(mut h) = c.held.take() {
                    h.task.abort();
                }
                shut_down(&c.core, &mut c.state).await;
                return;
            }
            _ = tokio::time::sleep_until(c.next_wake(tick).into()) => {}
            end = lease_ended(&mut c.held) => {
                let reason = match end {
                    Some(LeaseEnd::Expired { reason, .. }) => format!("lease expired: {reason}"),
                    Some(LeaseEnd::Refused { witness_epoch, reason, .. }) => {
                        format!("the witness refused the renewal (its epoch {witness_epoch}): {reason}")
                    }
                    None => String::from("the lease keeper stopped"),
                };
                c.held = None;
                demote(&c.core, &mut c.state, &reason, None).await;
                c.watch.reset();
                continue;
            }
            cmd = commands.recv() => {
                if let Some(cmd) = cmd {
                    c.command(cmd).await;
                }
                continue;
            }
        }
        c.tick().await;
    }
}

async fn lease_ended(held: &mut Option<Held>) -> Option<LeaseEnd> {
    match held.as_mut() {
        Some(h) => (&mut h.end).await.ok(),
        None => std::future::pending().await,
    }
}

impl Controller {
    /// When the loop next runs its pass: after `tick`, or sooner when a
    /// suspecting standby is due to ask the witness again (the moment the
    /// old lease runs out, not up to a tick after it).
    fn next_wake(&self, tick: Duration) -> Instant {
        let now = Instant::now();
        let regular = now + tick;
        if self.watch.suspected.is_some() && self.state.role() == Role::Standby {
            regular.min(self.watch.next_try.max(now + Duration::from_millis(1)))
        } else {
            regular
        }
    }

    /// One pass of the loop: durable marks, the peer's epoch, and the step
    /// of the current role.
    async fn tick(&mut self) {
        apply_durable_marks(&self.core);
        self.adopt_peer_epoch().await;
        match self.state.role() {
            Role::Standby if self.core.witness.is_some() => {
                if let Some(h) = self.standby_step().await {
                    self.held = Some(h);
                    self.watch.reset();
                }
            }
            Role::Fenced => self.fenced_step().await,
            _ => {}
        }
    }

    /// A peer presenting a higher epoch fences an active node and is adopted
    /// by any other.
    async fn adopt_peer_epoch(&mut self) {
        let Some(peer) = &self.core.peer else { return };
        let theirs = peer.state().epoch;
        if theirs <= self.state.epoch() {
            return;
        }
        if matches!(self.state.role(), Role::Active | Role::Candidate) {
            if let Some(mut h) = self.held.take() {
                h.task.abort();
            }
            demote(
                &self.core,
                &mut self.state,
                &format!("the peer presented epoch {theirs}"),
                Some(theirs),
            )
            .await;
            self.watch.reset();
        } else {
            self.state.saw_epoch(theirs, "the peer");
        }
    }

    /// The standby's failure detector: suspect an active peer that went
    /// silent, check with the witness, and compete for the lease when it is
    /// free.
    async fn standby_step(&mut self) -> Option<Held> {
        let core = self.core.clone();
        let (settings, witness) = (core.settings.as_ref()?, core.witness.clone()?);
        let watch = &mut self.watch;
        if let Some(peer) = &core.peer {
            let st = peer.state();
            if st.connected && st.role == Some(Role::Active) {
                if let Some(heard) = peer.silence().and_then(|s| Instant::now().checked_sub(s)) {
                    watch.peer.heard(heard.into());
                }
            }
        }
        let now = Instant::now();
        let Some(suspicion) = watch.peer.suspicion(now.into()) else {
            if watch.suspected.take().is_some() {
                tracing::info!("the active peer is heard again; suspicion withdrawn");
                // A later suspicion asks the witness at once.
                watch.next_try = now;
            }
            watch.said.clear();
            return None;
        };
        if watch.suspected.is_none() {
            tracing::warn!(silence_ms = ?suspicion.silence_ms(), "no active peer heard: asking the witness");
            watch.suspected = Some((now, suspicion));
        }
        if now < watch.next_try {
            return None;
        }
        watch.next_try = now + settings.detector.heartbeat;
        match witness.query().await {
            Ok(view) => {
                if view.epoch > self.state.epoch() {
                    self.state.saw_epoch(view.epoch, "the witness");
                }
                // The witness names a holder only while its lease runs.
                let other_holds = view.holder.as_deref().is_some_and(|h| h != core.node_id);
                if other_holds {
                    // Ask again each heartbeat interval (a lease given back
                    // is free at once), and the moment it runs out, counted
                    // from the answer's arrival (after the witness
                    // counted): the witness counts whole ms left, so a
                    // little after.
                    let until_free = Duration::from_millis(view.remaining_ms) + LEASE_END_SLACK;
                    self.watch.next_try =
                        Instant::now() + until_free.min(settings.detector.heartbeat);
                    self.watch.say(format!(
                        "the witness says {} holds the lease at epoch {}; waiting",
                        view.holder.unwrap_or_default(),
                        view.epoch
                    ));
                    return None;
                }
            }
            Err(e) => {
                self.watch.say(format!("cannot promote: {e}"));
                return None;
            }
        }
        let (began, suspicion) = self.watch.suspected.unwrap_or((now, suspicion));
        let detect_ms = suspicion.silence_ms();
        let reason = match detect_ms {
            Some(ms) => format!("no heartbeat from the active peer for {ms} ms"),
            None => String::from("no active peer heard since start"),
        };
        if let Err(e) = self.state.change(|m| m.suspect_peer(&reason)) {
            tracing::warn!(error = %e, "cannot become a candidate");
            return None;
        }
        let mut tl = TimelineBuilder::begin("promotion", &reason, self.state.epoch(), Some(began));
        if let Some(ms) = detect_ms {
            tl.detected_after(ms);
        }
        match witness.acquire(settings.lease.ttl).await {
            Ok(lease) => {
                match promote_holding(
                    &core,
                    &mut self.state,
                    &witness,
                    settings,
                    lease,
                    tl,
                    &reason,
                )
                .await
                {
                    Ok((held, _)) => Some(held),
                    Err(_) => {
                        // Try again, but not at once: each attempt costs an
                        // epoch and runs the fencing command again.
                        let pause = retry_abandoned().delay(self.watch.abandoned, &mut rand::rng());
                        self.watch.next_try = Instant::now() + pause;
                        self.watch.abandoned = self.watch.abandoned.saturating_add(1);
                        tracing::warn!(
                            retry_in = ?pause,
                            "promotion abandoned and the lease given back; trying again later"
                        );
                        None
                    }
                }
            }
            Err(e) => {
                let why = match &e {
                    LeaseError::Denied { .. } => e.to_string(),
                    other => format!("{other}"),
                };
                let _ = self.state.change(|m| m.lost_election(&why));
                self.watch.say(format!("lease not won: {why}"));
                None
            }
        }
    }

    /// A fenced node rejoins as standby once it has learnt the current epoch.
    async fn fenced_step(&mut self) {
        let now = Instant::now();
        if now < self.watch.next_fenced_query {
            return;
        }
        self.watch.next_fenced_query = now + Duration::from_millis(500);
        let core = self.core.clone();
        let learnt = match &core.witness {
            Some(w) => match w.query().await {
                Ok(view) => {
                    self.state.saw_epoch(view.epoch, "the witness");
                    Some(format!(
                        "the witness is reachable; epoch {} is held by {}",
                        view.epoch,
                        view.holder.as_deref().unwrap_or("nobody")
                    ))
                }
                Err(e) => {
                    self.watch
                        .say(format!("fenced; the witness is not reachable: {e}"));
                    None
                }
            },
            None => core.peer.as_ref().and_then(|p| {
                let st = p.state();
                (st.connected && st.role == Some(Role::Active) && st.epoch >= self.state.epoch())
                    .then(|| format!("the peer is active at epoch {}", st.epoch))
            }),
        };
        if let Some(reason) = learnt {
            if self.state.change(|m| m.rejoin(&reason)).is_ok() {
                self.watch.reset();
            }
        }
    }

    /// Carry out one command from the admin endpoint or the peer.
    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Promote { force, reply } => {
                let result = self
                    .operator_promote(force, "the operator asked for a promotion")
                    .await;
                self.watch.reset();
                let _ = reply.send(result);
            }
            Command::Switchover { to, reply } => {
                let limit = self
                    .core
                    .settings
                    .as_ref()
                    .map(|s| s.switchover_timeout)
                    .unwrap_or(Duration::from_secs(30));
                let core = self.core.clone();
                let result = switch_over(&core, &mut self.state, &mut self.held, &to, limit).await;
                self.watch.reset();
                let _ = reply.send(result);
            }
            Command::TakeOver { from, epoch } => {
                if self.state.role() == Role::Active || epoch < self.state.epoch() {
                    tracing::warn!(from, epoch, role = %self.state.role(), "take-over request ignored: this node is active or the request is from an older epoch");
                    return;
                }
                let reason = format!("switchover: {from} handed the service over at epoch {epoch}");
                tracing::warn!("{reason}");
                // Without a witness the hand-over itself is the operator's
                // word that the other node stepped down.
                match self.operator_promote(true, &reason).await {
                    Ok(t) => {
                        tracing::info!(epoch = t.epoch_after, total_ms = t.total_ms, "took over")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not take over; the other node's detector promotes it again if nobody becomes active")
                    }
                }
                self.watch.reset();
            }
        }
    }

    /// `standby promote` (and a peer's hand-over): through the witness when
    /// there is one; without one only with `force`.
    async fn operator_promote(
        &mut self,
        force: bool,
        reason: &str,
    ) -> Result<Timeline, PromoteError> {
        let core = self.core.clone();
        let role = self.state.role();
        if role == Role::Active {
            return Err(PromoteError::AlreadyActive(self.state.epoch()));
        }
        if role == Role::Fenced {
            let _ = self.state.change(|m| m.rejoin(reason));
        }
        let reason = reason.to_string();
        let abandoned = |t: Timeline| PromoteError::Abandoned(Box::new(t));
        match (&core.witness, &core.settings) {
            (Some(witness), Some(settings)) => {
                self.state.change(|m| m.suspect_peer(&reason))?;
                let tl = TimelineBuilder::begin("promotion", &reason, self.state.epoch(), None);
                match witness.acquire(settings.lease.ttl).await {
                    Ok(lease) => {
                        let (h, t) = promote_holding(
                            &core,
                            &mut self.state,
                            witness,
                            settings,
                            lease,
                            tl,
                            &reason,
                        )
                        .await
                        .map_err(abandoned)?;
                        self.held = Some(h);
                        Ok(t)
                    }
                    Err(e) => {
                        let _ = self.state.change(|m| m.lost_election(&e.to_string()));
                        Err(PromoteError::NotGranted(e))
                    }
                }
            }
            _ if !force => Err(PromoteError::NeedsForce),
            _ => {
                tracing::warn!("forced promotion without a witness: nothing stops the other node if it is still running");
                let peer_epoch = core.peer.as_ref().map(|p| p.state().epoch).unwrap_or(0);
                let epoch = self.state.epoch().max(peer_epoch) + 1;
                write_manual_epoch(&core.data_dir, epoch)
                    .map_err(|source| PromoteError::RecordEpoch { epoch, source })?;
                self.state.change(|m| m.suspect_peer(&reason))?;
                let tl = TimelineBuilder::begin("promotion", &reason, self.state.epoch(), None);
                complete_promotion(
                    &core,
                    &mut self.state,
                    tl,
                    epoch,
                    "forced by the operator (no witness)",
                )
                .await
                .map_err(abandoned)
            }
        }
    }
}
