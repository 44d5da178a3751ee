//! The node's control loop: the failure detector over peer heartbeats and the
//! witness's view, the promotion sequence (lease, fencing, strategies'
//! on-promote, failover actions, gateway), the demotion sequence, the fenced
//! node's rejoin, and the delivery of what the peer sends to the strategies.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::timeline::{Timeline, TimelineBuilder};
use crate::caps::DurableMark;
use crate::cluster::{
    hold, DetectorSettings, Lease, LeaseEnd, LeaseError, PeerWatch, Suspicion, WitnessClient,
};
use crate::node::Core;
use crate::peer::Incoming;
use crate::plugin::{FileRef, Received, ReceivedFile, Role, Strategy};

/// Where a strategy's received files land: its `peer` grant's inbox root.
pub(crate) struct Inbox {
    pub strategy: Arc<dyn Strategy>,
    /// The root's name, as the plugin knows it.
    pub root: String,
    /// The root's directory.
    pub dir: PathBuf,
}

/// What the admin endpoint asks of the control loop.
pub(crate) enum Command {
    /// Become active now (`standby promote`).
    Promote {
        /// Promote without a witness (the operator vouches that the other
        /// node is down).
        force: bool,
        /// The promotion's timeline, or why it did not happen.
        reply: oneshot::Sender<Result<Timeline, String>>,
    },
}

const MANUAL_EPOCH_FILE: &str = "manual-epoch";

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

/// Tick one strategy whenever it asks to be ticked.
pub(crate) async fn tick_loop(core: Arc<Core>, strategy: Arc<dyn Strategy>) {
    loop {
        let wait = match strategy.tick(&core.context()).await {
            Ok(report) => {
                if !report.did.is_empty() {
                    tracing::info!(plugin = strategy.name(), "{}", report.did);
                }
                Duration::from_millis(u64::from(report.next_tick_ms).clamp(10, 60_000))
            }
            Err(e) => {
                tracing::warn!(plugin = strategy.name(), error = %e, "tick failed");
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Hand what the peer sends to the strategy instance it is addressed to.
pub(crate) async fn deliver(core: Arc<Core>, mut incoming: mpsc::Receiver<Incoming>) {
    while let Some(item) = incoming.recv().await {
        match item {
            Incoming::File {
                plugin,
                path,
                name,
                tag,
                size,
                sha256,
                ..
            } => {
                let Some(inbox) = core.inboxes.get(&plugin) else {
                    tracing::warn!(plugin = %plugin, file = %name, "the peer sent a file for a strategy without a `peer` inbox here; dropped");
                    let _ = tokio::fs::remove_file(&path).await;
                    continue;
                };
                let Some(file_name) = Path::new(&name).file_name().map(|n| n.to_owned()) else {
                    tracing::warn!(plugin = %plugin, file = %name, "the peer sent a file without a usable name; dropped");
                    let _ = tokio::fs::remove_file(&path).await;
                    continue;
                };
                let dest = inbox.dir.join(&file_name);
                if let Err(e) = move_file(&path, &dest).await {
                    tracing::warn!(plugin = %plugin, file = %dest.display(), error = %e, "could not move a received file into its inbox");
                    continue;
                }
                let item = Received::File(ReceivedFile {
                    file: FileRef {
                        root: inbox.root.clone(),
                        path: file_name.to_string_lossy().into_owned(),
                    },
                    tag,
                    size,
                    sha256,
                });
                match inbox.strategy.on_receive(&core.context(), item).await {
                    Ok(()) => {
                        tracing::info!(plugin = %plugin, file = %dest.display(), size, "received file handed to the strategy")
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %plugin, file = %dest.display(), error = %e, "the strategy refused a received file")
                    }
                }
            }
            Incoming::Message {
                plugin, kind, body, ..
            } => {
                let Some(strategy) = core.strategies.iter().find(|s| s.name() == plugin) else {
                    tracing::warn!(plugin = %plugin, kind = %kind, "the peer sent a message for an unknown strategy; dropped");
                    continue;
                };
                if let Err(e) = strategy
                    .on_receive(&core.context(), Received::Message(kind.clone(), body))
                    .await
                {
                    tracing::warn!(plugin = %plugin, kind = %kind, error = %e, "the strategy refused a message from the peer");
                }
            }
        }
    }
}

async fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match tokio::fs::rename(from, to).await {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            tokio::fs::copy(from, to).await?;
            tokio::fs::remove_file(from).await
        }
        Err(e) => Err(e),
    }
}

/// Advance the devices' DR-durable watermarks by what the other site has
/// confirmed installed.
fn apply_durable_marks(core: &Core) {
    for mark in core.services.take_durable_marks() {
        let DurableMark::Snapshot(id) = mark else {
            continue;
        };
        let device_marks = core.services.take_snapshot_marks(id);
        if let Some(marks) = &core.marks {
            for m in &device_marks {
                marks.advance(m.device_id, m.incarnation, m.contiguous);
            }
        }
        tracing::debug!(
            snapshot = id,
            devices = device_marks.len(),
            "snapshot installed at the other site"
        );
    }
}

/// The first pause before a promotion abandoned by a failed fencing command
/// is tried again; it doubles with each further failure.
const RETRY_ABANDONED_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between attempts at an abandoned promotion.
const RETRY_ABANDONED_MAX: Duration = Duration::from_secs(30);

/// The held lease: its keeper task and how it ends.
struct Held {
    task: crate::cluster::keeper::Keeper,
    end: oneshot::Receiver<LeaseEnd>,
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
    /// The pause before the next attempt after an abandoned promotion.
    retry_abandoned: Duration,
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
            retry_abandoned: RETRY_ABANDONED_FIRST,
        }
    }

    /// After a role change: what was heard before says nothing now.
    fn reset(&mut self) {
        self.peer.restart(Instant::now().into());
        self.suspected = None;
        self.said.clear();
        self.retry_abandoned = RETRY_ABANDONED_FIRST;
    }

    fn say(&mut self, what: String) {
        if what != self.said {
            tracing::warn!("{what}");
            self.said = what;
        }
    }
}

