//! A TCP forwarder on loopback that can cut the link it carries: once cut,
//! bytes stop flowing both ways and new connections hang (a partition, not
//! a reset: nothing tells either side). It can also delay every chunk
//! (jitter), pass a limited rate (a slow link), or keep a copy of every byte
//! it carries (what an eavesdropper on the link would see).
//!
//! Test tool: a forwarder that cannot bind a loopback port panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running forwarder.
pub struct Proxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    tap: Tap,
}

/// Every byte carried, both ways, when recording.
type Tap = Option<Arc<std::sync::Mutex<Vec<u8>>>>;

impl Proxy {
    /// Forward connections on a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_with_jitter(target, std::time::Duration::ZERO).await
    }

    /// The same, delaying every chunk by a random 0..`jitter` (order kept).
    pub async fn start_with_jitter(target: SocketAddr, jitter: std::time::Duration) -> Self {
        Self::start_shaped(target, jitter, None, None).await
    }

    /// The same, passing at most `bytes_per_sec` each way (a slow link:
    /// the sender is held back by TCP flow control, nothing is dropped).
    pub async fn start_throttled(target: SocketAddr, bytes_per_sec: u64) -> Self {
        Self::start_shaped(target, std::time::Duration::ZERO, Some(bytes_per_sec), None).await
    }

    /// Forward faithfully and keep a copy of every byte, both ways
    /// ([`Proxy::recorded`]).
    pub async fn start_recording(target: SocketAddr) -> Self {
        let tap = Some(Arc::new(std::sync::Mutex::new(Vec::new())));
        Self::start_shaped(target, std::time::Duration::ZERO, None, tap).await
    }

    /// The bytes carried so far, both directions interleaved (empty unless
    /// started with [`Proxy::start_recording`]).
    pub fn recorded(&self) -> Vec<u8> {
        self.tap
            .as_ref()
            .map(|t| t.lock().unwrap().clone())
            .unwrap_or_default()
    }

    async fn start_shaped(
        target: SocketAddr,
        jitter: std::time::Duration,
        rate: Option<u64>,
        tap: Tap,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let record = tap.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let flag = flag.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    if flag.load(Ordering::SeqCst) {
                        // Hold it open and silent.
                        let _held = inbound;
                        return std::future::pending::<()>().await;
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(pump(ri, wo, flag.clone(), jitter, rate, record.clone()));
                    pump(ro, wi, flag, jitter, rate, record).await;
                });
            }
        });
        Self { addr, cut, tap }
    }

    /// Stop every byte from now on, silently.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Let bytes flow again (connections made while cut stay dead).
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
    jitter: std::time::Duration,
    rate: Option<u64>,
    tap: Tap,
) {
    use rand::Rng;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    // Throttled: small reads, each followed by the time it takes at the rate.
    let read_max = match rate {
        Some(r) => ((r / 20) as usize).clamp(1, buf.len()),
        None => buf.len(),
    };
    let mut last = tokio::time::Instant::now();
    loop {
        if let Some(r) = rate {
            tokio::time::sleep(std::time::Duration::from_secs_f64(
                read_max as f64 / r as f64,
            ))
            .await;
        }
        let n = match from.read(&mut buf[..read_max]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            // Swallow: the other side never hears of it.
            continue;
        }
        if let Some(tap) = &tap {
            tap.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        let delay = jitter.mul_f64(rand::rng().random::<f64>());
        last = last.max(tokio::time::Instant::now() + delay);
        if tx.send((last, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
