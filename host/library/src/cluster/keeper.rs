//! The lease keeper of an active node: renews the lease on a fixed cadence
//! and keeps the acknowledgement gate open until the lease's end minus the
//! safety margin. When a renewal is refused, or none succeeds before that
//! point, the gate is already shut (it shuts by itself at its deadline) and
//! the keeper reports how the lease ended.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::gate::AckGate;
use super::lease::{CallError, Lease, LeaseError, RenewalAnswers, RenewalSender, WitnessClient};

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Length of each lease (and renewal).
    pub ttl: Duration,
    /// How often the active node renews.
    pub renew_every: Duration,
    /// The node stops acting this long before its lease ends (clock drift
    /// between node and witness, scheduling delays).
    pub margin: Duration,
}

impl Default for LeaseSettings {
    /// 500 ms leases renewed every 50 ms with a 100 ms margin: a dead or
    /// hung active's lease is free 450-500 ms after the fault (inside the
    /// 600 ms from fault to a new active node), and a live one stops
    /// acknowledging only after 400 ms without an answered renewal (seven
    /// lost in a row), the silence after which its standby suspects it.
    fn default() -> Self {
        Self {
            ttl: Duration::from_millis(500),
            renew_every: Duration::from_millis(50),
            margin: Duration::from_millis(100),
        }
    }
}

/// Lease settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease settings: {0}")]
pub struct LeaseSettingsError(pub String);

impl LeaseSettings {
    /// Check that a renewal fits inside a lease with room to spare.
    pub fn validate(&self) -> Result<(), LeaseSettingsError> {
        if self.margin.is_zero() {
            return Err(LeaseSettingsError("the margin must be above zero".into()));
        }
        if self.margin >= self.ttl {
            return Err(LeaseSettingsError(format!(
                "the margin {:?} must be below the lease length {:?}",
                self.margin, self.ttl
            )));
        }
        if self.renew_every.is_zero() || self.renew_every >= self.ttl - self.margin {
            return Err(LeaseSettingsError(format!(
                "renewing every {:?} must be above zero and below the lease length minus the margin ({:?})",
                self.renew_every,
                self.ttl - self.margin
            )));
        }
        Ok(())
    }
}

/// How a held lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaseEnd {
    /// No renewal succeeded before the margin: the node must stop.
    Expired {
        /// The lease's epoch.
        epoch: u64,
        /// The last renewal error.
        reason: String,
    },
    /// The witness refused the renewal (another node holds a newer epoch,
    /// or the lease ran out on the witness's clock).
    Refused {
        /// The lease's epoch.
        epoch: u64,
        /// The witness's epoch.
        witness_epoch: u64,
        /// Why.
        reason: String,
    },
}

/// A running lease keeper. Dropping it (or [`Keeper::abort`]) stops the
/// renewals; the gate then still shuts at its deadline.
#[derive(Debug)]
pub(crate) struct Keeper {
    stop: Option<oneshot::Sender<()>>,
}

impl Keeper {
    /// Stop renewing.
    pub(crate) fn abort(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Hold `lease`: renew it on `settings`' cadence, keeping `gate` open until
/// its end minus the margin. Returns the keeper and how the lease ended.
///
/// The keeper runs on a thread of its own with its own small runtime, so a
/// node busy with thousands of reconnecting devices cannot delay a renewal
/// past the lease's end.
pub(crate) fn hold(
    client: Arc<WitnessClient>,
    lease: Lease,
    settings: LeaseSettings,
    gate: Arc<AckGate>,
) -> (Keeper, oneshot::Receiver<LeaseEnd>) {
    let (tx, rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("lease-keeper".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    gate.close();
                    let _ = tx.send(LeaseEnd::Expired {
                        epoch: lease.epoch,
                        reason: format!("the lease keeper could not start: {e}"),
                    });
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::select! {
                    end = keep(&client, lease, settings, &gate) => {
                        gate.close();
                        tracing::warn!(?end, "lease ended: acknowledging stopped");
                        let _ = tx.send(end);
                    }
                    _ = stop_rx => {}
                }
            });
        });
    if let Err(e) = spawned {
        // The closure (and with it the sender) is gone: the receiver sees the
        // keeper end at once, and the node steps down.
        tracing::error!(error = %e, "cannot start the lease keeper thread");
    }
    (
        Keeper {
            stop: Some(stop_tx),
        },
        rx,
    )
}

