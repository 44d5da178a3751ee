//! One authenticated connection to the peer, and the loops that make one:
//! the listener, the dialler (the node with the lower id dials), and the
//! heartbeats. A connection reads frames until the peer goes silent for
//! `dead_after` or a newer connection replaces it, and answers each frame.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use super::admission::{Admission, PEER_LIMITS};
use super::outgoing::{self, Outgoing};
use super::proto::{self, Frame, FrameError, PeerMsg};
use super::receive::{Offer, Receiving};
use super::redial::{peer_backoff, Redial};
use super::session::{self, Ciphers};
use super::state::{now_ms, Inner, Waiter};
use super::Incoming;

/// Files received at once on one connection at most.
const MAX_RECEIVING: usize = 8;

/// Accept connections from the peer for as long as the link runs.
pub(super) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let admission = Arc::new(Admission::new(PEER_LIMITS));
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Over a bound the connection is closed at once.
        let Some(handshake) = admission.handshake(addr.ip()) else {
            tracing::debug!(%addr, "too many peer connections proving themselves; closed");
            continue;
        };
        let (inner, admission) = (inner.clone(), admission.clone());
        tokio::spawn(async move {
            let accepted = accept_handshake(&inner, stream).await;
            drop(handshake);
            match accepted {
                Ok((stream, peer_id, ciphers)) => {
                    let Some(_session) = admission.session() else {
                        tracing::warn!(%addr, "too many peer sessions; closing this one");
                        return;
                    };
                    run_connection(inner, stream, peer_id, ciphers).await
                }
                Err(e) => tracing::warn!(%addr, error = %e, "peer connection refused"),
            }
        });
    }
}

/// Dial the peer whenever no connection is up: at once when the link is
/// lost, then after a growing, jittered pause while dials fail
/// ([`Redial`]). While a connection is up, whichever side made it, it looks
/// again every 100 ms.
pub(super) async fn dial_loop(inner: Arc<Inner>) {
    let backoff = peer_backoff();
    let mut redial = Redial::new(backoff, tokio::time::Instant::now());
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    loop {
        let connected = inner
            .out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if connected {
            redial.up();
            tokio::time::sleep(backoff.initial()).await;
            continue;
        }
        redial.down(tokio::time::Instant::now());
        if let Some(at) = redial.next_dial() {
            tokio::time::sleep_until(at).await;
        }
        let dialled = match TcpStream::connect(inner.config.peer).await {
            Ok(stream) => dial_handshake(&inner, stream).await.map_err(
                |e| tracing::warn!(peer = %inner.config.peer, error = %e, "peer handshake failed"),
            ),
            Err(e) => {
                tracing::trace!(peer = %inner.config.peer, error = %e, "peer not reachable");
                Err(())
            }
        };
        match dialled {
            Ok((stream, peer_id, ciphers)) => {
                redial.up();
                run_connection(inner.clone(), stream, peer_id, ciphers).await;
            }
            Err(()) => redial.failed(tokio::time::Instant::now(), &mut rng),
        }
    }
}

async fn dial_handshake(
    inner: &Inner,
    mut stream: TcpStream,
) -> Result<(TcpStream, String, Ciphers), FrameError> {
    let c = &inner.config;
    let (peer, ciphers) =
        session::dial(&mut stream, &c.psk, &c.node_id, Some(&c.peer_node_id)).await?;
    Ok((stream, peer, ciphers))
}

async fn accept_handshake(
    inner: &Inner,
    mut stream: TcpStream,
) -> Result<(TcpStream, String, Ciphers), FrameError> {
    let c = &inner.config;
    let (peer, ciphers) =
        session::accept(&mut stream, &c.psk, &c.node_id, Some(&c.peer_node_id)).await?;
    Ok((stream, peer, ciphers))
}

