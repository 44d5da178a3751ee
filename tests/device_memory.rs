//! The gateway's memory under clients that announce or start large messages
//! and never finish them, while real devices keep sending events: the node
//! (a separate process) stays under 256 MiB resident, the devices' events
//! keep being acknowledged, and the memory comes back once the attack ends.
//! The attacks come from unauthenticated connections and from enrolled
//! devices that completed their authenticated handshake.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::raw_device::{authenticate, encode, hello_frame, try_authenticate};
use standby_device::auth::Credential;
use standby_device::codec::{DeviceCodec, Message};
use standby_device::frame::command;
use standby_device::Agent;
use standby_lab::credentials::{enrol, DAY};
use standby_lab::process::resident_kib;
use standby_lab::server::{Server, ServerSpec};
use standby_testkit::device::{config, endpoint, record, wait_on};

const LIMIT_KIB: u64 = 256 * 1024;

/// The first `sent` bytes of one packet from `device` announcing `payload`
/// bytes (a keep-alive: any command will do).
fn unfinished_packet(device: u32, payload: usize, sent: usize) -> Vec<u8> {
    let mut whole = encode(Message::request(
        device,
        command::KEEP_ALIVE,
        2,
        vec![0x5a; payload],
    ));
    whole.truncate(sent);
    whole
}

/// Events the fleet has had acknowledged.
fn acked(fleet: &[Agent]) -> u64 {
    fleet.iter().map(|a| a.status().acked).sum()
}

/// Open up to `n` connections with `open`, each then sending `bytes(i)`,
/// and keep the ones the server has not closed.
fn attack(
    n: usize,
    open: impl Fn(u32) -> Option<TcpStream>,
    bytes: impl Fn(u32) -> Vec<u8>,
) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n as u32 {
        let Some(mut s) = open(i) else {
            continue;
        };
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = s.write_all(&bytes(i));
        held.push(s);
    }
    held
}

/// A connection to `addr` that has sent `first`.
fn unauthenticated(addr: std::net::SocketAddr, first: Vec<u8>) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = s.write_all(&first);
    Some(s)
}

/// A connection to `addr` that has completed `credential`'s authenticated
/// handshake (None when the server, under the attack, answered nothing in
/// time or refused: the test counts how many got in).
fn authenticated(addr: std::net::SocketAddr, credential: &Credential) -> Option<TcpStream> {
    try_authenticate(addr, credential)?
        .ok()
        .map(|(link, _)| link.stream)
}

