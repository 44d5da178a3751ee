//! The dns-ip failover plugin (DNS mode), run by the host, against BIND 9:
//! a promoted node repoints the service name; a wrong key or a refusal fails
//! the activate step by name and leaves the node running; a kill of the
//! active node repoints the name to the DR node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use standby_lab::bind::{Bind, ZONE};

/// The name the plugin repoints, relative to [`ZONE`].
const SERVICE: &str = "service";
/// Where the name points before any node repoints it.
const BEFORE: &str = "10.99.0.10";
/// The TTL the profile asks for (BIND's zone default is 1 s).
const DNS_IP_TTL: u32 = 7;
/// Update-and-check attempts the profile allows.
const DNS_IP_ATTEMPTS: u32 = 3;

fn service_fqdn() -> String {
    format!("{SERVICE}.{ZONE}")
}

/// A `[[failover]]` entry: `builtin:dns-ip` in DNS mode, as in
/// examples/profiles/case1-wan-copy.toml, granted `bind` (as server
/// `primary`) with the TSIG key in `key_file`; site onsite is 127.0.0.1 and
/// site dr 127.0.0.2.
fn dns_ip_entry(bind: &Bind, key_file: &Path) -> String {
    format!(
        "[[failover]]\nplugin = \"builtin:dns-ip\"\n\
         [failover.settings]\nmode = \"dns\"\nserver = \"primary\"\nname = \"{}\"\n\
         ttl = {DNS_IP_TTL}\nattempts = {DNS_IP_ATTEMPTS}\n\
         [failover.settings.address]\nonsite = \"127.0.0.1\"\ndr = \"127.0.0.2\"\n\
         [failover.grants.dns.primary]\nserver = \"{}\"\nkey_name = \"{}\"\nkey_file = {:?}\n\
         algorithm = \"hmac-sha256\"\nzones = [\"{ZONE}\"]\n",
        service_fqdn(),
        bind.addr,
        bind.key_name,
        key_file.display().to_string(),
    )
}

/// Assert that BIND itself (asked with `dig`, not through the plugin) holds
/// exactly one A record for the service name: `ip`, with the profile's TTL.
fn assert_bind_points_at(bind: &Bind, ip: &str) {
    assert_eq!(
        bind.a_records(&service_fqdn()),
        vec![(DNS_IP_TTL, ip.to_string())],
        "BIND's A record set for {}",
        service_fqdn()
    );
}

/// The step of a status's last failover timeline called `name`.
fn failover_step(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["last_failover"]["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no `{name}` step in the last failover: {status}"))
}

