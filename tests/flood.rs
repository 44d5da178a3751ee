//! Floods of connections that never authenticate, against the witness and a
//! node's peer port: the listener stays within its bounds and the cluster
//! does not notice.

use std::net::TcpStream;
use std::time::Duration;

use standby_lab::cluster::{Cluster, Which};
use standby_lab::process::open_files;

/// `n` connections to `addr`, held open and silent.
fn flood(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_floods_of_the_witness_and_the_peer_port_are_bounded_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(&crate::standby(), dir.path(), true);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start_active_then_standby();
    let a_before = c.status(Which::A).unwrap();
    let witness_pid = c.witness_pid().unwrap();
    let a_pid = c.pid(Which::A).unwrap();
    let (witness_files, a_files) = (open_files(witness_pid), open_files(a_pid));

    let held_w = flood(&witness, 400);
    let held_p = flood(&format!("127.0.0.1:{}", c.peer_ports.0), 400);
    assert!(
        held_w.len() > 300 && held_p.len() > 300,
        "the floods connected"
    );
    // Inside the handshake timeout (3 s), while every flooding connection
    // would still be held if it had been taken.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w_during = open_files(witness_pid);
    assert!(
        w_during <= witness_files + 32 + 8,
        "400 idle connections took the witness from {witness_files} to {w_during} open files"
    );
    let a_during = open_files(a_pid);
    assert!(
        a_during <= a_files + 16 + 8,
        "400 idle connections to its peer port took A from {a_files} to {a_during} open files"
    );
    // Longer than a lease: the active node must renew through the flood.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a = c.status(Which::A).unwrap();
    assert_eq!(a["role"], "active", "{a}");
    assert_eq!(a["acknowledging"], true, "{a}");
    assert_eq!(
        a["transitions"], a_before["transitions"],
        "A changed role during the flood"
    );
    let b = c.status(Which::B).unwrap();
    assert_eq!(b["role"], "standby", "{b}");
    assert_eq!(b["peer"]["connected"], true, "{b}");
    drop((held_w, held_p));
}
