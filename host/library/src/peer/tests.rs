//! The node-to-node link over real TCP on loopback: authentication with a
//! pre-shared key that gives nobody anything to guess it against, frames
//! nobody on the path can read, heartbeats, checksummed file transfer resumed across a cut
//! link, messages, and refusal of data from a lower epoch.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::fault_proxy::{fault_proxy, Fault};
use super::{Incoming, PeerConfig, PeerError, PeerLink, Psk};
use crate::role::Role;
use standby_testkit::ports::free_port;
use standby_testkit::proxy::Proxy;
use standby_testkit::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

pub(super) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(super) fn psk(text: &str) -> Psk {
    Psk::new(text.as_bytes().to_vec()).unwrap()
}

pub(super) struct Node {
    pub(super) link: PeerLink,
    pub(super) local: watch::Sender<(u64, Role)>,
    pub(super) incoming: mpsc::Receiver<Incoming>,
}

pub(super) async fn node(config: PeerConfig, epoch: u64, role: Role) -> Node {
    let (local, rx) = watch::channel((epoch, role));
    let (tx, incoming) = mpsc::channel(16);
    let link = PeerLink::start(config, rx, tx).await.unwrap();
    Node {
        link,
        local,
        incoming,
    }
}

/// A pair "a" (dials) and "b" (listens on `pb`); a dials `via` when given
/// (a proxy in front of b).
pub(super) async fn pair(
    dir: &Path,
    key_a: &str,
    key_b: &str,
    pb: u16,
    via: Option<u16>,
) -> (Node, Node) {
    let pa = free_port();
    let a = PeerConfig::new(
        "a",
        addr(pa),
        "b",
        addr(via.unwrap_or(pb)),
        psk(key_a),
        dir.join("a-staging"),
    );
    let b = PeerConfig::new(
        "b",
        addr(pb),
        "a",
        addr(pa),
        psk(key_b),
        dir.join("b-staging"),
    );
    (
        node(a, 1, Role::Active).await,
        node(b, 1, Role::Standby).await,
    )
}

pub(super) async fn connected(n: &Node) -> bool {
    wait_for(Duration::from_secs(5), || n.link.state().connected).await
}

