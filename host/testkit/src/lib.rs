//! Small test tools that both the library's own unit tests and the lab use
//! (the library cannot depend on the lab, which depends on it):
//!
//! - [`ports`]: listening ports from below the kernel's ephemeral range, so
//!   no outgoing connection can take one before its listener binds it;
//! - [`proxy`]: a TCP forwarder that cuts a link (a partition, not a reset),
//!   delays its bytes (jitter) or throttles it (a slow WAN);
//! - [`wait_until`] and [`wait_for`]: poll a condition with a time limit;
//! - [`device`]: device agents with short timeouts, and waits on them.

use std::time::{Duration, Instant};

pub mod device;
pub mod ports;
pub mod proxy;

/// Poll `f` every 20 ms until it is true or `limit` passes; whether it
/// became true.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// [`wait_until`] for async code: sleeps on the runtime's timer.
pub async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
