//! File transfers whose bytes go wrong somewhere: flipped on the wire,
//! stored wrong by an earlier connection, changed at the sender after their
//! checksum was made. Each is either repaired (resumed) or refused, and a
//! refused file never reaches the node.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::link::transfer_id;
use super::tests::{addr, connected, node, pair, psk, write_file, Node};
use super::{Incoming, KnownDigest, PeerConfig, PeerError};
use crate::role::Role;
use crate::store::FileStamp;
use standby_testkit::ports::free_port;
use standby_testkit::proxy::Proxy;

const KEY: &str = "0123456789abcdef0123456789abcdef-key";

/// A TCP proxy that flips one byte of its first connection from the
/// dialler once `after` bytes have passed, then forwards faithfully.
async fn flipping_proxy(target: SocketAddr, after: u64) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let flipped = Arc::new(AtomicBool::new(false));
    let flag = flipped.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                continue;
            };
            let flip_at = if std::mem::take(&mut first) {
                after
            } else {
                u64::MAX
            };
            let flag = flag.clone();
            tokio::spawn(async move {
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.split();
                let up = async {
                    let passed = AtomicU64::new(0);
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = ri.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let start = passed.fetch_add(n as u64, Ordering::SeqCst);
                        if start <= flip_at && flip_at < start + n as u64 {
                            buf[(flip_at - start) as usize] ^= 0x01;
                            flag.store(true, Ordering::SeqCst);
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
    (port, flipped)
}

/// Files in `dir` whose names end with `suffix`.
fn staged(dir: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

/// Stage `prefix` as what an earlier connection stored of `name` (whose
/// checksum is `sha`).
fn stage_prefix(dir: &Path, sha: &str, name: &str, prefix: &[u8]) {
    let staging = dir.join("b-staging");
    std::fs::create_dir_all(&staging).unwrap();
    let id = transfer_id(sha, name);
    std::fs::write(staging.join(format!("incoming-{id:016x}.part")), prefix).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_flipped_on_the_wire_is_caught_and_the_transfer_resumes_to_the_right_file() {
    let dir = tempfile::tempdir().unwrap();
    let pb = free_port();
    let (proxy, flipped) = flipping_proxy(addr(pb), 3 * 1024 * 1024).await;
    let (a, mut b) = pair(dir.path(), KEY, KEY, pb, Some(proxy)).await;
    assert!(connected(&a).await);
    let src = dir.path().join("big.db");
    let sha = write_file(&src, 8 * 1024 * 1024);
    let receipt = a
        .link
        .send_file("file-copy", &src, "big.db", "t", None)
        .await
        .unwrap();
    assert!(flipped.load(Ordering::SeqCst), "the proxy flipped nothing");
    assert!(
        receipt.resumed_from > 0,
        "the broken frame was not where the transfer went on from: {receipt:?}"
    );
    assert_eq!(receipt.sha256, sha);
    let Some(Incoming::File { path, sha256, .. }) = b.incoming.recv().await else {
        panic!()
    };
    assert_eq!(sha256, sha);
    assert!(std::fs::read(&path).unwrap() == std::fs::read(&src).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_transfer_hashes_what_was_stored_before_and_ends_with_the_right_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("snap.db");
    let sha = write_file(&src, 5 * 1024 * 1024 + 99);
    let bytes = std::fs::read(&src).unwrap();
    stage_prefix(dir.path(), &sha, "snap.db", &bytes[..3 * 1024 * 1024]);
    let (a, mut b) = pair(dir.path(), KEY, KEY, free_port(), None).await;
    assert!(connected(&a).await);
    let known = KnownDigest {
        sha256: sha.clone(),
        stamp: FileStamp::of_path(&src).unwrap(),
    };
    let receipt = a
        .link
        .send_file("file-copy", &src, "snap.db", "t", Some(&known))
        .await
        .unwrap();
    assert_eq!(receipt.resumed_from, 3 * 1024 * 1024);
    assert_eq!(
        (receipt.bytes, receipt.sha256.as_str()),
        (bytes.len() as u64, sha.as_str())
    );
    let Some(Incoming::File { path, sha256, .. }) = b.incoming.recv().await else {
        panic!()
    };
    assert_eq!(sha256, sha);
    assert!(std::fs::read(&path).unwrap() == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_part_gone_bad_is_refused_and_nothing_reaches_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("snap.db");
    let sha = write_file(&src, 4 * 1024 * 1024);
    let mut prefix = std::fs::read(&src).unwrap()[..2 * 1024 * 1024].to_vec();
    prefix[1_000_000] ^= 0x40;
    stage_prefix(dir.path(), &sha, "snap.db", &prefix);
    let (a, mut b) = pair(dir.path(), KEY, KEY, free_port(), None).await;
    assert!(connected(&a).await);
    let err = a
        .link
        .send_file("file-copy", &src, "snap.db", "t", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PeerError::Refused(why) if why.contains("checksum mismatch")),
        "{err}"
    );
    assert!(
        b.incoming.try_recv().is_err(),
        "a refused file reached the node"
    );
    let staging = dir.path().join("b-staging");
    assert!(staged(&staging, ".done").is_empty());
    assert!(
        staged(&staging, ".part").is_empty(),
        "the bad part was kept"
    );
    // Sent again, from scratch this time, it arrives whole.
    let receipt = a
        .link
        .send_file("file-copy", &src, "snap.db", "t", None)
        .await
        .unwrap();
    assert_eq!(
        (receipt.resumed_from, receipt.sha256.as_str()),
        (0, sha.as_str())
    );
}

/// Send `src` to `b` with `known`; the file `b` got, if any.
async fn send_with(
    a: &Node,
    b: &mut Node,
    src: &Path,
    known: &KnownDigest,
) -> Result<String, PeerError> {
    let receipt = a
        .link
        .send_file("file-copy", src, "snap.db", "t", Some(known))
        .await?;
    let Some(Incoming::File { sha256, .. }) = b.incoming.recv().await else {
        panic!()
    };
    assert_eq!(sha256, receipt.sha256);
    Ok(sha256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_checksum_is_offered_only_while_the_file_keeps_its_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(dir.path(), KEY, KEY, free_port(), None).await;
    assert!(connected(&a).await);
    let src = dir.path().join("snap.db");
    let first = write_file(&src, 1024 * 1024);
    let known = KnownDigest {
        sha256: first.clone(),
        stamp: FileStamp::of_path(&src).unwrap(),
    };
    assert_eq!(send_with(&a, &mut b, &src, &known).await.unwrap(), first);

    // Rewritten since (a new stamp): the sender reads it for its checksum.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&src, &bytes).unwrap();
    let second = send_with(&a, &mut b, &src, &known).await.unwrap();
    assert_ne!(second, first);

    // Changed behind its stamp's back (modification time put back): the
    // offered checksum is stale, and the receiver refuses what it stored.
    let stamp = FileStamp::of_path(&src).unwrap();
    let mtime = std::fs::metadata(&src).unwrap().modified().unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&src, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert_eq!(FileStamp::of_path(&src).unwrap(), stamp);
    let stale = KnownDigest {
        sha256: second,
        stamp,
    };
    let err = send_with(&a, &mut b, &src, &stale).await.unwrap_err();
    assert!(matches!(err, PeerError::Refused(_)), "{err}");
    assert!(
        b.incoming.try_recv().is_err(),
        "a refused file reached the node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_coming_in_at_once_are_bounded_and_one_too_many_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 128 KiB/s, small chunks, a short queue: each file takes 32 s, and the
    // offers, queued behind few small chunks, all arrive well before.
    let pb = free_port();
    let proxy = Proxy::start_throttled(addr(pb), 128 << 10).await;
    let pa = free_port();
    let mut ca = PeerConfig::new(
        "a",
        addr(pa),
        "b",
        proxy.addr,
        psk(KEY),
        dir.path().join("a"),
    );
    let mut cb = PeerConfig::new("b", addr(pb), "a", addr(pa), psk(KEY), dir.path().join("b"));
    for c in [&mut ca, &mut cb] {
        c.chunk = 4 << 10;
        c.queue = 4;
        // The throttled link must not be taken for a dead one (a new
        // connection would count the files coming in afresh).
        c.dead_after = Duration::from_secs(60);
    }
    let a = node(ca, 1, Role::Active).await;
    let _b = node(cb, 1, Role::Standby).await;
    assert!(connected(&a).await);
    let mut sending = Vec::new();
    let mut data = vec![0x5au8; 4 << 20];
    for i in 0..9 {
        let src = dir.path().join(format!("f{i}.db"));
        data[0] = i as u8;
        std::fs::write(&src, &data).unwrap();
        let link = a.link.clone();
        sending.push(tokio::spawn(async move {
            link.send_file("file-copy", &src, &format!("f{i}.db"), "t", None)
                .await
        }));
    }
    let refused = tokio::time::timeout(Duration::from_secs(25), async {
        loop {
            if let Some(i) = sending.iter().position(|t| t.is_finished()) {
                return sending.remove(i).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("all nine stayed under way");
    assert!(
        matches!(&refused, Err(PeerError::Refused(_))),
        "the ninth file at once: {refused:?}"
    );
    assert!(
        sending.iter().all(|t| !t.is_finished()),
        "more than one was refused"
    );
    for t in sending {
        t.abort();
    }
}