/// Send a heartbeat every interval while a connection is up.
pub(super) async fn heartbeat_loop(inner: Arc<Inner>) {
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(inner.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let out = inner.out.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(out) = out {
            seq += 1;
            let (epoch, role) = *inner.local.borrow();
            {
                let mut sent = inner.beats_sent.lock().unwrap_or_else(|p| p.into_inner());
                sent.retain(|s, _| *s + 50 > seq);
                sent.insert(seq, Instant::now());
            }
            let _ = out.try_send(Frame {
                epoch,
                msg: PeerMsg::Heartbeat {
                    seq,
                    role,
                    sent_ms: now_ms(),
                },
            });
        }
    }
}

/// One live connection: where its answers go and the transfers it receives.
struct Connection {
    inner: Arc<Inner>,
    peer_id: String,
    tx: Outgoing,
    receiving: HashMap<u64, Receiving>,
}

/// Serve one authenticated connection until it ends, then hand the link
/// back (unless a newer connection owns it already).
async fn run_connection(
    inner: Arc<Inner>,
    stream: TcpStream,
    peer_id: String,
    (mut out_cipher, mut in_cipher): Ciphers,
) {
    outgoing::limit_unsent(&stream);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = outgoing::outgoing(inner.config.queue);
    let generation = inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
    *inner.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
    {
        let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        s.connected = true;
        s.node_id = Some(peer_id.clone());
    }
    tracing::info!(peer = %peer_id, "peer link up");
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(frame) = rx.next().await {
            let written = proto::write_frame_with(&mut wr, &mut out_cipher, &frame, &mut buf);
            if let Err(e) = written.await {
                tracing::debug!(error = %e, "peer write failed");
                break;
            }
        }
    });
    let mut conn = Connection {
        inner: inner.clone(),
        peer_id,
        tx,
        receiving: HashMap::new(),
    };
    loop {
        let read = tokio::time::timeout(
            inner.config.dead_after,
            proto::read_frame(&mut rd, &mut in_cipher),
        );
        let frame: Frame = match read.await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::info!(peer = %conn.peer_id, reason = %e, "peer link down");
                break;
            }
            Err(_) => {
                tracing::info!(peer = %conn.peer_id, silent_for = ?inner.config.dead_after, "peer link down: the peer went silent");
                break;
            }
        };
        if inner.generation.load(Ordering::SeqCst) != generation {
            tracing::info!(peer = %conn.peer_id, "a newer connection replaced this one");
            break;
        }
        conn.handle(frame).await;
    }
    writer.abort();
    if inner.generation.load(Ordering::SeqCst) != generation {
        // A newer connection owns the link now.
        return;
    }
    conn.release();
}

impl Connection {
    /// The epoch this node is at now.
    fn my_epoch(&self) -> u64 {
        self.inner.local.borrow().0
    }

    /// A frame from this node, at its epoch now.
    fn reply(&self, msg: PeerMsg) -> Frame {
        Frame {
            epoch: self.my_epoch(),
            msg,
        }
    }

