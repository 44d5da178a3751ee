//! The node's side of the witness: acquire, renew and release a lease over
//! one authenticated connection (redialled when it breaks). A lease's end is
//! measured on this node's monotonic clock from when the request was *sent*,
//! which is before the witness started counting, so the node's view of its
//! lease always ends first.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::proto::{Reply, Request};
use crate::peer::cipher::FrameCipher;
use crate::peer::proto::{read_frame, write_frame, FrameError};
use crate::peer::{session, Psk};

/// A lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The epoch the witness granted with it.
    pub epoch: u64,
    /// When it ends on this node's monotonic clock.
    pub expires: Instant,
}

impl Lease {
    /// Whether this node may still act on the lease: it ends more than
    /// `margin` from now.
    pub(crate) fn valid(&self, margin: Duration) -> bool {
        Instant::now() + margin < self.expires
    }

    /// Time left before `margin` before the end (zero when past).
    pub(crate) fn left(&self, margin: Duration) -> Duration {
        self.expires
            .checked_sub(margin)
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }
}

/// A lease request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LeaseError {
    /// The witness could not be reached or did not answer in time.
    #[error("witness {addr} unreachable: {source}")]
    Unreachable {
        /// The witness.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: CallError,
    },
    /// The witness said no.
    #[error("witness denied the lease: {reason} (epoch {epoch}, holder {holder:?}, {remaining_ms} ms left)")]
    Denied {
        /// Why.
        reason: String,
        /// Who holds it.
        holder: Option<String>,
        /// The witness's epoch.
        epoch: u64,
        /// How long the holder's lease still runs.
        remaining_ms: u64,
    },
    /// The witness answered something that does not fit the request.
    #[error("witness answered out of protocol: {0}")]
    Protocol(String),
}

/// Why a call to the witness got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No connection could be made.
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    /// The handshake, or a frame, failed (a wrong key, a reset link).
    #[error("{0}")]
    Frame(#[source] FrameError),
    /// Nothing came back in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What the witness reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WitnessView {
    /// Its highest granted epoch.
    pub epoch: u64,
    /// Who holds an unexpired lease.
    pub holder: Option<String>,
    /// How long it still runs.
    pub remaining_ms: u64,
}

struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    out_cipher: FrameCipher,
    in_cipher: FrameCipher,
}

/// A connection to the witness.
pub(crate) struct WitnessClient {
    addr: SocketAddr,
    psk: Psk,
    node_id: String,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for WitnessClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitnessClient")
            .field("addr", &self.addr)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl WitnessClient {
    /// A client for `node_id`; each request (including any dial) must finish
    /// within `timeout`.
    pub(crate) fn new(addr: SocketAddr, psk: Psk, node_id: &str, timeout: Duration) -> Self {
        Self {
            addr,
            psk,
            node_id: node_id.to_string(),
            timeout,
            conn: Mutex::new(None),
        }
    }

    /// The witness's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Take the lease for `ttl` with a new epoch.
    pub(crate) async fn acquire(&self, ttl: Duration) -> Result<Lease, LeaseError> {
        let sent = Instant::now();
        let reply = self
            .call(Request::Acquire {
                ttl_ms: ttl.as_millis() as u64,
            })
            .await?;
        granted(reply, sent)
    }

    /// Extend `lease` by `ttl` from now, with one request answered before
    /// anything else is sent (a node renews with [`WitnessClient::renewals`]).
    #[cfg(test)]
    pub(crate) async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LeaseError> {
        let sent = Instant::now();
        let reply = self
            .call(Request::Renew {
                epoch: lease.epoch,
                ttl_ms: ttl.as_millis() as u64,
            })
            .await?;
        granted(reply, sent)
    }

    /// Give `lease` up now.
    pub(crate) async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        match self.call(Request::Release { epoch: lease.epoch }).await? {
            Reply::Released { .. } => Ok(()),
            other => Err(LeaseError::Protocol(format!("{other:?}"))),
        }
    }

    /// The witness's epoch and holder.
    pub(crate) async fn query(&self) -> Result<WitnessView, LeaseError> {
        match self.call(Request::Query).await? {
            Reply::State {
                epoch,
                holder,
                remaining_ms,
            } => Ok(WitnessView {
                epoch,
                holder,
                remaining_ms,
            }),
            other => Err(LeaseError::Protocol(format!("{other:?}"))),
        }
    }