/// Samples a process's resident memory every 20 ms in a thread and keeps
/// the peak.
struct Watch {
    pid: u32,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watch {
    fn start(pid: u32) -> Self {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(resident_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { pid, peak, stop }
    }

    fn now(&self) -> u64 {
        resident_kib(self.pid)
    }

    fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_messages_cannot_take_the_gateways_memory() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("credentials");
    let fleet_keys = enrol(&keys, 1..=10, DAY);
    let attacker_keys = enrol(&keys, (200_000..202_000).chain(300_000..300_040), DAY);
    let mut spec = ServerSpec::new("a", 1);
    spec.auth = Some(keys);
    let server = Server::start(&crate::standby(), spec, &dir.path().join("a"));
    let devices = dir.path().join("devices");
    let mut fleet = Vec::new();
    for credential in fleet_keys {
        let mut c = config(
            &devices,
            credential.device_id,
            vec![endpoint(server.spec.port, 0)],
        );
        c.credential = Some(credential);
        let (agent, _) = Agent::start(c).unwrap();
        fleet.push(agent);
    }
    for a in &fleet {
        wait_on(a, "a", Duration::from_secs(20)).await;
    }
    // Let the fleet settle, then take the level before the attack.
    for a in &fleet {
        record(a, 5);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watch = Watch::start(server.pid());
    let before = watch.now();
    let acked_before = acked(&fleet);
    eprintln!("before: resident {before} KiB, acknowledged {acked_before}");

    let addr = server.spec.addr();
    let mut rounds = Vec::new();
    // 1. Unauthenticated, before any handshake: 2,000 connections
    //    announcing 1 MiB.
    let held = attack(
        2_000,
        |_| unauthenticated(addr, Vec::new()),
        |i| unfinished_packet(100_000 + i, 1 << 20, 8 << 10),
    );
    rounds.push(("2,000 unauthenticated announcing 1 MiB", held));
    // 2. Unauthenticated, after a handshake without a credential: 2,000
    //    connections each sending 768 KiB of a 1 MiB packet.
    let held = attack(
        2_000,
        |i| unauthenticated(addr, hello_frame(150_000 + i)),
        |i| unfinished_packet(150_000 + i, 1 << 20, 768 << 10),
    );
    rounds.push(("2,000 unauthenticated holding 768 KiB of 1 MiB", held));
    // 3. Authenticated (enrolled devices): 2,000 connections each sending
    //    768 KiB of a 1 MiB packet.
    let held = attack(
        2_000,
        |i| authenticated(addr, &attacker_keys[i as usize]),
        |i| unfinished_packet(200_000 + i, 1 << 20, 768 << 10),
    );
    rounds.push(("2,000 authenticated holding 768 KiB of 1 MiB", held));
    // 4. Authenticated: 40 connections each starting a 15 MiB multi-packet
    //    message.
    let held = attack(
        40,
        |i| authenticated(addr, &attacker_keys[2_000 + i as usize]),
        |i| {
            // A 16 MiB message in 1 MiB packets, all but the last sent.
            use tokio_util::codec::Encoder;
            let mut codec = DeviceCodec::new(standby_device::codec::CodecLimits {
                split_at: 1 << 20,
                ..Default::default()
            });
            let mut b = bytes::BytesMut::new();
            let m = Message::request(300_000 + i, command::KEEP_ALIVE, 2, vec![0x5a; 16 << 20]);
            codec.encode(m, &mut b).unwrap();
            b.truncate(15 * ((1 << 20) + standby_device::frame::HEADER_LEN));
            b.to_vec()
        },
    );
    rounds.push(("40 authenticated starting 15 MiB messages", held));

    for (name, held) in &rounds {
        eprintln!("attack: {name} ({} connections opened)", held.len());
    }
    assert!(
        rounds[2].1.len() >= 1_900,
        "the authenticated attackers did not get in: {}",
        rounds[2].1.len()
    );
    // During: the fleet keeps sending and being acknowledged.
    let during_from = acked(&fleet);
    for a in &fleet {
        record(a, 5);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let acked_during = acked(&fleet);
    let peak = watch.peak();
    eprintln!("during: peak resident {peak} KiB, acknowledged {during_from} -> {acked_during}");
    assert!(
        peak <= LIMIT_KIB,
        "resident {peak} KiB during the attack (limit {LIMIT_KIB})"
    );
    assert!(
        acked_during >= during_from + 50,
        "the fleet's events stopped being acknowledged during the attack: {during_from} -> {acked_during}"
    );
    let still_held: usize = rounds.iter().map(|(_, h)| h.len()).sum();
    drop(rounds);
    // After: memory comes back within 20 % of where it was, in 10 s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = watch.now();
    for a in &fleet {
        record(a, 5);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked_after = acked(&fleet);
    eprintln!("after: resident {after} KiB ({still_held} attack connections were open), acknowledged {acked_after}");
    assert!(
        acked_after >= acked_during + 50,
        "no events acknowledged after the attack"
    );
    assert!(
        after * 5 <= before * 6,
        "resident {after} KiB 10 s after the attack, {before} KiB before"
    );
    for a in fleet {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_message_trickled_byte_by_byte_is_held_no_longer_than_the_dead_link_timeout()
{
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("credentials");
    let credential = enrol(&keys, [7], DAY).remove(0);
    let mut spec = ServerSpec::new("a", 1);
    spec.auth = Some(keys);
    spec.dead_link_ms = 1_500;
    let server = Server::start(&crate::standby(), spec, &dir.path().join("a"));
    // An authenticated device starts a 64 KiB message and sends one byte of
    // it every 100 ms: bytes keep coming, but no message ever completes.
    let (mut link, _) = authenticate(server.spec.addr(), &credential).unwrap();
    let message = unfinished_packet(7, 64 << 10, 64 << 10);
    link.stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed_after = None;
    for byte in message.iter().take(200) {
        if link.stream.write_all(&[*byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(1)
            && link.closed_within(Duration::from_millis(1))
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after =
        closed_after.expect("a trickled, never finished message kept the link for 20 s");
    assert!(
        closed_after < Duration::from_secs(5),
        "closed only after {closed_after:?} (dead link 1.5 s)"
    );
    assert!(
        closed_after >= Duration::from_millis(1_400),
        "closed after {closed_after:?}, before the dead-link timeout"
    );
    let log = server.log_text();
    assert!(log.contains("dead link"), "{log}");
}