    /// Note that the peer was heard, then answer the frame.
    async fn handle(&mut self, frame: Frame) {
        let inner = &self.inner;
        *inner.last_heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        inner.heard.send_modify(|n| *n += 1);
        {
            let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            s.last_heard_ms = Some(now_ms());
            s.epoch = s.epoch.max(frame.epoch);
        }
        let my_epoch = self.my_epoch();
        let lower = frame.epoch < my_epoch;
        match frame.msg {
            PeerMsg::Heartbeat { seq, role, .. } => {
                {
                    let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                    s.role = Some(role);
                    s.epoch = frame.epoch;
                }
                let _ = self.tx.try_send(self.reply(PeerMsg::HeartbeatAck { seq }));
            }
            PeerMsg::HeartbeatAck { seq } => self.on_heartbeat_ack(seq),
            PeerMsg::Offer { id, .. }
            | PeerMsg::Chunk { id, .. }
            | PeerMsg::Checksum { id, .. }
                if lower =>
            {
                self.refuse_lower(frame.epoch).await;
                self.receiving.remove(&id);
            }
            PeerMsg::Message { id, .. }
            | PeerMsg::Batch { id, .. }
            | PeerMsg::TakeOver { id, .. }
                if lower =>
            {
                self.refuse_lower(frame.epoch).await;
                let error = Some(format!("epoch {} is lower than {my_epoch}", frame.epoch));
                let _ = self
                    .tx
                    .send(self.reply(PeerMsg::MessageAck { id, error }))
                    .await;
            }
            PeerMsg::Offer {
                id,
                plugin,
                tag,
                name,
                size,
                sha256,
            } => {
                let offer = Offer {
                    plugin,
                    tag,
                    name,
                    size,
                    sha256,
                    epoch: frame.epoch,
                };
                self.on_offer(id, offer).await;
            }
            PeerMsg::Chunk { id, offset, data } => self.on_chunk(id, offset, data).await,
            PeerMsg::Checksum { id, sha256 } => self.on_checksum(id, sha256).await,
            PeerMsg::Resume { id, have } => self.on_resume(id, have),
            PeerMsg::Receipt {
                id,
                ok,
                bytes,
                sha256,
                error,
            } => {
                let w = inner
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(w) = w.and_then(|w| w.receipt) {
                    let _ = w.send((ok, bytes, sha256, error));
                }
            }
            PeerMsg::Message {
                id,
                plugin,
                kind,
                body,
            } => {
                let item = Incoming::Message {
                    plugin,
                    kind,
                    body,
                    epoch: frame.epoch,
                };
                self.deliver_and_ack(id, item).await;
            }
            PeerMsg::Batch { id, plugin, body } => {
                let item = Incoming::Batch {
                    plugin,
                    body,
                    epoch: frame.epoch,
                };
                self.deliver_and_ack(id, item).await;
            }
            PeerMsg::TakeOver { id, from } => {
                let item = Incoming::TakeOver {
                    from,
                    epoch: frame.epoch,
                };
                self.deliver_and_ack(id, item).await;
            }
            PeerMsg::MessageAck { id, error } => {
                let waiting = inner
                    .messages
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(w) = waiting {
                    let _ = w.send(error);
                }
            }
            PeerMsg::Refused { reason } => self.on_refused(&reason),
        }
    }

    /// Hand `item` to the node, then acknowledge message `id` (with the
    /// reason when the node could not take it).
    async fn deliver_and_ack(&self, id: u64, item: Incoming) {
        let delivered = self.inner.incoming.send(item).await;
        let error = delivered
            .err()
            .map(|_| "the node is shutting down".to_string());
        let _ = self
            .tx
            .send(self.reply(PeerMsg::MessageAck { id, error }))
            .await;
    }

