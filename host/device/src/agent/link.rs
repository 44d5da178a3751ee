//! The agent's link task: dial in priority order, handshake, upload, answer
//! the server, keep the link alive, and start over when it dies.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::dial::{dial, probe, Conn, DialError};
use super::endpoint::Endpoint;
use super::error::LinkError;
use super::reconnect::{LinkState, Reconnect, Step};
use super::{Ask, FailBack, LinkPhase, ServerInfo, Shared};
use crate::codec::Message;
use crate::frame::{command, event_code, status};
use crate::messages::{self as msg, ServerRole};

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The link failed or died.
    Lost(LinkError),
    /// Nothing came from the server within the dead-link timeout.
    Silent(String),
    /// Leave for another endpoint (fail-back, or a new server list).
    Switch(usize),
    /// The agent is stopping.
    Shutdown,
}

/// The agent's main loop.
pub(super) async fn run(shared: Arc<Shared>, mut asks: mpsc::Receiver<Ask>) {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    let mut machine = Reconnect::new(shared.endpoints().len(), shared.config.backoff);
    loop {
        match machine.step(Instant::now()) {
            Step::Stay => {
                // Only reached if a session ended without telling the machine.
                machine.lost(Instant::now(), &mut rng);
            }
            Step::WaitUntil(until) => {
                let endpoint = match machine.state() {
                    LinkState::Backoff { next, .. } => Some(next),
                    _ => None,
                };
                shared.set_view(LinkPhase::Disconnected, endpoint, None);
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = shared.shutdown.notified() => return,
                    Some(a) = asks.recv() => { let _ = a.reply.send(Err(LinkError::NotConnected)); }
                }
            }
            Step::Connect(index) => {
                let endpoints = shared.endpoints();
                let Some(endpoint) = endpoints.get(index).cloned() else {
                    machine.set_endpoints(endpoints.len());
                    continue;
                };
                shared.set_view(LinkPhase::Connecting, Some(index), None);
                let dialled = tokio::select! {
                    r = dial(&shared, &endpoint, index) => r,
                    _ = shared.shutdown.notified() => return,
                };
                match dialled {
                    Err(e) => {
                        match &e {
                            DialError::LowerEpoch { .. } => {
                                shared
                                    .counters
                                    .refused_lower_epoch
                                    .fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(device = shared.config.device_id, %endpoint, "{e}");
                            }
                            DialError::Inactive(_) => {
                                shared
                                    .counters
                                    .refused_inactive
                                    .fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(device = shared.config.device_id, %endpoint, "{e}");
                            }
                            _ => {
                                tracing::debug!(device = shared.config.device_id, %endpoint, "{e}")
                            }
                        }
                        machine.failed(Instant::now(), &mut rng);
                    }
                    Ok((conn, welcome)) => {
                        machine.connected(Instant::now());
                        shared.counters.connects.fetch_add(1, Ordering::Relaxed);
                        let server = ServerInfo {
                            node_id: welcome.node_id.clone(),
                            role: welcome.role,
                            epoch: welcome.epoch,
                        };
                        shared.set_view(LinkPhase::Connected, Some(index), Some(server));
                        if welcome.role == msg::ServerRole::Active {
                            shared.served_again();
                        }
                        log_link_event(
                            &shared,
                            event_code::TCP_CONNECTED,
                            &endpoint,
                            &welcome.node_id,
                            welcome.epoch,
                            "",
                        );
                        let end = session(&shared, conn, &welcome, index, &mut asks).await;
                        shared.set_view(LinkPhase::Disconnected, Some(index), None);
                        shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                        let reason = match &end {
                            End::Lost(e) => e.to_string(),
                            End::Silent(r) => r.clone(),
                            End::Switch(i) => format!("switching to endpoint {i}"),
                            End::Shutdown => "shutting down".into(),
                        };
                        // A device shutting down logs no disconnect: it has no
                        // link left to upload it on.
                        if !matches!(end, End::Shutdown) {
                            log_link_event(
                                &shared,
                                event_code::TCP_DISCONNECTED,
                                &endpoint,
                                &welcome.node_id,
                                welcome.epoch,
                                &reason,
                            );
                        }
                        tracing::debug!(device = shared.config.device_id, %endpoint, %reason, "link down");
                        // The server may have replaced the list during the
                        // session: walk the list as it is now.
                        machine.set_endpoints(shared.endpoints().len());
                        match end {
                            End::Shutdown => return,
                            End::Switch(i) => machine.switch_to(i),
                            End::Lost(_) => machine.lost(Instant::now(), &mut rng),
                            End::Silent(_) => machine.went_silent(Instant::now(), &mut rng),
                        }
                    }
                }
            }
        }
    }
}

