//! A real BIND 9 server (`named`, Debian's bind9 package) serving one zone on
//! a loopback port, with RFC 2136 updates signed by a TSIG key.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::fixtures::{require, wait_until};
use crate::ports::free_port;

/// The zone every test uses.
pub const ZONE: &str = "site.test";

/// A running `named`.
pub struct Bind {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    /// Its working directory.
    pub dir: PathBuf,
    /// The TSIG key file (`tsig-keygen` output).
    pub key_file: PathBuf,
    /// The key's name.
    pub key_name: String,
    /// The key's secret (base64).
    pub key_secret: String,
    child: Child,
}

/// A port free for both UDP and TCP on 127.0.0.1, outside the ephemeral range.
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let port = free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Bind {
    /// Start `named` for [`ZONE`] with the given A records (`name`, `ip`) at
    /// TTL 1 s. Returns None (after printing why) when BIND is not installed
    /// and the run is not CI; under CI a missing BIND fails the test.
    pub fn start(dir: &Path, records: &[(&str, &str)]) -> Option<Self> {
        if !require("named") || !require("tsig-keygen") || !require("dig") {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let key_file = dir.join("ddns.key");
        let key_name = "ddns-key".to_string();
        let out = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", &key_name])
            .output()
            .unwrap();
        assert!(out.status.success(), "tsig-keygen failed");
        standby_host::secret_file::write_secret(
            &key_file,
            &String::from_utf8_lossy(&out.stdout),
            true,
        )
        .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let key_secret = text
            .split("secret \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string();
        let port = free_udp_and_tcp_port();
        let d = dir.display();
        let conf = format!(
            r#"include "{d}/ddns.key";
options {{
    directory "{d}"; pid-file "{d}/named.pid"; session-keyfile "{d}/session.key";
    listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion no; dnssec-validation no; notify no;
}};
controls {{ }};
zone "{ZONE}" {{
    type primary; file "{d}/{ZONE}.db"; journal "{d}/{ZONE}.db.jnl";
    update-policy {{ grant {key_name} zonesub ANY; }};
}};
"#
        );
        std::fs::write(dir.join("named.conf"), conf).unwrap();
        let mut zone = format!(
            "$TTL 1\n@ IN SOA ns.{ZONE}. admin.{ZONE}. ( 1 60 60 3600 1 )\n  IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n"
        );
        for (name, ip) in records {
            zone.push_str(&format!("{name} IN A {ip}\n"));
        }
        std::fs::write(dir.join(format!("{ZONE}.db")), zone).unwrap();
        let child = Command::new("named")
            .args(["-g", "-c"])
            .arg(dir.join("named.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("named.log")).unwrap())
            .spawn()
            .unwrap();
        let bind = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.clone(),
            key_file,
            key_name,
            key_secret,
            child,
        };
        let answered = wait_until(Duration::from_secs(20), || {
            bind.query(&format!("ns.{ZONE}")).as_deref() == Some("127.0.0.1")
        });
        assert!(
            answered,
            "named did not answer: {}",
            std::fs::read_to_string(dir.join("named.log")).unwrap_or_default()
        );
        Some(bind)
    }

    /// The A record of `fqdn` as `dig` sees it now (first address).
    pub fn query(&self, fqdn: &str) -> Option<String> {
        let out = Command::new("dig")
            .arg(format!("@{}", self.addr.ip()))
            .args(["-p", &self.addr.port().to_string(), fqdn, "A", "+short"])
            .args(["+time=1", "+tries=1"])
            .output()
            .ok()?;
        String::from_utf8(out.stdout)
            .ok()?
            .lines()
            .next()
            .map(str::to_string)
    }

    /// Every A record of `fqdn` as `dig` sees it now: (TTL, address), sorted.
    /// Asked of `named` directly, so the TTL is the one in the zone.
    pub fn a_records(&self, fqdn: &str) -> Vec<(u32, String)> {
        let out = Command::new("dig")
            .arg(format!("@{}", self.addr.ip()))
            .args(["-p", &self.addr.port().to_string(), fqdn, "A"])
            .args(["+noall", "+answer", "+time=2", "+tries=2"])
            .output()
            .unwrap();
        assert!(out.status.success(), "dig failed: {out:?}");
        // `service.site.test. 7 IN A 127.0.0.1`
        let mut records: Vec<(u32, String)> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                match f.as_slice() {
                    [_, ttl, "IN", "A", ip] => Some((ttl.parse().unwrap(), ip.to_string())),
                    _ => None,
                }
            })
            .collect();
        records.sort();
        records
    }

    /// A BIND key file with this server's key name and another secret (what
    /// an operator with a stale or mistyped key file has).
    pub fn key_clause_with_secret(&self, secret: &[u8]) -> String {
        format!(
            "key \"{}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{}\";\n}};\n",
            self.key_name,
            data_encoding::BASE64.encode(secret)
        )
    }

    /// What `named` logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }

    /// Replace the A record of `name` (relative to the zone) with `ip`,
    /// signed with the TSIG key (as an operator would with `nsupdate`).
    pub fn set_a(&self, name: &str, ip: &str) {
        assert!(require("nsupdate"));
        let mut child = Command::new("nsupdate")
            .arg("-k")
            .arg(&self.key_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let script = format!(
            "server {} {}\nzone {ZONE}\nupdate delete {name}.{ZONE} A\nupdate add {name}.{ZONE} 1 A {ip}\nsend\n",
            self.addr.ip(),
            self.addr.port()
        );
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nsupdate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
