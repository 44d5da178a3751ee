//! `cdc`: change data capture. SQLite triggers (the host's) capture every
//! committed change of the replicated tables into a change log; on the active
//! node this plugin ships the log in batches over the peer link, in commit
//! order; the standby applies each batch in one transaction and says how far
//! it got, and the active node then confirms those changes durable (devices
//! may forget the events in them) and prunes them from its log.
//!
//! Settings (all optional):
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `batch` | 2000 | most changes in one batch |
//! | `interval_ms` | 20 | pause between looks at the change log |
//! | `resend_after_ms` | 2000 | shipped changes the standby has not reported applied by then are shipped again |
//! | `max_log_changes` | 1000000 | most changes the log keeps for a standby that is away; past it the standby is reseeded |
//!
//! Messages between the two instances: `applied` (body: the standby's
//! position, `SEQ EPOCH OWN`: the newest change its database holds, the
//! epoch of the node that captured it, and 1 when it was captured there),
//! sent after every batch and every 500 ms; `seeded` (the sequence) once a
//! seed is installed.
//!
//! Both sites number changes in one sequence: a node that becomes active
//! numbers its own changes on from what it had applied (its position then,
//! its `base`). The active node goes on with a standby's stream from the
//! standby's position only when that position is on its own line: the
//! standby applied this node's changes at its current epoch, or the standby
//! stands exactly at `base` (it was the active node before and handed
//! everything over, or lost nothing). Otherwise (a returning old active
//! with changes the new one never had, or a standby too far behind) the
//! standby is reseeded; its host sets its database aside first.
//!
//! When the log cannot serve the standby (it is empty and the active node
//! had rows before capture began, or it was away past `max_log_changes`),
//! the active node sends a snapshot instead ([`seed`]: `peer.send-snapshot`,
//! read straight from the live database); the grant needs `db = { capture =
//! true, install = true }` and a `files` root `inbox`, which is also the
//! peer's inbox (where seeds arrive; installed by moving).
//!
//! A batch the standby cannot apply stops the stream there (the host
//! refuses every later batch, so order is kept) until an operator retries or
//! skips it (`standby replication retry|skip`); the active node ships again
//! from what the standby applied, so the stream goes on by itself after the
//! decision. Status: lag in time and in changes (`lag_changes`).

use std::collections::VecDeque;

pub mod seed;

use standby_plugin_sdk::caps::{clock, db, peer};
use standby_plugin_sdk::{
    describe_error, descriptor, ChangeBatch, Descriptor, Error, HandoverProgress, NodeContext,
    PromoteReport, Received, Result, Role, Settings, Strategy, StrategyStatus, TickReport,
};

/// How often the standby repeats how far it has applied.
const REPORT_EVERY_MS: u64 = 500;
/// Most batches shipped in one tick.
const BATCHES_PER_TICK: usize = 16;
/// How often the active node holds its log to `max_log_changes`.
const BOUND_EVERY_MS: u64 = 5_000;

/// The strategy's state.
#[derive(Debug)]
pub struct Cdc {
    batch: u32,
    interval_ms: u32,
    resend_after_ms: u64,
    max_log_changes: u64,
    capture_on: bool,
    /// Active: the standby has said how far it applied since this node
    /// started or became active (until then nothing is shipped: a node that
    /// restarted would otherwise ship, or seed, from nothing).
    heard: bool,
    /// Active: a seed was sent at this time; waiting for `seeded`.
    seeding: Option<u64>,
    /// Active: when the log was last held to its bound.
    bound_at: u64,
    /// Seeds sent (active) or installed (standby) since start.
    seeds: u64,
    /// Active: the last sequence the peer holds.
    shipped: u64,
    /// Active: the last sequence the peer reported applied.
    applied_remote: u64,
    /// Active: when the peer last reported progress (or when it was all caught up).
    progress_at: u64,
    /// Active: shipped batches not yet reported applied: (last seq, oldest commit).
    in_flight: VecDeque<(u64, u64)>,
    /// Standby: the last sequence applied here.
    applied: u64,
    /// Standby: the last sequence received from the peer.
    received: u64,
    /// Standby: when `applied` was last reported to the peer.
    reported_at: u64,
    /// Standby: the lag of the last batch applied (commit to applied), ms.
    last_lag_ms: Option<u64>,
    /// When a batch was last shipped or applied.
    last_success: Option<u64>,
    /// The batch that could not be applied, and why: the stream stops there.
    stopped: Option<String>,
    /// The last change of the batch the stream stopped at.
    stopped_through: u64,
    /// Active: where the database stood when this node became active.
    base: Option<db::StreamPosition>,
    /// Active: the standby is not on this node's line (why); the next
    /// tick sends it a snapshot.
    reseed: Option<String>,
    /// Active, during a planned switchover: the last change the standby
    /// must confirm.
    handover: Option<u64>,
    last_error: Option<String>,
}

