//! The device link over real TCP on loopback: servers are `standby run`
//! processes (faults are SIGKILL and SIGSTOP), devices are agents in this
//! process. Loss is judged by the independent audit check (devices' own logs
//! against the server's database opened read-only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::raw_device::{encode, exchange_raw, hello_frame};
use standby_device::agent::{Agent, Endpoint, FailBack, LinkPhase};
use standby_device::codec::Message;
use standby_device::frame::{command, event_code};
use standby_device::messages;
use standby_lab::audit;
use standby_lab::fixtures::wait_for;
use standby_lab::ports::free_port;
use standby_lab::server::{Server, ServerSpec};
use standby_testkit::device::{all_acked, config, endpoint, on_node, record, wait_on};

/// Every event is acknowledged as durable (the device keeps none).
async fn all_durable(agent: &Agent, limit: Duration) {
    let ok = wait_for(limit, || {
        let s = agent.status();
        s.link == LinkPhase::Connected && s.durable >= s.last_seq && s.pending == 0
    })
    .await;
    assert!(ok, "events not acknowledged: {:?}", agent.status());
}

/// Every entry of every device log is in the database exactly once with its hash.
fn assert_nothing_lost(devices: &Path, db: &Path) -> audit::AuditReport {
    let r = audit::check(devices, db).unwrap();
    assert!(r.entries > 0, "no entries checked");
    assert_eq!(r.missing, 0, "missing: {:?}", r.missing_examples);
    assert_eq!(r.mismatched, 0);
    assert_eq!(r.duplicate_entries, 0);
    assert_eq!(r.found, r.entries);
    r
}

#[derive(serde::Deserialize)]
struct LinkEvent {
    #[allow(dead_code)]
    endpoint: String,
    node: String,
    reason: String,
}