fn log_link_event(
    shared: &Shared,
    code: u16,
    endpoint: &Endpoint,
    node: &str,
    epoch: u64,
    reason: &str,
) {
    #[derive(serde::Serialize)]
    struct LinkEvent<'a> {
        endpoint: String,
        node: &'a str,
        epoch: u64,
        reason: &'a str,
    }
    let payload = msg::encode(&LinkEvent {
        endpoint: endpoint.to_string(),
        node,
        epoch,
        reason,
    });
    let mut log = shared.lock_log();
    if let Err(e) = log.append(code, None, super::unix_ms(), payload) {
        tracing::error!(device = shared.config.device_id, error = %e, "cannot log a link event");
    }
    drop(log);
    shared.wake.notify_one();
}

/// A probe result for fail-back: endpoint index and whether it answered.
type Probe = (usize, bool);

/// The link is up: upload, answer, keep alive.
async fn session(
    shared: &Arc<Shared>,
    mut conn: Conn,
    welcome: &msg::Welcome,
    index: usize,
    asks: &mut mpsc::Receiver<Ask>,
) -> End {
    let cfg = &shared.config;
    let dead_link = cfg.dead_link;
    let mut last_rx = Instant::now();
    let mut keepalive = tokio::time::interval_at(Instant::now() + cfg.keepalive, cfg.keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursor = welcome.watermark;
    let mut in_flight: Option<(u32, u64)> = None;
    let mut waiting: HashMap<u32, oneshot::Sender<Result<Vec<u8>, LinkError>>> = HashMap::new();
    if let Err(e) = shared.lock_log().mark_durable(welcome.durable) {
        tracing::warn!(device = cfg.device_id, error = %e, "cannot record the durable watermark");
    }
    shared
        .counters
        .acked
        .store(welcome.watermark, Ordering::Relaxed);

    // Fail-back probes of higher-priority endpoints.
    let (probe_tx, mut probe_rx) = mpsc::channel::<Probe>(8);
    let mut up_since: HashMap<usize, Instant> = HashMap::new();
    let (hold_down, probe_every) = match cfg.fail_back {
        FailBack::Return {
            hold_down,
            probe_every,
        } if index > 0 => (Some(hold_down), probe_every),
        _ => (None, Duration::from_secs(3600)),
    };
    let mut probe_timer = tokio::time::interval(probe_every);

    let mut upload_ready = true;
    // Set when the server said the device is over its event rate: the
    // batch goes again at that time.
    let mut retry_at: Option<Instant> = None;
    loop {
        if upload_ready && in_flight.is_none() && retry_at.is_none() {
            upload_ready = false;
            let batch = shared.lock_log().after(cursor, cfg.batch);
            if let Some(last) = batch.last().map(|e| e.seq) {
                let events = msg::Events {
                    incarnation: shared.lock_log().incarnation(),
                    events: batch,
                };
                match conn
                    .request(command::NOTIFY_EVENT, msg::encode(&events))
                    .await
                {
                    Ok(seq) => in_flight = Some((seq, last)),
                    Err(e) => return End::Lost(e),
                }
            }
        }
        tokio::select! {
            m = conn.next() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => return End::Lost(e),
                };
                last_rx = Instant::now();
                if m.response {
                    if m.command == command::NOTIFY_EVENT && in_flight.is_some_and(|(s, _)| s == m.sequence) {
                        let (_, last) = in_flight.take().unwrap_or_default();
                        if m.code == status::RATE_LIMITED {
                            shared.counters.throttled.fetch_add(1, Ordering::Relaxed);
                            let wait = Duration::from_millis(u64::from(m.param1).clamp(10, 60_000));
                            retry_at = Some(Instant::now() + wait);
                            continue;
                        }
                        if m.code != status::OK {
                            return End::Lost(LinkError::EventsRefused(m.code));
                        }
                        let ack: msg::EventAck = match msg::decode("event ack", &m.payload) {
                            Ok(a) => a,
                            Err(e) => return End::Lost(e.into()),
                        };
                        shared.counters.acked.store(ack.watermark, Ordering::Relaxed);
                        let mut log = shared.lock_log();
                        // Resume after the server's contiguous watermark; if the
                        // event right after it is gone from our log (dropped when
                        // full), move past the batch instead of looping.
                        let gap_here = log.after(ack.watermark, 1).first().is_none_or(|e| e.seq != ack.watermark + 1);
                        cursor = if gap_here { ack.watermark.max(last) } else { ack.watermark };
                        if let Err(e) = log.mark_durable(ack.durable) {
                            tracing::warn!(device = cfg.device_id, error = %e, "cannot record the durable watermark");
                        }
                        upload_ready = true;
                    } else if let Some(w) = waiting.remove(&m.sequence) {
                        let r = if m.code == status::OK { Ok(m.payload) } else { Err(LinkError::Status(m.code)) };
                        let _ = w.send(r);
                    }
                    continue;
                }
                match answer(shared, &mut conn, &m, welcome, index, &mut cursor).await {
                    Ok(None) => {}
                    Ok(Some(end)) => return end,
                    Err(e) => return End::Lost(e),
                }
                upload_ready = true;
            }
            _ = shared.wake.notified() => upload_ready = true,
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                retry_at = None;
                upload_ready = true;
            }
            _ = keepalive.tick() => {
                if last_rx.elapsed() >= dead_link {
                    return End::Silent(format!("dead link: nothing from the server for {:?}", last_rx.elapsed()));
                }
                if let Err(e) = conn.request(command::KEEP_ALIVE, Vec::new()).await {
                    return End::Lost(e);
                }
            }
            _ = tokio::time::sleep_until(last_rx + dead_link) => {
                return End::Silent(format!("dead link: nothing from the server for {dead_link:?}"));
            }
            Some(ask) = asks.recv() => {
                match conn.request(ask.command, ask.payload).await {
                    Ok(seq) => { waiting.retain(|_, w| !w.is_closed()); waiting.insert(seq, ask.reply); }
                    Err(e) => { let _ = ask.reply.send(Err(e.clone())); return End::Lost(e); }
                }
            }
            _ = probe_timer.tick(), if hold_down.is_some() => {
                let endpoints = shared.endpoints();
                for (i, e) in endpoints.into_iter().enumerate().take(index) {
                    let tx = probe_tx.clone();
                    let tls = shared.config.tls.clone();
                    let resolver = shared.config.resolver.clone();
                    let timeout = shared.config.connect_timeout;
                    tokio::spawn(async move {
                        let ok = probe(&e, tls, resolver, timeout).await;
                        let _ = tx.send((i, ok)).await;
                    });
                }
            }
            Some((i, ok)) = probe_rx.recv() => {
                if ok {
                    let since = *up_since.entry(i).or_insert_with(Instant::now);
                    if hold_down.is_some_and(|h| since.elapsed() >= h) {
                        let best = up_since.iter().filter(|(_, s)| hold_down.is_some_and(|h| s.elapsed() >= h)).map(|(i, _)| *i).min().unwrap_or(i);
                        return End::Switch(best);
                    }
                } else {
                    up_since.remove(&i);
                }
            }
            _ = shared.shutdown.notified() => return End::Shutdown,
        }
    }
}

