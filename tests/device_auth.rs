//! Device authentication end to end, against `standby run` nodes: forged
//! handshakes refused and logged, an authenticated device never displaced,
//! every message of an authenticated link checked, enrolment, revocation
//! and rotation through the CLI, expiry in `standby status`, the migration
//! period.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use standby_device::agent::LinkPhase;
use standby_device::auth::{load_credentials, Credential};
use standby_device::codec::Message;
use standby_device::frame::{command, status};
use standby_device::messages;
use standby_device::Agent;
use standby_lab::credentials::{enrol, DAY};
use standby_lab::server::{Server, ServerSpec};
use standby_testkit::device::{all_acked, config, endpoint, record, wait_on};
use standby_testkit::wait_for;

use crate::raw_device::{authenticate, encode, exchange_raw, hello_frame};

/// A server that requires device authentication, with its credentials folder.
fn server(dir: &std::path::Path, name: &str) -> Server {
    let mut spec = ServerSpec::new(name, 1);
    spec.auth = Some(dir.join("credentials"));
    Server::start(&crate::standby(), spec, &dir.join(name))
}

fn events(seq: u64) -> Vec<u8> {
    messages::encode(&messages::Events {
        incarnation: 1,
        events: vec![messages::Event {
            seq,
            code: 0x1000,
            user_id: None,
            occurred_at_ms: 1,
            payload: b"forged".to_vec(),
        }],
    })
}

