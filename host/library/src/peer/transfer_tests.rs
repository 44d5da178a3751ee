//! File transfers whose bytes go wrong somewhere: flipped on the wire,
//! stored wrong by an earlier connection, changed at the sender after their
//! checksum was made. Each is either repaired (resumed) or refused, and a
//! refused file never reaches the node.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::fault_proxy::{fault_proxy, Fault};
use super::link::transfer_id;
use super::proto::{self, Frame, PeerMsg};
use super::session::{self, Ciphers};
use super::tests::{addr, connected, node, pair, psk, write_file, Node};
use super::{Incoming, KnownDigest, PeerConfig, PeerError};
use crate::role::Role;
use crate::store::FileStamp;
use standby_testkit::ports::free_port;

const KEY: &str = "0123456789abcdef0123456789abcdef-key";

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
    let (proxy, flipped) = fault_proxy(addr(pb), 3 * 1024 * 1024, Fault::Flip).await;
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

/// The other node, played by the test frame by frame over an authenticated
/// connection.
struct RawPeer {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    ciphers: Ciphers,
}

impl RawPeer {
    fn new(stream: TcpStream, ciphers: Ciphers) -> Self {
        let (rd, wr) = stream.into_split();
        Self { rd, wr, ciphers }
    }

    /// Dial the node at `to` as "a".
    async fn dial(to: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(to).await.unwrap();
        let (_, ciphers) = session::dial(&mut stream, &psk(KEY), "a", Some("b"))
            .await
            .unwrap();
        Self::new(stream, ciphers)
    }

    /// Send `msg` at epoch 1.
    async fn send(&mut self, msg: PeerMsg) {
        let frame = Frame { epoch: 1, msg };
        proto::write_frame(&mut self.wr, &mut self.ciphers.0, &frame)
            .await
            .unwrap();
    }

    /// The next frame from the node that is not about heartbeats.
    async fn next(&mut self) -> PeerMsg {
        loop {
            let read = proto::read_frame::<_, Frame>(&mut self.rd, &mut self.ciphers.1);
            let frame = tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .expect("the node said nothing for 10 s")
                .unwrap();
            match frame.msg {
                PeerMsg::Heartbeat { .. } | PeerMsg::HeartbeatAck { .. } => {}
                msg => return msg,
            }
        }
    }

