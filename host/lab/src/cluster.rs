//! A two-site cluster of real processes: a witness (`standby witness`), site
//! A (`onsite`, 127.0.0.1) and site B (`dr`, 127.0.0.2), each `standby run`
//! of one profile, asked through `standby status --json`.
//!
//! Test harness: a failure here is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ports::{free_port, free_port_on};
use crate::process::{Process, Signal, Standby};

/// The strategy of [`Cluster::new`]: file-copy every second.
pub const FILE_COPY: &str = "[[strategy]]\nplugin = \"builtin:file-copy\"\n\
    [strategy.settings]\nevery = \"1s\"\nretain = 3\n\
    [strategy.grants]\ndb = { install = true }\nfiles = { snapshots = \"snapshots\" }\npeer = { inbox = \"snapshots\" }\n";

/// Change data capture (case 3), for [`Cluster::with_strategy`].
pub const CDC: &str = "[[strategy]]\nplugin = \"builtin:cdc\"\n\
    [strategy.grants]\ndb = { capture = true, install = true }\nfiles = { inbox = \"cdc-inbox\" }\npeer = { inbox = \"inbox\" }\n";

/// Which site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `onsite`, 127.0.0.1, starts as the preferred active.
    A,
    /// `dr`, 127.0.0.2, starts as standby.
    B,
}

impl Which {
    /// The site's name in the profile.
    pub fn site(self) -> &'static str {
        match self {
            Which::A => "onsite",
            Which::B => "dr",
        }
    }
    /// The site's loopback address.
    pub fn ip(self) -> &'static str {
        match self {
            Which::A => "127.0.0.1",
            Which::B => "127.0.0.2",
        }
    }
}

/// The cluster's processes and addresses.
pub struct Cluster {
    /// Where its files live.
    pub dir: PathBuf,
    /// Its profile.
    pub profile: PathBuf,
    /// The device port, on both sites' addresses.
    pub device_port: u16,
    /// The peer ports of A and B.
    pub peer_ports: (u16, u16),
    /// The read-only TCP admin ports of A and B.
    pub admin_ports: (u16, u16),
    /// The witness's address, when it has one.
    pub witness_addr: Option<String>,
    standby: Standby,
    witness: Option<Process>,
    nodes: [Option<Process>; 2],
}

impl Cluster {
    /// Write keys and a profile: file-copy every second, devices kept until
    /// a copy holding their events is installed at B, short device timeouts.
    pub fn new(standby: &Standby, dir: &Path, with_witness: bool) -> Self {
        Self::with_strategy(standby, dir, with_witness, FILE_COPY)
    }

    /// [`Cluster::new`] with another `[[strategy]]` entry (e.g. [`CDC`]).
    pub fn with_strategy(
        standby: &Standby,
        dir: &Path,
        with_witness: bool,
        strategy: &str,
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        standby_host::secret_file::write_secret(
            &dir.join("cluster.key"),
            &standby_host::peer::Psk::generate(),
            true,
        )
        .unwrap();
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
             [devices.auth]\nmode = \"off\"\n",
        );
        p.push_str(strategy);
        let profile = dir.join("profile.toml");
        std::fs::write(&profile, p).unwrap();
        Self {
            dir: dir.to_path_buf(),
            profile,
            device_port,
            peer_ports,
            admin_ports: admin,
            witness_addr,
            standby: standby.clone(),
            witness: None,
            nodes: [None, None],
        }
    }

    /// [`Cluster::new`], with `extra` TOML appended to the profile (e.g. a
    /// `[[failover]]` entry). The rest of the profile is exactly what `new`
    /// writes.
    pub fn with_extra(standby: &Standby, dir: &Path, with_witness: bool, extra: &str) -> Self {
        let cluster = Self::new(standby, dir, with_witness);
        let mut text = std::fs::read_to_string(&cluster.profile).unwrap();
        text.push('\n');
        text.push_str(extra);
        std::fs::write(&cluster.profile, text).unwrap();
        cluster
    }

    /// Start the witness.
    pub fn start_witness(&mut self, listen: &str) {
        let args = [
            "witness".to_string(),
            "--listen".into(),
            listen.into(),
            "--data-dir".into(),
            self.dir.join("witness").display().to_string(),
            "--psk-file".into(),
            self.dir.join("cluster.key").display().to_string(),
        ];
        let log = self.dir.join("witness.log");
        self.witness = Some(
            self.standby
                .spawn("witness", &args, &log, "info", false)
                .unwrap(),
        );
    }

    /// Start a site's node with `--set` overrides (e.g. a proxy in the way).
    pub fn start(&mut self, which: Which, overrides: &[String]) {
        let mut args = vec![
            "run".to_string(),
            self.profile.display().to_string(),
            "--site".into(),
            which.site().into(),
        ];
        for o in overrides {
            args.push("--set".into());
            args.push(o.clone());
        }
        let log = self.log_path(which);
        let node = self
            .standby
            .spawn(which.site(), &args, &log, "info", false)
            .unwrap();
        self.nodes[which as usize] = Some(node);
    }

    fn log_path(&self, which: Which) -> PathBuf {
        self.dir.join(format!("{}.log", which.site()))
    }

    /// Start A and wait until it is active, then B until it is a standby
    /// connected to A (the witness, if any, must run already). B's status.
    pub fn start_active_then_standby(&mut self) -> Value {
        self.start(Which::A, &[]);
        self.wait_status(Which::A, Duration::from_secs(30), |s| s["role"] == "active");
        self.start(Which::B, &[]);
        self.wait_status(Which::B, Duration::from_secs(30), |s| {
            s["role"] == "standby" && s["peer"]["connected"] == true
        })
    }

    /// The witness's process id, when it runs.
    pub fn witness_pid(&self) -> Option<u32> {
        self.witness.as_ref().map(|p| p.pid())
    }

    /// A running node's process id.
    pub fn pid(&self, which: Which) -> Option<u32> {
        self.nodes[which as usize].as_ref().map(|p| p.pid())
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
        let profile = self.profile.display().to_string();
        let (ok, out, _) = self
            .standby
            .run(&["status", &profile, "--site", which.site(), "--json"])
            .ok()?;
        if !ok {
            return None;
        }
        serde_json::from_str(&out).ok()
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

    fn signal(&mut self, which: Which, signal: Signal) {
        if let Some(c) = &mut self.nodes[which as usize] {
            c.signal(signal).unwrap();
        }
    }

    /// SIGKILL a node and reap it.
    pub fn kill(&mut self, which: Which) {
        if let Some(mut c) = self.nodes[which as usize].take() {
            c.kill();
        }
    }

    /// Stop a node cleanly (SIGTERM; SIGKILL after `grace`); its log stays.
    pub async fn terminate(&mut self, which: Which, grace: Duration) {
        if let Some(c) = &mut self.nodes[which as usize] {
            c.stop(grace).await;
        }
    }

    /// SIGSTOP.
    pub fn hang(&mut self, which: Which) {
        self.signal(which, Signal::STOP);
    }

    /// SIGCONT.
    pub fn resume(&mut self, which: Which) {
        self.signal(which, Signal::CONT);
    }
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
) -> standby_device::Agent {
    use standby_device::agent::{Agent, Backoff, Endpoint};
    let mut c =
        standby_testkit::device::config(dir, 1, vec![Endpoint::parse(endpoint, 0).unwrap()]);
    c.dead_link = dead_link;
    c.connect_timeout = timeout;
    c.request_timeout = timeout;
    c.backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200)).unwrap();
    Agent::start(c).unwrap().0
}
