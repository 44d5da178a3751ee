//! Servers in their own processes: `standby run` on a generated profile.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port free on 127.0.0.1.
pub fn free_port() -> u16 {
    free_port_on(&["127.0.0.1"])
}

/// A port free on every one of `ips`, from below the kernel's ephemeral
/// range (see [`standby_host::ports`]: a `bind(0)` port released for a
/// server to listen on can be taken by a parallel test's dial first).
pub fn free_port_on(ips: &[&str]) -> u16 {
    let ips: Vec<std::net::IpAddr> = ips.iter().map(|ip| ip.parse().unwrap()).collect();
    standby_host::ports::free_listen_port(&ips).unwrap()
}

/// Poll `f` every 20 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Async variant of [`wait_until`].
pub async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// How to start a server.
#[derive(Clone)]
pub struct ServerSpec {
    pub node_id: String,
    /// Loopback address the gateway listens on (any of 127.0.0.0/8).
    pub ip: [u8; 4],
    pub port: u16,
    pub epoch: u64,
    pub role: &'static str,
    pub tls: Option<(u16, PathBuf, PathBuf)>,
    pub durable_ack: &'static str,
    pub keepalive_ms: u64,
    pub dead_link_ms: u64,
}

impl ServerSpec {
    pub fn new(node_id: &str, epoch: u64) -> Self {
        Self {
            node_id: node_id.into(),
            ip: [127, 0, 0, 1],
            port: free_port(),
            epoch,
            role: "active",
            tls: None,
            durable_ack: "local-commit",
            keepalive_ms: 300,
            dead_link_ms: 1_500,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }
}

/// A running `standby run` process.
pub struct Server {
    pub spec: ServerSpec,
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Start a server whose data lives in `dir` (kept across restarts).
    pub fn start(spec: ServerSpec, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut profile = format!(
            "version = 1\nname = \"test\"\n[sites.s]\nnode_id = \"{}\"\ndata_dir = \"{}\"\nrole = \"{}\"\nepoch = {}\n[sites.s.gateway]\nlisten = \"{}\"\n",
            spec.node_id,
            dir.join("data").display(),
            spec.role,
            spec.epoch,
            spec.addr()
        );
        if let Some((port, cert, key)) = &spec.tls {
            profile.push_str(&format!(
                "tls_listen = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                key.display()
            ));
        }
        profile.push_str(&format!(
            "[devices]\nkeepalive_ms = {}\ndead_link_ms = {}\ndurable_ack = \"{}\"\n",
            spec.keepalive_ms, spec.dead_link_ms, spec.durable_ack
        ));
        let file = dir.join("profile.toml");
        std::fs::write(&file, profile).unwrap();
        let log = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_standby"))
            .args(["--log", "info,standby_host=debug", "run"])
            .arg(&file)
            .args(["--site", "s"])
            .env_remove("STANDBY_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Self {
            spec,
            dir: dir.to_path_buf(),
            log,
            child: Some(child),
        };
        if server.spec.role == "active" {
            let addr = server.spec.addr();
            assert!(
                wait_until(Duration::from_secs(20), || TcpStream::connect(addr).is_ok()),
                "server {} did not start listening: {}",
                server.spec.node_id,
                server.log_text()
            );
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process hangs with its sockets open.
    pub fn hang(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// The server's database file.
    pub fn db(&self) -> PathBuf {
        self.dir.join("data/biostar2.db")
    }

    /// What the server logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
            self.kill();
        }
    }
}