/// Run the control loop until aborted.
pub(crate) async fn run(core: Arc<Core>, mut commands: mpsc::Receiver<Command>) {
    let tick = core
        .settings
        .as_ref()
        .map(|s| {
            (s.detector.heartbeat / 2).clamp(Duration::from_millis(10), Duration::from_millis(100))
        })
        .unwrap_or(Duration::from_millis(100));
    let mut held: Option<Held> = None;
    let mut watch = Watch::new(&core);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            end = lease_ended(&mut held) => {
                let reason = match end {
                    Some(LeaseEnd::Expired { reason, .. }) => format!("lease expired: {reason}"),
                    Some(LeaseEnd::Refused { witness_epoch, reason, .. }) => {
                        format!("the witness refused the renewal (its epoch {witness_epoch}): {reason}")
                    }
                    None => String::from("the lease keeper stopped"),
                };
                held = None;
                demote(&core, &reason, None).await;
                watch.reset();
                continue;
            }
            cmd = commands.recv() => {
                if let Some(Command::Promote { force, reply }) = cmd {
                    let result = operator_promote(&core, force, &mut held).await;
                    watch.reset();
                    let _ = reply.send(result);
                }
                continue;
            }
        }
        apply_durable_marks(&core);
        adopt_peer_epoch(&core, &mut held, &mut watch).await;
        match core.role() {
            Role::Standby if core.witness.is_some() => {
                if let Some(h) = standby_step(&core, &mut watch).await {
                    held = Some(h);
                    watch.reset();
                }
            }
            Role::Fenced => fenced_step(&core, &mut watch).await,
            _ => {}
        }
    }
}