pub(super) fn write_file(path: &Path, len: usize) -> String {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(path, &data).unwrap();
    hex(&Sha256::digest(&data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_the_same_key_authenticate_and_exchange_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(
        dir.path(),
        "0123456789abcdef0123456789abcdef-key",
        "0123456789abcdef0123456789abcdef-key",
        free_port(),
        None,
    )
    .await;
    assert!(connected(&a).await && connected(&b).await);
    assert!(
        wait_for(Duration::from_secs(3), || a.link.state().rtt_ms.is_some()).await,
        "no heartbeat round trip: {:?}",
        a.link.state()
    );
    let sa = a.link.state();
    let sb = b.link.state();
    assert_eq!(sa.node_id.as_deref(), Some("b"));
    assert_eq!(sb.node_id.as_deref(), Some("a"));
    // Each side hears the other's role.
    assert!(
        wait_for(Duration::from_secs(2), || b.link.state().role
            == Some(Role::Active))
        .await
    );
    assert!(
        wait_for(Duration::from_secs(2), || a.link.state().role
            == Some(Role::Standby))
        .await
    );
    assert!(a.link.silence().unwrap() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_key_is_never_connected() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(
        dir.path(),
        "0123456789abcdef0123456789abcdef-key",
        "fedcba9876543210fedcba9876543210-key",
        free_port(),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!a.link.state().connected, "{:?}", a.link.state());
    assert!(!b.link.state().connected, "{:?}", b.link.state());
    let err = a
        .link
        .send_message("p", "k", b"x".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Down), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_speaking_garbage_is_dropped_and_the_link_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let pb = free_port();
    let (a, mut b) = pair(
        dir.path(),
        "0123456789abcdef0123456789abcdef-key",
        "0123456789abcdef0123456789abcdef-key",
        pb,
        None,
    )
    .await;
    assert!(connected(&a).await);
    let mut s = TcpStream::connect(addr(pb)).await.unwrap();
    s.write_all(&[0xff; 64]).await.unwrap();
    let mut buf = [0u8; 16];
    // The listener closes it (EOF or reset), without answering.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    a.link
        .send_message("p", "hello", b"still here".to_vec())
        .await
        .unwrap();
    let Some(Incoming::Message { body, .. }) = b.incoming.recv().await else {
        panic!()
    };
    assert_eq!(body, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_arrive_whole_and_checked_and_messages_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(
        dir.path(),
        "0123456789abcdef0123456789abcdef-key",
        "0123456789abcdef0123456789abcdef-key",
        free_port(),
        None,
    )
    .await;
    assert!(connected(&a).await);
    let src = dir.path().join("snapshot.db");
    let sha = write_file(&src, 3 * 1024 * 1024 + 17);
    let receipt = a
        .link
        .send_file("file-copy", &src, "snap-1.db", "t1", None)
        .await
        .unwrap();
    assert_eq!(receipt.bytes, 3 * 1024 * 1024 + 17);
    assert_eq!(receipt.sha256, sha);
    let Some(Incoming::File {
        plugin,
        path,
        name,
        tag,
        size,
        sha256,
        epoch,
    }) = b.incoming.recv().await
    else {
        panic!()
    };
    assert_eq!(
        (plugin.as_str(), name.as_str(), tag.as_str(), size, epoch),
        ("file-copy", "snap-1.db", "t1", receipt.bytes, 1)
    );
    assert_eq!(sha256, sha);
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&src).unwrap());
    a.link
        .send_message("file-copy", "installed", b"snap-1".to_vec())
        .await
        .unwrap();
    let Some(Incoming::Message { kind, body, .. }) = b.incoming.recv().await else {
        panic!()
    };
    assert_eq!(
        (kind.as_str(), body.as_slice()),
        ("installed", &b"snap-1"[..])
    );
    // A change batch of 1 MiB (the most one batch holds) arrives whole,
    // with the sender's epoch.
    let batch = vec![0x5a; 1 << 20];
    a.link.send_batch("cdc", batch.clone()).await.unwrap();
    let Some(Incoming::Batch {
        plugin,
        body,
        epoch,
    }) = b.incoming.recv().await
    else {
        panic!()
    };
    assert_eq!(
        (plugin.as_str(), body.len(), epoch),
        ("cdc", batch.len(), 1)
    );
    assert_eq!(body, batch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_crosses_the_link_is_encrypted() {
    // A database's rows (users, cards) cross the network between the sites:
    // an eavesdropper on that network sees none of them.
    let dir = tempfile::tempdir().unwrap();
    let pb = free_port();
    let tap = Proxy::start_recording(addr(pb)).await;
    let key = "0123456789abcdef0123456789abcdef-key";
    let (a, mut b) = pair(dir.path(), key, key, pb, Some(tap.addr.port())).await;
    assert!(connected(&a).await);
    let marker = b"CARD-4242-USER-Jane-Doe";
    let src = dir.path().join("snapshot.db");
    let mut data = Vec::new();
    while data.len() < 512 * 1024 {
        data.extend_from_slice(marker);
        data.extend_from_slice(&(data.len() as u64).to_le_bytes());
    }
    std::fs::write(&src, &data).unwrap();
    a.link
        .send_file("file-copy", &src, "snap-1.db", "t1", None)
        .await
        .unwrap();
    let Some(Incoming::File { path, .. }) = b.incoming.recv().await else {
        panic!()
    };
    assert_eq!(
        std::fs::read(&path).unwrap(),
        data,
        "the file arrives whole"
    );
    a.link
        .send_message("file-copy", "installed", marker.to_vec())
        .await
        .unwrap();
    let Some(Incoming::Message { body, .. }) = b.incoming.recv().await else {
        panic!()
    };
    assert_eq!(body, marker);
    let seen = tap.recorded();
    assert!(
        seen.len() > data.len(),
        "the tap saw the transfer: {} bytes",
        seen.len()
    );
    let in_clear = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    assert!(
        !in_clear(marker),
        "the file's content crossed the link in clear"
    );
    assert!(
        !in_clear(b"file-copy"),
        "a plugin's name crossed the link in clear"
    );
    assert!(
        !in_clear(b"snap-1.db"),
        "a file name crossed the link in clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_nothing_to_check_a_guess_against_offline() {
    // The finding: the old handshake sent an HMAC of the key to anyone who
    // said hello, so a weak key fell to offline guessing. Now the listener
    // sends a SPAKE2 share (a Diffie-Hellman share blinded by the key, which
    // says nothing of it) and proves itself only to a dialler that proved
    // itself first.
    let dir = tempfile::tempdir().unwrap();
    let pb = free_port();
    let key = "0123456789abcdef0123456789abcdef-key";
    let (a, _b) = pair(dir.path(), key, key, pb, None).await;
    assert!(connected(&a).await);

    let wrong = psk("fedcba9876543210fedcba9876543210-key");
    let answers = super::session::what_the_listener_answers_a_guess(addr(pb), &wrong).await;
    assert_eq!(
        answers[0].len(),
        33,
        "a share is one curve point and a side byte"
    );
    assert!(
        answers[1].is_empty(),
        "a wrong guess gets a refusal, not the listener's proof"
    );
    assert!(answers[2].is_empty(), "and then the connection closes");

    // The same stranger with the right key does get the listener's proof:
    // the check above can fail.
    let right = psk(key);
    let answers = super::session::what_the_listener_answers_a_guess(addr(pb), &right).await;
    assert_eq!(answers[1].len(), 32, "the listener's proof");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_midway_resumes_where_the_peer_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let pb = free_port();
    let (proxy, cut) = fault_proxy(addr(pb), 6 * 1024 * 1024, Fault::Cut).await;
    let key = "0123456789abcdef0123456789abcdef-key";
    let (a, mut b) = pair(dir.path(), key, key, pb, Some(proxy)).await;
    assert!(connected(&a).await);
    let src = dir.path().join("big.db");
    let sha = write_file(&src, 16 * 1024 * 1024);
    let receipt = a
        .link
        .send_file("file-copy", &src, "big.db", "t", None)
        .await
        .unwrap();
    assert!(cut.load(Ordering::SeqCst), "the proxy never cut the link");
    assert!(
        receipt.resumed_from > 0,
        "the transfer restarted from zero: {receipt:?}"
    );
    assert_eq!(receipt.sha256, sha);
    let Some(Incoming::File { path, .. }) = b.incoming.recv().await else {
        panic!()
    };
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&src).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_from_a_lower_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(
        dir.path(),
        "0123456789abcdef0123456789abcdef-key",
        "0123456789abcdef0123456789abcdef-key",
        free_port(),
        None,
    )
    .await;
    assert!(connected(&a).await);
    // b was promoted meanwhile: epoch 2. a still says 1.
    b.local.send_replace((2, Role::Active));
    let src = dir.path().join("old.db");
    write_file(&src, 100_000);
    let err = a
        .link
        .send_file("file-copy", &src, "old.db", "t", None)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Refused(_)), "{err}");
    let err = a
        .link
        .send_message("file-copy", "k", Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Refused(_)), "{err}");
    assert!(b.link.state().refused_lower_epoch >= 2);
    assert!(
        b.incoming.try_recv().is_err(),
        "nothing reached b's plugins"
    );
    // Nothing from the refused transfer is left where b installs files from.
    let staged: Vec<_> = std::fs::read_dir(dir.path().join("b-staging"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "done"))
        .collect();
    assert!(staged.is_empty());
    // Once a learns the new epoch (it rejoins), its data is accepted again.
    a.local.send_replace((2, Role::Standby));
    a.link
        .send_message("file-copy", "k", Vec::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_ms_of_heartbeat_jitter_never_trips_the_detector_but_a_cut_link_does() {
    use crate::cluster::DetectorSettings;
    let dir = tempfile::tempdir().unwrap();
    let pb = free_port();
    let link = Proxy::start_with_jitter(addr(pb), Duration::from_millis(200)).await;
    let pa = free_port();
    let key = "0123456789abcdef0123456789abcdef-key";
    let mut ca = PeerConfig::new(
        "a",
        addr(pa),
        "b",
        link.addr,
        psk(key),
        dir.path().join("a"),
    );
    let mut cb = PeerConfig::new("b", addr(pb), "a", addr(pa), psk(key), dir.path().join("b"));
    let detector = DetectorSettings::default();
    for c in [&mut ca, &mut cb] {
        c.heartbeat = detector.heartbeat;
    }
    let _a = node(ca, 1, Role::Active).await;
    let b = node(cb, 1, Role::Standby).await;
    assert!(connected(&b).await);
    // The window starts once b has heard a first frame (connected comes
    // with the handshake, frames come through the jitter).
    assert!(wait_for(Duration::from_secs(5), || b.link.silence().is_some()).await);
    // b watches a through the jittering link for 6 s.
    let started = tokio::time::Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(6) {
        let silence = b.link.silence();
        worst = worst.max(silence.unwrap_or_default());
        assert!(
            !detector.suspects(silence),
            "false suspicion after {:?}: silence {silence:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("longest silence under 200 ms jitter: {worst:?}");
    assert!(
        worst > Duration::from_millis(100),
        "the jitter did not bite"
    );
    // A cut link is suspected once the silence passes the threshold.
    link.cut();
    let cut = tokio::time::Instant::now();
    while !detector.suspects(b.link.silence()) {
        assert!(cut.elapsed() < Duration::from_secs(2), "never suspected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("cut -> suspected: {:?}", cut.elapsed());
}

/// A pair whose `a` reaches `b` through a throttled proxy, with small chunks
/// and a short stall bound.
async fn slow_pair(
    dir: &Path,
    bytes_per_sec: u64,
    stall: Duration,
    dead_after: Duration,
) -> (Node, Node, Proxy) {
    let pb = free_port();
    let proxy = Proxy::start_throttled(addr(pb), bytes_per_sec).await;
    let pa = free_port();
    let key = "0123456789abcdef0123456789abcdef-key";
    let mut ca = PeerConfig::new(
        "a",
        addr(pa),
        "b",
        proxy.addr,
        psk(key),
        dir.join("a-staging"),
    );
    let mut cb = PeerConfig::new(
        "b",
        addr(pb),
        "a",
        addr(pa),
        psk(key),
        dir.join("b-staging"),
    );
    for c in [&mut ca, &mut cb] {
        c.chunk = 64 << 10;
        c.transfer_stall = stall;
        c.dead_after = dead_after;
    }
    let a = node(ca, 1, Role::Active).await;
    let b = node(cb, 1, Role::Standby).await;
    (a, b, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_slower_than_the_stall_bound_but_moving_finishes() {
    assert_eq!(
        PeerConfig::new(
            "a",
            addr(1),
            "b",
            addr(2),
            psk("0123456789abcdef0123456789abcdef-key"),
            "x".into()
        )
        .transfer_stall,
        Duration::from_secs(30),
        "the default stall bound"
    );
    let dir = tempfile::tempdir().unwrap();
    let stall = Duration::from_secs(2);
    // 256 KiB/s: a 2 MiB file takes about 8 s, four times the stall bound,
    // while every 64 KiB chunk is confirmed within a quarter of a second.
    let (a, mut b, _proxy) = slow_pair(dir.path(), 256 << 10, stall, Duration::from_secs(2)).await;
    assert!(connected(&a).await);
    let src = dir.path().join("slow.db");
    let sha = write_file(&src, 2 << 20);
    let started = tokio::time::Instant::now();
    let receipt = a
        .link
        .send_file("file-copy", &src, "slow.db", "t", None)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the slow transfer failed after {:?}: {e}",
                started.elapsed()
            )
        });
    let took = started.elapsed();
    eprintln!("2 MiB at 256 KiB/s with a {stall:?} stall bound: {took:?}");
    assert!(
        took > stall * 2,
        "the transfer took {took:?}, not longer than the stall bound: the test proves nothing"
    );
    assert_eq!(receipt.bytes, 2 << 20);
    assert_eq!(receipt.sha256, sha);
    let Some(Incoming::File { path, .. }) = b.incoming.recv().await else {
        panic!()
    };
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&src).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transfer_fails_after_the_stall_bound_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let stall = Duration::from_secs(2);
    // The connection itself is never declared dead here: only the stall
    // bound can end the transfer.
    let (a, _b, proxy) = slow_pair(dir.path(), 256 << 10, stall, Duration::from_secs(120)).await;
    assert!(connected(&a).await);
    let src = dir.path().join("stuck.db");
    write_file(&src, 8 << 20);
    let link = a.link.clone();
    let transfer = tokio::spawn(async move {
        link.send_file("file-copy", &src, "stuck.db", "t", None)
            .await
    });
    // Let it get going (bytes reach b's staging file), then stop every byte.
    let staging = dir.path().join("b-staging");
    let received = || {
        std::fs::read_dir(&staging)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(20), || received() >= 256 << 10).await,
        "the transfer never started"
    );
    proxy.cut();
    let cut = tokio::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), transfer)
        .await
        .expect("a stalled transfer must fail, not hang")
        .unwrap();
    let after = cut.elapsed();
    let err = result.expect_err("a transfer through a cut link cannot succeed");
    assert!(
        matches!(err, PeerError::Stalled { after, .. } if after == stall),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("cluster.transfer_stall_ms") && text.contains("2000 ms"),
        "the error names the setting and its value: {text}"
    );
    assert!(
        after + Duration::from_millis(1_500) >= stall,
        "failed {after:?} after the cut, before the stall bound {stall:?}: {text}"
    );
    assert!(received() < 8 << 20, "the whole file got through");
    eprintln!("cut -> failed after {after:?}: {text}");

    // A message over the stalled link fails the same way.
    let err = a
        .link
        .send_message("file-copy", "installed", b"1".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Stalled { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cluster.transfer_stall_ms"),
        "{err}"
    );
}
