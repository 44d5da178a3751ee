//! A planned switchover, on the active node: stop acknowledging devices,
//! hold the application's writes, let every strategy hand the rest of the
//! data over and wait until the other node confirms it holds it, then stop
//! being active (the application stops here), give the lease back and ask
//! the other node to take over. If the other node does not confirm in
//! time, nothing is handed over: the writes go on and this node stays
//! active.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::promotion::{release_lease, undo_actions_and_demote_strategies, Held};
use super::state::ControlState;
use super::timeline::{Timeline, TimelineBuilder};
use crate::node::core::Core;
use crate::plugin::{HandoverProgress, NodeContext, PluginError, Strategy};
use crate::role::Role;

/// How long a switchover waits for the other site to be seen as a standby.
const PEER_WAIT: Duration = Duration::from_secs(2);
/// How often every strategy is asked how far its hand-over has got.
const POLL: Duration = Duration::from_millis(20);
/// How long the database may stay frozen beyond the switchover's time
/// limit before the host thaws it whatever happens (a safety net; the
/// switchover thaws it itself).
const FREEZE_SLACK: Duration = Duration::from_secs(10);

/// What a completed switchover did, as `standby switchover` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchoverReport {
    /// The site that was active.
    pub from: String,
    /// The site asked to take over.
    pub to: String,
    /// The epoch before.
    pub epoch_before: u64,
    /// The epoch the other site became active at (none: it had not said so
    /// when the wait ended; this node's own detector promotes it again if
    /// the other never takes over).
    pub epoch_after: Option<u64>,
    /// From holding the writes to every strategy's confirmation, ms.
    pub handover_ms: u64,
    /// From this node's gateway closing to the other site announcing itself
    /// active, ms (devices could reach no active server meanwhile).
    pub no_active_server_ms: Option<u64>,
    /// Every step, timed.
    pub timeline: Timeline,
}

/// Why a switchover did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SwitchoverError {
    /// Only the active node hands over.
    #[error("this node is {0}, not active: run the switchover against the active site")]
    NotActive(Role),
    /// No peer link in the profile.
    #[error("this profile has no second site to switch over to")]
    NoPeer,
    /// `--to` names another site.
    #[error("`{to}` is not the other site of this profile (that is `{peer}`)")]
    WrongSite {
        /// What was asked.
        to: String,
        /// The other site.
        peer: String,
    },
    /// The other site cannot take over now.
    #[error("the other site cannot take over now: {0}")]
    PeerNotReady(String),
    /// The application's writes could not be held.
    #[error("holding the application's writes: {0}")]
    Freeze(#[source] crate::store::StoreError),
    /// It began, and was abandoned: this node is active as before.
    #[error("switchover abandoned{}; this node stays active and nothing was handed over", abandoned_at(.0))]
    Abandoned(Box<Timeline>),
}

fn abandoned_at(t: &Timeline) -> String {
    match t.steps.last() {
        Some(s) => format!(" at `{}`: {}", s.name, s.note),
        None => String::new(),
    }
}

/// Check that this node can hand over to the site `to`.
fn check(core: &Core, state: &ControlState, to: &str) -> Result<(), SwitchoverError> {
    if state.role() != Role::Active {
        return Err(SwitchoverError::NotActive(state.role()));
    }
    let (Some(peer), Some(peer_site)) = (&core.peer, &core.peer_site) else {
        return Err(SwitchoverError::NoPeer);
    };
    if to != peer_site {
        return Err(SwitchoverError::WrongSite {
            to: to.to_string(),
            peer: peer_site.clone(),
        });
    }
    let st = peer.state();
    if !st.connected {
        return Err(SwitchoverError::PeerNotReady(String::from(
            "the peer link is down",
        )));
    }
    if st.role != Some(Role::Standby) || st.epoch > state.epoch() {
        return Err(SwitchoverError::PeerNotReady(format!(
            "it is {} at epoch {} (a standby at epoch {} can take over)",
            st.role
                .map(|r| r.to_string())
                .unwrap_or_else(|| "unknown".into()),
            st.epoch,
            state.epoch()
        )));
    }
    Ok(())
}