/// A log without its terminal colour codes.
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Rows the server's database holds for `device` (opened read-only).
fn rows(server: &Server, table: &str, device: u32) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        server.db(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        &format!("SELECT count(*) FROM {table} WHERE device_id = ?1"),
        [device],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_handshakes_are_refused_logged_and_never_displace_the_real_device() {
    let dir = tempfile::tempdir().unwrap();
    let creds = enrol(&dir.path().join("credentials"), [5, 6], DAY);
    let a = server(dir.path(), "a");
    let (agent, _) = {
        let mut c = config(
            &dir.path().join("devices"),
            5,
            vec![endpoint(a.spec.port, 0)],
        );
        c.credential = Some(creds[0].clone());
        Agent::start(c).unwrap()
    };
    wait_on(&agent, "a", Duration::from_secs(20)).await;
    record(&agent, 3);
    all_acked(&agent, Duration::from_secs(10)).await;
    let device_addr = a
        .log_text()
        .lines()
        .find(|l| l.contains("device connected"))
        .map(str::to_string);
    assert!(device_addr.is_some(), "{}", a.log_text());

    // A handshake as device 5 without a credential, followed by events:
    // refused, nothing after it answered, the link closed.
    let forged = [
        hello_frame(5),
        encode(Message::request(5, command::NOTIFY_EVENT, 2, events(1_000))),
    ]
    .concat();
    for _ in 0..20 {
        let answers = exchange_raw(a.spec.addr(), &forged, 2);
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0].code, status::NOT_AUTHENTICATED, "{answers:?}");
        assert!(
            answers.iter().all(|m| m.code != status::OK),
            "an unauthenticated connection got a success: {answers:?}"
        );
    }
    // With device 6's key presented as device 5's: challenged, the proof
    // is wrong, refused.
    let stolen = Credential::new(5, 1, *creds[1].key(), creds[1].expires_at_ms);
    let refused = authenticate(a.spec.addr(), &stolen)
        .err()
        .expect("a wrong key was admitted");
    assert_eq!(refused.code, status::NOT_AUTHENTICATED);
    let reason: messages::Refusal = messages::decode("refusal", &refused.payload).unwrap();
    assert!(reason.reason.contains("wrong proof"), "{}", reason.reason);
    // A generation never issued, and a device never enrolled.
    for (device, generation) in [(5, 9), (77, 1)] {
        let fake = Credential::new(device, generation, [1; 32], u64::MAX);
        let r = authenticate(a.spec.addr(), &fake).err().expect("admitted");
        assert_eq!(r.code, status::NOT_AUTHENTICATED);
    }

    // The real device never left, and nothing forged was stored.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = agent.status();
    assert_eq!((s.connects, s.disconnects), (1, 0), "{s:?}");
    // Its own events (3, and the link-up it logged), none of the forged one.
    assert_eq!(rows(&a, "access_events", 5), 4);
    assert_eq!(rows(&a, "access_events", 77), 0);
    assert_eq!(rows(&a, "devices", 77), 0, "an unknown device got a row");
    // Each refusal is logged with the newcomer's address and the address
    // the real device is connected from.
    let log = without_colours(&a.log_text());
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("device not authenticated") && l.contains("device_id=5"))
        .collect();
    assert!(refusals.len() >= 21, "{log}");
    assert!(
        refusals
            .iter()
            .all(|l| l.contains("peer=127.0.0.1:") && l.contains("connected_from=Some(127.0.0.1:")),
        "{refusals:?}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_of_an_authenticated_link_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let creds = enrol(&dir.path().join("credentials"), [9], DAY);
    let a = server(dir.path(), "a");

    // Authenticated: a sealed batch is stored and acknowledged.
    let (mut link, welcome) = authenticate(a.spec.addr(), &creds[0]).unwrap();
    let w: messages::Welcome = messages::decode("welcome", &welcome.payload).unwrap();
    assert_eq!(w.node_id, "a");
    link.send(command::NOTIFY_EVENT, events(1));
    let ack = link.recv().unwrap();
    assert_eq!(ack.code, status::OK, "{ack:?}");
    assert_eq!(rows(&a, "access_events", 9), 1);

    // A message without its tag (as a party on the path would inject it):
    // the link is closed and the message not stored.
    link.stream
        .write_all(&encode(Message::request(
            9,
            command::NOTIFY_EVENT,
            50,
            events(2),
        )))
        .unwrap();
    assert!(link.closed_within(Duration::from_secs(5)));
    // A sealed message replayed on a new link (its counter and keys are
    // that link's): closed too.
    let (mut second, _) = authenticate(a.spec.addr(), &creds[0]).unwrap();
    let replay = link.seal(Message::request(9, command::NOTIFY_EVENT, 3, events(3)));
    second.stream.write_all(&replay).unwrap();
    assert!(second.closed_within(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rows(&a, "access_events", 9),
        1,
        "an unauthenticated message was stored"
    );
    assert!(
        a.log_text().contains("fails its authentication tag"),
        "{}",
        a.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_closes_the_link_and_a_rotated_key_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    // The enrolment key exists before the node starts (a node without it
    // does not start).
    enrol(&dir.path().join("credentials"), [], DAY);
    let a = server(dir.path(), "a");
    let profile = a.dir.join("profile.toml");
    let profile = profile.to_str().unwrap();
    let out = dir.path().join("device-7-keys.json");
    let out_s = out.to_str().unwrap();

    // Enrolment through the CLI: the key file is made, the credential
    // written owner-only.
    let (ok, _, err) = crate::run_standby(&[
        "devices", "enroll", profile, "--device", "7", "--out", out_s,
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("enrolled 1 device(s)") && !err.contains("created the device enrolment key"),
        "{err}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = load_credentials(&out).unwrap().remove(0);
    assert_eq!((first.device_id, first.generation), (7, 1));
    let (ok, _, err) = crate::run_standby(&[
        "devices", "enroll", profile, "--device", "7", "--out", out_s,
    ]);
    assert!(
        !ok && err.contains("--force"),
        "an existing credentials file was overwritten: {err}"
    );

    let (agent, _) = {
        let mut c = config(
            &dir.path().join("devices"),
            7,
            vec![endpoint(a.spec.port, 0)],
        );
        c.credential = Some(first.clone());
        Agent::start(c).unwrap()
    };
    wait_on(&agent, "a", Duration::from_secs(20)).await;

    // Rotation: generation 2 issued; the device installs it; generation 1
    // still works until it is revoked.
    let (ok, _, err) = crate::run_standby(&[
        "devices", "enroll", profile, "--device", "7", "--out", out_s, "--force",
    ]);
    assert!(ok, "{err}");
    let second = load_credentials(&out).unwrap().remove(0);
    assert_eq!(second.generation, 2);
    assert_ne!(second.key(), first.key());
    agent.set_credential(second.clone()).unwrap();
    assert!(
        authenticate(a.spec.addr(), &first).is_ok(),
        "generation 1 refused before its revocation"
    );

    // Revoking generation 1 closes the link that uses it; the device comes
    // back with generation 2.
    let (ok, _, err) = crate::run_standby(&[
        "devices",
        "revoke",
        profile,
        "--device",
        "7",
        "--generation",
        "1",
    ]);
    assert!(ok, "{err}");
    let back = wait_for(Duration::from_secs(10), || {
        let s = agent.status();
        s.disconnects >= 1 && s.connects >= 2 && s.link == LinkPhase::Connected
    })
    .await;
    assert!(
        back,
        "the device is not back on its new key: {:?}",
        agent.status()
    );
    let (ok, out_list, err) =
        crate::run_standby(&["devices", "list", profile, "--site", "s", "--json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(out_list.trim()).unwrap();
    let seven = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == 7)
        .cloned()
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(seven["credential_generation"], 2, "{seven}");
    let refused = authenticate(a.spec.addr(), &first)
        .err()
        .expect("a revoked key was admitted");
    let reason: messages::Refusal = messages::decode("refusal", &refused.payload).unwrap();
    assert!(reason.reason.contains("revoked"), "{}", reason.reason);
    record(&agent, 2);
    all_acked(&agent, Duration::from_secs(10)).await;

    // Revoking every generation: the device is out and stays out.
    let (ok, _, err) = crate::run_standby(&["devices", "revoke", profile, "--device", "7"]);
    assert!(ok, "{err}");
    let out_now = wait_for(Duration::from_secs(10), || {
        agent.status().link != LinkPhase::Connected
    })
    .await;
    assert!(out_now, "the revoked device is still connected");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(agent.status().link, LinkPhase::Connected);
    assert!(
        a.log_text().contains("credential no longer valid"),
        "{}",
        a.log_text()
    );
    let (ok, _, err) = crate::run_standby(&["devices", "revoke", profile, "--device", "7"]);
    assert!(!ok && err.contains("nothing to revoke"), "{err}");
    let (ok, listing, _) = crate::run_standby(&["devices", "credentials", profile]);
    assert!(ok && listing.matches("revoked").count() == 2, "{listing}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_nearing_expiry_are_shown_in_status() {
    let dir = tempfile::tempdir().unwrap();
    enrol(&dir.path().join("credentials"), [], DAY);
    let a = server(dir.path(), "a");
    let profile = a.dir.join("profile.toml");
    let profile = profile.to_str().unwrap();
    let out = dir.path().join("keys.json");
    for (ids, days) in [("1-3", "365"), ("4", "5")] {
        let (ok, _, err) = crate::run_standby(&[
            "devices",
            "enroll",
            profile,
            "--device",
            ids,
            "--days",
            days,
            "--out",
            out.to_str().unwrap(),
            "--force",
        ]);
        assert!(ok, "{err}");
    }
    let status = || {
        let (ok, out, err) = crate::run_standby(&["status", profile, "--site", "s", "--json"]);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    let mut s = status();
    for _ in 0..30 {
        if s["gateway"]["device_auth"]["credentials"]["devices"] == 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        s = status();
    }
    let auth = &s["gateway"]["device_auth"];
    assert_eq!(auth["mode"], "required", "{auth}");
    assert_eq!(auth["credentials"]["valid"], 4, "{auth}");
    let expiring = auth["credentials"]["expiring"].as_array().unwrap();
    assert_eq!(expiring.len(), 1, "{auth}");
    assert_eq!(expiring[0]["device_id"], 4);
    let (ok, text, err) = crate::run_standby(&["status", profile, "--site", "s"]);
    assert!(ok, "{err}");
    assert!(text.contains("device 4 (generation 1) expires"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_migration_devices_never_enrolled_connect_without_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    enrol(&dir.path().join("credentials"), [21], DAY);
    let mut spec = ServerSpec::new("m", 1);
    spec.auth = Some(dir.path().join("credentials"));
    spec.migrate_until = Some("2099-12-31".into());
    let mut m = Server::start(&crate::standby(), spec.clone(), &dir.path().join("m"));

    // Device 20 was never enrolled: admitted, its events stored, logged.
    let (agent, _) = Agent::start(config(
        &dir.path().join("devices"),
        20,
        vec![endpoint(m.spec.port, 0)],
    ))
    .unwrap();
    wait_on(&agent, "m", Duration::from_secs(20)).await;
    record(&agent, 4);
    all_acked(&agent, Duration::from_secs(10)).await;
    assert!(
        m.log_text().contains("admitted without a credential"),
        "{}",
        m.log_text()
    );
    // Device 21 holds a credential: without it, refused.
    let answers = exchange_raw(m.spec.addr(), &hello_frame(21), 1);
    assert_eq!(answers[0].code, status::NOT_AUTHENTICATED, "{answers:?}");
    agent.shutdown().await;

    // The migration is over: device 20 is refused too.
    m.kill();
    spec.migrate_until = Some("2020-01-01".into());
    let m = Server::start(&crate::standby(), spec, &dir.path().join("m"));
    let answers = exchange_raw(m.spec.addr(), &hello_frame(20), 1);
    assert_eq!(answers[0].code, status::NOT_AUTHENTICATED, "{answers:?}");
    let reason: messages::Refusal = messages::decode("refusal", &answers[0].payload).unwrap();
    assert!(
        reason.reason.contains("migration period"),
        "{}",
        reason.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refuses_a_server_that_cannot_prove_it_knows_its_key() {
    let dir = tempfile::tempdir().unwrap();
    // Two enrolment keys: the device's credential comes from the first; the
    // impostor enrolled device 5 under the second.
    let creds = enrol(&dir.path().join("real"), [5], DAY);
    enrol(&dir.path().join("impostor"), [5], DAY);
    let mut spec = ServerSpec::new("impostor", 1);
    spec.auth = Some(dir.path().join("impostor"));
    let impostor = Server::start(&crate::standby(), spec, &dir.path().join("impostor-node"));
    let (agent, _) = {
        let mut c = config(
            &dir.path().join("devices"),
            5,
            vec![endpoint(impostor.spec.port, 0)],
        );
        c.credential = Some(creds[0].clone());
        Agent::start(c).unwrap()
    };
    record(&agent, 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = agent.status();
    assert_eq!(
        s.connects, 0,
        "the device accepted a server without its key: {s:?}"
    );
    assert!(s.pending >= 3, "{s:?}");
    assert_eq!(rows(&impostor, "access_events", 5), 0);
    // The device stopped at the impostor's proof: it never sent its own.
    let log = without_colours(&impostor.log_text());
    assert!(!log.contains("device connected"), "{log}");
    agent.shutdown().await;
}
