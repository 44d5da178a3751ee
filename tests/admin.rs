//! The admin endpoint as another local user and as a flood of idle clients
//! would meet it: state changes only through the owner-only socket or, over
//! TCP, only with TLS and the operators' token; a TCP port without them
//! read-only; its connections bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use standby_lab::cluster::{Cluster, Which};
use standby_lab::process::open_files;

/// A cluster in manual mode (no witness) with A active and B standby: a
/// forced promotion of B would succeed for anyone who may make it.
fn manual_cluster(dir: &Path) -> Cluster {
    let mut c = Cluster::new(&crate::standby(), dir, false);
    c.start_active_then_standby();
    c
}

/// Run the `standby` binary as user `nobody`: (success, stderr).
fn as_nobody(dir: &Path, args: &[&str]) -> (bool, String) {
    // The binary must be reachable by nobody: copy it where it is when the
    // build folder is not.
    let mut bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_standby"));
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("--version")
        .output()
        .expect("setpriv (util-linux) runs");
    if !probe.status.success() {
        let copy = dir.join("standby-for-nobody");
        std::fs::copy(&bin, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin = copy;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(args)
        .env_remove("STANDBY_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One raw HTTP request to `addr`: the status line of the answer.
fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_local_user_cannot_promote_and_the_tcp_port_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    // Let nobody read the profile and walk to the data directories, so that
    // the admin socket itself is what stops it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = manual_cluster(dir.path());
    std::fs::set_permissions(&c.profile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let profile = c.profile.to_str().unwrap().to_string();

    let (ok, err) = as_nobody(
        dir.path(),
        &["promote", &profile, "--site", "dr", "--force"],
    );
    assert!(!ok, "nobody promoted B");
    assert!(
        err.contains("only the node's own user"),
        "the refusal names the reason: {err}"
    );

    let b_tcp = format!("127.0.0.2:{}", c.admin_ports.1);
    let line = http(
        &b_tcp,
        "POST /promote?force=true HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(line.contains("403"), "POST /promote over TCP: {line}");
    let body = r#"{"servers":"127.0.0.9:1"}"#;
    let line = http(
        &b_tcp,
        &format!(
            "POST /devices/servers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(
        line.contains("403"),
        "POST /devices/servers over TCP: {line}"
    );
    let line = http(&b_tcp, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(line.contains("200"), "GET /status over TCP: {line}");

    let b = c.status(Which::B).unwrap();
    assert_eq!(b["role"], "standby", "{b}");
    assert!(
        b["transitions"].as_array().unwrap().is_empty(),
        "B changed role: {b}"
    );
    assert!(
        c.log(Which::B).contains("promote refused"),
        "the refused call is logged with its caller"
    );

    // The node's own user can.
    let (ok, _, err) = crate::run_standby(&["promote", &profile, "--site", "dr", "--force"]);
    assert!(ok, "the node's user could not promote: {err}");
    assert!(
        c.log(Which::B).contains("admin: promote requested"),
        "the accepted call is logged"
    );
    assert_eq!(c.status(Which::B).unwrap()["role"], "active");
}

/// A self-signed certificate for `ip` and its key (0600) in `dir`.
fn admin_certificate(dir: &Path, ip: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![ip.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.join("admin-cert.pem"), dir.join("admin-tls.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    standby_host::secret_file::write_secret(&key_file, &key.serialize_pem(), false).unwrap();
    (cert_file, key_file)
}

/// `standby keygen FILE`.
fn keygen(file: &Path) {
    let (ok, _, err) = crate::run_standby(&["keygen", file.to_str().unwrap()]);
    assert!(ok, "keygen: {err}");
}

#[test]
fn over_tcp_only_the_operators_token_over_tls_may_promote_or_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut c = Cluster::new(&crate::standby(), d, false);
    admin_certificate(d, "127.0.0.2");
    keygen(&d.join("operators.token"));
    let text = std::fs::read_to_string(&c.profile).unwrap().replace(
        "[sites.dr]\n",
        "[sites.dr]\nadmin_tls_cert = \"admin-cert.pem\"\nadmin_tls_key = \"admin-tls.key\"\n\
         admin_token_file = \"operators.token\"\n",
    );
    std::fs::write(&c.profile, &text).unwrap();
    // The same profile with another token: what someone without the
    // operators' token would send.
    keygen(&d.join("guessed.token"));
    let wrong = d.join("wrong-token.toml");
    std::fs::write(&wrong, text.replace("operators.token", "guessed.token")).unwrap();
    c.start_active_then_standby();
    let profile = c.profile.to_str().unwrap().to_string();
    let wrong = wrong.to_str().unwrap().to_string();
    let b_tcp = format!("127.0.0.2:{}", c.admin_ports.1);

    // Plain HTTP gets no answer: the port speaks TLS only.
    let line = http(&b_tcp, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!line.contains("HTTP/1.1"), "plain HTTP answered: {line}");

    // A wrong token: 401 for everything, and nothing reaches the control loop.
    let (ok, _, err) =
        crate::run_standby(&["promote", &wrong, "--site", "dr", "--force", "--remote"]);
    assert!(!ok, "a wrong token promoted B");
    assert!(err.contains("valid operator token"), "{err}");
    let (ok, _, err) = crate::run_standby(&["status", &wrong, "--site", "dr", "--remote"]);
    assert!(!ok && err.contains("valid operator token"), "{err}");
    let b = c.status(Which::B).unwrap();
    assert_eq!(b["role"], "standby", "{b}");
    assert!(b["transitions"].as_array().unwrap().is_empty(), "{b}");
    assert!(
        c.log(Which::B)
            .contains("promote refused (no valid operator token)"),
        "the refused call is logged with its caller"
    );

    // The operators' token over TLS reads and promotes.
    let (ok, out, err) =
        crate::run_standby(&["status", &profile, "--site", "dr", "--remote", "--json"]);
    assert!(ok, "{err}");
    let remote: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(remote["node_id"], "dr-1");
    let (ok, _, err) =
        crate::run_standby(&["promote", &profile, "--site", "dr", "--force", "--remote"]);
    assert!(ok, "the operators' token could not promote: {err}");
    assert!(
        c.log(Which::B).contains("TCP over TLS, operator token"),
        "the accepted call is logged with its caller"
    );
    assert_eq!(c.status(Which::B).unwrap()["role"], "active");
}

#[test]
fn a_tcp_admin_endpoint_leaves_loopback_only_with_tls_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = Cluster::new(&crate::standby(), d, false);
    let base = std::fs::read_to_string(&c.profile).unwrap();
    let check = |extra: &str| {
        let p = d.join("variant.toml");
        std::fs::write(
            &p,
            base.replace("[sites.dr]\n", &format!("[sites.dr]\n{extra}")),
        )
        .unwrap();
        crate::run_standby(&["check-config", p.to_str().unwrap()])
    };
    let (ok, _, err) = check("admin_token_file = \"t\"\n");
    assert!(
        !ok && err.contains("admin_tls_cert") && err.contains("in clear"),
        "{err}"
    );
    let (ok, _, err) = check("admin_tls_cert = \"c.pem\"\n");
    assert!(!ok && err.contains("admin_tls_key"), "{err}");
    let open = base.replace(
        &format!("admin_listen = \"127.0.0.2:{}\"", c.admin_ports.1),
        "admin_listen = \"0.0.0.0:7000\"",
    );
    assert_ne!(open, base);
    let p = d.join("open.toml");
    std::fs::write(&p, &open).unwrap();
    let (ok, _, err) = crate::run_standby(&["check-config", p.to_str().unwrap()]);
    assert!(!ok && err.contains("must be on loopback"), "{err}");
    std::fs::write(
        &p,
        open.replace(
            "[sites.dr]\n",
            "[sites.dr]\nadmin_tls_cert = \"c.pem\"\nadmin_tls_key = \"k.pem\"\nadmin_token_file = \"t\"\n",
        ),
    )
    .unwrap();
    let (ok, _, err) = crate::run_standby(&["check-config", p.to_str().unwrap()]);
    assert!(ok, "TLS and a token may leave loopback: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_admin_connections_is_bounded_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let c = manual_cluster(dir.path());
    let pid = c.pid(Which::B).unwrap();
    let before = open_files(pid);
    let b_tcp = format!("127.0.0.2:{}", c.admin_ports.1);

    let mut idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&b_tcp).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = open_files(pid);
    assert!(
        during <= before + 16 + 8,
        "300 idle admin connections took the node from {before} to {during} open files"
    );
    // The node still answers its operator and its devices' port.
    let s = c
        .status(Which::B)
        .expect("status through the socket during the flood");
    assert_eq!(s["role"], "standby");
    TcpStream::connect(c.device_addr(Which::A)).expect("A's device port during the flood");

    // Every idle connection is closed by the node: those over the cap at
    // once, the others when their header timeout runs out.
    let deadline = Instant::now() + Duration::from_secs(15);
    for s in &mut idle {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 256];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false
                }
                Err(_) => break true,
            }
        };
        assert!(closed, "an idle admin connection was still open after 15 s");
    }
    let line = http(&b_tcp, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        line.contains("200"),
        "status over TCP after the flood: {line}"
    );
}