/// Answer a request from the server. `Some(end)` ends the session.
async fn answer(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    m: &Message,
    welcome: &msg::Welcome,
    index: usize,
    cursor: &mut u64,
) -> Result<Option<End>, LinkError> {
    let refuse = |reason: String| m.reply(status::REFUSED, msg::encode(&msg::Refusal { reason }));
    match m.command {
        command::KEEP_ALIVE => conn
            .send(m.reply(status::OK, Vec::new()))
            .await
            .map(|_| None),
        command::GET_LOG => {
            // Re-upload everything after param1 (param2 = count, 0 = all).
            *cursor = (*cursor).min(u64::from(m.param1));
            conn.send(m.reply(status::OK, Vec::new()))
                .await
                .map(|_| None)
        }
        command::GET_SERVER_LIST => {
            let list = msg::ServerList {
                endpoints: shared.endpoints().iter().map(Endpoint::to_wire).collect(),
                current: Some(index.min(255) as u8),
            };
            conn.send(m.reply(status::OK, msg::encode(&list)))
                .await
                .map(|_| None)
        }
        command::SET_SERVER_LIST => {
            if welcome.role != ServerRole::Active || welcome.epoch != shared.max_epoch() {
                let r = refuse(format!(
                    "server lists are accepted only from an active server at epoch {}",
                    shared.max_epoch()
                ));
                return conn.send(r).await.map(|_| None);
            }
            let list: msg::ServerList = match msg::decode("server list", &m.payload) {
                Ok(l) => l,
                Err(e) => return conn.send(refuse(e.to_string())).await.map(|_| None),
            };
            let parsed: Result<Vec<Endpoint>, _> =
                list.endpoints.iter().map(Endpoint::from_wire).collect();
            let endpoints = match parsed {
                Ok(e) if !e.is_empty() && e.len() <= 255 => e,
                Ok(_) => {
                    return conn
                        .send(refuse("a server list needs 1 to 255 endpoints".into()))
                        .await
                        .map(|_| None)
                }
                Err(e) => return conn.send(refuse(e.to_string())).await.map(|_| None),
            };
            if endpoints.iter().any(|e| e.tls) && shared.config.tls.is_none() {
                return conn
                    .send(refuse(
                        "this device has no TLS trust for /tls endpoints".into(),
                    ))
                    .await
                    .map(|_| None);
            }
            let current = shared.endpoints().get(index).cloned();
            shared.replace_endpoints(endpoints);
            // Answer with what was stored, as GET_SERVER_LIST would.
            let stored = msg::ServerList {
                endpoints: shared.endpoints().iter().map(Endpoint::to_wire).collect(),
                current: None,
            };
            conn.send(m.reply(status::OK, msg::encode(&stored))).await?;
            tracing::info!(
                device = shared.config.device_id,
                "server list replaced by the server"
            );
            let still_there = current.is_some_and(|c| shared.endpoints().contains(&c));
            Ok(if still_there {
                None
            } else {
                Some(End::Switch(0))
            })
        }
        other => Err(LinkError::UnknownRequest(other)),
    }
}