/// The health of plugin instance `name` in a status.
fn plugin_health(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["plugin"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no plugin `{name}` in the status: {status}"))
}

/// A key file in `dir` with BIND's key name and a wrong secret.
fn wrong_key_file(dir: &Path, bind: &Bind) -> PathBuf {
    let key_file = dir.join("tsig.key");
    standby_host::secret_file::write_secret(
        &key_file,
        &bind.key_clause_with_secret(b"not the secret BIND was given!!!"),
        true,
    )
    .unwrap();
    key_file
}

/// How many requests BIND refused for a bad TSIG signature, from its log
/// (`request has invalid signature: TSIG ddns-key: tsig verify failure (BADSIG)`).
fn bind_badsig_refusals(bind: &Bind) -> usize {
    bind.log()
        .lines()
        .filter(|l| l.contains("request has invalid signature") && l.contains("BADSIG"))
        .count()
}

/// The promotion in `status` ran dns-ip's activate, which repointed the
/// service name to `which`'s address and verified it; asked of BIND
/// directly, the name now has that address only, with the profile's TTL.
fn assert_repointed(
    c: &standby_lab::cluster::Cluster,
    status: &serde_json::Value,
    which: standby_lab::cluster::Which,
    bind: &Bind,
) {
    let step = failover_step(status, "activate:dns-ip");
    assert_eq!(
        step["ok"],
        true,
        "{which:?}'s activate failed: {step}\n{}",
        c.log(which)
    );
    assert_eq!(
        step["note"],
        format!(
            "repointed {}. A -> {} (verified)",
            service_fqdn(),
            which.ip()
        ),
        "{step}"
    );
    assert_bind_points_at(bind, which.ip());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_ip_in_a_node_promoted_to_active_repoints_the_name_in_bind() {
    use standby_lab::cluster::{Cluster, Which};
    let dir = tempfile::tempdir().unwrap();
    let Some(bind) = Bind::start(&dir.path().join("bind"), &[(SERVICE, BEFORE)]) else {
        return;
    };
    assert_eq!(
        bind.a_records(&service_fqdn()),
        vec![(1, BEFORE.to_string())]
    );
    let entry = dns_ip_entry(&bind, &bind.key_file);
    let mut c = Cluster::with_extra(&crate::standby(), &dir.path().join("cluster"), true, &entry);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    // A `standby run` process for site onsite; with the witness's lease it
    // promotes itself, and the promotion runs dns-ip's activate.
    c.start(Which::A, &[]);
    let a = c.wait_status(Which::A, Duration::from_secs(60), |s| {
        s["role"] == "active" && s["last_failover"]["completed"] == true
    });
    assert_repointed(&c, &a, Which::A, &bind);
    // The plugin is healthy and the node serves.
    let dns_ip = plugin_health(&a, "dns-ip");
    assert_eq!(dns_ip["state"], "healthy", "{dns_ip}");
    assert_eq!(a["gateway"]["open"], true, "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_ip_with_a_wrong_tsig_secret_fails_activate_naming_the_refusal_and_changes_nothing() {
    use standby_host::plugin::{CallError, HealthState, PluginError};
    let dir = tempfile::tempdir().unwrap();
    let Some(bind) = Bind::start(&dir.path().join("bind"), &[(SERVICE, BEFORE)]) else {
        return;
    };
    // The operator's key file has the right key name and a wrong secret.
    let key_file = wrong_key_file(dir.path(), &bind);
    // A node of a one-site profile (no cluster: it starts active), loaded
    // and started as `standby run` does; its failover actions are what a
    // promotion calls.
    let profile = dir.path().join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            "version = 1\nname = \"dns-ip-refused\"\n\
             [sites.onsite]\nnode_id = \"onsite-1\"\ndata_dir = \"onsite\"\nrole = \"active\"\n\
             {}",
            dns_ip_entry(&bind, &key_file)
        ),
    )
    .unwrap();
    let loaded = standby_host::config::load(&profile, &[]).unwrap();
    let node = standby_host::node::Node::builder(loaded)
        .site("onsite")
        .start()
        .await
        .unwrap();
    let [action] = node.actions() else {
        panic!("expected one failover action");
    };
    assert_eq!(action.name(), "dns-ip");
    let ctx = node.context();
    assert_eq!(ctx.site, "onsite");

    let refusals_before = bind_badsig_refusals(&bind);
    let err = action.activate(&ctx).await.unwrap_err();
    let text = err.to_string();
    eprintln!("activate refused as expected: {text}");
    let PluginError::Returned {
        error: CallError::AccessDenied(_),
        ..
    } = &err
    else {
        panic!("not an access-denied error returned by the plugin: {err:?}");
    };
    // The error names the plugin, the name, the server (by grant and by
    // address) and the TSIG refusal.
    for part in [
        "plugin dns-ip".to_string(),
        format!("{}.", service_fqdn()),
        "server `primary`".to_string(),
        bind.addr.to_string(),
        "NOTAUTH".to_string(),
        "BADSIG".to_string(),
        bind.key_name.clone(),
    ] {
        assert!(text.contains(&part), "`{part}` not named: {text}");
    }
    // A refusal is not retried: the plugin gives up after its first attempt,
    // and says so (retrying with the same key cannot help).
    assert!(
        text.contains(&format!(
            "failed on attempt 1 of {DNS_IP_ATTEMPTS} (not retried)"
        )),
        "{text}"
    );
    // BIND saw the signed update and refused it; the record is unchanged.
    let refusals = bind_badsig_refusals(&bind) - refusals_before;
    assert!(
        (1..=2).contains(&refusals),
        "BIND logged {refusals} bad-signature refusals (one update, at most two UDP sends):\n{}",
        bind.log()
    );
    assert_eq!(
        bind.a_records(&service_fqdn()),
        vec![(1, BEFORE.to_string())]
    );

    // The runtime keeps running: the instance is healthy (an error value is
    // not a fault), and the plugin still answers.
    let health = node.health();
    let h = health.iter().find(|h| h.plugin == "dns-ip").unwrap();
    assert_eq!(h.state, HealthState::Healthy, "{h:?}");
    assert_eq!(h.consecutive_faults, 0, "{h:?}");
    match action.verify(&ctx).await {
        Err(PluginError::Returned {
            error: CallError::Conflict(t),
            ..
        }) => assert!(t.contains(BEFORE), "{t}"),
        other => panic!("verify: expected a conflict naming {BEFORE}, got {other:?}"),
    }
    // The operator fixes the key file (it is read on every update); the
    // same instance then repoints the name.
    std::fs::copy(&bind.key_file, &key_file).unwrap();
    let report = action.activate(&ctx).await.unwrap();
    assert!(
        report.summary.contains("127.0.0.1 (verified)"),
        "{report:?}"
    );
    assert_bind_points_at(&bind, "127.0.0.1");
    action.verify(&ctx).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_ip_refused_by_bind_leaves_the_promoted_node_process_running() {
    use standby_lab::cluster::{Cluster, Which};
    let dir = tempfile::tempdir().unwrap();
    let Some(bind) = Bind::start(&dir.path().join("bind"), &[(SERVICE, BEFORE)]) else {
        return;
    };
    let key_file = wrong_key_file(dir.path(), &bind);
    let entry = dns_ip_entry(&bind, &key_file);
    let mut c = Cluster::with_extra(&crate::standby(), &dir.path().join("cluster"), true, &entry);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start(Which::A, &[]);
    let a = c.wait_status(Which::A, Duration::from_secs(60), |s| {
        s["role"] == "active" && s["last_failover"]["completed"] == true
    });
    // The promotion records the refused activate, with the reason.
    let step = failover_step(&a, "activate:dns-ip");
    assert_eq!(
        step["ok"], false,
        "activate succeeded with a wrong key: {step}"
    );
    let note = step["note"].as_str().unwrap();
    for part in [
        format!("{}.", service_fqdn()),
        bind.addr.to_string(),
        "BADSIG".to_string(),
        format!("TSIG key `{}`", bind.key_name),
        format!("attempt 1 of {DNS_IP_ATTEMPTS} (not retried)"),
    ] {
        assert!(note.contains(&part), "`{part}` not named: {note}");
    }
    assert_eq!(
        bind.a_records(&service_fqdn()),
        vec![(1, BEFORE.to_string())]
    );
    assert!(bind_badsig_refusals(&bind) >= 1, "{}", bind.log());

    // The process keeps running and stays active, its plugin instance healthy.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = c.wait_status(Which::A, Duration::from_secs(20), |s| s["role"] == "active");
    assert_eq!(later["epoch"], a["epoch"], "A changed epoch: {later}");
    assert_eq!(later["gateway"]["open"], true, "{later}");
    let dns_ip = plugin_health(&later, "dns-ip");
    assert_eq!(dns_ip["state"], "healthy", "{dns_ip}");
    assert_eq!(dns_ip["consecutive_faults"], 0, "{dns_ip}");
    assert_eq!(
        bind.a_records(&service_fqdn()),
        vec![(1, BEFORE.to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_ip_repoints_bind_to_the_dr_node_after_kill_9_of_the_active_node() {
    use standby_lab::cluster::{Cluster, Which};
    let dir = tempfile::tempdir().unwrap();
    let Some(bind) = Bind::start(&dir.path().join("bind"), &[(SERVICE, BEFORE)]) else {
        return;
    };
    let entry = dns_ip_entry(&bind, &bind.key_file);
    let mut c = Cluster::with_extra(&crate::standby(), &dir.path().join("cluster"), true, &entry);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start(Which::A, &[]);
    let a = c.wait_status(Which::A, Duration::from_secs(60), |s| {
        s["role"] == "active" && s["last_failover"]["completed"] == true
    });
    assert_repointed(&c, &a, Which::A, &bind);
    c.start(Which::B, &[]);
    c.wait_status(Which::B, Duration::from_secs(60), |s| {
        s["role"] == "standby" && s["peer"]["connected"] == true
    });
    // B, standing by, has not touched the name.
    assert_bind_points_at(&bind, Which::A.ip());

    c.kill(Which::A);
    let b = c.wait_status(Which::B, Duration::from_secs(60), |s| {
        s["role"] == "active" && s["last_failover"]["completed"] == true
    });
    assert!(
        b["epoch"].as_u64() > a["epoch"].as_u64(),
        "B's epoch is not above A's: {b} {a}"
    );
    assert_repointed(&c, &b, Which::B, &bind);
}
