//! A timed record of one promotion or demotion, step by step.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One step of a failover sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What the step was (`lease`, `fence`, `on-promote:file-copy`, ...).
    pub name: String,
    /// When it ended, in ms after the sequence began.
    pub at_ms: u64,
    /// How long it took, ms.
    pub took_ms: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it did or why it failed.
    pub note: String,
}

/// A promotion or demotion, as it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// `promotion` or `demotion`.
    pub kind: String,
    /// Why it began.
    pub reason: String,
    /// Wall-clock time it began, Unix ms.
    pub started_at_ms: u64,
    /// Silence from the active peer before it was suspected, ms (promotions
    /// by the failure detector only).
    pub detect_ms: Option<u64>,
    /// The epoch before.
    pub epoch_before: u64,
    /// The epoch after.
    pub epoch_after: u64,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// From the beginning to the end of the last step, ms.
    pub total_ms: u64,
    /// Whether the sequence completed.
    pub completed: bool,
}

/// Builds a [`Timeline`] as the steps happen.
#[derive(Debug)]
pub(crate) struct TimelineBuilder {
    began: Instant,
    last: Instant,
    timeline: Timeline,
}

impl TimelineBuilder {
    /// Begin a sequence now (or at `began`, when it began earlier).
    pub(crate) fn begin(kind: &str, reason: &str, epoch: u64, began: Option<Instant>) -> Self {
        let now = Instant::now();
        let began = began.unwrap_or(now);
        let wall =
            crate::store::unix_ms().saturating_sub(now.duration_since(began).as_millis() as u64);
        Self {
            began,
            last: began,
            timeline: Timeline {
                kind: kind.into(),
                reason: reason.into(),
                started_at_ms: wall,
                detect_ms: None,
                epoch_before: epoch,
                epoch_after: epoch,
                steps: Vec::new(),
                total_ms: 0,
                completed: false,
            },
        }
    }

    /// Record how long the peer was silent before it was suspected.
    pub(crate) fn detected_after(&mut self, ms: u64) {
        self.timeline.detect_ms = Some(ms);
    }

    /// Record the epoch the sequence ends at.
    pub(crate) fn epoch(&mut self, epoch: u64) {
        self.timeline.epoch_after = epoch;
    }

    /// Record a step that ended now.
    pub(crate) fn step(&mut self, name: &str, ok: bool, note: impl Into<String>) {
        let now = Instant::now();
        let step = Step {
            name: name.into(),
            at_ms: now.duration_since(self.began).as_millis() as u64,
            took_ms: now.duration_since(self.last).as_millis() as u64,
            ok,
            note: note.into(),
        };
        tracing::info!(
            sequence = %self.timeline.kind,
            step = %step.name,
            ok = step.ok,
            took_ms = step.took_ms,
            at_ms = step.at_ms,
            note = %step.note,
            "failover step"
        );
        self.last = now;
        self.timeline.steps.push(step);
    }

    /// Finish the sequence.
    pub(crate) fn finish(mut self, completed: bool) -> Timeline {
        self.timeline.total_ms = self.last.duration_since(self.began).as_millis() as u64;
        self.timeline.completed = completed;
        tracing::info!(
            sequence = %self.timeline.kind,
            completed,
            total_ms = self.timeline.total_ms,
            detect_ms = ?self.timeline.detect_ms,
            epoch_before = self.timeline.epoch_before,
            epoch_after = self.timeline.epoch_after,
            "failover sequence ended"
        );
        self.timeline
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_timed_from_the_beginning() {
        let began = Instant::now() - std::time::Duration::from_millis(50);
        let mut t = TimelineBuilder::begin("promotion", "test", 3, Some(began));
        t.step("lease", true, "epoch 4");
        t.epoch(4);
        t.step("open-gateway", true, "");
        let t = t.finish(true);
        assert_eq!(t.steps.len(), 2);
        assert!(t.steps[0].at_ms >= 50 && t.steps[0].took_ms >= 50);
        assert!(t.total_ms >= t.steps[1].at_ms);
        assert_eq!((t.epoch_before, t.epoch_after, t.completed), (3, 4, true));
    }
}
