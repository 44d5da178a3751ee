//! DNS updates for real: the RFC 2136 client against BIND 9 and against the
//! built-in server, the built-in server against BIND's own tools (`dig`,
//! `nsupdate`), and the device agent's resolver following a changed record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use standby_device::agent::{DnsResolver, Resolve};
use standby_host::dns::update::replace_message;
use standby_host::dns::{AddressType, DnsClient, DnsError, TsigKey};
use standby_lab::bind::{Bind, ZONE};
use standby_lab::dns_server::DnsServer;

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
    if !standby_lab::fixtures::require("dig") || !standby_lab::fixtures::require("nsupdate") {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_connections_do_not_hold_the_builtin_servers_tcp_slots() {
    let server = builtin(&[("service", v4("127.0.0.2"))]).await;
    let addr = server.local_addr();
    // 100 silent connections from one address, and 60 more from another.
    let mut held = Vec::new();
    for (source, n) in [("127.0.0.3", 100), ("127.0.0.4", 60)] {
        for _ in 0..n {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::new(source.parse().unwrap(), 0))
                .unwrap();
            if let Ok(s) = socket.connect(addr).await {
                held.push(s);
            }
        }
    }
    // A client elsewhere is answered over TCP at once.
    let fqdn = format!("service.{ZONE}");
    assert_eq!(dig(addr, &fqdn, true), vec!["127.0.0.2"]);
    // Every silent connection is closed within the message deadline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut open = 0;
    for s in &held {
        let mut buf = [0u8; 1];
        match s.try_read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    assert_eq!(open, 0, "{open} silent connections still open after 3 s");
}
