//! Device-link benchmarks with real processes on loopback:
//!
//! - `capacity`: one gateway (`standby run`) holding 14,000 plain and 1,000
//!   TLS device links with 1 s keep-alives, the devices in separate
//!   `standby devices simulate` processes: the gateway's CPU share and
//!   resident memory per connection.
//! - `failover`: from stopping the server a fleet is on (SIGKILL, or SIGSTOP
//!   so only keep-alives tell) to every device connected to the second
//!   server, for 1,000 and 10,000 devices: median, p99 and worst.
//!
//! Run: `cargo bench -p standby --bench device_link [-- capacity|failover]`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STANDBY: &str = env!("CARGO_BIN_EXE_standby");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(dir: &Path, node: &str, port: u16, tls: Option<(u16, &Path, &Path)>) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let mut profile = format!(
        "version = 1\nname = \"bench\"\n[sites.s]\nnode_id = \"{node}\"\ndata_dir = \"{}\"\nrole = \"active\"\nepoch = 1\n[sites.s.gateway]\nlisten = \"127.0.0.1:{port}\"\n",
        dir.join("data").display()
    );
    if let Some((p, cert, key)) = tls {
        profile.push_str(&format!(
            "tls_listen = \"127.0.0.1:{p}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    profile.push_str(
        "[devices]\nkeepalive_ms = 1000\ndead_link_ms = 3000\n[devices.auth]\nmode = \"off\"\n",
    );
    std::fs::write(dir.join("profile.toml"), profile).unwrap();
    let child = Command::new(STANDBY)
        .args(["--log", "warn", "run"])
        .arg(dir.join("profile.toml"))
        .args(["--site", "s"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "server {node} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(child)
}

fn fleet(
    dir: &Path,
    first_id: u32,
    count: usize,
    endpoints: &str,
    ca: Option<&Path>,
    rate: f64,
) -> (Proc, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let status = dir.join("status.json");
    let mut cmd = Command::new(STANDBY);
    cmd.args(["--log", "warn", "devices", "simulate"])
        .args([
            "--count",
            &count.to_string(),
            "--first-id",
            &first_id.to_string(),
        ])
        .args(["--endpoints", endpoints, "--event-rate", &rate.to_string()])
        .args([
            "--keepalive-ms",
            "1000",
            "--dead-link-ms",
            "3000",
            "--connect-timeout-ms",
            "2000",
        ])
        // Spread the links over loopback source addresses, as a real fleet
        // is spread over device addresses: one address holds at most ~28,000
        // links to one server port, and the kernel's search for a free
        // ephemeral port slows down long before that.
        .arg("--source-ips")
        .arg(
            (1..=8)
                .map(|i| format!("127.0.1.{i}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .arg("--data-dir")
        .arg(dir.join("devices"))
        .arg("--status-file")
        .arg(&status);
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("fleet.log")).unwrap())
        .spawn()
        .unwrap();
    (Proc(child), status)
}

fn status(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn connected_to(path: &Path, node: &str) -> u64 {
    status(path)
        .and_then(|s| s["summary"]["by_server"][node].as_u64())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn test_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let files = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

fn capacity(plain: usize, tls: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certs(dir.path());
    let (port, tls_port) = (free_port(), free_port());
    let gw = server(
        &dir.path().join("gw"),
        "gw",
        port,
        Some((tls_port, &cert, &key)),
    );
    let pid = gw.0.id();
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_kib(pid);
    let per_fleet = 5_000;
    let mut fleets = Vec::new();
    let mut first = 1u32;
    let mut left = plain;
    while left > 0 {
        let n = left.min(per_fleet);
        fleets.push(fleet(
            &dir.path().join(format!("fleet{first}")),
            first,
            n,
            &format!("127.0.0.1:{port}"),
            None,
            0.0,
        ));
        first += n as u32;
        left -= n;
    }
    if tls > 0 {
        fleets.push(fleet(
            &dir.path().join("fleet-tls"),
            first,
            tls,
            &format!("127.0.0.1:{tls_port}/tls"),
            Some(&ca),
            0.0,
        ));
    }
    let total = (plain + tls) as u64;
    let started = Instant::now();
    loop {
        let n: u64 = fleets.iter().map(|(_, s)| connected_to(s, "gw")).sum();
        if n >= total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {n} of {total} connected"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let connect_all = started.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let window = Duration::from_secs(20);
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(window);
    let (t1, c1) = (Instant::now(), cpu_ticks(pid));
    let rss_after = rss_kib(pid);
    let still: u64 = fleets.iter().map(|(_, s)| connected_to(s, "gw")).sum();
    let cpu = (c1 - c0) as f64 / 100.0 / (t1 - t0).as_secs_f64() * 100.0;
    let per_conn = (rss_after - rss_before) as f64 / total as f64;
    println!("capacity: {plain} plain + {tls} TLS links, 1 s keep-alives (all connected in {:.1} s; {still} still connected after the window)", connect_all.as_secs_f64());
    println!(
        "  gateway CPU: {cpu:.1} % of one core over {} s",
        window.as_secs()
    );
    println!("  gateway RSS: {rss_before} KiB idle, {rss_after} KiB with the links: {per_conn:.1} KiB per link");
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn failover(devices: usize, hang: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let a = server(&dir.path().join("a"), "a", pa, None);
    let _b = server(&dir.path().join("b"), "b", pb, None);
    let (_f, st) = fleet(
        &dir.path().join("fleet"),
        1,
        devices,
        &format!("127.0.0.1:{pa},127.0.0.1:{pb}"),
        None,
        100.0,
    );
    let started = Instant::now();
    while connected_to(&st, "a") < devices as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "fleet did not connect to a"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let t0 = unix_ms();
    let sig = if hang { "-STOP" } else { "-KILL" };
    Command::new("kill")
        .args([sig, &a.0.id().to_string()])
        .status()
        .unwrap();
    let fault = Instant::now();
    while connected_to(&st, "b") < devices as u64 {
        assert!(
            fault.elapsed() < Duration::from_secs(300),
            "fleet did not move to b"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1_200));
    let s = status(&st).unwrap();
    let mut times: Vec<u64> = s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["server"]["node_id"] == "b")
        .map(|d| d["connected_since_ms"].as_u64().unwrap().saturating_sub(t0))
        .collect();
    times.sort_unstable();
    println!(
        "failover ({}): {devices} devices, fault to connected to the second server: median {} ms, p99 {} ms, worst {} ms",
        if hang { "SIGSTOP, keep-alive 1 s, dead link 3 s" } else { "SIGKILL" },
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap()
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    println!(
        "machine: {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if wants("capacity") {
        capacity(14_000, 1_000);
    }
    if wants("failover") {
        for n in [1_000, 10_000] {
            failover(n, false);
            failover(n, true);
        }
    }
}