async fn lease_ended(held: &mut Option<Held>) -> Option<LeaseEnd> {
    match held.as_mut() {
        Some(h) => (&mut h.end).await.ok(),
        None => std::future::pending().await,
    }
}

/// A peer presenting a higher epoch fences an active node and is adopted by
/// any other.
async fn adopt_peer_epoch(core: &Core, held: &mut Option<Held>, watch: &mut Watch) {
    let Some(peer) = &core.peer else { return };
    let theirs = peer.state().epoch;
    if theirs <= core.epoch() {
        return;
    }
    if matches!(core.role(), Role::Active | Role::Candidate) {
        if let Some(mut h) = held.take() {
            h.task.abort();
        }
        demote(
            core,
            &format!("the peer presented epoch {theirs}"),
            Some(theirs),
        )
        .await;
        watch.reset();
    } else {
        core.lock_machine().saw_epoch(theirs, "the peer");
        core.publish();
    }
}

/// The standby's failure detector: suspect an active peer that went silent,
/// check with the witness, and compete for the lease when it is free.
async fn standby_step(core: &Core, watch: &mut Watch) -> Option<Held> {
    let (settings, witness) = (core.settings.as_ref()?, core.witness.clone()?);
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
            if view.epoch > core.epoch() {
                core.lock_machine().saw_epoch(view.epoch, "the witness");
                core.publish();
            }
            let other_holds =
                view.holder.as_deref().is_some_and(|h| h != core.node_id) && view.remaining_ms > 0;
            if other_holds {
                watch.next_try =
                    now + Duration::from_millis(view.remaining_ms).min(settings.detector.heartbeat);
                watch.say(format!(
                    "the witness says {} holds the lease at epoch {}; waiting",
                    view.holder.unwrap_or_default(),
                    view.epoch
                ));
                return None;
            }
        }
        Err(e) => {
            watch.say(format!("cannot promote: {e}"));
            return None;
        }
    }
    let (began, suspicion) = watch.suspected.unwrap_or((now, suspicion));
    let detect_ms = suspicion.silence_ms();
    let reason = match detect_ms {
        Some(ms) => format!("no heartbeat from the active peer for {ms} ms"),
        None => String::from("no active peer heard since start"),
    };
    if let Err(e) = core.lock_machine().suspect_peer(&reason) {
        tracing::warn!(error = %e, "cannot become a candidate");
        return None;
    }
    core.publish();
    let mut tl = TimelineBuilder::begin("promotion", &reason, core.epoch(), Some(began));
    if let Some(ms) = detect_ms {
        tl.detected_after(ms);
    }
    match witness.acquire(settings.lease.ttl).await {
        Ok(lease) => match promote_holding(core, &witness, settings, lease, tl, &reason).await {
            Ok((held, _)) => Some(held),
            Err(_) => {
                // Try again, but not at once: each attempt costs an epoch
                // and runs the fencing command again.
                let pause = watch.retry_abandoned;
                watch.next_try = Instant::now() + pause;
                watch.retry_abandoned = (pause * 2).min(RETRY_ABANDONED_MAX);
                tracing::warn!(
                    retry_in = ?pause,
                    "promotion abandoned and the lease given back; trying again later"
                );
                None
            }
        },
        Err(e) => {
            let why = match &e {
                LeaseError::Denied { .. } => e.to_string(),
                other => format!("{other}"),
            };
            let _ = core.lock_machine().lost_election(&why);
            core.publish();
            watch.say(format!("lease not won: {why}"));
            None
        }
    }
}