/// [`check`], waiting up to [`PEER_WAIT`] for a peer link that is coming up
/// (or a first heartbeat) to show the other site as a standby.
async fn ready(core: &Core, state: &ControlState, to: &str) -> Result<(), SwitchoverError> {
    let until = Instant::now() + PEER_WAIT;
    loop {
        match check(core, state, to) {
            Err(SwitchoverError::PeerNotReady(_)) if Instant::now() < until => {
                tokio::time::sleep(POLL).await;
            }
            other => return other,
        }
    }
}

/// Hand the service over to the site `to` (see the module's doc). On
/// success the node is a standby and `held` is gone; on any error it is as
/// active as before and keeps `held`.
pub(crate) async fn switch_over(
    core: &Core,
    state: &mut ControlState,
    held: &mut Option<Held>,
    to: &str,
    limit: Duration,
) -> Result<SwitchoverReport, SwitchoverError> {
    ready(core, state, to).await?;
    let epoch_before = state.epoch();
    let reason = format!("the operator asked for a switchover to {to}");
    tracing::warn!(
        to,
        epoch = epoch_before,
        "switchover: handing the service over"
    );
    let mut tl = TimelineBuilder::begin("switchover", &reason, epoch_before, None);
    // 1. No more acknowledgements, no more devices.
    core.gate.hold();
    let closed_at = Instant::now();
    if let Some(g) = &core.gateway {
        g.close().await;
    }
    tl.step("stop-acknowledging", true, "gateway closed");
    // 2. The application's writes wait.
    let store = core.store.clone();
    let frozen = match tokio::task::spawn_blocking(move || store.freeze()).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            resume(core, &mut tl, "the database could not be frozen").await;
            return Err(SwitchoverError::Freeze(e));
        }
        Err(_) => {
            resume(core, &mut tl, "the freeze did not finish").await;
            return Err(abandoned(state, tl));
        }
    };
    core.services
        .freeze
        .hold(frozen, limit + FREEZE_SLACK, "switchover");
    tl.step("hold-writes", true, "database frozen");
    // 3. Every strategy hands the rest over; the peer confirms.
    let frozen_at = Instant::now();
    if let Err(why) = hand_over(core, &mut tl, limit).await {
        tracing::warn!(to, "switchover abandoned: {why}");
        core.services.freeze.thaw("switchover");
        resume(core, &mut tl, &why.to_string()).await;
        return Err(abandoned(state, tl));
    }
    let handover_ms = frozen_at.elapsed().as_millis() as u64;
    // 4. Stop being active: the application stops before the lease goes.
    if let Some(mut h) = held.take() {
        h.task.abort();
    }
    let _ = state.change(|m| m.handed_over(&format!("to {to}")));
    let ctx = core.context();
    undo_actions_and_demote_strategies(core, &ctx, &mut tl).await;
    core.services.mark_handed_over();
    core.services.freeze.thaw("switchover");
    core.gate.close();
    core.gate.unhold();
    release_lease(core, state).await;
    tl.step("release-lease", true, format!("epoch {epoch_before}"));
    // 5. The other node takes over.
    let asked = match &core.peer {
        Some(p) => p.send_take_over(&core.site).await,
        None => Ok(()),
    };
    match asked {
        Ok(()) => tl.step("ask-peer", true, format!("{to} asked to take over")),
        Err(e) => tl.step("ask-peer", false, e.to_string()),
    }
    let taken = wait_for_peer_active(core, epoch_before, limit).await;
    let no_active_server_ms = taken.map(|_| closed_at.elapsed().as_millis() as u64);
    match taken {
        Some(epoch) => {
            tl.epoch(epoch);
            tl.step("peer-active", true, format!("{to} active at epoch {epoch}"));
        }
        None => tl.step(
            "peer-active",
            false,
            format!("{to} did not announce itself active within {limit:?}"),
        ),
    }
    let timeline = tl.finish(taken.is_some());
    state.set_last_demotion(timeline.clone());
    Ok(SwitchoverReport {
        from: core.site.clone(),
        to: to.to_string(),
        epoch_before,
        epoch_after: taken,
        handover_ms,
        no_active_server_ms,
        timeline,
    })
}

