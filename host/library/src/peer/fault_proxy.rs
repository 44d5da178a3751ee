//! A TCP proxy for the peer link's tests that spoils its first connection
//! once a number of bytes from the dialler have passed (cuts it, or flips one
//! byte), then forwards every later connection faithfully; or that forwards
//! every connection slowly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to its first connection.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
    /// Close it once more than `after` bytes came from the dialler.
    Cut,
    /// Flip the lowest bit of the byte at offset `after` from the dialler.
    Flip,
    /// Forward what comes from the dialler at this many bytes per second, on
    /// every connection, through a small receive buffer (a slow link; `after`
    /// is not used).
    Slow(u64),
}

/// Start the proxy in front of `target`: its port, and a flag set once the
/// fault happened.
pub(super) async fn fault_proxy(
    target: SocketAddr,
    after: u64,
    fault: Fault,
) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let happened = Arc::new(AtomicBool::new(false));
    let flag = happened.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            if let Fault::Slow(_) = fault {
                let _ = socket2::SockRef::from(&inbound).set_recv_buffer_size(128 << 10);
            }
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                continue;
            };
            let at = if std::mem::take(&mut first) {
                after
            } else {
                u64::MAX
            };
            let flag = flag.clone();
            tokio::spawn(async move {
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.split();
                let up = async {
                    let began = tokio::time::Instant::now();
                    let mut passed = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = ri.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let start = passed;
                        passed += n as u64;
                        match fault {
                            Fault::Cut if passed > at => {
                                flag.store(true, Ordering::SeqCst);
                                break;
                            }
                            Fault::Flip if start <= at && at < passed => {
                                buf[(at - start) as usize] ^= 0x01;
                                flag.store(true, Ordering::SeqCst);
                            }
                            _ => {}
                        }
                        if wo.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if let Fault::Slow(rate) = fault {
                            let due = passed as f64 / rate.max(1) as f64;
                            tokio::time::sleep_until(
                                began + std::time::Duration::from_secs_f64(due),
                            )
                            .await;
                        }
                    }
                };
                let down = tokio::io::copy(&mut ro, &mut wi);
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    (port, happened)
}