impl Default for Cdc {
    fn default() -> Self {
        Self {
            batch: 2_000,
            interval_ms: 20,
            resend_after_ms: 2_000,
            max_log_changes: 1_000_000,
            capture_on: false,
            heard: false,
            seeding: None,
            bound_at: 0,
            seeds: 0,
            shipped: 0,
            applied_remote: 0,
            progress_at: 0,
            in_flight: VecDeque::new(),
            applied: 0,
            received: 0,
            reported_at: 0,
            last_lag_ms: None,
            last_success: None,
            stopped: None,
            stopped_through: 0,
            base: None,
            reseed: None,
            handover: None,
            last_error: None,
        }
    }
}

impl Cdc {
    fn wait(&self) -> TickReport {
        TickReport {
            next_tick_ms: self.interval_ms,
            did: String::new(),
        }
    }

    /// Turn capture on (once), and learn where this node stands.
    fn capture(&mut self) -> Result<()> {
        if !self.capture_on {
            db::enable_capture()?;
            self.applied = db::position()?.seq;
            self.capture_on = true;
        }
        Ok(())
    }

    /// Active: the log keeps at most `max_log_changes` changes; a standby
    /// further behind is reseeded.
    fn hold_bound(&mut self, now: u64) -> Result<()> {
        if now.saturating_sub(self.bound_at) < BOUND_EVERY_MS {
            return Ok(());
        }
        self.bound_at = now;
        let last = db::info()?.last_change;
        if last > self.max_log_changes {
            db::prune_changes(last - self.max_log_changes)?;
        }
        Ok(())
    }

    /// Active: the log cannot serve the standby; send it a snapshot.
    fn seed(&mut self, now: u64, why: &str) -> Result<String> {
        standby_plugin_sdk::warn(&format!(
            "cdc: the standby applied through change {} and the log cannot serve it ({why}); \
             sending it a snapshot of the database",
            self.applied_remote
        ));
        let size = seed::send(now)?;
        self.seeding = Some(now);
        self.seeds += 1;
        self.in_flight.clear();
        self.last_success = Some(clock::now());
        Ok(format!(
            "sent a snapshot of {size} bytes to seed the standby"
        ))
    }

    /// Active: ship what the log holds past `shipped`.
    fn ship(&mut self) -> Result<String> {
        let now = clock::now();
        if !self.heard {
            return Ok(String::new());
        }
        if let Some(why) = self.reseed.take() {
            return self.seed(now, &why);
        }
        if let Some(since) = self.seeding {
            if now.saturating_sub(since) < seed::WAIT_MS {
                return Ok(String::new());
            }
            standby_plugin_sdk::warn(
                "cdc: the standby never said it installed the seed; seeding again",
            );
            self.seeding = None;
        }
        if self.applied_remote < self.shipped
            && now.saturating_sub(self.progress_at) > self.resend_after_ms
        {
            // The standby holds batches it has not applied (it restarted, or
            // lost them): ship again from what it applied.
            standby_plugin_sdk::warn(&format!(
                "cdc: the standby has not applied changes {}..{} for {} ms; shipping them again",
                self.applied_remote + 1,
                self.shipped,
                now.saturating_sub(self.progress_at)
            ));
            self.shipped = self.applied_remote;
            self.in_flight.clear();
            self.progress_at = now;
        }
        let mut shipped = 0u64;
        for _ in 0..BATCHES_PER_TICK {
            let b = match db::read_changes(self.shipped, self.batch) {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(Error::NotFound(why)) => return self.seed(now, &why),
                Err(e) => return Err(e),
            };
            let sent = peer::send_batch(b.id);
            db::release_batch(b.id);
            sent?;
            if self.in_flight.is_empty() {
                self.progress_at = now;
            }
            self.in_flight.push_back((b.last_seq, b.oldest_commit));
            self.shipped = b.last_seq;
            shipped += u64::from(b.count);
            self.last_success = Some(clock::now());
        }
        Ok(if shipped > 0 {
            format!("shipped {shipped} change(s) through {}", self.shipped)
        } else {
            String::new()
        })
    }

