//! The operators' device-server operations through the admin endpoint, end
//! to end: `standby devices list` shows each device and its server list,
//! `standby devices set-servers` pushes a new one that each device stores,
//! and when the server is killed the devices follow the new list.

use std::time::Duration;

use serde_json::Value;
use standby_device::Agent;
use standby_lab::server::{Server, ServerSpec};
use standby_testkit::device::{all_acked, config, endpoint, on_node, record, wait_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_changes_the_devices_server_list_and_they_follow_it() {
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
    let mut fleet = Vec::new();
    for id in 1..=3 {
        let (agent, _) =
            Agent::start(config(&devices, id, vec![endpoint(a.spec.port, 0)])).unwrap();
        fleet.push(agent);
    }
    for agent in &fleet {
        wait_on(agent, "a", Duration::from_secs(20)).await;
        record(agent, 3);
        all_acked(agent, Duration::from_secs(10)).await;
    }
    let profile = a.dir.join("profile.toml");
    let profile = profile.to_str().unwrap();
    let a_entry = format!("127.0.0.1:{}", a.spec.port);
    let b_entry = format!("127.0.0.1:{}", b.spec.port);

    // The list: every device, what it dialled, its list, what it holds.
    let (ok, out, err) = crate::run_standby(&["devices", "list", profile, "--site", "s", "--json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    let listed = listed["devices"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for d in &listed {
        assert_eq!(d["servers"], serde_json::json!([a_entry]), "{d}");
        assert_eq!(d["dialled"], a_entry.as_str(), "{d}");
        assert_eq!(d["events_held"], 0, "{d}");
        assert!(d["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{d}");
        assert!(d["last_seen_ms"].as_u64().unwrap() > 0, "{d}");
    }
    let (ok, text, err) = crate::run_standby(&["devices", "list", profile, "--site", "s"]);
    assert!(ok && text.contains("3 device(s) connected"), "{text}{err}");

    let set_servers = |which: &[&str]| {
        let args = [
            &["devices", "set-servers", profile, "--site", "s"][..],
            which,
        ]
        .concat();
        crate::run_standby(&args)
    };

    // A list with no usable entry is refused, and changes nothing.
    for bad in ["", " , ", "nonsense"] {
        let (ok, _, err) = set_servers(&["--all", bad]);
        assert!(!ok, "`{bad}` was pushed");
        assert!(err.contains("was not pushed"), "{err}");
    }
    // One device that is not connected: said so.
    let (ok, out, _) = set_servers(&["--device", "99", &b_entry]);
    assert!(!ok && out.contains("device 99: not changed"), "{out}");

    // The new list: A first, then B. Each device stores it and says so.
    let list = format!("{a_entry},{b_entry}");
    let (ok, out, err) = set_servers(&["--all", &list]);
    assert!(ok, "{out}{err}");
    for id in 1..=3 {
        assert!(
            out.contains(&format!("device {id}: stored {a_entry}, {b_entry}")),
            "{out}"
        );
    }
    for agent in &fleet {
        let stored: Vec<u16> = agent.endpoints().iter().map(|e| e.port).collect();
        assert_eq!(stored, [a.spec.port, b.spec.port]);
    }

    // A dies: the devices follow the list they were given, to B.
    a.kill();
    for agent in &fleet {
        wait_on(agent, "b", Duration::from_secs(20)).await;
        record(agent, 2);
        all_acked(agent, Duration::from_secs(10)).await;
        assert_eq!(on_node(agent).as_deref(), Some("b"));
    }
    for agent in fleet {
        agent.shutdown().await;
    }
}
