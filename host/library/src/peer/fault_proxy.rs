//! A TCP proxy for the peer link's tests that spoils its first connection
//! once a number of bytes from the dialler have passed (cuts it, or flips one
//! byte), then forwards every later connection faithfully.

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