    /// Active: the standby applied everything through `seq`.
    fn peer_applied(&mut self, seq: u64) -> Result<()> {
        if !self.heard {
            self.heard = true;
            self.shipped = seq;
            self.applied_remote = seq;
            self.progress_at = clock::now();
            return Ok(());
        }
        if seq > self.shipped {
            // This node restarted, or was standby until now: the peer is ahead
            // of what it remembers shipping.
            self.shipped = seq;
        }
        if seq <= self.applied_remote {
            return Ok(());
        }
        self.applied_remote = seq;
        self.progress_at = clock::now();
        while self.in_flight.front().is_some_and(|(last, _)| *last <= seq) {
            self.in_flight.pop_front();
        }
        db::confirm_durable(db::DurableMark::Changes(seq))?;
        db::prune_changes(seq)
    }

    /// Standby: apply a batch in order; say how far this node got.
    fn apply(&mut self, b: &ChangeBatch) -> Result<()> {
        self.received = self.received.max(b.last_seq);
        if b.first_seq > self.applied + 1 {
            // An operator's retry or skip moved the database on without this
            // instance: the database says where it stands.
            self.applied = self.applied.max(db::position()?.seq);
        }
        if b.last_seq <= self.applied {
            // Already applied (shipped again after a resend or a restart).
            standby_plugin_sdk::info(&format!(
                "cdc: batch {}..{} is applied already (through change {}); skipped",
                b.first_seq, b.last_seq, self.applied
            ));
            db::release_batch(b.id);
            return self.report();
        }
        if b.first_seq > self.applied + 1 {
            // A gap: the active node ships again from what this node
            // reports. If its log no longer holds those changes, this node
            // needs a fresh copy of the database (said in status).
            db::release_batch(b.id);
            self.last_error = Some(format!(
                "gap: applied through change {}, the next batch starts at {}",
                self.applied, b.first_seq
            ));
            return self.report();
        }
        match db::apply_changes(b.id) {
            Ok(mark) => {
                if self.stopped.take().is_some() {
                    standby_plugin_sdk::warn(&format!(
                        "cdc: the change stream goes on, applied through change {mark}"
                    ));
                }
                self.applied = mark;
                let now = clock::now();
                self.last_lag_ms = Some(now.saturating_sub(b.oldest_commit));
                self.last_success = Some(now);
                self.last_error = None;
                self.report()
            }
            Err(e @ Error::Conflict(_)) => {
                // This database holds changes of its own the batch would
                // overwrite (or the batch is from an older active): say
                // where it stands; the active node reseeds it.
                db::release_batch(b.id);
                self.last_error = Some(describe_error(&e));
                let _ = self.report();
                Err(e)
            }
            Err(e @ Error::Unavailable(_)) => {
                // Busy (the application holds the database): the active
                // node ships it again.
                db::release_batch(b.id);
                self.last_error = Some(describe_error(&e));
                Err(e)
            }
            Err(e) => {
                db::release_batch(b.id);
                // The host keeps the stop (and refuses later batches) until
                // an operator decides; say it once.
                if self.stopped.is_none() {
                    let why = format!(
                        "batch {}..{} ({} changes) cannot be applied: {}",
                        b.first_seq,
                        b.last_seq,
                        b.count,
                        describe_error(&e)
                    );
                    standby_plugin_sdk::error(&format!(
                        "cdc: the change stream stops: {why}; \
                         `standby replication retry` or `skip` on this node"
                    ));
                    self.stopped = Some(why);
                    self.stopped_through = b.last_seq;
                }
                Err(e)
            }
        }
    }

    /// Standby: tell the active node where this node's database stands.
    fn report(&mut self) -> Result<()> {
        // Not connected: nothing is sent, and the next tick tries again (the
        // active node ships nothing until it knows where this node stands, so
        // the first report must go as soon as the link is up).
        if !peer::status().connected {
            return Ok(());
        }
        self.reported_at = clock::now();
        let p = db::position()?;
        if self.stopped.is_some() && p.seq >= self.stopped_through {
            // An operator's retry or skip got the database past the batch.
            self.stopped = None;
            self.last_error = None;
            self.applied = self.applied.max(p.seq);
            standby_plugin_sdk::warn(&format!(
                "cdc: the change stream goes on, applied through change {}",
                p.seq
            ));
        }
        let body = format!("{} {} {}", p.seq, p.epoch, u8::from(p.captured_here));
        peer::send_message("applied", body.as_bytes())
    }

    /// Active: whether the stream can go on from the standby's position `p`
    /// (see the module's doc).
    fn follows(&self, ctx: &NodeContext, p: &db::StreamPosition) -> bool {
        (p.epoch == ctx.epoch && !p.captured_here)
            || self
                .base
                .is_some_and(|b| b.seq == p.seq && b.epoch == p.epoch)
    }
}