    /// Offer `name` (`size` bytes, `sha256`) as transfer `id`; what the node
    /// has of it (`u64::MAX`: refused).
    async fn offer(&mut self, id: u64, name: &str, size: u64, sha256: &str) -> u64 {
        self.send(PeerMsg::Offer {
            id,
            plugin: "file-copy".into(),
            tag: "t".into(),
            name: name.into(),
            size,
            sha256: Some(sha256.into()),
        })
        .await;
        match self.next().await {
            PeerMsg::Resume { id: got, have } if got == id => have,
            other => panic!("the answer to offer {id}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_coming_in_at_once_are_bounded_and_one_too_many_is_refused() {
    // The test is node "a" and offers files frame by frame, each answered
    // before the next goes, so all nine are there at once however slow the
    // machine. (Nine real senders over a slow link would not be: a late
    // offer queues behind the earlier files' chunks, and the socket's send
    // buffer alone holds megabytes of them, half a minute at 128 KiB/s.)
    let dir = tempfile::tempdir().unwrap();
    let pb = free_port();
    let mut cb = PeerConfig::new(
        "b",
        addr(pb),
        "a",
        addr(free_port()),
        psk(KEY),
        dir.path().join("b"),
    );
    // The test sends no heartbeats.
    cb.dead_after = Duration::from_secs(60);
    let staging = cb.staging.clone();
    let mut b = node(cb, 1, Role::Standby).await;
    let mut a = RawPeer::dial(addr(pb)).await;
    let src = dir.path().join("f.db");
    let size = 4096;
    let sha = write_file(&src, size);
    let size = size as u64;
    let name = |id: u64| format!("f{id}.db");
    let part = |id: u64| format!("incoming-{id:016x}.part");

    // Eight at once are taken, each staged; the ninth is refused.
    for id in 1..=8 {
        assert_eq!(a.offer(id, &name(id), size, &sha).await, 0, "offer {id}");
    }
    assert_eq!(
        a.offer(9, &name(9), size, &sha).await,
        u64::MAX,
        "the ninth"
    );
    let mut parts = staged(&staging, ".part");
    parts.sort();
    assert_eq!(parts, (1..=8).map(part).collect::<Vec<_>>());

    // The bound is on files at once: one finished frees a place, taken by
    // the next offer, and the one after that is refused again.
    let data = std::fs::read(&src).unwrap();
    a.send(PeerMsg::Chunk {
        id: 1,
        offset: 0,
        data,
    })
    .await;
    loop {
        match a.next().await {
            PeerMsg::Resume { id: 1, have } if have <= size => {}
            PeerMsg::Receipt { id: 1, ok, .. } => {
                assert!(ok, "the first file was not stored whole");
                break;
            }
            other => panic!("while the first file finished: {other:?}"),
        }
    }
    let Some(Incoming::File { name: got, .. }) = b.incoming.recv().await else {
        panic!("the finished file did not reach the node")
    };
    assert_eq!(got, name(1));
    assert_eq!(a.offer(9, &name(9), size, &sha).await, 0, "offered again");
    assert_eq!(
        a.offer(10, &name(10), size, &sha).await,
        u64::MAX,
        "the tenth"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_offer_is_refused_fails_as_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // The test is node "b" and refuses the offer.
    let pb = free_port();
    let listener = TcpListener::bind(addr(pb)).await.unwrap();
    let mut ca = PeerConfig::new(
        "a",
        addr(free_port()),
        "b",
        addr(pb),
        psk(KEY),
        dir.path().join("a"),
    );
    // The test sends no heartbeats.
    ca.dead_after = Duration::from_secs(60);
    let a = node(ca, 1, Role::Active).await;
    let (mut stream, _) = listener.accept().await.unwrap();
    let (_, ciphers) = session::accept(&mut stream, &psk(KEY), "b", Some("a"))
        .await
        .unwrap();
    let mut b = RawPeer::new(stream, ciphers);
    let src = dir.path().join("f.db");
    write_file(&src, 4096);
    let link = a.link.clone();
    let sending =
        tokio::spawn(async move { link.send_file("file-copy", &src, "f.db", "t", None).await });
    let PeerMsg::Offer { id, .. } = b.next().await else {
        panic!("no offer")
    };
    b.send(PeerMsg::Resume { id, have: u64::MAX }).await;
    let sent = tokio::time::timeout(Duration::from_secs(5), sending)
        .await
        .expect("the refused send went on")
        .unwrap();
    assert!(
        matches!(&sent, Err(PeerError::Refused(why)) if why.contains("refused the offer")),
        "{sent:?}"
    );
}

#[test]
fn a_transfer_id_names_the_file_and_its_contents_and_nothing_else() {
    let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    // The same file under the same name resumes the same transfer.
    assert_eq!(
        transfer_id(sha, "biostar2-1.db"),
        transfer_id(sha, "biostar2-1.db")
    );
    // Equal contents under names of the same length are two transfers.
    assert_ne!(
        transfer_id(sha, "biostar2-1.db"),
        transfer_id(sha, "biostar2-2.db")
    );
    let other = "0f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    assert_ne!(
        transfer_id(sha, "biostar2-1.db"),
        transfer_id(other, "biostar2-1.db")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_during_a_slow_transfer_goes_ahead_of_the_files_queued_chunks() {
    // 12 MiB at 2 MiB/s: about 6 s. Were messages queued behind chunks, the
    // whole file (read from the page cache at once) would be queued before
    // the message and reach the peer first.
    let dir = tempfile::tempdir().unwrap();
    let pb = free_port();
    let (proxy, _) = fault_proxy(addr(pb), 0, Fault::Slow(2 << 20)).await;
    let (a, mut b) = pair(dir.path(), KEY, KEY, pb, Some(proxy)).await;
    assert!(connected(&a).await);
    let src = dir.path().join("big.db");
    let sha = write_file(&src, 12 << 20);
    let file = a.link.send_file("file-copy", &src, "big.db", "t", None);
    let message = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.link
            .send_message("file-copy", "installed", b"7".to_vec())
            .await
    };
    let (receipt, acked) = tokio::join!(file, message);
    acked.unwrap();
    assert_eq!(receipt.unwrap().sha256, sha);
    match b.incoming.recv().await {
        Some(Incoming::Message { kind, body, .. }) => {
            assert_eq!((kind.as_str(), &body[..]), ("installed", &b"7"[..]));
        }
        other => panic!("the file came before the message: {other:?}"),
    }
    let Some(Incoming::File { path, sha256, .. }) = b.incoming.recv().await else {
        panic!("no file")
    };
    assert_eq!(sha256, sha);
    assert!(std::fs::read(&path).unwrap() == std::fs::read(&src).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_snapshot_streams_over_a_cut_link_and_arrives_as_the_pinned_state() {
    use crate::store::{integrity_check, Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("live.db"), StoreOptions::default()).unwrap();
    let live = store.path().to_path_buf();
    let rows = |path: &Path| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    };
    {
        let mut conn = rusqlite::Connection::open(&live).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
            .unwrap();
        let tx = conn.transaction().unwrap();
        for _ in 0..2_000 {
            tx.execute("INSERT INTO t (data) VALUES (randomblob(4096))", [])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let pb = free_port();
    let (proxy, cut) = fault_proxy(addr(pb), 3 << 20, Fault::Cut).await;
    let (a, mut b) = pair(dir.path(), KEY, KEY, pb, Some(proxy)).await;
    assert!(connected(&a).await);

    let pinned = store.pin_snapshot().unwrap().expect("a WAL database pins");
    // Writers go on while it is read (into the WAL, checkpointing as usual).
    let writer = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&live).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        for _ in 0..50 {
            conn.execute("INSERT INTO t (data) VALUES (randomblob(4096))", [])
                .unwrap();
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .unwrap();
        }
    });
    let (receipt, sent) = a
        .link
        .send_snapshot("cdc", pinned, "seed.db", "seed")
        .await
        .unwrap();
    writer.join().unwrap();
    assert!(cut.load(Ordering::SeqCst), "the proxy cut nothing");
    assert!(receipt.resumed_from > 0, "{receipt:?}");
    assert_eq!(receipt.sha256, sent);
    let Some(Incoming::File { path, sha256, .. }) = b.incoming.recv().await else {
        panic!("no file")
    };
    assert_eq!(sha256, sent);
    // A sound standalone database in the state it was pinned in.
    assert!(integrity_check(&path).unwrap().ok);
    assert_eq!(rows(&path), 2_000);
    assert_eq!(rows(store.path()), 2_050);
}