/// The link events (code, node, reason) a database holds for a device, in order.
fn link_events(db: &Path, device: u32) -> Vec<(u16, String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT event_code, payload FROM access_events WHERE device_id = ?1 AND event_code IN (?2, ?3) ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map(
            rusqlite::params![
                device,
                event_code::TCP_CONNECTED,
                event_code::TCP_DISCONNECTED
            ],
            |r| Ok((r.get::<_, u16>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )
        .unwrap();
    rows.map(|r| {
        let (code, payload) = r.unwrap();
        let e: LinkEvent = rmp_serde::from_slice(&payload).unwrap();
        (code, e.node, e.reason)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_is_detected_by_keepalive_and_the_device_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Server::start(
        &crate::standby(),
        ServerSpec::new("a", 1),
        &dir.path().join("a"),
    );
    let b = Server::start(
        &crate::standby(),
        ServerSpec::new("b", 1),
        &dir.path().join("b"),
    );
    let devices = dir.path().join("devices");
    let (agent, _) = Agent::start(config(
        &devices,
        1,
        vec![endpoint(a.spec.port, 0), endpoint(b.spec.port, 1)],
    ))
    .unwrap();
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    record(&agent, 5);
    all_acked(&agent, Duration::from_secs(10)).await;

    // SIGSTOP: the socket stays open; only missing keep-alive replies tell.
    a.hang();
    wait_on(&agent, "b", Duration::from_secs(15)).await;
    record(&agent, 5);
    all_acked(&agent, Duration::from_secs(10)).await;
    a.resume();

    // The device's own disconnect event, uploaded to b, says why.
    let events = link_events(&b.db(), 1);
    let dis = events
        .iter()
        .find(|(code, node, _)| *code == event_code::TCP_DISCONNECTED && node == "a")
        .expect("a disconnect event from a");
    assert!(dis.2.contains("dead link"), "reason: {}", dis.2);
    // Every event is in a or b.
    let ra = audit::check(&devices, &a.db()).unwrap();
    let rb = audit::check(&devices, &b.db()).unwrap();
    assert_eq!(ra.found + rb.found, ra.entries, "a: {ra:?} b: {rb:?}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_dial_in_priority_order_ips_before_names() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(
        &crate::standby(),
        ServerSpec::new("a", 1),
        &dir.path().join("a"),
    );
    let b = Server::start(
        &crate::standby(),
        ServerSpec::new("b", 1),
        &dir.path().join("b"),
    );
    let devices = dir.path().join("devices");
    // Listed b first: b wins.
    let (one, _) = Agent::start(config(
        &devices,
        1,
        vec![endpoint(b.spec.port, 0), endpoint(a.spec.port, 1)],
    ))
    .unwrap();
    // Same priority, a name listed before an IP: the IP wins.
    let name = Endpoint::parse(&format!("localhost:{}", b.spec.port), 0).unwrap();
    let (two, _) = Agent::start(config(&devices, 2, vec![name, endpoint(a.spec.port, 0)])).unwrap();
    wait_on(&one, "b", Duration::from_secs(10)).await;
    wait_on(&two, "a", Duration::from_secs(10)).await;
    assert_eq!(two.status().endpoint, Some(0));
    assert!(two
        .status()
        .endpoint_addr
        .unwrap()
        .starts_with("127.0.0.1:"));
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_sends_devices_to_the_second_endpoint_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Server::start(
        &crate::standby(),
        ServerSpec::new("a", 1),
        &dir.path().join("a"),
    );
    let b = Server::start(
        &crate::standby(),
        ServerSpec::new("b", 1),
        &dir.path().join("b"),
    );
    let devices = dir.path().join("devices");
    let (agent, _) = Agent::start(config(
        &devices,
        1,
        vec![endpoint(a.spec.port, 0), endpoint(b.spec.port, 1)],
    ))
    .unwrap();
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    record(&agent, 10);
    all_acked(&agent, Duration::from_secs(10)).await;
    a.kill();
    // Events while no server is up are kept and delivered later.
    record(&agent, 10);
    wait_on(&agent, "b", Duration::from_secs(10)).await;
    all_acked(&agent, Duration::from_secs(10)).await;
    // b holds none of a's events, but the device's durable floor accounts for
    // them: everything is durable and nothing is kept.
    all_durable(&agent, Duration::from_secs(10)).await;
    let ra = audit::check(&devices, &a.db()).unwrap();
    let rb = audit::check(&devices, &b.db()).unwrap();
    assert_eq!(ra.found + rb.found, ra.entries, "a: {ra:?} b: {rb:?}");
    assert!(rb.found >= 10);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_back_waits_for_the_hold_down() {
    let dir = tempfile::tempdir().unwrap();
    let a_spec = ServerSpec::new("a", 1);
    let b = Server::start(
        &crate::standby(),
        ServerSpec::new("b", 1),
        &dir.path().join("b"),
    );
    let devices = dir.path().join("devices");
    let mut c = config(
        &devices,
        1,
        vec![endpoint(a_spec.port, 0), endpoint(b.spec.port, 1)],
    );
    let hold = Duration::from_millis(2_000);
    c.fail_back = FailBack::Return {
        hold_down: hold,
        probe_every: Duration::from_millis(200),
    };
    let (agent, _) = Agent::start(c).unwrap();
    wait_on(&agent, "b", Duration::from_secs(10)).await;
    let _a = Server::start(&crate::standby(), a_spec, &dir.path().join("a"));
    let up = Instant::now();
    // Not before the hold-down...
    while up.elapsed() < hold - Duration::from_millis(300) {
        assert_eq!(
            on_node(&agent).as_deref(),
            Some("b"),
            "failed back after {:?}",
            up.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...but after it.
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    assert!(up.elapsed() >= hold);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_recovers_events_the_new_server_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    // a acknowledges but never says events are durable at DR: devices keep them.
    let mut a_spec = ServerSpec::new("a", 1);
    a_spec.durable_ack = "replication";
    let mut a = Server::start(&crate::standby(), a_spec, &dir.path().join("a"));
    let devices = dir.path().join("devices");
    let b_spec = ServerSpec::new("b", 2);
    let (agent, _) = Agent::start(config(
        &devices,
        1,
        vec![endpoint(a.spec.port, 0), endpoint(b_spec.port, 1)],
    ))
    .unwrap();
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    record(&agent, 50);
    all_acked(&agent, Duration::from_secs(10)).await;
    assert!(
        agent.status().pending >= 50,
        "events were forgotten before they were durable"
    );
    a.kill();
    // b starts from an empty database (as a DR copy that lacks everything).
    let b = Server::start(&crate::standby(), b_spec, &dir.path().join("b"));
    wait_on(&agent, "b", Duration::from_secs(10)).await;
    all_acked(&agent, Duration::from_secs(10)).await;
    let r = assert_nothing_lost(&devices, &b.db());
    assert_eq!(r.unknown_rows, 0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_device_starts_a_new_incarnation_and_loses_or_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(
        &crate::standby(),
        ServerSpec::new("a", 1),
        &dir.path().join("a"),
    );
    let devices = dir.path().join("devices");
    let c = config(&devices, 9, vec![endpoint(a.spec.port, 0)]);
    let (agent, _) = Agent::start(c.clone()).unwrap();
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    record(&agent, 20);
    all_acked(&agent, Duration::from_secs(10)).await;
    let first = agent.status().incarnation;
    agent.shutdown().await;

    // A restart keeps the incarnation and continues the numbering.
    let (agent, _) = Agent::start(c.clone()).unwrap();
    assert_eq!(agent.status().incarnation, first);
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    record(&agent, 5);
    all_acked(&agent, Duration::from_secs(10)).await;
    agent.shutdown().await;

    // A reset (log wiped) starts a new incarnation from sequence 1.
    std::fs::remove_file(devices.join("9.log")).unwrap();
    let (agent, opened) = Agent::start(c).unwrap();
    assert_eq!(opened, standby_device::agent::Opened::New);
    let second = agent.status().incarnation;
    assert_ne!(second, first);
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    record(&agent, 7);
    all_acked(&agent, Duration::from_secs(10)).await;
    agent.shutdown().await;

    let r = assert_nothing_lost(&devices, &a.db());
    assert_eq!(
        r.unknown_rows, 0,
        "rows in the database that no device logged"
    );
    let conn =
        rusqlite::Connection::open_with_flags(a.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let incarnations: i64 = conn
        .query_row(
            "SELECT count(DISTINCT incarnation) FROM access_events WHERE device_id = 9",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(incarnations, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_presenting_a_lower_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Server::start(
        &crate::standby(),
        ServerSpec::new("a", 5),
        &dir.path().join("a"),
    );
    let mut b_spec = ServerSpec::new("b", 3);
    let mut b = Server::start(&crate::standby(), b_spec.clone(), &dir.path().join("b"));
    let devices = dir.path().join("devices");
    let (agent, _) = Agent::start(config(
        &devices,
        1,
        vec![endpoint(a.spec.port, 0), endpoint(b.spec.port, 1)],
    ))
    .unwrap();
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    assert_eq!(agent.status().max_epoch, 5);
    a.kill();
    let refused = wait_for(Duration::from_secs(10), || {
        agent.status().refused_lower_epoch >= 2
    })
    .await;
    assert!(refused, "{:?}", agent.status());
    assert_eq!(
        on_node(&agent),
        None,
        "connected to a server with a lower epoch"
    );
    // The same server at a higher epoch is accepted.
    b.kill();
    b_spec.epoch = 6;
    let _b = Server::start(&crate::standby(), b_spec, &dir.path().join("b"));
    wait_on(&agent, "b", Duration::from_secs(10)).await;
    assert_eq!(agent.status().max_epoch, 6);
    agent.shutdown().await;
    // A restarted device remembers the highest epoch it accepted.
    let (agent, _) = Agent::start(config(&devices, 1, vec![endpoint(a.spec.port, 0)])).unwrap();
    assert_eq!(agent.status().max_epoch, 6);
    agent.shutdown().await;
}

fn test_ca(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (ca_file, cert_file, key_file) = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca_file, cert_file, key_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca_connects_and_a_wrong_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(dir.path(), "good");
    let (other_ca, _, _) = test_ca(dir.path(), "other");
    let tls_port = free_port();
    let mut spec = ServerSpec::new("a", 1);
    spec.tls = Some((tls_port, cert, key));
    let a = Server::start(&crate::standby(), spec, &dir.path().join("a"));
    let tls_endpoint = Endpoint::parse(&format!("127.0.0.1:{tls_port}/tls"), 0).unwrap();
    let devices = dir.path().join("devices");

    let mut good = config(&devices, 1, vec![tls_endpoint.clone()]);
    good.tls = Some(standby_device::tls::client_config(&ca).unwrap());
    let (good, _) = Agent::start(good).unwrap();
    wait_on(&good, "a", Duration::from_secs(10)).await;
    record(&good, 5);
    all_acked(&good, Duration::from_secs(10)).await;

    let mut bad = config(&devices, 2, vec![tls_endpoint]);
    bad.tls = Some(standby_device::tls::client_config(&other_ca).unwrap());
    let (bad, _) = Agent::start(bad).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        bad.status().connects,
        0,
        "connected to a server whose certificate it does not trust"
    );
    assert!(
        a.log_text().contains("TLS handshake failed") || a.log_text().contains("handshake"),
        "{}",
        a.log_text()
    );
    good.shutdown().await;
    bad.shutdown().await;
}

/// Send raw bytes on a new connection; true if the server closed it.
fn server_closes(addr: std::net::SocketAddr, bytes: &[u8], half_close: bool) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if started.elapsed() > Duration::from_secs(5) {
            return false;
        }
    }
}

fn resum(frame: &mut [u8]) {
    let sum = crc32c::crc32c_append(crc32c::crc32c(&frame[8..36]), &frame[36..]);
    frame[4..8].copy_from_slice(&sum.to_le_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_malformed_frame_class_closes_only_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(
        &crate::standby(),
        ServerSpec::new("a", 1),
        &dir.path().join("a"),
    );
    let devices = dir.path().join("devices");
    let (agent, _) = Agent::start(config(&devices, 1, vec![endpoint(a.spec.port, 0)])).unwrap();
    wait_on(&agent, "a", Duration::from_secs(10)).await;

    let ka = encode(Message::request(
        77,
        command::KEEP_ALIVE,
        1,
        b"abc".to_vec(),
    ));
    let mut bad_start = ka.clone();
    bad_start[0..4].copy_from_slice(b"GET ");
    let mut bad_sum = ka.clone();
    bad_sum[37] ^= 0xff;
    let mut too_large = ka.clone();
    too_large[24..28].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let truncated = ka[..20].to_vec();
    let mut unknown = ka.clone();
    unknown[14..16].copy_from_slice(&0x7e7eu16.to_le_bytes());
    resum(&mut unknown);
    let mut version = ka.clone();
    version[12] = 9;
    resum(&mut version);

    let cases: [(&str, Vec<u8>, bool, &str); 6] = [
        ("bad start code", bad_start, false, "bad start code"),
        ("bad checksum", bad_sum, false, "bad checksum"),
        (
            "payload over the maximum",
            too_large,
            false,
            "over the maximum",
        ),
        ("truncated frame", truncated, true, "truncated packet"),
        ("unknown command", unknown, false, "unknown command 0x7e7e"),
        (
            "wrong protocol version",
            version,
            false,
            "protocol version 9 is not supported",
        ),
    ];
    for (name, bytes, half_close, logged) in cases {
        // As the first message, and after a valid handshake.
        for after_hello in [false, true] {
            let mut raw = if after_hello {
                hello_frame(77)
            } else {
                Vec::new()
            };
            raw.extend_from_slice(&bytes);
            assert!(
                server_closes(a.spec.addr(), &raw, half_close),
                "{name}: connection not closed"
            );
        }
        assert!(
            standby_lab::fixtures::wait_until(Duration::from_secs(5), || a
                .log_text()
                .contains(logged)),
            "{name}: the server did not log `{logged}`"
        );
        // The good device is untouched and its events still get through.
        record(&agent, 1);
        all_acked(&agent, Duration::from_secs(5)).await;
    }
    let s = agent.status();
    assert_eq!(
        s.disconnects, 0,
        "the good device's link was disturbed: {s:?}"
    );
    assert_nothing_lost(&devices, &a.db());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_endpoint_follows_its_dns_record_to_the_new_server() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bind) =
        standby_lab::bind::Bind::start(&dir.path().join("bind"), &[("biostar", "127.0.0.2")])
    else {
        return;
    };
    // Two servers on the same port at different loopback addresses: only
    // the name's record says which one the device should dial.
    let mut spec_a = ServerSpec::new("a", 1);
    spec_a.ip = [127, 0, 0, 2];
    let mut spec_b = ServerSpec::new("b", 1);
    spec_b.ip = [127, 0, 0, 3];
    spec_b.port = spec_a.port;
    let mut a = Server::start(&crate::standby(), spec_a, &dir.path().join("a"));
    let _b = Server::start(&crate::standby(), spec_b, &dir.path().join("b"));
    let devices = dir.path().join("devices");
    let name = Endpoint::parse(&format!("biostar.site.test:{}", a.spec.port), 0).unwrap();
    let mut c = config(&devices, 1, vec![name]);
    c.resolver = standby_device::agent::DnsResolver::new(bind.addr);
    let (agent, _) = Agent::start(c).unwrap();
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    record(&agent, 5);
    all_acked(&agent, Duration::from_secs(10)).await;
    // The record moves (TTL 1 s), then the old server dies: the device asks
    // the DNS server again on its next attempt and lands on b.
    bind.set_a("biostar", "127.0.0.3");
    assert_eq!(
        bind.query("biostar.site.test").as_deref(),
        Some("127.0.0.3")
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    a.kill();
    record(&agent, 5);
    wait_on(&agent, "b", Duration::from_secs(15)).await;
    all_acked(&agent, Duration::from_secs(10)).await;
    // b listens only on 127.0.0.3: being on b means the new record was used.
    assert_eq!(agent.status().endpoint, Some(0));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_an_oversized_payload_is_refused_and_nothing_of_its_batch_is_stored() {
    // The finding: one connection grew the database by 102 MiB in 1.2 s
    // with 1 MiB event payloads.
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(
        &crate::standby(),
        ServerSpec::new("a", 1),
        &dir.path().join("a"),
    );
    let event = |seq: u64, bytes: usize| messages::Event {
        seq,
        code: event_code::ACCESS_GRANTED,
        user_id: Some("u1".into()),
        occurred_at_ms: 1,
        payload: vec![0x42; bytes],
    };
    let batch = |events: Vec<messages::Event>| {
        encode(Message::request(
            77,
            command::NOTIFY_EVENT,
            2,
            messages::encode(&messages::Events {
                incarnation: 1,
                events,
            }),
        ))
    };
    let mut raw = hello_frame(77);
    raw.extend_from_slice(&batch(vec![event(1, 100), event(2, 64 << 10)]));
    let replies = exchange_raw(a.spec.addr(), &raw, 2);
    assert_eq!(replies.len(), 2, "{replies:?}");
    let refused = &replies[1];
    assert_eq!(refused.code, standby_device::frame::status::BAD_REQUEST);
    let why: messages::Refusal = messages::decode("refusal", &refused.payload).unwrap();
    assert!(
        why.reason.contains("event 2") && why.reason.contains("max_event_payload"),
        "{}",
        why.reason
    );
    // The same batch with the event within the limit is stored whole.
    let mut raw = hello_frame(77);
    raw.extend_from_slice(&batch(vec![event(1, 100), event(2, 4 << 10)]));
    let replies = exchange_raw(a.spec.addr(), &raw, 2);
    assert_eq!(
        replies[1].code,
        standby_device::frame::status::OK,
        "{replies:?}"
    );
    let conn =
        rusqlite::Connection::open_with_flags(a.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let largest: i64 = conn
        .query_row(
            "SELECT max(length(payload)) FROM access_events WHERE device_id = 77",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(largest, 4 << 10, "only the accepted batch was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_event_rate_is_told_to_wait_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new("a", 1);
    spec.devices_extra = "max_event_rate = 100\nevent_burst = 100".into();
    let a = Server::start(&crate::standby(), spec, &dir.path().join("a"));

    // Raw: a full bucket passes 100 events; 50 more at once are refused with
    // the wait in param1 and a reason naming the setting.
    let event = |seq: u64| messages::Event {
        seq,
        code: event_code::ACCESS_GRANTED,
        user_id: None,
        occurred_at_ms: 1,
        payload: vec![1; 16],
    };
    let batch = |seqs: std::ops::RangeInclusive<u64>, sequence: u32| {
        encode(Message::request(
            78,
            command::NOTIFY_EVENT,
            sequence,
            messages::encode(&messages::Events {
                incarnation: 1,
                events: seqs.map(event).collect(),
            }),
        ))
    };
    let mut raw = hello_frame(78);
    raw.extend_from_slice(&batch(1..=100, 2));
    raw.extend_from_slice(&batch(101..=150, 3));
    let replies = exchange_raw(a.spec.addr(), &raw, 3);
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert_eq!(replies[1].code, standby_device::frame::status::OK);
    let limited = &replies[2];
    assert_eq!(limited.code, standby_device::frame::status::RATE_LIMITED);
    assert!(
        (300..=600).contains(&limited.param1),
        "wait {} ms for 50 events at 100/s",
        limited.param1
    );
    let why: messages::Refusal = messages::decode("refusal", &limited.payload).unwrap();
    assert!(why.reason.contains("max_event_rate"), "{}", why.reason);

    // A real device sending 300 events at once: the first 100 pass, the
    // rest wait their turn; every one is stored, none lost.
    let devices = dir.path().join("devices");
    let (agent, _) = Agent::start(config(&devices, 1, vec![endpoint(a.spec.port, 0)])).unwrap();
    wait_on(&agent, "a", Duration::from_secs(10)).await;
    record(&agent, 300);
    all_acked(&agent, Duration::from_secs(20)).await;
    let s = agent.status();
    assert!(s.throttled > 0, "the device was never throttled: {s:?}");
    assert_eq!(s.disconnects, 0, "throttling dropped the link: {s:?}");
    assert_nothing_lost(&devices, &a.db());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_re_sending_100_000_held_events_is_not_throttled() {
    // After a failover a device re-sends everything the new node lacks; the
    // default rate limit must not hold it below what the store takes.
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new("a", 1);
    let port = spec.port;
    let devices = dir.path().join("devices");
    let mut c = config(&devices, 1, vec![endpoint(port, 0)]);
    // Room for the 100,000 events and the device's own link events.
    c.log.capacity = 110_000;
    let (agent, _) = Agent::start(c).unwrap();
    record(&agent, 100_000);
    let a = Server::start(&crate::standby(), spec, &dir.path().join("a"));
    let started = Instant::now();
    wait_on(&agent, "a", Duration::from_secs(30)).await;
    all_acked(&agent, Duration::from_secs(300)).await;
    let took = started.elapsed();
    let s = agent.status();
    eprintln!(
        "100,000 held events stored and acknowledged in {:.2} s ({:.0} events/s), throttled {} times",
        took.as_secs_f64(),
        100_000.0 / took.as_secs_f64(),
        s.throttled
    );
    assert_eq!(s.throttled, 0, "the catch-up was throttled: {s:?}");
    assert_nothing_lost(&devices, &a.db());
    agent.shutdown().await;
}