    /// A connection of its own on which the renewals of `lease` go out on
    /// a cadence, each without waiting for the answer to the one before
    /// (so a slow answer does not delay the next renewal): the connection
    /// the lease was granted on when there is one (no handshake to wait
    /// for), otherwise one dialled within `within`. Other calls dial their
    /// own meanwhile.
    pub(crate) async fn renewals(
        &self,
        lease: &Lease,
        ttl: Duration,
        within: Duration,
    ) -> Result<(RenewalSender, RenewalAnswers), LeaseError> {
        let kept = self.conn.lock().await.take();
        let c = match kept {
            Some(c) => c,
            None => match tokio::time::timeout(within, self.connect()).await {
                Ok(Ok(c)) => c,
                Ok(Err(source)) => return Err(self.unreachable(source)),
                Err(_) => return Err(self.unreachable(CallError::Timeout(within))),
            },
        };
        let Conn {
            mut rd,
            wr,
            out_cipher,
            mut in_cipher,
        } = c;
        let (tx, answers) = tokio::sync::mpsc::channel(MAX_RENEWALS_IN_FLIGHT);
        // Frames are read whole on a task of their own: a read cut short
        // would lose the rest of its frame.
        let reader = tokio::spawn(async move {
            loop {
                let answer = read_frame::<_, Reply>(&mut rd, &mut in_cipher)
                    .await
                    .map_err(CallError::Frame);
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok((
            RenewalSender {
                wr,
                out_cipher,
                epoch: lease.epoch,
                ttl_ms: ttl.as_millis() as u64,
                sent: std::collections::VecDeque::new(),
            },
            RenewalAnswers {
                answers,
                reader: reader.abort_handle(),
            },
        ))
    }

    /// The witness could not be reached, for `source`.
    pub(crate) fn unreachable(&self, source: CallError) -> LeaseError {
        LeaseError::Unreachable {
            addr: self.addr,
            source,
        }
    }

    /// Dial the witness and authenticate.
    async fn connect(&self) -> Result<Conn, CallError> {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .map_err(CallError::Connect)?;
        let (_, (out_cipher, in_cipher)) =
            session::dial(&mut stream, &self.psk, &self.node_id, None)
                .await
                .map_err(CallError::Frame)?;
        let (rd, wr) = stream.into_split();
        Ok(Conn {
            rd,
            wr,
            out_cipher,
            in_cipher,
        })
    }

    async fn call(&self, request: Request) -> Result<Reply, LeaseError> {
        let mut slot = self.conn.lock().await;
        let reused = slot.is_some();
        match self.call_once(&mut slot, request.clone()).await {
            // The witness closes sessions idle for long, and a cut link
            // leaves a dead one: a call that fails on a kept connection is
            // tried once more on a fresh one (not one that timed out: that
            // would only double the wait on a slow witness).
            Err(LeaseError::Unreachable { source, .. })
                if reused && !matches!(source, CallError::Timeout(_)) =>
            {
                self.call_once(&mut slot, request).await
            }
            answer => answer,
        }
    }

    async fn call_once(
        &self,
        slot: &mut tokio::sync::MutexGuard<'_, Option<Conn>>,
        request: Request,
    ) -> Result<Reply, LeaseError> {
        let run = async {
            let c = match slot.as_mut() {
                Some(c) => c,
                None => slot.insert(self.connect().await?),
            };
            write_frame(&mut c.wr, &mut c.out_cipher, &request)
                .await
                .map_err(CallError::Frame)?;
            read_frame::<_, Reply>(&mut c.rd, &mut c.in_cipher)
                .await
                .map_err(CallError::Frame)
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(reason)) => {
                **slot = None;
                Err(self.unreachable(reason))
            }
            Err(_) => {
                **slot = None;
                Err(self.unreachable(CallError::Timeout(self.timeout)))
            }
        }
    }
}

/// Renewals unanswered at once on a renewal connection, at most (at the
/// default cadence, 1.6 s of them: the lease ends long before).
pub(crate) const MAX_RENEWALS_IN_FLIGHT: usize = 32;

/// The sending side of [`WitnessClient::renewals`]: remembers when each
/// renewal went out, so its answer extends the lease from then.
pub(crate) struct RenewalSender {
    wr: OwnedWriteHalf,
    out_cipher: FrameCipher,
    epoch: u64,
    ttl_ms: u64,
    sent: std::collections::VecDeque<Instant>,
}

impl RenewalSender {
    /// Send one renewal; nothing while [`MAX_RENEWALS_IN_FLIGHT`] are
    /// unanswered.
    pub(crate) async fn send(&mut self) -> Result<(), CallError> {
        if self.sent.len() >= MAX_RENEWALS_IN_FLIGHT {
            return Ok(());
        }
        let request = Request::Renew {
            epoch: self.epoch,
            ttl_ms: self.ttl_ms,
        };
        self.sent.push_back(Instant::now());
        write_frame(&mut self.wr, &mut self.out_cipher, &request)
            .await
            .map_err(CallError::Frame)
    }

    /// What `reply`, the answer to the oldest unanswered renewal, grants:
    /// the lease from when that renewal was sent.
    pub(crate) fn answered(&mut self, reply: Reply) -> Result<Lease, LeaseError> {
        let sent = self
            .sent
            .pop_front()
            .ok_or_else(|| LeaseError::Protocol(format!("an answer to no renewal: {reply:?}")))?;
        granted(reply, sent)
    }
}

/// The answers on a renewal connection, in the order the renewals went out
/// (the witness answers a connection's requests one by one).
pub(crate) struct RenewalAnswers {
    answers: tokio::sync::mpsc::Receiver<Result<Reply, CallError>>,
    reader: tokio::task::AbortHandle,
}

impl RenewalAnswers {
    /// The next answer; an error when the connection failed. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Reply, CallError> {
        match self.answers.recv().await {
            Some(answer) => answer,
            None => Err(CallError::Frame(FrameError::Io(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            )))),
        }
    }
}

impl Drop for RenewalAnswers {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn granted(reply: Reply, sent: Instant) -> Result<Lease, LeaseError> {
    match reply {
        Reply::Granted { epoch, ttl_ms } => Ok(Lease {
            epoch,
            expires: sent + Duration::from_millis(ttl_ms),
        }),
        Reply::Denied {
            reason,
            holder,
            epoch,
            remaining_ms,
        } => Err(LeaseError::Denied {
            reason,
            holder,
            epoch,
            remaining_ms,
        }),
        other => Err(LeaseError::Protocol(format!("{other:?}"))),
    }
}
