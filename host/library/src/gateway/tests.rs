//! The gateway in this process with device agents on real TCP on loopback:
//! the admin operations (server lists, log requests), and a gateway whose
//! lease runs out. (The device link with gateways as processes, faults as
//! signals, is in the end-to-end tests.)

use std::sync::Arc;
use std::time::Duration;

use standby_device::Agent;
use standby_testkit::device::{all_acked, config, endpoint, on_node, record, wait_on};
use standby_testkit::wait_for;

use super::{Gateway, GatewayConfig, ReplicatedMarks};
use crate::cluster::AckGate;
use crate::role::Role;
use crate::store::{Store, StoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations_read_and_push_server_lists_and_request_logs() {
    // Admin operations are methods of the gateway: it runs in this process here.
    let dir = tempfile::tempdir().unwrap();
    let gateway = |name: &str, epoch: u64| {
        let store = Arc::new(
            Store::open(
                dir.path().join(format!("{name}.db")),
                StoreOptions::default(),
            )
            .unwrap(),
        );
        let mut c = GatewayConfig::new(name);
        c.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        c.keepalive = Duration::from_millis(200);
        c.dead_link = Duration::from_millis(1_000);
        Gateway::new(c, store, Role::Active, epoch)
            .unwrap()
            .with_durability(Arc::new(ReplicatedMarks::default()))
    };
    let g1 = gateway("g1", 1);
    let g2 = gateway("g2", 1);
    g1.open().await.unwrap();
    g2.open().await.unwrap();
    let p1 = g1.local_addr().unwrap().port();
    let p2 = g2.local_addr().unwrap().port();
    let devices = dir.path().join("devices");
    let (agent, _) = Agent::start(config(&devices, 4, vec![endpoint(p1, 0)])).unwrap();
    wait_on(&agent, "g1", Duration::from_secs(10)).await;
    record(&agent, 10);
    all_acked(&agent, Duration::from_secs(10)).await;

    // Read the list and the current endpoint.
    let list = g1.server_list(4).await.unwrap();
    assert_eq!(list.endpoints.len(), 1);
    assert_eq!(list.current, Some(0));
    assert_eq!(g1.device(4).unwrap().endpoint, 0);

    // GET_LOG: the device uploads again everything after 0 (duplicates, stored once).
    let before = g1.stats();
    g1.request_log(4, 0, 0).await.unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || g1.stats().events_duplicate
            >= before.events_duplicate + 10)
        .await,
        "{:?}",
        g1.stats()
    );

    // Push a list without g1: the device moves to g2 and reports the new list.
    g1.push_server_list(4, vec![endpoint(p2, 0).to_wire()])
        .await
        .unwrap();
    wait_on(&agent, "g2", Duration::from_secs(10)).await;
    let list = g2.server_list(4).await.unwrap();
    assert_eq!(list.endpoints, vec![endpoint(p2, 0).to_wire()]);
    assert_eq!(agent.endpoints(), vec![endpoint(p2, 0)]);
    // An unknown device is an error naming it.
    assert!(g2
        .server_list(999)
        .await
        .unwrap_err()
        .to_string()
        .contains("999"));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_lease_runs_out_acknowledges_and_writes_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("biostar2.db");
    let store = Arc::new(Store::open(&db, StoreOptions::default()).unwrap());
    let mut c = GatewayConfig::new("g");
    c.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    c.keepalive = Duration::from_millis(200);
    c.dead_link = Duration::from_millis(1_000);
    let gate = Arc::new(AckGate::closed());
    // The lease keeper renewed once; nobody renews again.
    gate.open_until(std::time::Instant::now() + Duration::from_millis(4_000));
    let g = Gateway::with_lease_gate(c, store, Role::Active, 1, gate.clone()).unwrap();
    g.open().await.unwrap();
    let port = g.local_addr().unwrap().port();
    let devices = dir.path().join("devices");
    let (agent, _) = Agent::start(config(&devices, 9, vec![endpoint(port, 0)])).unwrap();
    wait_on(&agent, "g", Duration::from_secs(5)).await;
    record(&agent, 5);
    all_acked(&agent, Duration::from_secs(5)).await;
    let acked = agent.status().acked;
    // The deadline passes with nobody closing anything.
    let deadline = gate.last_deadline().unwrap();
    tokio::time::sleep(deadline.saturating_duration_since(std::time::Instant::now())).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!gate.is_open());
    let count = || {
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
            .query_row("SELECT count(*) FROM access_events", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
    };
    let stored = count();
    record(&agent, 5);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        agent.status().acked,
        acked,
        "acknowledged after the lease ran out"
    );
    assert_eq!(count(), stored, "written after the lease ran out");
    assert_ne!(
        on_node(&agent).as_deref(),
        Some("g"),
        "{:?}",
        agent.status()
    );
    agent.shutdown().await;
}
