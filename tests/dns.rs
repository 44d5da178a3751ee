//! DNS updates for real: the RFC 2136 client against BIND 9 and against the
//! built-in server, the built-in server against BIND's own tools (`dig`,
//! `nsupdate`), and the device agent's resolver following a changed record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use standby_host::device::agent::{DnsResolver, Resolve};
use standby_host::dns::update::replace_message;
use standby_host::dns::{AddressType, DnsClient, DnsError, DnsServer, TsigKey};
use support::bind::{Bind, ZONE};

const KEY_NAME: &str = "ddns-key";
const SECRET: &[u8] = b"a shared secret of 32 bytes.....";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn sorted(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    ips.sort();
    ips
}

fn key() -> TsigKey {
    TsigKey::new(KEY_NAME, "hmac-sha256", SECRET.to_vec()).unwrap()
}

fn wrong_secret() -> TsigKey {
    TsigKey::new(
        KEY_NAME,
        "hmac-sha256",
        b"not the secret the server has!!!".to_vec(),
    )
    .unwrap()
}

fn unknown_key() -> TsigKey {
    TsigKey::new("somebody-else", "hmac-sha256", SECRET.to_vec()).unwrap()
}

async fn builtin(records: &[(&str, Ipv4Addr)]) -> DnsServer {
    DnsServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ZONE,
        KEY_NAME,
        SECRET,
        records,
        1,
    )
    .await
    .unwrap()
}

fn assert_refused(result: Result<(), DnsError>, server: SocketAddr) {
    let err = result.unwrap_err();
    assert!(
        matches!(err, DnsError::Refused { .. }),
        "not a refusal: {err}"
    );
    let text = err.to_string();
    eprintln!("refused as expected: {text}");
    assert!(
        text.contains(&server.to_string()),
        "server not named: {text}"
    );
    assert!(text.contains("service.site.test"), "name not named: {text}");
}

