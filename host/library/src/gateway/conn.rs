//! One device connection: handshake, then requests both ways until the link
//! dies, the device leaves, or the gateway closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::link::{refusal, End, Link, Violation};
use super::registry::{DeviceInfo, Live, ToConn};
use super::Shared;
use crate::role::Role;
use crate::store::{unix_ms, AccessEvent, Write, Written};
use standby_device::codec::{CodecError, CodecLimits, DeviceCodec, Message};
use standby_device::frame::{command, status};
use standby_device::messages::{self as msg, Direction};

/// Serve one accepted connection.
pub(crate) async fn serve<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr, tls: bool)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut link = Link {
        rd,
        wr,
        codec: DeviceCodec::with_budget(CodecLimits::HANDSHAKE, shared.budget.clone()),
        inbuf: BytesMut::with_capacity(256),
        outbuf: BytesMut::new(),
    };
    let hello = match tokio::time::timeout(shared.config.handshake_timeout, link.next()).await {
        Ok(Ok(m)) => m,
        Ok(Err(end)) => return log_end(&shared, peer, None, end),
        Err(_) => return tracing::debug!(%peer, "no handshake in time; closing"),
    };
    if hello.command != command::HANDSHAKE || hello.response {
        let _ = link
            .send(hello.reply(
                status::BAD_REQUEST,
                refusal("the first message must be HANDSHAKE"),
            ))
            .await;
        return log_end(
            &shared,
            peer,
            None,
            End::Protocol(Violation::NotHandshake(hello.command)),
        );
    }
    let device_id = hello.device_id;
    let h: msg::Hello = match msg::decode("handshake", &hello.payload) {
        Ok(h) => h,
        Err(e) => {
            let _ = link
                .send(hello.reply(status::BAD_REQUEST, refusal(e.to_string())))
                .await;
            return log_end(&shared, peer, Some(device_id), End::Protocol(e.into()));
        }
    };
    if !shared.config.accept.accepts(device_id) {
        let _ = link
            .send(hello.reply(
                status::NOT_ACCEPTED,
                refusal(format!("device {device_id} is not accepted by this server")),
            ))
            .await;
        return tracing::info!(%peer, device_id, "device refused by the accept filter");
    }
    let Some(admitted) = super::auth::admit(&shared, &mut link, &hello, &h, peer).await else {
        return;
    };
    let hello = admitted.reply_to;
    if !shared.gate.is_open() {
        let _ = link
            .send(hello.reply(
                status::NOT_ACTIVE,
                refusal("this server's lease has run out"),
            ))
            .await;
        return tracing::info!(%peer, device_id, "handshake refused: the lease has run out");
    }
    let incarnation = h.incarnation;
    // Events the device no longer keeps were confirmed durable by an earlier
    // server: the watermark counts them, or it would wait for them forever.
    let written = shared
        .writer
        .write(Write::Handshake {
            device_id,
            model: h.model.clone(),
            firmware: h.firmware.clone(),
            incarnation,
            floor: h.durable,
        })
        .await;
    let watermark = match written {
        Ok(Written::Handshake(w)) => w,
        other => {
            let _ = link
                .send(hello.reply(status::SERVER_ERROR, refusal("database unavailable")))
                .await;
            return tracing::error!(%peer, device_id, "handshake: database error: {other:?}");
        }
    };
    let identity = shared.identity.borrow().clone();
    let welcome = msg::Welcome {
        node_id: identity.node_id.clone(),
        role: match identity.role {
            Role::Standby => msg::ServerRole::Standby,
            Role::Candidate => msg::ServerRole::Candidate,
            Role::Active => msg::ServerRole::Active,
            Role::Fenced => msg::ServerRole::Fenced,
        },
        epoch: identity.epoch,
        watermark,
        durable: shared.durability.durable(device_id, incarnation, watermark),
        keepalive_ms: shared.config.keepalive.as_millis() as u32,
        dead_link_ms: shared.config.dead_link.as_millis() as u32,
    };
    if let Err(end) = link
        .send(hello.reply(status::OK, msg::encode(&welcome)))
        .await
    {
        return log_end(&shared, peer, Some(device_id), end);
    }
    shared.stats.handshakes.fetch_add(1, Ordering::Relaxed);
    link.codec.set_limits(shared.config.limits);

    let now = unix_ms();
    let live = Arc::new(Live {
        last_seen_ms: AtomicU64::new(now),
        last_seq: AtomicU64::new(h.last_seq),
        watermark: AtomicU64::new(watermark),
    });
    let (tx, rx) = mpsc::channel(8);
    let registered = shared.registry.register(
        DeviceInfo {
            device_id,
            peer,
            tls,
            credential_generation: admitted.generation,
            connected_since_ms: now,
            last_seen_ms: now,
            endpoint: h.endpoint,
            model: h.model.clone(),
            firmware: h.firmware.clone(),
            incarnation,
            last_seq: h.last_seq,
            watermark,
        },
        live.clone(),
        tx,
    );
    let conn = match registered {
        Ok(conn) => conn,
        Err(authenticated) => {
            shared.stats.auth_refused.fetch_add(1, Ordering::Relaxed);
            return tracing::warn!(%peer, device_id, %authenticated, "closing an unauthenticated link: the device is connected and authenticated elsewhere");
        }
    };
    tracing::debug!(%peer, device_id, incarnation, watermark, "device connected");
    let end = session(&shared, &mut link, device_id, incarnation, &live, rx).await;
    shared.registry.unregister(device_id, conn);
    log_end(&shared, peer, Some(device_id), end);
}