/// A fenced node rejoins as standby once it has learnt the current epoch.
async fn fenced_step(core: &Core, watch: &mut Watch) {
    let now = Instant::now();
    if now < watch.next_fenced_query {
        return;
    }
    watch.next_fenced_query = now + Duration::from_millis(500);
    let learnt = match &core.witness {
        Some(w) => match w.query().await {
            Ok(view) => {
                core.lock_machine().saw_epoch(view.epoch, "the witness");
                Some(format!(
                    "the witness is reachable; epoch {} is held by {}",
                    view.epoch,
                    view.holder.as_deref().unwrap_or("nobody")
                ))
            }
            Err(e) => {
                watch.say(format!("fenced; the witness is not reachable: {e}"));
                None
            }
        },
        None => core.peer.as_ref().and_then(|p| {
            let st = p.state();
            (st.connected && st.role == Some(Role::Active) && st.epoch >= core.epoch())
                .then(|| format!("the peer is active at epoch {}", st.epoch))
        }),
    };
    if let Some(reason) = learnt {
        if core.lock_machine().rejoin(&reason).is_ok() {
            core.publish();
            watch.reset();
        }
    }
}

/// `standby promote`: through the witness when there is one; without one
/// only with `force`.
async fn operator_promote(
    core: &Core,
    force: bool,
    held: &mut Option<Held>,
) -> Result<Timeline, String> {
    let role = core.role();
    if role == Role::Active {
        return Err(format!("already active at epoch {}", core.epoch()));
    }
    if role == Role::Fenced {
        let _ = core
            .lock_machine()
            .rejoin("the operator asked for a promotion");
    }
    let reason = String::from("the operator asked for a promotion");
    match (&core.witness, &core.settings) {
        (Some(witness), Some(settings)) => {
            core.lock_machine()
                .suspect_peer(&reason)
                .map_err(|e| e.to_string())?;
            core.publish();
            let tl = TimelineBuilder::begin("promotion", &reason, core.epoch(), None);
            match witness.acquire(settings.lease.ttl).await {
                Ok(lease) => {
                    match promote_holding(core, witness, settings, lease, tl, &reason).await {
                        Ok((h, t)) => {
                            *held = Some(h);
                            Ok(t)
                        }
                        Err(t) => Err(format!("promotion abandoned: {:?}", t.steps.last())),
                    }
                }
                Err(e) => {
                    let _ = core.lock_machine().lost_election(&e.to_string());
                    core.publish();
                    Err(format!("the witness did not grant the lease: {e}"))
                }
            }
        }
        _ if !force => Err(String::from(
            "no witness is configured, so promotion is manual: make sure the other node is down, then run `standby promote --force`",
        )),
        _ => {
            tracing::warn!("forced promotion without a witness: nothing stops the other node if it is still running");
            let peer_epoch = core.peer.as_ref().map(|p| p.state().epoch).unwrap_or(0);
            let epoch = core.epoch().max(peer_epoch) + 1;
            write_manual_epoch(&core.data_dir, epoch)
                .map_err(|e| format!("recording epoch {epoch}: {e}"))?;
            core.lock_machine()
                .suspect_peer(&reason)
                .map_err(|e| e.to_string())?;
            let tl = TimelineBuilder::begin("promotion", &reason, core.epoch(), None);
            complete_promotion(core, tl, epoch, "forced by the operator (no witness)")
                .await
                .map_err(|t| format!("promotion abandoned: {:?}", t.steps.last()))
        }
    }
}

