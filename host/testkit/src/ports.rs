//! Listening ports for processes started together on one machine (the demo,
//! tests): taken from below the kernel's ephemeral range.
//!
//! A port the kernel hands out for `bind(0)` comes from the ephemeral range,
//! which is also where every outgoing connection takes its local port: once
//! such a port is released for another process to listen on, a dial can take
//! it first (`AddrInUse`). Ports below that range are never given to
//! outgoing connections.

use std::net::{IpAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The lowest port handed out.
const FLOOR: u32 = 10_000;

/// A TCP port free on every one of `ips`, from 10000 up to the start of the
/// kernel's ephemeral range. Successive calls in one process walk the range
/// from a random point, so two callers never get the same port and two
/// processes seldom try the same ones.
pub fn free_listen_port(ips: &[IpAddr]) -> std::io::Result<u16> {
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ceiling = ephemeral_low().max(FLOOR + 1_000);
    let span = ceiling - FLOOR;
    let start = *START.get_or_init(rand::random::<u32>);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FLOOR + start.wrapping_add(n) % span) as u16;
        if ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok()) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no port from {FLOOR} to {ceiling} is free on all of {ips:?}"),
    ))
}

/// A port free on 127.0.0.1, for tests.
///
/// # Panics
/// When no port is free (a test cannot go on without one).
pub fn free_port() -> u16 {
    free_port_on(&["127.0.0.1"])
}

/// A port free on every one of `ips` (addresses as text), for tests.
///
/// # Panics
/// When an address does not parse or no port is free.
#[allow(clippy::expect_used)]
pub fn free_port_on(ips: &[&str]) -> u16 {
    let ips: Vec<IpAddr> = ips
        .iter()
        .map(|ip| ip.parse().expect("a test address"))
        .collect();
    free_listen_port(&ips).expect("a free port on loopback")
}

/// The first port of the kernel's ephemeral range (32768 when unreadable).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = free_listen_port(&[ip]).unwrap();
        let b = free_listen_port(&[ip]).unwrap();
        assert_ne!(a, b);
        for p in [a, b] {
            assert!(u32::from(p) >= FLOOR && u32::from(p) < ephemeral_low().max(FLOOR + 1_000));
            TcpListener::bind((ip, p)).unwrap();
        }
    }
}