async fn keep(
    client: &WitnessClient,
    mut lease: Lease,
    settings: LeaseSettings,
    gate: &AckGate,
) -> LeaseEnd {
    let mut last_error = String::from("no renewal answered");
    loop {
        open_gate(gate, &lease, settings);
        if !lease.valid(settings.margin) {
            return LeaseEnd::Expired {
                epoch: lease.epoch,
                reason: last_error,
            };
        }
        // One connection for the renewals while it lasts; a new one when it
        // breaks (a dial still going at the margin is no use).
        let dialled = client
            .renewals(&lease, settings.ttl, lease.left(settings.margin))
            .await;
        let stopped = match dialled {
            Ok((sender, answers)) => {
                renew(client, sender, answers, &mut lease, settings, gate).await
            }
            Err(e) => Stopped::Broken(e),
        };
        match stopped {
            Stopped::Ended(end) => return end,
            Stopped::Broken(e) => {
                tracing::warn!(error = %e, left = ?lease.left(settings.margin), "lease renewal failed");
                last_error = e.to_string();
                // Not a busy loop against a witness that refuses connections.
                let pause = settings.renew_every.min(lease.left(settings.margin));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Keep `gate` open until `lease`'s end minus the margin.
fn open_gate(gate: &AckGate, lease: &Lease, settings: LeaseSettings) {
    if let Some(deadline) = lease.expires.checked_sub(settings.margin) {
        gate.open_until(deadline.into_std());
    }
}

/// Why [`renew`] returned.
enum Stopped {
    /// The lease ended.
    Ended(LeaseEnd),
    /// The renewal connection failed, or nothing was answered on it before
    /// the margin.
    Broken(LeaseError),
}

/// Renew `lease` over one connection: a renewal every `renew_every`, each
/// without waiting for the answer to the one before, so answers that are
/// late (a jittery link) delay no renewal; each granted answer extends the
/// lease from when its renewal went out, and the gate with it.
async fn renew(
    client: &WitnessClient,
    mut sender: RenewalSender,
    mut answers: RenewalAnswers,
    lease: &mut Lease,
    settings: LeaseSettings,
    gate: &AckGate,
) -> Stopped {
    // Nothing answered within the window a renewal opens.
    let unanswered = || {
        client.unreachable(CallError::Timeout(
            settings.ttl.saturating_sub(settings.margin),
        ))
    };
    let mut cadence = tokio::time::interval(settings.renew_every);
    cadence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(deadline) = lease.expires.checked_sub(settings.margin) else {
            return Stopped::Broken(unanswered());
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Stopped::Broken(unanswered()),
            _ = cadence.tick() => {
                match tokio::time::timeout_at(deadline, sender.send()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Stopped::Broken(client.unreachable(e)),
                    Err(_) => return Stopped::Broken(unanswered()),
                }
            }
            answer = answers.next() => {
                let reply = match answer {
                    Ok(reply) => reply,
                    Err(e) => return Stopped::Broken(client.unreachable(e)),
                };
                match sender.answered(reply) {
                    Ok(renewed) => {
                        // Answers come in order, each from a later renewal.
                        if renewed.epoch == lease.epoch && renewed.expires > lease.expires {
                            *lease = renewed;
                            open_gate(gate, lease, settings);
                        }
                    }
                    Err(LeaseError::Denied { reason, epoch, .. }) => {
                        return Stopped::Ended(LeaseEnd::Refused {
                            epoch: lease.epoch,
                            witness_epoch: epoch,
                            reason,
                        });
                    }
                    Err(e) => return Stopped::Broken(e),
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated() {
        assert!(LeaseSettings::default().validate().is_ok());
        let bad = |ttl, renew, margin| LeaseSettings {
            ttl: Duration::from_millis(ttl),
            renew_every: Duration::from_millis(renew),
            margin: Duration::from_millis(margin),
        };
        assert!(bad(800, 200, 0).validate().is_err());
        assert!(bad(800, 200, 800).validate().is_err());
        let e = bad(800, 700, 150).validate().unwrap_err();
        assert!(e.to_string().contains("renewing every 700ms"), "{e}");
    }
}