/// Send `packet` over UDP to `server`; the answer, if one comes within 1 s.
fn udp_exchange(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    socket.send_to(packet, server).unwrap();
    let mut buf = [0u8; 4096];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// `dig +short` against `server` (TCP when `tcp`).
fn dig(server: SocketAddr, name: &str, tcp: bool) -> Vec<String> {
    let mut cmd = Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), name, "A", "+short"])
        .args(["+time=2", "+tries=1"]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd.output().unwrap();
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// `nsupdate -k key_file` replacing the A record of `fqdn` (TCP when `tcp`).
/// nsupdate checks the answer's TSIG itself.
fn nsupdate(
    key_file: &Path,
    server: SocketAddr,
    fqdn: &str,
    ip: &str,
    tcp: bool,
) -> (bool, String) {
    let mut cmd = Command::new("nsupdate");
    cmd.arg("-k").arg(key_file);
    if tcp {
        cmd.arg("-v");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!(
        "server {} {}\nzone {ZONE}\nupdate delete {fqdn} A\nupdate add {fqdn} 1 A {ip}\nsend\n",
        server.ip(),
        server.port()
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_takes_a_signed_replace_and_refuses_a_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bind) = Bind::start(&dir.path().join("bind"), &[("service", "127.0.0.2")]) else {
        return;
    };
    // The key file tsig-keygen wrote, read as the capability reads it.
    let key = TsigKey::load(&bind.key_file, &bind.key_name, "hmac-sha256").unwrap();
    let client = DnsClient::new(bind.addr);
    let name = format!("service.{ZONE}");
    assert_eq!(
        client.query(&name, AddressType::A).await.unwrap(),
        vec![ip("127.0.0.2")]
    );

    client
        .replace(&key, ZONE, &name, AddressType::A, &[ip("127.0.0.3")], 1)
        .await
        .unwrap();
    assert_eq!(bind.query(&name).as_deref(), Some("127.0.0.3"));
    assert_eq!(
        client.query(&name, AddressType::A).await.unwrap(),
        vec![ip("127.0.0.3")]
    );

    // Several addresses, and AAAA beside them.
    client
        .replace(
            &key,
            ZONE,
            &name,
            AddressType::A,
            &[ip("127.0.0.4"), ip("127.0.0.5")],
            1,
        )
        .await
        .unwrap();
    client
        .replace(&key, ZONE, &name, AddressType::Aaaa, &[ip("::1")], 1)
        .await
        .unwrap();
    assert_eq!(
        sorted(client.query(&name, AddressType::A).await.unwrap()),
        vec![ip("127.0.0.4"), ip("127.0.0.5")]
    );
    assert_eq!(
        client.query(&name, AddressType::Aaaa).await.unwrap(),
        vec![ip("::1")]
    );

    // A wrong secret, an unknown key and no key at all are refused, and
    // change nothing.
    let wrong = TsigKey::new(&bind.key_name, "hmac-sha256", b"not the secret".to_vec()).unwrap();
    assert_refused(
        client
            .replace(&wrong, ZONE, &name, AddressType::A, &[ip("127.0.0.9")], 1)
            .await,
        bind.addr,
    );
    assert_refused(
        client
            .replace(
                &unknown_key(),
                ZONE,
                &name,
                AddressType::A,
                &[ip("127.0.0.9")],
                1,
            )
            .await,
        bind.addr,
    );
    let unsigned = replace_message(ZONE, &name, AddressType::A, &[ip("127.0.0.9")], 1).unwrap();
    assert_refused(client.send_update(unsigned, None).await, bind.addr);
    assert_eq!(
        sorted(client.query(&name, AddressType::A).await.unwrap()),
        vec![ip("127.0.0.4"), ip("127.0.0.5")]
    );

    // A name that does not exist is no addresses, not an error.
    assert!(client
        .query(&format!("nobody.{ZONE}"), AddressType::A)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_server_takes_signed_updates_only() {
    let server = builtin(&[("service", v4("127.0.0.2"))]).await;
    let addr = server.local_addr();
    let client = DnsClient::new(addr);
    let name = format!("service.{ZONE}");
    assert_eq!(
        client.query(&name, AddressType::A).await.unwrap(),
        vec![ip("127.0.0.2")]
    );

    client
        .replace(&key(), ZONE, &name, AddressType::A, &[ip("127.0.0.3")], 1)
        .await
        .unwrap();
    assert_eq!(
        client.query(&name, AddressType::A).await.unwrap(),
        vec![ip("127.0.0.3")]
    );
    assert_eq!(server.lookup("service"), vec![ip("127.0.0.3")]);

    // Refused: a wrong secret, an unknown key, no signature.
    assert_refused(
        client
            .replace(
                &wrong_secret(),
                ZONE,
                &name,
                AddressType::A,
                &[ip("127.0.0.9")],
                1,
            )
            .await,
        addr,
    );
    assert_refused(
        client
            .replace(
                &unknown_key(),
                ZONE,
                &name,
                AddressType::A,
                &[ip("127.0.0.9")],
                1,
            )
            .await,
        addr,
    );
    let unsigned = replace_message(ZONE, &name, AddressType::A, &[ip("127.0.0.9")], 1).unwrap();
    assert_refused(client.send_update(unsigned, None).await, addr);
    assert_eq!(
        client.query(&name, AddressType::A).await.unwrap(),
        vec![ip("127.0.0.3")]
    );

    // Unknown names are empty; names outside the zone are refused.
    assert!(client
        .query(&format!("nobody.{ZONE}"), AddressType::A)
        .await
        .unwrap()
        .is_empty());
    let outside = client
        .query("service.elsewhere.test", AddressType::A)
        .await
        .unwrap_err();
    assert!(matches!(outside, DnsError::Refused { .. }), "{outside}");

    // An answer too big for UDP comes truncated; the client asks again over TCP.
    let many: Vec<IpAddr> = (1..=60).map(|i| ip(&format!("10.0.0.{i}"))).collect();
    client
        .replace(
            &key(),
            ZONE,
            &format!("many.{ZONE}"),
            AddressType::A,
            &many,
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        sorted(
            client
                .query(&format!("many.{ZONE}"), AddressType::A)
                .await
                .unwrap()
        ),
        many
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_server_survives_malformed_packets() {
    let server = builtin(&[("service", v4("127.0.0.2"))]).await;
    let addr = server.local_addr();
    // Too short for a header: no answer.
    assert_eq!(udp_exchange(addr, &[1, 2, 3]), None);
    // A header promising a question that is not there: FORMERR, same id.
    let mut bad = vec![0xAB, 0xCD, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let answer = udp_exchange(addr, &bad).expect("no FORMERR");
    assert_eq!(&answer[..2], &[0xAB, 0xCD]);
    assert_eq!(answer[2] & 0x80, 0x80, "not a response");
    assert_eq!(answer[3] & 0x0F, 1, "not FORMERR");
    // Random garbage after a header, and a forged "response": no panic, no stop.
    bad.extend_from_slice(&[0xFF; 40]);
    let _ = udp_exchange(addr, &bad);
    let _ = udp_exchange(addr, &[0u8, 1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Garbage over TCP too.
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0, 5, 1, 2, 3, 4, 5, 0, 0]).await.unwrap();
    }
    let client = DnsClient::new(addr);
    let name = format!("service.{ZONE}");
    assert_eq!(
        client.query(&name, AddressType::A).await.unwrap(),
        vec![ip("127.0.0.2")]
    );
    client
        .replace(&key(), ZONE, &name, AddressType::A, &[ip("127.0.0.5")], 1)
        .await
        .unwrap();
    assert_eq!(server.lookup(&name), vec![ip("127.0.0.5")]);
    server.shutdown().await;
    // Stopped means stopped.
    let gone = DnsClient::new(addr)
        .with_timeout(Duration::from_millis(300))
        .with_attempts(1)
        .query(&name, AddressType::A)
        .await
        .unwrap_err();
    assert!(
        matches!(
            gone,
            DnsError::Unreachable { .. } | DnsError::Timeout { .. }
        ),
        "{gone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_server_speaks_with_bind_tools() {
    if !support::require("dig") || !support::require("nsupdate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = builtin(&[("service", v4("127.0.0.2"))]).await;
    let addr = server.local_addr();
    let fqdn = format!("service.{ZONE}");
    assert_eq!(dig(addr, &fqdn, false), vec!["127.0.0.2"]);
    assert_eq!(dig(addr, &fqdn, true), vec!["127.0.0.2"]);
    let key_file = dir.path().join("ddns.key");
    std::fs::write(
        &key_file,
        format!(
            "key \"{KEY_NAME}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{}\";\n}};\n",
            data_encoding_base64(SECRET)
        ),
    )
    .unwrap();
    // nsupdate signs the request and verifies our signed answer, over UDP and TCP.
    let (ok, err) = nsupdate(&key_file, addr, &fqdn, "127.0.0.6", false);
    assert!(ok, "nsupdate (UDP) failed: {err}");
    assert_eq!(dig(addr, &fqdn, false), vec!["127.0.0.6"]);
    let (ok, err) = nsupdate(&key_file, addr, &fqdn, "127.0.0.7", true);
    assert!(ok, "nsupdate (TCP) failed: {err}");
    assert_eq!(dig(addr, &fqdn, true), vec!["127.0.0.7"]);
    // The same file with another secret is refused.
    std::fs::write(
        &key_file,
        format!(
            "key \"{KEY_NAME}\" {{ algorithm hmac-sha256; secret \"{}\"; }};",
            data_encoding_base64(b"some other secret entirely......")
        ),
    )
    .unwrap();
    let (ok, _) = nsupdate(&key_file, addr, &fqdn, "127.0.0.8", false);
    assert!(!ok, "nsupdate with a wrong key succeeded");
    assert_eq!(server.lookup(&fqdn), vec![ip("127.0.0.7")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_resolver_follows_a_record_changed_on_the_builtin_server() {
    let server = builtin(&[("service", v4("127.0.0.2"))]).await;
    let resolver = DnsResolver::new(server.local_addr());
    let name = format!("service.{ZONE}");
    assert_eq!(
        resolver.resolve(&name).await.unwrap(),
        vec![ip("127.0.0.2")]
    );
    DnsClient::new(server.local_addr())
        .replace(&key(), ZONE, &name, AddressType::A, &[ip("127.0.0.3")], 1)
        .await
        .unwrap();
    // The old answer may be held for its TTL (1 s); then the new one shows.
    let until = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while Instant::now() < until {
        seen = resolver.resolve(&name).await.unwrap_or_default();
        if seen == vec![ip("127.0.0.3")] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, vec![ip("127.0.0.3")]);
    // A name the zone does not have does not resolve.
    assert!(resolver.resolve(&format!("nobody.{ZONE}")).await.is_err());
}

/// Standard base64 with padding (what BIND key files hold).
fn data_encoding_base64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

// ---------------------------------------------------------------------------
// The dns-ip failover plugin (DNS mode), run by the host, against BIND 9.
// ---------------------------------------------------------------------------

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
    std::fs::write(
        &key_file,
        bind.key_clause_with_secret(b"not the secret BIND was given!!!"),
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
    c: &support::cluster::Cluster,
    status: &serde_json::Value,
    which: support::cluster::Which,
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
    use support::cluster::{Cluster, Which};
    let dir = tempfile::tempdir().unwrap();
    let Some(bind) = Bind::start(&dir.path().join("bind"), &[(SERVICE, BEFORE)]) else {
        return;
    };
    assert_eq!(
        bind.a_records(&service_fqdn()),
        vec![(1, BEFORE.to_string())]
    );
    let entry = dns_ip_entry(&bind, &bind.key_file);
    let mut c = Cluster::with_extra(&dir.path().join("cluster"), true, &entry);
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
    use support::cluster::{Cluster, Which};
    let dir = tempfile::tempdir().unwrap();
    let Some(bind) = Bind::start(&dir.path().join("bind"), &[(SERVICE, BEFORE)]) else {
        return;
    };
    let key_file = wrong_key_file(dir.path(), &bind);
    let entry = dns_ip_entry(&bind, &key_file);
    let mut c = Cluster::with_extra(&dir.path().join("cluster"), true, &entry);
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
    use support::cluster::{Cluster, Which};
    let dir = tempfile::tempdir().unwrap();
    let Some(bind) = Bind::start(&dir.path().join("bind"), &[(SERVICE, BEFORE)]) else {
        return;
    };
    let entry = dns_ip_entry(&bind, &bind.key_file);
    let mut c = Cluster::with_extra(&dir.path().join("cluster"), true, &entry);
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