/// Keep `lease` renewed and complete the promotion under it. When the
/// promotion is abandoned, the keeper stops and the lease is given back (the
/// gate is already closed).
async fn promote_holding(
    core: &Core,
    witness: &Arc<WitnessClient>,
    settings: &crate::node::ClusterSettings,
    lease: Lease,
    mut tl: TimelineBuilder,
    reason: &str,
) -> Result<(Held, Timeline), Timeline> {
    tl.step("lease", true, format!("granted at epoch {}", lease.epoch));
    let (mut task, end) = hold(witness.clone(), lease, settings.lease, core.gate.clone());
    *core.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
    match complete_promotion(core, tl, lease.epoch, reason).await {
        Ok(t) => Ok((Held { task, end }, t)),
        Err(t) => {
            task.abort();
            release_lease(core).await;
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
async fn complete_promotion(
    core: &Core,
    mut tl: TimelineBuilder,
    epoch: u64,
    reason: &str,
) -> Result<Timeline, Timeline> {
    tl.epoch(epoch);
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
                abandon(core, "the fencing command failed and fence_required is set");
                return Err(finish(core, tl, false));
            }
        }
    }
    if let Err(e) = core.lock_machine().won_lease(epoch, reason) {
        tl.step("become-active", false, e.to_string());
        // Back to standby rather than left a candidate.
        abandon(core, &format!("cannot become active: {e}"));
        return Err(finish(core, tl, false));
    }
    core.publish();
    let ctx = core.context();
    let mut reports = Vec::new();
    for s in &core.strategies {
        match s.on_promote(&ctx).await {
            Ok(report) => {
                let mut note = report.restored_from.clone();
                if !report.note.is_empty() {
                    note = format!("{note}; {}", report.note);
                }
                tl.step(&format!("on-promote:{}", s.name()), true, note);
                reports.push((s.name().to_string(), report));
            }
            Err(e) => tl.step(&format!("on-promote:{}", s.name()), false, e.to_string()),
        }
    }
    *core.promoted_from.lock().unwrap_or_else(|p| p.into_inner()) = reports;
    for a in &core.actions {
        match a.activate(&ctx).await {
            Ok(report) => tl.step(&format!("activate:{}", a.name()), true, report.summary),
            Err(e) => tl.step(&format!("activate:{}", a.name()), false, e.to_string()),
        }
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
    Ok(finish(core, tl, true))
}

/// A candidate gives up its promotion: the gate stays closed and the node
/// goes back to standby (the caller gives the lease back).
fn abandon(core: &Core, why: &str) {
    core.gate.close();
    let _ = core.lock_machine().abandon(why);
    core.publish();
}

fn finish(core: &Core, tl: TimelineBuilder, completed: bool) -> Timeline {
    let t = tl.finish(completed);
    *core.last_failover.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
    t
}

async fn run_fence(
    core: &Core,
    settings: &crate::node::ClusterSettings,
    epoch: u64,
) -> (bool, String) {
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
async fn demote(core: &Core, reason: &str, higher: Option<u64>) {
    core.gate.close();
    let mut tl = TimelineBuilder::begin("demotion", reason, core.epoch(), None);
    {
        let mut m = core.lock_machine();
        match higher {
            Some(epoch) => m.saw_epoch(epoch, "the peer"),
            None => {
                let _ = m.lost_lease(reason);
            }
        }
    }
    core.publish();
    tl.epoch(core.epoch());
    tl.step("stop-acknowledging", true, format!("now {}", core.role()));
    if let Some(g) = &core.gateway {
        g.close().await;
        tl.step("close-gateway", true, "");
    }
    let ctx = core.context();
    for a in &core.actions {
        match a.deactivate(&ctx).await {
            Ok(r) => tl.step(&format!("deactivate:{}", a.name()), true, r.summary),
            Err(e) => tl.step(&format!("deactivate:{}", a.name()), false, e.to_string()),
        }
    }
    for s in &core.strategies {
        match s.on_demote(&ctx).await {
            Ok(()) => tl.step(&format!("on-demote:{}", s.name()), true, ""),
            Err(e) => tl.step(&format!("on-demote:{}", s.name()), false, e.to_string()),
        }
    }
    core.lease.lock().unwrap_or_else(|p| p.into_inner()).take();
    let t = tl.finish(true);
    *core.last_demotion.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
}

async fn release_lease(core: &Core) {
    let lease = core.lease.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let (Some(w), Some(lease)) = (&core.witness, lease) {
        if let Err(e) = w.release(&lease).await {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }
}

/// A clean stop: an active node stops acknowledging, closes its gateway and
/// hands its lease back so the standby need not wait for it to expire.
pub(crate) async fn shut_down(core: &Core) {
    core.gate.close();
    if let Some(g) = &core.gateway {
        g.close().await;
    }
    if core.role() == Role::Active {
        release_lease(core).await;
    }
}
