//! A two-site cluster of real processes: a witness (`standby witness`), site
//! A (`onsite`, 127.0.0.1) and site B (`dr`, 127.0.0.2), each `standby run`
//! of one profile, asked through `standby status --json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::server::{free_port, free_port_on};

/// Which site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `onsite`, 127.0.0.1, starts as the preferred active.
    A,
    /// `dr`, 127.0.0.2, starts as standby.
    B,
}

impl Which {
    pub fn site(self) -> &'static str {
        match self {
            Which::A => "onsite",
            Which::B => "dr",
        }
    }
    pub fn ip(self) -> &'static str {
        match self {
            Which::A => "127.0.0.1",
            Which::B => "127.0.0.2",
        }
    }
}

/// The cluster's processes and addresses.
pub struct Cluster {
    pub dir: PathBuf,
    pub profile: PathBuf,
    pub device_port: u16,
    pub peer_ports: (u16, u16),
    pub witness_addr: Option<String>,
    witness: Option<Child>,
    nodes: [Option<Child>; 2],
}

impl Cluster {
    /// Write keys and a profile: file-copy every second, devices kept until
    /// a copy holding their events is installed at B, short device timeouts.
    pub fn new(dir: &Path, with_witness: bool) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cluster.key"), "0123456789abcdef0123456789abcdef").unwrap();
        let device_port = free_port_on(&["127.0.0.1", "127.0.0.2"]);
        let peer_ports = (free_port_on(&["127.0.0.1"]), free_port_on(&["127.0.0.2"]));
        let admin = (free_port_on(&["127.0.0.1"]), free_port_on(&["127.0.0.2"]));
        let witness_addr = with_witness.then(|| format!("127.0.0.1:{}", free_port()));
        let mut p = format!(
            "version = 1\nname = \"e2e\"\n\
             [sites.onsite]\nnode_id = \"onsite-1\"\ndata_dir = \"onsite\"\nrole = \"active\"\n\
             peer_listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
             [sites.onsite.gateway]\nlisten = \"127.0.0.1:{device_port}\"\n\
             [sites.dr]\nnode_id = \"dr-1\"\ndata_dir = \"dr\"\nrole = \"standby\"\n\
             peer_listen = \"127.0.0.2:{}\"\nadmin_listen = \"127.0.0.2:{}\"\n\
             [sites.dr.gateway]\nlisten = \"127.0.0.2:{device_port}\"\n\
             [cluster]\npsk_file = \"cluster.key\"\nstartup_grace_ms = 5000\n",
            peer_ports.0, admin.0, peer_ports.1, admin.1
        );
        if let Some(w) = &witness_addr {
            p.push_str(&format!("witness = \"{w}\"\n"));
        }
        p.push_str(
            "[devices]\nkeepalive_ms = 300\ndead_link_ms = 1500\ndurable_ack = \"replication\"\n\
             [[strategy]]\nplugin = \"builtin:file-copy\"\n\
             [strategy.settings]\nevery = \"1s\"\nretain = 3\n\
             [strategy.grants]\ndb = { install = true }\nfiles = { snapshots = \"snapshots\" }\npeer = { inbox = \"snapshots\" }\n",
        );
        let profile = dir.join("profile.toml");
        std::fs::write(&profile, p).unwrap();
        Self {
            dir: dir.to_path_buf(),
            profile,
            device_port,
            peer_ports,
            witness_addr,
            witness: None,
            nodes: [None, None],
        }
    }

    /// [`Cluster::new`], with `extra` TOML appended to the profile (e.g. a
    /// `[[failover]]` entry). The rest of the profile is exactly what `new`
    /// writes.
    pub fn with_extra(dir: &Path, with_witness: bool, extra: &str) -> Self {
        let cluster = Self::new(dir, with_witness);
        let mut text = std::fs::read_to_string(&cluster.profile).unwrap();
        text.push('\n');
        text.push_str(extra);
        std::fs::write(&cluster.profile, text).unwrap();
        cluster
    }

    /// Start the witness.
    pub fn start_witness(&mut self, listen: &str) {
        let log = std::fs::File::create(self.dir.join("witness.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_standby"))
            .args(["witness", "--listen", listen, "--data-dir"])
            .arg(self.dir.join("witness"))
            .arg("--psk-file")
            .arg(self.dir.join("cluster.key"))
            .env_remove("STANDBY_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.witness = Some(child);
    }

    /// Start a site's node with `--set` overrides (e.g. a proxy in the way).
    pub fn start(&mut self, which: Which, overrides: &[String]) {
        let log = std::fs::File::create(self.log_path(which)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_standby"));
        cmd.args(["--log", "info", "run"])
            .arg(&self.profile)
            .args(["--site", which.site()]);
        for o in overrides {
            cmd.args(["--set", o]);
        }
        let child = cmd
            .env_remove("STANDBY_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[which as usize] = Some(child);
    }

    fn log_path(&self, which: Which) -> PathBuf {
        self.dir.join(format!("{}.log", which.site()))
    }

    /// What a node logged.
    pub fn log(&self, which: Which) -> String {
        std::fs::read_to_string(self.log_path(which)).unwrap_or_default()
    }

    /// A node's database.
    pub fn db(&self, which: Which) -> PathBuf {
        self.dir.join(which.site()).join("biostar2.db")
    }

    /// The device address of a site.
    pub fn device_addr(&self, which: Which) -> String {
        format!("{}:{}", which.ip(), self.device_port)
    }

    /// `standby status PROFILE --site S --json`, or None when the node does not answer.
    pub fn status(&self, which: Which) -> Option<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_standby"))
            .arg("status")
            .arg(&self.profile)
            .args(["--site", which.site(), "--json"])
            .env_remove("STANDBY_LOG")
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Wait until a node's status satisfies `ok`.
    pub fn wait_status(&self, which: Which, limit: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + limit;
        let mut last = None;
        while Instant::now() < until {
            if let Some(s) = self.status(which) {
                if ok(&s) {
                    return s;
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not reach the expected state within {limit:?}; last status: {}\nlog:\n{}",
            which.site(),
            last.map(|s| s.to_string()).unwrap_or_default(),
            self.log(which)
        );
    }

    fn signal(&self, which: Which, sig: &str) {
        if let Some(c) = &self.nodes[which as usize] {
            Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .unwrap();
        }
    }

    /// SIGKILL a node and reap it.
    pub fn kill(&mut self, which: Which) {
        if let Some(mut c) = self.nodes[which as usize].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP.
    pub fn hang(&self, which: Which) {
        self.signal(which, "-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self, which: Which) {
        self.signal(which, "-CONT");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in [Which::A, Which::B] {
            self.resume(w);
            self.kill(w);
        }
        if let Some(mut c) = self.witness.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `standby ARGS` and return (success, stdout, stderr).
pub fn standby(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_standby"))
        .args(args)
        .env_remove("STANDBY_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether any transition in a status made the node active.
pub fn ever_active(status: &Value) -> bool {
    status["transitions"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["to"] == "active"))
}

/// A device agent (device 1) in `dir` dialling `endpoint` only, with short
/// keep-alives and backoff, the given dead-link and connect/request
/// timeouts, no fsync, and an audit file for the independent checker.
pub fn quick_device(
    dir: &Path,
    endpoint: &str,
    dead_link: Duration,
    timeout: Duration,
) -> standby_host::device::agent::Agent {
    use standby_host::device::agent::{Agent, AgentConfig, Backoff, Endpoint, LogOptions};
    let mut c = AgentConfig::new(1, vec![Endpoint::parse(endpoint, 0).unwrap()], dir);
    c.keepalive = Duration::from_millis(200);
    c.dead_link = dead_link;
    c.connect_timeout = timeout;
    c.request_timeout = timeout;
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        ..Backoff::default()
    };
    c.log = LogOptions {
        fsync: false,
        audit: true,
        ..LogOptions::default()
    };
    Agent::start(c).unwrap().0
}
