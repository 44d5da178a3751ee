//! The demo's ground: free ports on loopback, fresh keys, and the case's
//! profile rewritten for this machine (addresses, ports, a short copy
//! schedule, short device timeouts, the demo's writer as the application).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{DemoOptions, DemoProfile};
use std::path::Path;

use anyhow::{bail, Context, Result};
use standby_host::peer::Psk;
use standby_host::secret_file::write_secret;
use toml::Value;

/// The case 1 profile, as shipped in examples/.
pub(super) const CASE1: &str = include_str!("../../../../examples/profiles/case1-wan-copy.toml");
/// The case 3 profile, as shipped in examples/.
pub(super) const CASE3: &str = include_str!("../../../../examples/profiles/case3-cdc.toml");

/// Site A's address.
pub(super) const A_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// Site B's address.
pub(super) const B_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The service name devices dial second.
pub(super) const SERVICE_NAME: &str = "door.standby.test";
/// The zone the built-in DNS server serves.
pub(super) const ZONE: &str = "standby.test";
/// TTL of the service name's record, in seconds. Zero: a device asks again
/// on every connection attempt, so it follows the failover as soon as the
/// name is repointed (with 1 s, a device that looked the name up just before
/// the update keeps dialling the dead site for up to another second).
pub(super) const SERVICE_TTL: u32 = 0;
/// The TSIG key's name.
pub(super) const TSIG_KEY_NAME: &str = "standby-update";

/// Every address the demo uses.
#[derive(Debug, Clone)]
pub(super) struct Ports {
    /// Device port, the same on A and B.
    pub device: u16,
    /// The witness.
    pub witness: SocketAddr,
    /// The DNS server.
    pub dns: SocketAddr,
    /// Peer-link ports of A and B.
    pub peer: (u16, u16),
    /// Admin ports of A and B.
    pub admin: (u16, u16),
}

/// A port free on every one of `ips` (below the kernel's ephemeral range, so
/// none of the fleet's dials can take it before the child meant to listen on
/// it binds it).
fn free_on(ips: &[Ipv4Addr]) -> Result<u16> {
    let ips: Vec<IpAddr> = ips.iter().map(|ip| IpAddr::V4(*ip)).collect();
    crate::ports::free_listen_port(&ips).context("finding a free port on loopback")
}

impl Ports {
    /// Pick free ports.
    pub(super) fn pick() -> Result<Self> {
        let device = free_on(&[A_IP, B_IP])?;
        let dns_port = loop {
            let port = free_on(&[A_IP])?;
            if std::net::UdpSocket::bind((A_IP, port)).is_ok() {
                break port;
            }
        };
        Ok(Self {
            device,
            witness: SocketAddr::new(IpAddr::V4(A_IP), free_on(&[A_IP])?),
            dns: SocketAddr::new(IpAddr::V4(A_IP), dns_port),
            peer: (free_on(&[A_IP])?, free_on(&[B_IP])?),
            admin: (free_on(&[A_IP])?, free_on(&[B_IP])?),
        })
    }

    /// A's admin endpoint.
    pub(super) fn admin_a(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(A_IP), self.admin.0)
    }

    /// B's admin endpoint.
    pub(super) fn admin_b(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(B_IP), self.admin.1)
    }
}

/// Write a fresh cluster key and TSIG key into `dir`; return the TSIG secret.
pub(super) fn write_keys(dir: &Path) -> Result<Vec<u8>> {
    write_secret(&dir.join("cluster.key"), &Psk::generate(), true)
        .context("writing the cluster key")?;
    let secret: [u8; 32] = rand::random();
    let b64 = data_encoding::BASE64.encode(&secret);
    write_secret(
        &dir.join("tsig.key"),
        &format!(
            "key \"{TSIG_KEY_NAME}\" {{\n    algorithm hmac-sha256;\n    secret \"{b64}\";\n}};\n"
        ),
        true,
    )
    .context("writing the TSIG key")?;
    Ok(secret.to_vec())
}

/// The file of the fleet's device credentials (owner-only: it holds keys).
pub(super) const DEVICE_KEYS: &str = "device-keys.json";