impl Strategy for Cdc {
    fn describe(&self) -> Descriptor {
        descriptor(
            "cdc",
            env!("CARGO_PKG_VERSION"),
            "change data capture: every committed change shipped to the other site and applied there in commit order",
        )
    }

    fn configure(&mut self, settings: &Settings) -> Result<()> {
        settings.deny_unknown(&["batch", "interval_ms", "resend_after_ms", "max_log_changes"])?;
        self.batch = settings.integer("batch", 2_000, 1, 100_000)? as u32;
        self.interval_ms = settings.integer("interval_ms", 20, 1, 60_000)? as u32;
        self.resend_after_ms = settings.integer("resend_after_ms", 2_000, 100, 600_000)? as u64;
        self.max_log_changes =
            settings.integer("max_log_changes", 1_000_000, 1_000, 1_000_000_000)? as u64;
        Ok(())
    }

    fn tick(&mut self, ctx: &NodeContext) -> Result<TickReport> {
        self.capture()?;
        if ctx.role != Role::Active {
            if clock::now().saturating_sub(self.reported_at) >= REPORT_EVERY_MS {
                self.report()?;
            }
            return Ok(self.wait());
        }
        self.hold_bound(clock::now())?;
        if !peer::status().connected {
            return Ok(self.wait());
        }
        let did = match self.ship() {
            Ok(did) => {
                self.last_error = None;
                did
            }
            Err(e) => {
                self.last_error = Some(describe_error(&e));
                return Err(e);
            }
        };
        Ok(TickReport {
            next_tick_ms: self.interval_ms,
            did,
        })
    }

    fn on_receive(&mut self, ctx: &NodeContext, item: Received) -> Result<()> {
        match item {
            Received::Batch(b) if ctx.role != Role::Active => self.apply(&b),
            Received::Batch(b) => {
                db::release_batch(b.id);
                Err(Error::Conflict(String::from(
                    "an active node does not apply the other site's changes",
                )))
            }
            Received::Message((kind, body)) if kind == "applied" || kind == "seeded" => {
                let p = parse_position(&body)
                    .ok_or_else(|| Error::InvalidArgument(format!("bad `{kind}` message")))?;
                let seq = p.seq;
                if ctx.role != Role::Active {
                    return Ok(());
                }
                if kind == "seeded" {
                    // The standby holds everything through the seed's
                    // position: the stream goes on from there.
                    self.seeding = None;
                    self.heard = true;
                    self.shipped = seq;
                    self.applied_remote = seq;
                    self.in_flight.clear();
                    standby_plugin_sdk::warn(&format!(
                        "cdc: the standby installed the seed; the stream goes on after change {seq}"
                    ));
                    return Ok(());
                }
                if self.seeding.is_some() {
                    // A report from before the seed was installed.
                    return Ok(());
                }
                if !self.follows(ctx, &p) {
                    let why = format!(
                        "it stands at change {} of epoch {}{}, not on this node's line (this node took over at change {} of epoch {})",
                        p.seq,
                        p.epoch,
                        if p.captured_here { ", captured there" } else { "" },
                        self.base.map_or(0, |b| b.seq),
                        self.base.map_or(0, |b| b.epoch),
                    );
                    self.heard = true;
                    self.applied_remote = seq;
                    self.reseed = Some(why);
                    return Ok(());
                }
                self.peer_applied(seq)
            }
            Received::Message((kind, _)) => {
                Err(Error::InvalidArgument(format!("unknown message `{kind}`")))
            }
            Received::File(f) if f.tag.starts_with(seed::TAG) && ctx.role != Role::Active => {
                self.capture()?;
                let position = seed::install(&f)?;
                self.applied = position;
                self.received = position;
                self.stopped = None;
                self.seeds += 1;
                self.last_success = Some(clock::now());
                standby_plugin_sdk::warn(&format!(
                    "cdc: installed a seed of {} bytes; applied through change {position}",
                    f.size
                ));
                self.reported_at = clock::now();
                peer::send_message("seeded", position.to_string().as_bytes())
            }
            Received::File(f) => {
                let _ = standby_plugin_sdk::caps::files::remove(&f.file);
                Err(Error::InvalidArgument(format!(
                    "cdc takes only seeds on a standby (got {} tagged `{}`)",
                    f.file.path, f.tag
                )))
            }
        }
    }