    /// The round trip of one of our heartbeats.
    fn on_heartbeat_ack(&self, seq: u64) {
        let sent = self
            .inner
            .beats_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seq);
        if let Some(at) = sent {
            self.inner
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rtt_ms = Some(at.elapsed().as_millis() as u32);
        }
    }

    /// A file is offered: stage it (resuming what an earlier connection
    /// stored, once that connection's writer is done with it) and say how
    /// much is here.
    async fn on_offer(&mut self, id: u64, offer: Offer) {
        // A transfer offered again on this connection starts over from what
        // is stored.
        self.receiving.remove(&id);
        if self.receiving.len() >= MAX_RECEIVING {
            // Each has a writer thread and queued chunks: bounded.
            tracing::warn!(id, "too many files coming in at once; offer refused");
            let have = u64::MAX;
            let _ = self.tx.send(self.reply(PeerMsg::Resume { id, have })).await;
            return;
        }
        let path = self
            .inner
            .config
            .staging
            .join(format!("incoming-{id:016x}.part"));
        let lock = self
            .inner
            .part_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone();
        // The writer confirms what it stored (the sender's stall bound
        // counts from the last confirmation). Never wait for room: a full
        // queue drops this one and a later confirmation says more.
        let (tx, local) = (self.tx.clone(), self.inner.local.clone());
        let stored = move |have| {
            let epoch = local.borrow().0;
            let msg = PeerMsg::Resume { id, have };
            let _ = tx.try_send(Frame { epoch, msg });
        };
        match Receiving::stage(offer, path, lock, stored).await {
            Ok(r) => {
                let (have, complete) = (r.next, r.complete());
                self.receiving.insert(id, r);
                let _ = self.tx.send(self.reply(PeerMsg::Resume { id, have })).await;
                if complete {
                    self.finish(id).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot stage an incoming file");
                let have = u64::MAX;
                let _ = self.tx.send(self.reply(PeerMsg::Resume { id, have })).await;
            }
        }
    }

    /// The next chunk of a file: hand it to the file's writer, and finish
    /// the file once it is whole.
    async fn on_chunk(&mut self, id: u64, offset: u64, data: Vec<u8>) {
        let Some(r) = self.receiving.get_mut(&id) else {
            return;
        };
        if let Err(why) = r.append(offset, data).await {
            tracing::warn!(id, offset, "{why}; dropping the transfer");
            self.receiving.remove(&id);
            return;
        }
        if r.complete() {
            self.finish(id).await;
        }
    }

    /// A streamed transfer's checksum (it may come before its last chunks):
    /// finish the file if every byte is here.
    async fn on_checksum(&mut self, id: u64, sha256: String) {
        let Some(r) = self.receiving.get_mut(&id) else {
            return;
        };
        // An offer's own checksum stands: a different one here fails the
        // check at the end anyway.
        r.offer.sha256.get_or_insert(sha256);
        if r.complete() {
            self.finish(id).await;
        }
    }

    /// A whole file: check it, hand it over, and send the receipt.
    async fn finish(&mut self, id: u64) {
        let Some(r) = self.receiving.remove(&id) else {
            return;
        };
        let receipt = r.finish(&self.inner.incoming).await;
        self.inner
            .part_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let _ = self
            .tx
            .send(self.reply(PeerMsg::Receipt {
                id,
                ok: receipt.0,
                bytes: receipt.1,
                sha256: receipt.2,
                error: receipt.3,
            }))
            .await;
    }

    /// The answer to an offer, then one as chunks are stored: each is progress
    /// (an older sender ignores the later ones).
    fn on_resume(&self, id: u64, have: u64) {
        let mut waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = waiters.get_mut(&id) {
            w.progress.send_replace(have);
            if let Some(r) = w.resume.take() {
                let _ = r.send(have);
            }
        }
    }

    /// The peer refused our data: every transfer waiting on it fails.
    fn on_refused(&self, reason: &str) {
        tracing::warn!(peer = %self.peer_id, %reason, "the peer refused our data");
        let waiters: Vec<(u64, Waiter)> = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, w) in waiters {
            if let Some(r) = w.resume {
                let _ = r.send(u64::MAX);
            }
            if let Some(r) = w.receipt {
                let _ = r.send((false, 0, String::new(), Some(reason.to_string())));
            }
        }
    }

    /// Refuse data from a peer at a lower epoch than this node's.
    async fn refuse_lower(&self, theirs: u64) {
        let mine = self.my_epoch();
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refused_lower_epoch += 1;
        tracing::warn!(mine, theirs, "refusing data from a lower epoch");
        let reason = format!("your epoch {theirs} is lower than this node's {mine}");
        let _ = self.tx.send(self.reply(PeerMsg::Refused { reason })).await;
    }

    /// The connection is gone: the link is down, and senders waiting on it
    /// retry on the next one.
    fn release(self) {
        let inner = &self.inner;
        *inner.out.lock().unwrap_or_else(|p| p.into_inner()) = None;
        inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .connected = false;
        inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        inner
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