fn log_end(shared: &Shared, peer: SocketAddr, device: Option<u32>, end: End) {
    match end {
        End::Frame(e @ CodecError::OverBudget { .. }) => {
            shared.stats.over_budget.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, ?device, error = %e, "closing this connection");
        }
        End::Frame(CodecError::Frame(e)) => {
            shared.stats.frame_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, ?device, error = %e, "malformed frame; closing this connection");
        }
        End::Protocol(e) => {
            shared.stats.frame_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, ?device, error = %e, "protocol error; closing this connection");
        }
        End::DeadLink => tracing::info!(%peer, ?device, "dead link (no keep-alive); closing"),
        End::Invalid(why) => {
            tracing::warn!(%peer, ?device, reason = %why, "credential no longer valid; link closed")
        }
        End::Frame(e @ CodecError::BadTag(_)) => {
            shared.stats.frame_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, ?device, error = %e, "a message failed authentication; closing this connection");
        }
        End::Write(e) => tracing::debug!(%peer, ?device, error = %e, "write failed; closing"),
        other => tracing::debug!(%peer, ?device, end = ?other, "connection closed"),
    }
}

async fn session<R, W>(
    shared: &Arc<Shared>,
    link: &mut Link<R, W>,
    device_id: u32,
    incarnation: u64,
    live: &Live,
    mut rx: mpsc::Receiver<ToConn>,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut closing = shared.closing.subscribe();
    if *closing.borrow() {
        return End::Closing;
    }
    let dead_link = shared.config.dead_link;
    let mut deadline = Instant::now() + dead_link;
    let mut pending: HashMap<u32, oneshot::Sender<Message>> = HashMap::new();
    let mut next_seq: u32 = 1;
    loop {
        tokio::select! {
            m = link.next() => {
                let m = match m {
                    Ok(m) => m,
                    Err(end) => return end,
                };
                deadline = Instant::now() + dead_link;
                live.last_seen_ms.store(unix_ms(), Ordering::Relaxed);
                if m.device_id != device_id {
                    return End::Protocol(Violation::WrongDevice { frame: m.device_id, link: device_id });
                }
                if m.response {
                    if let Some(waiter) = pending.remove(&m.sequence) {
                        let _ = waiter.send(m);
                    }
                    continue;
                }
                let reply = handle(shared, &m, incarnation, live).await;
                match reply {
                    Ok(r) => {
                        if let Err(end) = link.send(r).await {
                            return end;
                        }
                    }
                    Err(end) => return end,
                }
            }
            req = rx.recv() => match req {
                Some(ToConn::Ask(mut m, waiter)) => {
                    m.sequence = next_seq;
                    next_seq = next_seq.wrapping_add(1).max(1);
                    pending.retain(|_, w| !w.is_closed());
                    pending.insert(m.sequence, waiter);
                    if let Err(end) = link.send(m).await {
                        return end;
                    }
                }
                Some(ToConn::Replaced) => return End::Replaced,
                Some(ToConn::Invalid(why)) => return End::Invalid(why),
                None => return End::Closing,
            },
            _ = tokio::time::sleep_until(deadline) => return End::DeadLink,
            _ = closing.changed() => return End::Closing,
        }
    }
}

