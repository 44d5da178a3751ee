//! The witness on real TCP on loopback, nodes as its clients: leases, epochs
//! on disk, a restarted witness honouring the recorded lease, refusal of a
//! wrong key, an isolated active node that stops acknowledging before
//! another node gets the lease, and an active node that keeps its lease
//! through a jittery link to the witness.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use standby_testkit::proxy::Proxy;

use super::{LeaseError, Witness, WitnessClient, WitnessConfig, WitnessState};
use crate::peer::Psk;

const KEY: &str = "witness-test-key-0123456789abcdef0123";

/// A witness serving on a fresh loopback port, its state in `dir/data`.
struct WitnessProc {
    witness: Witness,
    addr: SocketAddr,
    dir: PathBuf,
}

impl WitnessProc {
    async fn start(dir: &Path, max_ttl_ms: u64) -> Self {
        let mut config = WitnessConfig::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            dir.join("data"),
            Psk::new(KEY.as_bytes().to_vec()).unwrap(),
        );
        config.max_ttl = Duration::from_millis(max_ttl_ms);
        let witness = Witness::start(config).await.unwrap();
        let addr = witness.local_addr();
        Self {
            witness,
            addr,
            dir: dir.to_path_buf(),
        }
    }

    fn state_on_disk(&self) -> WitnessState {
        serde_json::from_slice(&std::fs::read(self.dir.join("data/witness.json")).unwrap()).unwrap()
    }
}