/// Ask every strategy until each says the other node holds everything, or
/// until `limit` passes (Err: why it was abandoned).
async fn hand_over(
    core: &Core,
    tl: &mut TimelineBuilder,
    limit: Duration,
) -> Result<(), HandoverFailed> {
    let deadline = Instant::now() + limit;
    let mut pending: Vec<usize> = (0..core.strategies.len()).collect();
    let mut first = true;
    loop {
        let ctx = core.context();
        let mut still = Vec::new();
        for &i in &pending {
            let s = &core.strategies[i];
            let step = format!("handover:{}", s.name());
            match ask(s.as_ref(), &ctx, first, deadline).await {
                Asked::Answer(Ok(p)) if p.done => tl.step(&step, true, p.note),
                Asked::Answer(Ok(p)) => {
                    if first {
                        tl.step(&format!("{step}:sent"), true, p.note);
                    }
                    still.push(i);
                }
                Asked::Answer(Err(e)) => {
                    tl.step(&step, false, e.to_string());
                    return Err(HandoverFailed::Strategy {
                        plugin: s.name().to_string(),
                        source: e,
                    });
                }
                Asked::OutOfTime => still.push(i),
            }
        }
        first = false;
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let why = HandoverFailed::Unconfirmed {
                limit_ms: limit.as_millis(),
                waiting: still
                    .iter()
                    .map(|&i| core.strategies[i].name().to_string())
                    .collect(),
            };
            tl.step("confirm", false, why.to_string());
            return Err(why);
        }
        pending = still;
        tokio::time::sleep(POLL).await;
    }
}

/// Why the hand-over did not complete.
#[derive(Debug, thiserror::Error)]
enum HandoverFailed {
    /// A strategy refused or failed.
    #[error("strategy `{plugin}` could not hand over: {source}")]
    Strategy {
        /// The strategy instance.
        plugin: String,
        /// Its error.
        #[source]
        source: PluginError,
    },
    /// No confirmation in time.
    #[error("the other site did not confirm within {limit_ms} ms (waiting for {})", .waiting.join(", "))]
    Unconfirmed {
        /// The limit.
        limit_ms: u128,
        /// The strategies still waiting.
        waiting: Vec<String>,
    },
}

/// What asking one strategy came to.
enum Asked {
    /// It answered.
    Answer(Result<HandoverProgress, PluginError>),
    /// It was still at work at the deadline, and was stopped.
    OutOfTime,
}

/// One `handover` call; a call still running at `deadline` (a large last
/// copy on a slow link, a peer that does not take what it is sent) is
/// stopped.
async fn ask(s: &dyn Strategy, ctx: &NodeContext, first: bool, deadline: Instant) -> Asked {
    let call = s.handover(ctx, first);
    tokio::pin!(call);
    tokio::select! {
        r = &mut call => return Asked::Answer(r),
        () = tokio::time::sleep_until(deadline.into()) => {}
    }
    loop {
        // Again until it stops: a preemption that came while the call
        // waited for the instance stopped a tick instead.
        s.preempt();
        tokio::select! {
            r = &mut call => {
                // Past the deadline only a confirmation counts (a refusal
                // now may come from an instance made afresh after the
                // preemption stopped a tick).
                return match r {
                    Ok(p) if p.done => Asked::Answer(Ok(p)),
                    _ => Asked::OutOfTime,
                }
            }
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Undo the first steps of an abandoned switchover: acknowledge again and
/// open the gateway.
async fn resume(core: &Core, tl: &mut TimelineBuilder, why: &str) {
    core.gate.unhold();
    if let Some(g) = &core.gateway {
        if let Err(e) = g.open().await {
            tracing::error!(error = %e, "switchover abandoned, but the gateway did not open again");
        }
    }
    tl.step(
        "resume",
        true,
        format!("{why}; writes and devices go on here"),
    );
}

fn abandoned(state: &mut ControlState, tl: TimelineBuilder) -> SwitchoverError {
    let t = tl.finish(false);
    state.set_last_demotion(t.clone());
    SwitchoverError::Abandoned(Box::new(t))
}

/// Wait until the peer announces itself active above `epoch` (its epoch),
/// at most `limit`.
async fn wait_for_peer_active(core: &Core, epoch: u64, limit: Duration) -> Option<u64> {
    let peer = core.peer.as_ref()?;
    let deadline = Instant::now() + limit;
    loop {
        let st = peer.state();
        if st.connected && st.role == Some(Role::Active) && st.epoch > epoch {
            return Some(st.epoch);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