/// Enrol devices 1..=`count` as `standby devices enroll` does: the
/// enrolment key and the register the profile names (in `dir`), and every
/// device's credential in [`DEVICE_KEYS`].
pub(super) fn enrol_fleet(dir: &Path, count: usize) -> Result<()> {
    use standby_device::auth::{CredentialFile, CredentialRecord};
    use standby_host::enrolment::{EnrolmentKey, Register};
    let key = EnrolmentKey::create(&dir.join("device-enrolment.key"))
        .context("writing the device enrolment key")?;
    let mut register = Register::default();
    let now = standby_host::store::unix_ms();
    let mut file = CredentialFile::default();
    for id in 1..=count as u32 {
        let entry = register.enroll(id, now, std::time::Duration::from_secs(86_400));
        file.credentials
            .push(CredentialRecord::from(&key.credential(&entry)));
    }
    register
        .save(&dir.join("enrolled-devices.json"))
        .context("writing the device register")?;
    write_secret(&dir.join(DEVICE_KEYS), &serde_json::to_string(&file)?, true)
        .context("writing the device credentials")
}

/// How the demo runs the profile.
pub(super) struct Timings {
    /// Copy interval.
    pub copy_every: String,
    /// Device keep-alive, ms.
    pub keepalive_ms: u64,
    /// Device dead-link timeout, ms.
    pub dead_link_ms: u64,
}

fn set(root: &mut Value, path: &[&str], value: Value) -> Result<()> {
    let mut at = root;
    for key in &path[..path.len() - 1] {
        at = match at {
            Value::Table(t) => t
                .entry(key.to_string())
                .or_insert_with(|| Value::Table(Default::default())),
            Value::Array(a) => a
                .first_mut()
                .with_context(|| format!("profile array `{key}` is empty"))?,
            _ => bail!("profile key `{}` is not a table", path.join(".")),
        };
        if let Value::Array(a) = at {
            at = a
                .first_mut()
                .with_context(|| format!("profile array `{key}` is empty"))?;
        }
    }
    match at {
        Value::Table(t) => {
            t.insert(path[path.len() - 1].to_string(), value);
            Ok(())
        }
        _ => bail!("profile key `{}` is not a table", path.join(".")),
    }
}

fn remove(root: &mut Value, path: &[&str]) {
    let mut at = root;
    for key in &path[..path.len() - 1] {
        let next = match at {
            Value::Table(t) => t.get_mut(*key),
            _ => None,
        };
        at = match next {
            Some(Value::Array(a)) => match a.first_mut() {
                Some(v) => v,
                None => return,
            },
            Some(v) => v,
            None => return,
        };
    }
    if let Value::Table(t) = at {
        t.remove(path[path.len() - 1]);
    }
}

/// The application as the demo runs it: `standby demo-writer`, a service
/// of the active node.
pub(super) struct Writer<'a> {
    /// The standby binary.
    pub exe: &'a Path,
    /// The working directory (named on its command line).
    pub dir: &'a Path,
    /// Writes a second.
    pub rate: f64,
}

/// The `app` failover entry running the demo's writer, in place of the
/// example's (which runs BioStar's unit through systemctl).
fn writer_entry(w: &Writer) -> Result<Value> {
    let exe = w.exe.display().to_string();
    let dir = w.dir.display().to_string();
    let rate = w.rate.to_string();
    let command: Vec<&str> = vec![&exe, "demo-writer", "--workdir", &dir, "--rate", &rate];
    let mut entry = toml::map::Map::new();
    entry.insert("plugin".into(), Value::String("builtin:app".into()));
    entry.insert(
        "settings".into(),
        toml::from_str("service = \"writer\"\nstop_grace_ms = 1000")?,
    );
    let mut grant = toml::map::Map::new();
    grant.insert("command".into(), Value::try_from(command)?);
    let mut exec = toml::map::Map::new();
    exec.insert("writer".into(), Value::Table(grant));
    let mut grants = toml::map::Map::new();
    grants.insert("exec".into(), Value::Table(exec));
    entry.insert("grants".into(), Value::Table(grants));
    Ok(Value::Table(entry))
}

/// Put the demo's writer in place of the example's application (or take
/// the application out when `writer` is None).
fn set_application(p: &mut Value, writer: Option<&Writer>) -> Result<()> {
    let failover = p
        .get_mut("failover")
        .and_then(Value::as_array_mut)
        .context("the profile has no [[failover]]")?;
    failover.retain(|e| e.get("plugin").and_then(Value::as_str) != Some("builtin:app"));
    if let Some(w) = writer {
        failover.push(writer_entry(w)?);
    }
    Ok(())
}