fn client(w: &WitnessProc, node: &str) -> WitnessClient {
    WitnessClient::new(
        w.addr,
        Psk::new(KEY.as_bytes().to_vec()).unwrap(),
        node,
        Duration::from_secs(2),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_at_a_time_holds_the_lease_and_each_grant_raises_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let w = WitnessProc::start(dir.path(), 5_000).await;
    let (a, b) = (client(&w, "a"), client(&w, "b"));
    let ttl = Duration::from_millis(1_000);
    let la = a.acquire(ttl).await.unwrap();
    assert_eq!(la.epoch, 1);
    // The epoch is on disk by the time the grant arrives.
    assert_eq!(
        w.state_on_disk(),
        WitnessState {
            epoch: 1,
            holder: Some("a".into())
        }
    );
    // b is denied while a holds it, and told who does.
    match b.acquire(ttl).await {
        Err(LeaseError::Denied { holder, epoch, .. }) => {
            assert_eq!((holder.as_deref(), epoch), (Some("a"), 1));
        }
        other => panic!("{other:?}"),
    }
    // Renewing keeps a's lease past its first end.
    let mut lease = la;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        lease = a.renew(&lease, ttl).await.unwrap();
    }
    assert!(b.acquire(ttl).await.is_err());
    // a stops renewing: once its lease has run out, b gets a higher epoch,
    // and a's renewal is refused as superseded.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(!lease.valid(Duration::ZERO));
    let lb = b.acquire(ttl).await.unwrap();
    assert_eq!(lb.epoch, 2);
    match a.renew(&lease, ttl).await {
        Err(LeaseError::Denied { reason, .. }) => {
            assert!(reason.contains("superseded"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A released lease can be taken at once.
    b.release(&lb).await.unwrap();
    assert_eq!(a.acquire(ttl).await.unwrap().epoch, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_witness_keeps_its_epoch_and_honours_the_recorded_lease() {
    let dir = tempfile::tempdir().unwrap();
    let w = WitnessProc::start(dir.path(), 3_000).await;
    let a = client(&w, "a");
    let lease = a.acquire(Duration::from_millis(1_000)).await.unwrap();
    assert_eq!(lease.epoch, 1);
    // A restart: the old witness is gone, a new one starts on its data.
    drop(w.witness);
    let w = WitnessProc::start(dir.path(), 3_000).await;
    let b = client(&w, "b");
    let view = b.query().await.unwrap();
    assert_eq!(view.epoch, 1);
    assert_eq!(view.holder.as_deref(), Some("a"));
    // The restarted witness cannot know how much of a's lease is left: it
    // holds it for the longest lease it grants.
    assert!(matches!(
        b.acquire(Duration::from_millis(500)).await,
        Err(LeaseError::Denied { .. })
    ));
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let lb = b.acquire(Duration::from_millis(500)).await.unwrap();
    assert_eq!(lb.epoch, 2, "an epoch is never granted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_key_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = WitnessProc::start(dir.path(), 5_000).await;
    let stranger = WitnessClient::new(
        w.addr,
        Psk::new(b"another-key-0123456789abcdef0123456789".to_vec()).unwrap(),
        "a",
        Duration::from_secs(2),
    );
    match stranger.acquire(Duration::from_millis(500)).await {
        Err(LeaseError::Unreachable { source, .. }) => {
            let reason = source.to_string();
            assert!(reason.contains("shared key"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client(&w, "b").query().await.unwrap().epoch, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_with_an_unreadable_state_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/witness.json"), b"{ not json").unwrap();
    let config = WitnessConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        dir.path().join("data"),
        Psk::new(KEY.as_bytes().to_vec()).unwrap(),
    );
    let err = Witness::start(config).await.unwrap_err().to_string();
    assert!(
        err.contains("witness.json") && err.contains("refusing to guess an epoch"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_active_stops_acknowledging_before_another_node_gets_the_lease() {
    use super::{hold, AckGate, LeaseEnd, LeaseSettings};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let w = WitnessProc::start(dir.path(), 5_000).await;
    // a reaches the witness through a link the test can cut; b directly.
    let link = Proxy::start(w.addr).await;
    let a = Arc::new(WitnessClient::new(
        link.addr,
        Psk::new(KEY.as_bytes().to_vec()).unwrap(),
        "a",
        Duration::from_secs(2),
    ));
    let b = client(&w, "b");
    let settings = LeaseSettings::default();
    let lease = a.acquire(settings.ttl).await.unwrap();
    let gate = Arc::new(AckGate::closed());
    let (_task, ended) = hold(a.clone(), lease, settings, gate.clone());
    // Renewals keep the gate open well past one lease length.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(gate.is_open());
    }
    assert!(b.acquire(settings.ttl).await.is_err());
    link.cut();
    let cut_at = tokio::time::Instant::now();
    let watch_gate = {
        let gate = gate.clone();
        tokio::spawn(async move {
            while gate.is_open() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::Instant::now()
        })
    };
    let b_lease = loop {
        match b.acquire(settings.ttl).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let b_granted = tokio::time::Instant::now();
    let a_closed = watch_gate.await.unwrap();
    // The gate's own deadline, not when a polling task noticed it.
    let a_stopped = tokio::time::Instant::from_std(gate.last_deadline().unwrap());
    assert!(
        a_stopped < b_granted,
        "a could still acknowledge {:?} after b got the lease",
        a_stopped - b_granted
    );
    assert!(b_lease.epoch > lease.epoch);
    assert!(matches!(ended.await.unwrap(), LeaseEnd::Expired { .. }));
    eprintln!(
        "cut -> a stops: {:?} (noticed {:?}); cut -> b granted: {:?}",
        a_stopped - cut_at,
        a_closed - cut_at,
        b_granted - cut_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_keeps_its_lease_through_150_ms_of_jitter_each_way_on_the_witness_link() {
    use super::{hold, AckGate, LeaseSettings};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let w = WitnessProc::start(dir.path(), 5_000).await;
    // Every frame each way held back 0-150 ms: answers up to 300 ms late,
    // against a gate that closes 400 ms after the last answered renewal
    // went out (the defaults). Renewals that waited for the answer before
    // them would leave 50 ms + two answers' worth, and close it.
    let link = Proxy::start_with_jitter(w.addr, Duration::from_millis(150)).await;
    let a = Arc::new(WitnessClient::new(
        link.addr,
        Psk::new(KEY.as_bytes().to_vec()).unwrap(),
        "a",
        Duration::from_secs(2),
    ));
    let settings = LeaseSettings::default();
    // Granted for 2 s on a direct link, so that the keeper's first dial and
    // handshake through the jitter (several round trips) fit; every renewal
    // after it is the default 500 ms, through the jitter.
    let lease = client(&w, "a")
        .acquire(Duration::from_secs(2))
        .await
        .unwrap();
    let gate = Arc::new(AckGate::closed());
    let (_keeper, mut ended) = hold(a.clone(), lease, settings, gate.clone());
    // The keeper opens the gate on its own thread.
    let opened_by = tokio::time::Instant::now() + Duration::from_secs(1);
    while !gate.is_open() {
        assert!(
            tokio::time::Instant::now() < opened_by,
            "the gate never opened"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(7);
    let mut checks = 0u32;
    while tokio::time::Instant::now() < until {
        assert!(
            gate.is_open(),
            "the gate closed after {checks} checks under jitter"
        );
        assert!(ended.try_recv().is_err(), "the lease ended under jitter");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And b still cannot take it.
    let b = client(&w, "b");
    assert!(matches!(
        b.acquire(settings.ttl).await,
        Err(LeaseError::Denied { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_nothing_from_the_witness_to_check_a_guess_against() {
    let dir = tempfile::tempdir().unwrap();
    let w = WitnessProc::start(dir.path(), 5_000).await;
    let guess = Psk::new(b"another-key-0123456789abcdef0123456789".to_vec()).unwrap();
    let answers = crate::peer::session::what_the_listener_answers_a_guess(w.addr, &guess).await;
    assert_eq!(answers[0].len(), 33, "a SPAKE2 share");
    assert!(
        answers[1].is_empty(),
        "a refusal, never the witness's proof"
    );
    assert!(answers[2].is_empty(), "then the connection closes");
    let right = Psk::new(KEY.as_bytes().to_vec()).unwrap();
    let answers = crate::peer::session::what_the_listener_answers_a_guess(w.addr, &right).await;
    assert_eq!(
        answers[1].len(),
        32,
        "the right key gets the witness's proof"
    );
}