/// Answer one request from the device.
async fn handle(
    shared: &Arc<Shared>,
    m: &Message,
    incarnation: u64,
    live: &Live,
) -> Result<Message, End> {
    let active = shared.identity.borrow().role == Role::Active;
    let bad = |e: msg::PayloadError| Ok(m.reply(status::BAD_REQUEST, refusal(e.to_string())));
    match m.command {
        command::KEEP_ALIVE => Ok(m.reply(status::OK, Vec::new())),
        command::NOTIFY_EVENT
        | command::SERVER_VERIFY
        | command::SERVER_IDENTIFY
        | command::CHECK_APB_VIOLATION
            if !active =>
        {
            Ok(m.reply(status::NOT_ACTIVE, refusal("this server is not active")))
        }
        command::NOTIFY_EVENT => {
            let batch: msg::Events = match msg::decode("events", &m.payload) {
                Ok(b) => b,
                Err(e) => return bad(e),
            };
            if batch.incarnation != incarnation {
                return Ok(m.reply(
                    status::BAD_REQUEST,
                    refusal(format!(
                        "incarnation {} differs from the handshake's {incarnation}",
                        batch.incarnation
                    )),
                ));
            }
            let max = shared.config.max_event_payload;
            if let Some(e) = batch.events.iter().find(|e| e.payload.len() > max) {
                tracing::warn!(
                    device_id = m.device_id,
                    seq = e.seq,
                    bytes = e.payload.len(),
                    "event batch refused: an event's payload is over devices.max_event_payload"
                );
                return Ok(m.reply(
                    status::BAD_REQUEST,
                    refusal(format!(
                        "event {} has a payload of {} bytes; at most {max} are accepted (devices.max_event_payload)",
                        e.seq,
                        e.payload.len()
                    )),
                ));
            }
            if let Err(t) =
                shared
                    .rates
                    .take(m.device_id, batch.events.len(), std::time::Instant::now())
            {
                shared.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    device_id = m.device_id,
                    events = batch.events.len(),
                    retry_after_ms = t.retry_after.as_millis() as u64,
                    "event batch refused: the device is over its event rate"
                );
                let wait_ms = t.retry_after.as_millis().min(u128::from(u32::MAX)) as u32;
                return Ok(m
                    .reply(
                        status::RATE_LIMITED,
                        refusal(format!(
                            "device {} sends events faster than {} a second (devices.max_event_rate); try again in {wait_ms} ms",
                            m.device_id, shared.config.event_rate
                        )),
                    )
                    .with_params(wait_ms, 0));
            }
            if let Some(last) = batch.events.iter().map(|e| e.seq).max() {
                live.last_seq.fetch_max(last, Ordering::Relaxed);
            }
            ingest(shared, m, batch, live).await
        }
        command::SERVER_VERIFY => {
            let req: msg::Verify = match msg::decode("verify", &m.payload) {
                Ok(r) => r,
                Err(e) => return bad(e),
            };
            let store = shared.store.clone();
            let user =
                tokio::task::spawn_blocking(move || store.user(&req.user_id).map(|u| (u, req)))
                    .await;
            let result = match user {
                Ok(Ok((u, req))) => {
                    match_result(u.filter(|u| u.card.as_deref() == Some(req.credential.as_str())))
                }
                _ => return Ok(m.reply(status::SERVER_ERROR, refusal("database unavailable"))),
            };
            shared.stats.requests.fetch_add(1, Ordering::Relaxed);
            Ok(m.reply(status::OK, msg::encode(&result)))
        }
        command::SERVER_IDENTIFY => {
            let req: msg::Identify = match msg::decode("identify", &m.payload) {
                Ok(r) => r,
                Err(e) => return bad(e),
            };
            let store = shared.store.clone();
            let user =
                tokio::task::spawn_blocking(move || store.user_by_card(&req.credential)).await;
            let result = match user {
                Ok(Ok(u)) => match_result(u),
                _ => return Ok(m.reply(status::SERVER_ERROR, refusal("database unavailable"))),
            };
            shared.stats.requests.fetch_add(1, Ordering::Relaxed);
            Ok(m.reply(status::OK, msg::encode(&result)))
        }
        command::CHECK_APB_VIOLATION => {
            let req: msg::ApbCheck = match msg::decode("anti-passback", &m.payload) {
                Ok(r) => r,
                Err(e) => return bad(e),
            };
            let store = shared.store.clone();
            let device = m.device_id;
            let r = tokio::task::spawn_blocking(move || {
                store.apb_pass(
                    &req.user_id,
                    &req.zone,
                    req.direction == Direction::In,
                    device,
                )
            })
            .await;
            match r {
                Ok(Ok(violation)) => {
                    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                    Ok(m.reply(status::OK, msg::encode(&msg::ApbResult { violation })))
                }
                _ => Ok(m.reply(status::SERVER_ERROR, refusal("database unavailable"))),
            }
        }
        other => Err(End::Protocol(Violation::NotARequest(other))),
    }
}