/// The profile of `options.profile` with this run's addresses, timings and
/// application.
pub(super) fn profile(
    options: &DemoOptions,
    ports: &Ports,
    t: &Timings,
    writer: Option<&Writer>,
) -> Result<String> {
    let (text, what) = match options.profile {
        DemoProfile::Case1 => (CASE1, "case 1"),
        DemoProfile::Case3 => (CASE3, "case 3"),
    };
    let mut p: Value =
        toml::from_str(text).with_context(|| format!("the embedded {what} profile"))?;
    common(&mut p, ports, t, options.device_auth)?;
    if options.profile == DemoProfile::Case1 {
        remove(&mut p, &["strategy", "settings", "daily_at"]);
        set(
            &mut p,
            &["strategy", "settings", "every"],
            Value::String(t.copy_every.clone()),
        )?;
    }
    set_application(&mut p, writer)?;
    toml::to_string(&p).context("writing the demo profile")
}

/// What every case's profile needs on this machine.
fn common(p: &mut Value, ports: &Ports, t: &Timings, device_auth: bool) -> Result<()> {
    let s = |v: &str| Value::String(v.to_string());
    let i = |v: u64| Value::Integer(v as i64);
    for (site, ip, peer, admin) in [
        ("onsite", A_IP, ports.peer.0, ports.admin.0),
        ("dr", B_IP, ports.peer.1, ports.admin.1),
    ] {
        set(p, &["sites", site, "data_dir"], s(site))?;
        set(
            p,
            &["sites", site, "peer_listen"],
            s(&format!("{ip}:{peer}")),
        )?;
        set(
            p,
            &["sites", site, "admin_listen"],
            s(&format!("{ip}:{admin}")),
        )?;
        set(
            p,
            &["sites", site, "gateway", "listen"],
            s(&format!("{ip}:{}", ports.device)),
        )?;
    }
    set(p, &["cluster", "witness"], s(&ports.witness.to_string()))?;
    set(p, &["cluster", "startup_grace_ms"], i(5_000))?;
    set(p, &["devices", "keepalive_ms"], i(t.keepalive_ms))?;
    set(p, &["devices", "dead_link_ms"], i(t.dead_link_ms))?;
    set(p, &["plugins", "cache"], Value::Boolean(true))?;
    if !device_auth {
        set(p, &["devices", "auth", "mode"], s("off"))?;
    }
    set(
        p,
        &["failover", "settings", "ttl"],
        i(u64::from(SERVICE_TTL)),
    )?;
    set(
        p,
        &["failover", "grants", "dns", "primary", "server"],
        s(&ports.dns.to_string()),
    )?;
    Ok(())
}

/// `standby devices simulate` as the demo runs it.
pub(super) fn fleet_args(
    options: &DemoOptions,
    timings: &Timings,
    endpoints: &str,
    resolver: SocketAddr,
    dir: &Path,
) -> Vec<String> {
    let flag = |f: &str, v: String| [f.to_string(), v];
    [
        vec!["devices".into(), "simulate".into()],
        flag("--count", options.devices.to_string()).to_vec(),
        flag("--endpoints", endpoints.into()).to_vec(),
        flag("--resolver", resolver.to_string()).to_vec(),
        flag("--event-rate", options.event_rate.to_string()).to_vec(),
        flag("--data-dir", dir.join("devices").display().to_string()).to_vec(),
        if options.device_auth {
            flag("--credentials", dir.join(DEVICE_KEYS).display().to_string()).to_vec()
        } else {
            Vec::new()
        },
        // Eight loopback source addresses: with thousands of links from one
        // address the kernel's search for a free port stalls.
        flag(
            "--source-ips",
            (1..=8)
                .map(|i| format!("127.0.1.{i}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .to_vec(),
        flag("--keepalive-ms", timings.keepalive_ms.to_string()).to_vec(),
        flag("--dead-link-ms", timings.dead_link_ms.to_string()).to_vec(),
        // Long enough for a SYN retransmission (1 s) when the new server's
        // accept queue overflows in the reconnection storm.
        flag("--connect-timeout-ms", "2000".into()).to_vec(),
        flag("--backoff-initial-ms", "100".into()).to_vec(),
        flag("--backoff-max-ms", "1000".into()).to_vec(),
        flag("--fail-action", "soft".into()).to_vec(),
        flag("--drain-secs", "30".into()).to_vec(),
        // Every device's status only now and then (the final one is written
        // when the fleet stops): with 10,000 devices each write costs CPU the
        // reconnection storm needs. The summary, for the live progress,
        // every second.
        flag(
            "--status-file",
            dir.join("fleet.json").display().to_string(),
        )
        .to_vec(),
        flag("--status-every", "60".into()).to_vec(),
        flag(
            "--summary-file",
            dir.join("fleet-summary.json").display().to_string(),
        )
        .to_vec(),
        vec!["--json".into()],
    ]
    .concat()
}
