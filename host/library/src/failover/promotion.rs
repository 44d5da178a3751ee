//! The promotion sequence (lease, fencing command, strategies' on-promote,
//! failover actions, gateway), the demotion sequence, and a clean stop, each
//! timed step by step.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::state::ControlState;
use super::timeline::{Step, Timeline, TimelineBuilder};
use crate::cluster::keeper::Keeper;
use crate::cluster::role::RoleError;
use crate::cluster::{hold, Lease, LeaseEnd, LeaseError, WitnessClient};
use crate::config::StepTimeout;
use crate::node::core::{ClusterSettings, Core};
use crate::plugin::PluginError;
use crate::role::Role;

/// The held lease: its keeper task and how it ends.
pub(crate) struct Held {
    pub(crate) task: Keeper,
    pub(crate) end: oneshot::Receiver<LeaseEnd>,
}

/// Why an operator's promotion did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PromoteError {
    /// The node is active already.
    #[error("already active at epoch {0}")]
    AlreadyActive(u64),
    /// The role machine refused the step.
    #[error(transparent)]
    Role(#[from] RoleError),
    /// The witness did not grant the lease.
    #[error("the witness did not grant the lease: {0}")]
    NotGranted(#[source] LeaseError),
    /// No witness, and no `--force`.
    #[error("no witness is configured, so promotion is manual: make sure the other node is down, then run `standby promote --force`")]
    NeedsForce,
    /// The epoch of a forced promotion could not be recorded.
    #[error("recording epoch {epoch}: {source}")]
    RecordEpoch {
        /// The epoch.
        epoch: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A step of the promotion failed and it was abandoned.
    #[error("promotion abandoned{}", last_step(.0))]
    Abandoned(Box<Timeline>),
}

/// The step an abandoned promotion ended at, for its message.
fn last_step(t: &Timeline) -> String {
    match t.steps.last() {
        Some(Step { name, note, .. }) => format!(" at step `{name}`: {note}"),
        None => String::new(),
    }
}

/// Keep `lease` renewed and complete the promotion under it. When the
/// promotion is abandoned, the keeper stops and the lease is given back (the
/// gate is already closed).
pub(crate) async fn promote_holding(
    core: &Core,
    state: &mut ControlState,
    witness: &Arc<WitnessClient>,
    settings: &ClusterSettings,
    lease: Lease,
    mut tl: TimelineBuilder,
    reason: &str,
) -> Result<(Held, Timeline), Timeline> {
    tl.step("lease", true, format!("granted at epoch {}", lease.epoch));
    let (mut task, end) = hold(witness.clone(), lease, settings.lease, core.gate.clone());
    state.set_lease(Some(lease));
    match complete_promotion(core, state, tl, lease.epoch, reason).await {
        Ok(t) => Ok((Held { task, end }, t)),
        Err(t) => {
            task.abort();
            release_lease(core, state).await;
            Err(t)
        }
    }
}

/// From a won lease to an open gateway: fencing hook, strategies'
/// on-promote, failover actions' activate, gateway.
///
/// The fencing command runs while the node is still a candidate: until it
/// has succeeded (or failed without `fence_required`), the node does not
/// call itself active to anyone (status, peer, plugins, gateway). When it
/// fails and `fence_required` is set, the node goes back to standby and the
/// caller gives the lease back.
pub(crate) async fn complete_promotion(
    core: &Core,
    state: &mut ControlState,
    mut tl: TimelineBuilder,
    epoch: u64,
    reason: &str,
) -> Result<Timeline, Timeline> {
    tl.epoch(epoch);
    // A running tick or on-receive gives way to the promotion.
    preempt_strategies(core);
    if let Some(settings) = &core.settings {
        if !settings.fence_command.is_empty() {
            let (ok, note) = run_fence(core, settings, epoch).await;
            if !ok {
                tracing::warn!(
                    epoch,
                    required = settings.fence_required,
                    "fencing command failed: {note}"
                );
            }
            tl.step("fence", ok, note);
            if !ok && settings.fence_required {
                abandon(
                    core,
                    state,
                    "the fencing command failed and fence_required is set",
                );
                return Err(finish(state, tl, false));
            }
        }
    }
    if let Err(e) = state.change(|m| m.won_lease(epoch, reason)) {
        tl.step("become-active", false, e.to_string());
        // Back to standby rather than left a candidate.
        abandon(core, state, &format!("cannot become active: {e}"));
        return Err(finish(state, tl, false));
    }
    let ctx = core.context();
    let mut reports = Vec::new();
    preempt_strategies(core);
    for s in &core.strategies {
        let step = format!("on-promote:{}", s.name());
        match s.on_promote(&ctx).await {
            Ok(report) => {
                let mut note = report.restored_from.clone();
                if !report.note.is_empty() {
                    note = format!("{note}; {}", report.note);
                }
                tl.step(&step, true, note);
                reports.push((s.name().to_string(), report));
            }
            Err(e) => {
                tl.step(&step, false, e.to_string());
                if abandons_on(core, &e) {
                    return Err(abandon_after_timeout(core, state, tl, &step).await);
                }
            }
        }
    }
    state.set_promoted_from(reports);
    for a in &core.actions {
        let step = format!("activate:{}", a.name());
        match a.activate(&ctx).await {
            Ok(report) => tl.step(&step, true, report.summary),
            Err(e) => {
                tl.step(&step, false, e.to_string());
                if abandons_on(core, &e) {
                    return Err(abandon_after_timeout(core, state, tl, &step).await);
                }
            }
        }
    }
    if core.witness.is_none() {
        // No lease bounds acknowledging: a node that stopped being active
        // (a demotion, a switchover) acknowledges again once it is.
        core.gate.open_always();
    }
    if let Some(g) = &core.gateway {
        match g.open().await {
            Ok(()) => tl.step(
                "open-gateway",
                true,
                g.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            ),
            Err(e) => tl.step("open-gateway", false, e.to_string()),
        }
    }
    Ok(finish(state, tl, true))
}

/// Whether `error` from a promotion step ends the promotion: it ran out of
/// time and `[cluster] failover_step_timeout` is "abandon".
fn abandons_on(core: &Core, error: &PluginError) -> bool {
    matches!(error, PluginError::TimedOut { .. })
        && core
            .settings
            .as_ref()
            .is_some_and(|s| s.step_timeout == StepTimeout::Abandon)
}

/// A promotion whose step `step` ran out of time, abandoned as the profile
/// says: the node, active but with its gateway still closed, goes back to
/// standby, undoes its failover actions and tells its strategies (the
/// caller gives the lease back).
async fn abandon_after_timeout(
    core: &Core,
    state: &mut ControlState,
    mut tl: TimelineBuilder,
    step: &str,
) -> Timeline {
    let why = format!("`{step}` ran out of time and cluster.failover_step_timeout is \"abandon\"");
    tracing::warn!(epoch = state.epoch(), "promotion abandoned: {why}");
    abandon(core, state, &why);
    tl.step("abandon", true, why);
    let ctx = core.context();
    undo_actions_and_demote_strategies(core, &ctx, &mut tl).await;
    finish(state, tl, false)
}

/// Deactivate every failover action and tell every strategy it is demoted,
/// each a step of `tl`.
pub(crate) async fn undo_actions_and_demote_strategies(
    core: &Core,
    ctx: &crate::plugin::NodeContext,
    tl: &mut TimelineBuilder,
) {
    for a in &core.actions {
        match a.deactivate(ctx).await {
            Ok(r) => tl.step(&format!("deactivate:{}", a.name()), true, r.summary),
            Err(e) => tl.step(&format!("deactivate:{}", a.name()), false, e.to_string()),
        }
    }
    stop_services(core, tl).await;
    for s in &core.strategies {
        match s.on_demote(ctx).await {
            Ok(()) => tl.step(&format!("on-demote:{}", s.name()), true, ""),
            Err(e) => tl.step(&format!("on-demote:{}", s.name()), false, e.to_string()),
        }
    }
}

/// How long a service still running when its node stops being active is
/// given after SIGTERM (its failover action normally stopped it already).
pub(crate) const SERVICE_STOP_GRACE: Duration = Duration::from_secs(2);

/// Stop every service a plugin left running: whatever the plugins did, a
/// node that is no longer active runs none.
async fn stop_services(core: &Core, tl: &mut TimelineBuilder) {
    let stopped = core.services.supervisor.stop_all(SERVICE_STOP_GRACE).await;
    if stopped > 0 {
        tracing::warn!(
            stopped,
            "services were still running after the failover actions were undone; stopped"
        );
        tl.step(
            "stop-services",
            true,
            format!("{stopped} still running, stopped"),
        );
    }
}

/// Stop every strategy's running tick or on-receive.
fn preempt_strategies(core: &Core) {
    for s in &core.strategies {
        s.preempt();
    }
}

/// A candidate gives up its promotion: the gate stays closed and the node
/// goes back to standby (the caller gives the lease back).
fn abandon(core: &Core, state: &mut ControlState, why: &str) {
    core.gate.close();
    let _ = state.change(|m| m.abandon(why));
}

fn finish(state: &mut ControlState, tl: TimelineBuilder, completed: bool) -> Timeline {
    let t = tl.finish(completed);
    state.set_last_failover(t.clone());
    t
}

async fn run_fence(core: &Core, settings: &ClusterSettings, epoch: u64) -> (bool, String) {
    let Some((program, args)) = settings.fence_command.split_first() else {
        return (true, String::new());
    };
    // The peer's id as the profile names it: a peer never heard since start
    // (the very case fencing is for) is fenced all the same.
    let peer = core
        .peer
        .as_ref()
        .map(|p| p.peer_node_id().to_string())
        .unwrap_or_default();
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("STANDBY_EPOCH", epoch.to_string())
        .env("STANDBY_NODE", &core.node_id)
        .env("STANDBY_PEER", peer)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(settings.fence_timeout, child).await {
        Ok(Ok(out)) if out.status.success() => (true, format!("{program}: exit 0")),
        Ok(Ok(out)) => (
            false,
            format!(
                "{program}: {} ({})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
        Ok(Err(e)) => (false, format!("{program}: {e}")),
        Err(_) => (
            false,
            format!("{program}: no answer within {:?}", settings.fence_timeout),
        ),
    }
}

/// Stop acting as active: stop acknowledging, close the gateway, undo the
/// failover actions, tell the strategies.
pub(crate) async fn demote(
    core: &Core,
    state: &mut ControlState,
    reason: &str,
    higher: Option<u64>,
) {
    core.gate.close();
    let mut tl = TimelineBuilder::begin("demotion", reason, state.epoch(), None);
    match higher {
        Some(epoch) => state.saw_epoch(epoch, "the peer"),
        None => {
            let _ = state.change(|m| m.lost_lease(reason));
        }
    }
    tl.epoch(state.epoch());
    tl.step("stop-acknowledging", true, format!("now {}", state.role()));
    if let Some(g) = &core.gateway {
        g.close().await;
        tl.step("close-gateway", true, "");
    }
    let ctx = core.context();
    undo_actions_and_demote_strategies(core, &ctx, &mut tl).await;
    state.take_lease();
    state.set_last_demotion(tl.finish(true));
}

pub(crate) async fn release_lease(core: &Core, state: &mut ControlState) {
    let lease = state.take_lease();
    if let (Some(w), Some(lease)) = (&core.witness, lease) {
        match w.release(&lease).await {
            Ok(()) => tracing::info!(epoch = lease.epoch, "lease given back to the witness"),
            Err(e) => tracing::warn!(error = %e, "could not release the lease"),
        }
    }
}

/// A clean stop: an active node stops acknowledging, closes its gateway and
/// hands its lease back so the standby need not wait for it to expire.
pub(crate) async fn shut_down(core: &Core, state: &mut ControlState) {
    close_gateway(core).await;
    if state.role() == Role::Active {
        // The application stops before the lease is given back: nothing it
        // writes afterwards can be divergent.
        let mut tl =
            TimelineBuilder::begin("shutdown", "the node is stopping", state.epoch(), None);
        let ctx = core.context();
        for a in &core.actions {
            if let Err(e) = a.deactivate(&ctx).await {
                tracing::warn!(action = a.name(), error = %e, "deactivating at shutdown failed");
            }
        }
        stop_services(core, &mut tl).await;
        release_lease(core, state).await;
    } else {
        core.services.supervisor.stop_all(SERVICE_STOP_GRACE).await;
    }
}

/// Stop acknowledging and close the gateway (what a stop does even when the
/// control loop could not finish its own part).
pub(crate) async fn close_gateway(core: &Core) {
    core.gate.close();
    if let Some(g) = &core.gateway {
        g.close().await;
    }
}