/// The answer to a server-matching request: the matching user, or none.
fn match_result(user: Option<crate::store::User>) -> msg::MatchResult {
    match user {
        Some(u) => msg::MatchResult {
            matched: true,
            user_id: Some(u.user_id),
            name: Some(u.name),
        },
        None => msg::MatchResult {
            matched: false,
            user_id: None,
            name: None,
        },
    }
}

async fn ingest(
    shared: &Arc<Shared>,
    m: &Message,
    batch: msg::Events,
    live: &Live,
) -> Result<Message, End> {
    // A node whose lease ran out writes nothing and acknowledges nothing.
    if shared.identity.borrow().role != Role::Active || !shared.gate.is_open() {
        return Ok(m.reply(status::NOT_ACTIVE, refusal("this server is not active")));
    }
    let device_id = m.device_id;
    let incarnation = batch.incarnation;
    let events: Vec<AccessEvent> = batch
        .events
        .into_iter()
        .map(|e| AccessEvent {
            device_id,
            incarnation,
            seq: e.seq,
            event_code: e.code,
            user_id: e.user_id,
            occurred_at_ms: e.occurred_at_ms,
            payload: e.payload,
        })
        .collect();
    let result = shared
        .writer
        .write(Write::Ingest {
            device_id,
            incarnation,
            events,
            received_by: shared.config.node_id.clone(),
        })
        .await;
    match result {
        Ok(Written::Ingest(outcome, watermark)) => {
            shared
                .stats
                .events_stored
                .fetch_add(outcome.inserted as u64, Ordering::Relaxed);
            shared
                .stats
                .events_duplicate
                .fetch_add(outcome.duplicates as u64, Ordering::Relaxed);
            live.watermark.store(watermark, Ordering::Relaxed);
            // Re-check the role after the commit: a node that lost its lease
            // meanwhile acknowledges nothing.
            if shared.identity.borrow().role != Role::Active || !shared.gate.is_open() {
                return Ok(m.reply(status::NOT_ACTIVE, refusal("this server is not active")));
            }
            let ack = msg::EventAck {
                incarnation,
                watermark,
                durable: shared.durability.durable(device_id, incarnation, watermark),
                inserted: outcome.inserted as u32,
                duplicates: outcome.duplicates as u32,
            };
            Ok(m.reply(status::OK, msg::encode(&ack)))
        }
        other => {
            tracing::error!(device_id, "storing events failed: {other:?}");
            Ok(m.reply(status::SERVER_ERROR, refusal("storing events failed")))
        }
    }
}