    fn on_promote(&mut self, _ctx: &NodeContext) -> Result<PromoteReport> {
        // Capture is on before the application starts (the failover
        // actions run after this): none of its writes escapes the log.
        self.capture()?;
        // Every batch is applied as it arrives: the database is as current as
        // the last batch received.
        let applied = db::applied_mark()?;
        self.base = Some(db::position()?);
        self.reseed = None;
        self.handover = None;
        self.seeding = None;
        self.heard = false;
        self.shipped = 0;
        self.applied_remote = 0;
        self.in_flight.clear();
        Ok(PromoteReport {
            restored_from: format!("change stream applied through change {applied}"),
            restored_at: self.last_success,
            note: match &self.stopped {
                Some(why) => format!("the stream had stopped: {why}"),
                None => String::new(),
            },
        })
    }

    fn on_demote(&mut self, _ctx: &NodeContext) -> Result<()> {
        // A standby now: the stream goes on after what this node holds
        // (its own changes included, when it handed over).
        if self.capture_on {
            self.applied = db::position()?.seq;
            self.received = self.applied;
        }
        self.base = None;
        self.reseed = None;
        self.handover = None;
        self.heard = false;
        self.seeding = None;
        self.shipped = 0;
        self.applied_remote = 0;
        self.in_flight.clear();
        Ok(())
    }

    fn handover(&mut self, ctx: &NodeContext, first: bool) -> Result<HandoverProgress> {
        if ctx.role != Role::Active {
            return Err(Error::Conflict(String::from(
                "only the active node hands over",
            )));
        }
        if !self.heard || self.seeding.is_some() || self.reseed.is_some() {
            return Err(Error::Unavailable(String::from(
                "the standby is not following the change stream yet (no report, or a seed under way)",
            )));
        }
        if first || self.handover.is_none() {
            // The database is frozen: its newest change is the last one.
            self.handover = Some(db::info()?.last_change);
        }
        let target = self.handover.unwrap_or(0);
        self.ship()?;
        let done = self.applied_remote >= target;
        Ok(HandoverProgress {
            done,
            note: format!(
                "the standby applied through change {} of {target}",
                self.applied_remote
            ),
        })
    }

    fn status(&self, ctx: &NodeContext) -> StrategyStatus {
        let now = clock::now();
        let (lag_ms, lag_changes) = if ctx.role == Role::Active {
            (
                Some(
                    self.in_flight
                        .front()
                        .map_or(0, |(_, oldest)| now.saturating_sub(*oldest)),
                ),
                self.shipped.saturating_sub(self.applied_remote),
            )
        } else {
            (self.last_lag_ms, self.received.saturating_sub(self.applied))
        };
        let mut details = vec![
            (String::from("applied"), self.applied.to_string()),
            (String::from("shipped"), self.shipped.to_string()),
            (
                String::from("applied_at_peer"),
                self.applied_remote.to_string(),
            ),
            (String::from("lag_changes"), lag_changes.to_string()),
            (String::from("seeds"), self.seeds.to_string()),
        ];
        if self.seeding.is_some() {
            details.push((
                String::from("seeding"),
                String::from("waiting for the standby to install the seed"),
            ));
        }
        if let Some(e) = &self.last_error {
            details.push((String::from("last_error"), e.clone()));
        }
        if let Some(s) = &self.stopped {
            details.push((String::from("stopped_at"), s.clone()));
        }
        StrategyStatus {
            healthy: self.stopped.is_none() && self.last_error.is_none(),
            last_success: self.last_success,
            last_size: None,
            lag_ms,
            summary: match (&self.stopped, &self.last_error, ctx.role) {
                (Some(s), _, _) => format!("stopped: {s}"),
                (None, Some(e), _) => format!("failing: {e}"),
                (None, None, Role::Active) => format!(
                    "shipped through change {}, applied at the peer through {} ({lag_changes} behind)",
                    self.shipped, self.applied_remote
                ),
                (None, None, _) => format!(
                    "applied through change {} ({lag_changes} received, not yet applied)",
                    self.applied
                ),
            },
            details,
        }
    }
}

#[cfg(feature = "export")]
standby_plugin_sdk::export_strategy!(Cdc);

/// An `applied` or `seeded` body: `SEQ EPOCH OWN`, or `SEQ` alone.
fn parse_position(body: &[u8]) -> Option<db::StreamPosition> {
    let text = core::str::from_utf8(body).ok()?;
    let mut words = text.split_whitespace();
    let seq = words.next()?.parse().ok()?;
    let epoch = words.next().map_or(Some(0), |w| w.parse().ok())?;
    let own = words.next().is_some_and(|w| w == "1");
    Some(db::StreamPosition {
        seq,
        epoch,
        captured_here: own,
    })
}
