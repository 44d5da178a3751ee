//! Servers in their own processes: `standby run` on a generated one-site
//! profile (a gateway with its store), for the device-link tests.
//!
//! Test harness: a failure here is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fixtures::wait_until;
use crate::ports::free_port;
use crate::process::{Process, Signal, Standby};

/// How to start a server.
#[derive(Clone)]
pub struct ServerSpec {
    /// The node's id.
    pub node_id: String,
    /// Loopback address the gateway listens on (any of 127.0.0.0/8).
    pub ip: [u8; 4],
    /// The plain device port.
    pub port: u16,
    /// The epoch it starts at.
    pub epoch: u64,
    /// `active` or `standby`.
    pub role: &'static str,
    /// A TLS device port with its certificate and key files.
    pub tls: Option<(u16, PathBuf, PathBuf)>,
    /// When devices are told their events are durable.
    pub durable_ack: &'static str,
    /// The keep-alive interval it asks of devices, ms.
    pub keepalive_ms: u64,
    /// When it drops a silent device, ms.
    pub dead_link_ms: u64,
    /// More `[devices]` lines (e.g. `max_event_rate = 50`).
    pub devices_extra: String,
    /// Device authentication: the folder holding the enrolment key and the
    /// register ([`crate::credentials::enrol`] fills them), or `None` for
    /// `devices.auth.mode = "off"`.
    pub auth: Option<PathBuf>,
    /// With `auth`: `devices.auth.mode = "migrate"` until this day
    /// (`YYYY-MM-DD`) instead of "required".
    pub migrate_until: Option<String>,
}

impl ServerSpec {
    /// An active server on 127.0.0.1 with short timeouts.
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
            devices_extra: String::new(),
            auth: None,
            migrate_until: None,
        }
    }

    /// Its plain device address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }
}

/// A running `standby run` process.
pub struct Server {
    /// How it was started.
    pub spec: ServerSpec,
    /// Where its files live.
    pub dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
    process: Option<Process>,
}

impl Server {
    /// Start a server whose data lives in `dir` (kept across restarts).
    pub fn start(standby: &Standby, spec: ServerSpec, dir: &Path) -> Self {
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
            "[devices]\nkeepalive_ms = {}\ndead_link_ms = {}\ndurable_ack = \"{}\"\n{}\n",
            spec.keepalive_ms, spec.dead_link_ms, spec.durable_ack, spec.devices_extra
        ));
        match &spec.auth {
            None => profile.push_str("[devices.auth]\nmode = \"off\"\n"),
            Some(dir) => profile.push_str(&format!(
                "[devices.auth]\nmode = \"{}\"\nkey_file = \"{}\"\nregister = \"{}\"\n{}",
                if spec.migrate_until.is_some() {
                    "migrate"
                } else {
                    "required"
                },
                dir.join(crate::credentials::KEY_FILE).display(),
                dir.join(crate::credentials::REGISTER).display(),
                spec.migrate_until
                    .as_ref()
                    .map_or(String::new(), |d| format!("migrate_until = \"{d}\"\n"))
            )),
        }
        let file = dir.join("profile.toml");
        std::fs::write(&file, profile).unwrap();
        let log = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let args = [
            "run".to_string(),
            file.display().to_string(),
            "--site".into(),
            "s".into(),
        ];
        let process = standby
            .spawn(&spec.node_id, &args, &log, "info,standby_host=debug", false)
            .unwrap();
        let server = Self {
            spec,
            dir: dir.to_path_buf(),
            log,
            process: Some(process),
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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map(Process::pid).unwrap()
    }

    fn signal(&mut self, signal: Signal) {
        if let Some(p) = &mut self.process {
            p.signal(signal).unwrap();
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// SIGSTOP: the process hangs with its sockets open.
    pub fn hang(&mut self) {
        self.signal(Signal::STOP);
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        self.signal(Signal::CONT);
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
