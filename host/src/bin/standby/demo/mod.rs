//! `standby demo`: the whole failover on one machine. A witness, site A
//! (127.0.0.1) and site B (127.0.0.2) run as child processes of this binary
//! with the case 1 profile; a built-in DNS server serves the service name; a
//! fleet of simulated devices (another child) dials A first and the name
//! second. After `--kill-after` seconds A is killed (SIGKILL) or hung
//! (SIGSTOP); B takes over; the devices come back to B through DNS. Then the
//! independent checker compares every device's own log with B's database,
//! opened read-only.

mod child;
mod setup;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use child::{Child, Signal};
use setup::{Ports, Timings, A_IP, B_IP, SERVICE_NAME, SERVICE_TTL, TSIG_KEY_NAME, ZONE};
use standby_host::audit;
use standby_host::dns::server::DnsServer;

/// Options of `standby demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// The deployment case to run.
    #[arg(long, value_enum, default_value_t = DemoProfile::Case1)]
    profile: DemoProfile,
    /// Simulated devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Access events per second across the fleet.
    #[arg(long, default_value_t = 200.0)]
    event_rate: f64,
    /// Seconds of normal running before the fault, counted once every device
    /// is connected to site A.
    #[arg(long, default_value_t = 8.0)]
    kill_after: f64,
    /// The fault injected into site A.
    #[arg(long, value_enum, default_value_t = Fault::Kill)]
    fault: Fault,
    /// Seconds the devices keep generating after the fault.
    #[arg(long, default_value_t = 8.0)]
    run_after: f64,
    /// Print the outcome as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Keep the working directory (logs, databases, device logs) and print its path.
    #[arg(long)]
    keep: bool,
    /// Log filter of the child processes (their logs stay in the working
    /// directory), e.g. `info,standby_host::device::agent=debug`.
    #[arg(long, default_value = "info")]
    child_log: String,
}

/// The deployment cases the demo can run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum DemoProfile {
    /// Case 1: scheduled verified copies, DNS failover.
    Case1,
}

/// The fault injected into site A.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Fault {
    /// SIGKILL: the process is gone, its sockets reset.
    Kill,
    /// SIGSTOP: the process hangs with its sockets open; only keep-alives tell.
    Hang,
}

/// The outcome, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Outcome {
    profile: DemoProfile,
    fault: Fault,
    devices: usize,
    events_generated: u64,
    events_in_db: u64,
    events_lost: u64,
    duplicate_events: u64,
    recovered_from_devices: u64,
    rpo_events: u64,
    rpo_recovered: u64,
    restored_from: String,
    /// The silence B's detector measured before it suspected A (null when
    /// B had heard no active peer since it started).
    detect_ms: Option<u64>,
    /// B's promotion, from suspicion to an open gateway, by B's timeline.
    promote_ms: Option<u64>,
    /// From the moment the demo delivered the fault to the moment B answered
    /// that it is active with its promotion complete, by the demo's clock.
    fault_to_active_ms: u64,
    reconnect_all_ms: Option<u64>,
    /// Fault to the moment half of the devices were connected to B.
    reconnect_p50_ms: Option<u64>,
    /// ... nine devices in ten.
    reconnect_p90_ms: Option<u64>,
    /// ... 99 devices in 100.
    reconnect_p99_ms: Option<u64>,
    devices_on_b: usize,
    /// None when the fleet printed no summary (it did not stop in time).
    degraded_ms: Option<u64>,
    epoch_before: u64,
    epoch_after: u64,
    a_after_fault: String,
    a_acknowledging_after_resume: Option<bool>,
    a_accepts_devices_after_resume: Option<bool>,
    /// Entries A's database records as received by A that it did not hold
    /// when it was stopped, 3 s after it resumed (hang only; what it had
    /// queued from the devices must not be stored).
    a_entries_stored_after_resume: Option<u64>,
    endpoints: String,
    copies_at_dr_before_fault: bool,
    dir: Option<PathBuf>,
}

fn say(quiet: bool, started: Instant, text: impl AsRef<str>) {
    let _ = quiet;
    eprintln!(
        "[{:>6.2}s] {}",
        started.elapsed().as_secs_f64(),
        text.as_ref()
    );
}

/// Ask a node's admin endpoint (blocking HTTP in a worker thread).
async fn status(addr: SocketAddr) -> Option<Value> {
    tokio::task::spawn_blocking(move || crate::admin::fetch_status(addr).ok())
        .await
        .ok()
        .flatten()
}

/// Poll a node's status every 100 ms until `ok` holds.
async fn wait_status(
    addr: SocketAddr,
    limit: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_status_every(addr, limit, Duration::from_millis(100), what, ok)
        .await
        .map(|(s, _)| s)
}

/// Poll a node's status every `every` until `ok` holds; the status, and the
/// moment (by this process's clock) the answer that satisfied `ok` arrived.
async fn wait_status_every(
    addr: SocketAddr,
    limit: Duration,
    every: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<(Value, Instant)> {
    let until = Instant::now() + limit;
    loop {
        if let Some(s) = status(addr).await {
            if ok(&s) {
                return Ok((s, Instant::now()));
            }
        }
        if Instant::now() > until {
            bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A JSON file the fleet writes (None while it does not exist yet).
fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn on(summary: &Value, node: &str) -> usize {
    summary["summary"]["by_server"][node].as_u64().unwrap_or(0) as usize
}

/// Run the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("standby-demo-")
        .tempdir()
        .context("creating the demo's working directory")?;
    let dir = tmp.path().to_path_buf();
    let result = run_in(&args, &dir, started).await;
    if args.keep || result.is_err() {
        let kept = tmp.keep();
        eprintln!("standby demo: working directory kept at {}", kept.display());
    }
    result
}

async fn run_in(args: &DemoArgs, dir: &Path, started: Instant) -> Result<()> {
    let quiet = args.json;
    let ports = Ports::pick()?;
    let secret = setup::write_keys(dir)?;
    let timings = Timings {
        copy_every: "2s".into(),
        keepalive_ms: 1_000,
        dead_link_ms: 3_000,
    };
    let profile_text = setup::case1_profile(&ports, &timings)?;
    let profile = dir.join("profile.toml");
    std::fs::write(&profile, profile_text).context("writing the demo profile")?;
    say(
        quiet,
        started,
        format!("working directory {}", dir.display()),
    );

    let dns = DnsServer::start(
        ports.dns,
        ZONE,
        TSIG_KEY_NAME,
        &secret,
        &[(SERVICE_NAME, A_IP)],
        SERVICE_TTL,
    )
    .await
    .context("starting the built-in DNS server")?;
    say(
        quiet,
        started,
        format!(
            "DNS server on {} (udp+tcp): {SERVICE_NAME} -> {A_IP}",
            dns.local_addr()
        ),
    );

    let mut witness = Child::spawn(
        "witness",
        &[
            "witness".into(),
            "--listen".into(),
            ports.witness.to_string(),
            "--data-dir".into(),
            dir.join("witness").display().to_string(),
            "--psk-file".into(),
            dir.join("cluster.key").display().to_string(),
        ],
        &dir.join("witness.log"),
        false,
        &args.child_log,
    )?;
    let node = |site: &str| -> Vec<String> {
        vec![
            "run".into(),
            profile.display().to_string(),
            "--site".into(),
            site.into(),
        ]
    };
    let mut a = Child::spawn(
        "site A",
        &node("onsite"),
        &dir.join("onsite.log"),
        false,
        &args.child_log,
    )?;
    let sa = wait_status(
        ports.admin_a(),
        Duration::from_secs(60),
        "site A becoming active",
        |s| s["role"] == "active",
    )
    .await
    .with_context(|| format!("site A's log ends:\n{}", a.tail(20)))?;
    let epoch_before = sa["epoch"].as_u64().unwrap_or(0);
    say(
        quiet,
        started,
        format!("site A (onsite-1, {A_IP}) is active at epoch {epoch_before}"),
    );
    let mut b = Child::spawn(
        "site B",
        &node("dr"),
        &dir.join("dr.log"),
        false,
        &args.child_log,
    )?;
    wait_status(
        ports.admin_b(),
        Duration::from_secs(60),
        "site B joining as standby",
        |s| s["role"] == "standby" && s["peer"]["connected"] == true,
    )
    .await
    .with_context(|| format!("site B's log ends:\n{}", b.tail(20)))?;
    say(
        quiet,
        started,
        format!("site B (dr-1, {B_IP}) is standby, peer link up"),
    );

    let devices_dir = dir.join("devices");
    let fleet_status = dir.join("fleet.json");
    let fleet_summary = dir.join("fleet-summary.json");
    let endpoints = format!("{A_IP}:{},{SERVICE_NAME}:{}", ports.device, ports.device);
    let mut fleet = Child::spawn(
        "device fleet",
        &[
            "devices".into(),
            "simulate".into(),
            "--count".into(),
            args.devices.to_string(),
            "--endpoints".into(),
            endpoints.clone(),
            "--resolver".into(),
            dns.local_addr().to_string(),
            "--event-rate".into(),
            args.event_rate.to_string(),
            "--data-dir".into(),
            devices_dir.display().to_string(),
            // Eight loopback source addresses: with thousands of links from
            // one address the kernel's search for a free port stalls.
            "--source-ips".into(),
            (1..=8)
                .map(|i| format!("127.0.1.{i}"))
                .collect::<Vec<_>>()
                .join(","),
            "--keepalive-ms".into(),
            timings.keepalive_ms.to_string(),
            "--dead-link-ms".into(),
            timings.dead_link_ms.to_string(),
            // Long enough for a SYN retransmission (1 s) when the new
            // server's accept queue overflows in the reconnection storm.
            "--connect-timeout-ms".into(),
            "2000".into(),
            "--backoff-initial-ms".into(),
            "100".into(),
            "--backoff-max-ms".into(),
            "1000".into(),
            "--fail-action".into(),
            "soft".into(),
            "--drain-secs".into(),
            "30".into(),
            // Every device's status only now and then (the final one is
            // written when the fleet stops): with 10,000 devices each write
            // costs CPU the reconnection storm needs. The summary, for the
            // live progress, every second.
            "--status-file".into(),
            fleet_status.display().to_string(),
            "--status-every".into(),
            "60".into(),
            "--summary-file".into(),
            fleet_summary.display().to_string(),
            "--json".into(),
        ],
        &dir.join("fleet.log"),
        true,
        &args.child_log,
    )?;
    say(
        quiet,
        started,
        format!(
            "{} devices dial {A_IP}:{} first, then {SERVICE_NAME}:{}; {} events/s",
            args.devices, ports.device, ports.device, args.event_rate
        ),
    );

    // -- Every device on A before the clock starts: the fault must meet a
    // fleet in normal running, not one still creating its logs (with
    // 10,000 devices that takes seconds, and more on a busy disk).
    let limit = Duration::from_secs(60 + args.devices as u64 / 100);
    let until = Instant::now() + limit;
    loop {
        let on_a = read_json(&fleet_summary)
            .map(|f| on(&f, "onsite-1"))
            .unwrap_or(0);
        if on_a >= args.devices {
            break;
        }
        if !fleet.running() {
            bail!(
                "the device fleet exited before every device connected; its log ends:\n{}",
                fleet.tail(30)
            );
        }
        if Instant::now() > until {
            bail!(
                "only {on_a} of {} devices connected to site A within {limit:?}; the fleet's log ends:\n{}",
                args.devices,
                fleet.tail(30)
            );
        }
        say(
            quiet,
            started,
            format!("devices connecting to A: {on_a}/{}", args.devices),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    say(
        quiet,
        started,
        format!(
            "every device is on A; the fault comes in {} s",
            args.kill_after
        ),
    );

    // -- Normal running: copies flow to B.
    let run_until = Instant::now() + Duration::from_secs_f64(args.kill_after);
    let mut copies_at_dr = false;
    while Instant::now() < run_until
        || (!copies_at_dr && Instant::now() < run_until + Duration::from_secs(30))
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sb = status(ports.admin_b()).await;
        let installed = sb
            .as_ref()
            .and_then(|s| s["strategies"][0]["status"]["Ok"]["last_success_ms"].as_u64());
        copies_at_dr = installed.is_some();
        let f = read_json(&fleet_summary);
        say(
            quiet,
            started,
            format!(
                "devices on A {} | events logged {} acked {} | last copy installed at B {}",
                f.as_ref().map(|f| on(f, "onsite-1")).unwrap_or(0),
                f.as_ref()
                    .and_then(|f| f["summary"]["events_logged"].as_u64())
                    .unwrap_or(0),
                f.as_ref()
                    .and_then(|f| f["summary"]["events_acked"].as_u64())
                    .unwrap_or(0),
                sb.as_ref()
                    .map(|s| s["strategies"][0]["status"]["Ok"]["summary"].clone())
                    .map(|v| v.as_str().unwrap_or("-").to_string())
                    .unwrap_or_else(|| "-".into())
            ),
        );
    }
    if !copies_at_dr {
        say(
            quiet,
            started,
            "no verified copy reached B before the fault; B will start from its own database",
        );
    }

    // -- The fault. Its moment is taken once the signal is delivered.
    match args.fault {
        Fault::Kill => a.signal(Signal::KILL)?,
        Fault::Hang => a.signal(Signal::STOP)?,
    }
    let fault_ms = standby_host::store::unix_ms();
    let fault_at = Instant::now();
    say(
        quiet,
        started,
        format!(
            "FAULT: site A {}",
            match args.fault {
                Fault::Kill => "killed (SIGKILL)",
                Fault::Hang => "hung (SIGSTOP): its sockets stay open",
            }
        ),
    );
    // B is asked every 10 ms, so the time to the answer that says it is
    // active (and its promotion complete) overstates the truth by at most
    // that much plus one status round trip.
    let (sb, b_active_at) = wait_status_every(
        ports.admin_b(),
        Duration::from_secs(30),
        Duration::from_millis(10),
        "site B becoming active",
        |s| s["role"] == "active" && s["last_failover"]["completed"] == true,
    )
    .await
    .with_context(|| format!("site B's log ends:\n{}", b.tail(30)))?;
    let fault_to_active_ms = b_active_at.duration_since(fault_at).as_millis() as u64;
    // What A had committed when it stopped (it may later become standby and
    // take B's copies, so its live file no longer tells). A stays stopped or
    // dead until it is resumed below.
    let a_at_fault = copy_database(
        &dir.join("onsite").join("biostar2.db"),
        &dir.join("a-at-fault.db"),
    );
    let timeline = sb["last_failover"].clone();
    say(
        quiet,
        started,
        format!(
            "site B is active at epoch {} ({fault_to_active_ms} ms after the fault)",
            sb["epoch"],
        ),
    );
    eprint!("{}", crate::admin::render_timeline(&timeline));
    let restored_from = sb["promoted_from"][0]["report"]["restored_from"]
        .as_str()
        .unwrap_or("-")
        .to_string();
    let restored_copy = keep_restored_copy(dir, &restored_from);

    // -- Devices come back through DNS.
    let until = Instant::now() + Duration::from_secs(60);
    let mut last_said = usize::MAX;
    loop {
        let f = read_json(&fleet_summary);
        let n = f.as_ref().map(|f| on(f, "dr-1")).unwrap_or(0);
        if n != last_said {
            say(
                quiet,
                started,
                format!("devices on B: {n}/{}", args.devices),
            );
            last_said = n;
        }
        if n >= args.devices || Instant::now() > until || !fleet.running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // -- A hung node comes back fenced.
    let mut a_after = String::from("killed");
    let mut a_acknowledging = None;
    let mut a_accepts = None;
    let mut a_stored_after = None;
    if args.fault == Fault::Hang {
        a.signal(Signal::CONT)?;
        say(quiet, started, "site A resumed (SIGCONT)");
        let s = wait_status(
            ports.admin_a(),
            Duration::from_secs(15),
            "site A stepping down",
            |s| s["role"] != "active",
        )
        .await;
        if let Ok(s) = &s {
            a_acknowledging = s["acknowledging"].as_bool();
        }
        a_accepts = Some(
            tokio::net::TcpStream::connect((A_IP, ports.device))
                .await
                .is_ok(),
        );
        a_after = match s {
            Ok(s) => format!(
                "{} at epoch {} (transitions: {})",
                s["role"].as_str().unwrap_or("?"),
                s["epoch"],
                s["transitions"]
                    .as_array()
                    .map(|t| t
                        .iter()
                        .map(|t| format!("{}->{}", text(&t["from"]), text(&t["to"])))
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            Err(e) => format!("unknown: {e}"),
        };
        say(quiet, started, format!("site A is now {a_after}"));
        // Whatever A had read from the devices' sockets before it stopped is
        // now handled: none of it may be stored. (A standby A may meanwhile
        // install B's copies; their rows received by A are ones A held at
        // the fault.)
        tokio::time::sleep(Duration::from_secs(3)).await;
        if let Some(at_fault) = &a_at_fault {
            let before = audit::received_by(at_fault, "onsite-1")?;
            let now = audit::received_by(&dir.join("onsite").join("biostar2.db"), "onsite-1")?;
            let stored = now.difference(&before).count() as u64;
            say(
                quiet,
                started,
                format!("site A stored {stored} entries after it resumed"),
            );
            a_stored_after = Some(stored);
        }
    }

    // -- Stop generating, drain, stop everything.
    let stop_at = fault_at + Duration::from_secs_f64(args.run_after);
    tokio::time::sleep_until(stop_at.into()).await;
    say(
        quiet,
        started,
        "stopping the fleet: it stops generating and drains",
    );
    fleet.signal(Signal::TERM)?;
    let fleet_out = fleet.output(Duration::from_secs(90)).await?;
    let fleet_json: Value = fleet_out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    if fleet_json.is_null() {
        say(
            quiet,
            started,
            "the fleet printed no summary: degraded_ms is unknown",
        );
    }
    let final_status = read_json(&fleet_status).unwrap_or(Value::Null);
    b.stop(Duration::from_secs(10)).await;
    a.stop(Duration::from_secs(5)).await;
    witness.stop(Duration::from_secs(5)).await;
    dns.shutdown().await;

    // -- The independent check.
    say(
        quiet,
        started,
        "checking every device's log against B's database (read-only)",
    );
    let b_db = dir.join("dr").join("biostar2.db");
    let in_b = audit::check(&devices_dir, &b_db)?;
    let in_copy = match &restored_copy {
        Some(p) => Some(audit::check(&devices_dir, p)?),
        None => None,
    };
    let copy_found = in_copy.as_ref().map(|r| r.found).unwrap_or(0);
    let b_keys = audit::found_keys(&devices_dir, &b_db)?;
    let copy_keys = match &restored_copy {
        Some(p) => audit::found_keys(&devices_dir, p)?,
        None => Default::default(),
    };
    let a_keys = match &a_at_fault {
        Some(p) => audit::found_keys(&devices_dir, p)?,
        None => Default::default(),
    };
    let lacked: Vec<_> = a_keys.difference(&copy_keys).collect();
    let rpo_recovered = lacked.iter().filter(|k| b_keys.contains(k)).count() as u64;
    let reconnects = reconnect_times(&final_status, fault_ms);
    let reconnect_at = |fraction: f64| percentile(&reconnects, args.devices, fraction);
    let outcome = Outcome {
        profile: args.profile,
        fault: args.fault,
        devices: args.devices,
        events_generated: in_b.entries,
        events_in_db: in_b.found,
        events_lost: in_b.missing + in_b.mismatched,
        duplicate_events: in_b.duplicate_entries + in_b.unknown_rows,
        recovered_from_devices: in_b.found.saturating_sub(copy_found),
        rpo_events: lacked.len() as u64,
        rpo_recovered,
        restored_from,
        detect_ms: timeline["detect_ms"].as_u64(),
        promote_ms: timeline["total_ms"].as_u64(),
        fault_to_active_ms,
        reconnect_all_ms: reconnect_at(1.0),
        reconnect_p50_ms: reconnect_at(0.5),
        reconnect_p90_ms: reconnect_at(0.9),
        reconnect_p99_ms: reconnect_at(0.99),
        devices_on_b: on(&final_status, "dr-1"),
        degraded_ms: fleet_json["longest_degraded_ms"].as_u64(),
        epoch_before,
        epoch_after: timeline["epoch_after"].as_u64().unwrap_or(0),
        a_after_fault: a_after,
        a_acknowledging_after_resume: a_acknowledging,
        a_accepts_devices_after_resume: a_accepts,
        a_entries_stored_after_resume: a_stored_after,
        endpoints: endpoints.clone(),
        copies_at_dr_before_fault: copies_at_dr,
        dir: args.keep.then(|| dir.to_path_buf()),
    };
    eprintln!(
        "\nOUTCOME ({:?}, {:?}): {} devices, {} log entries, {} in B's database, {} lost, {} duplicated\n  \
         B started from {}; the copy lacked {} entries A had committed ({} of them came back from the devices); B got {} entries from the devices after promotion\n  \
         B active {} ms after the fault (detection {} ms + promotion {} ms); devices on B after the fault: half {} ms, 90 % {} ms, 99 % {} ms, all {} ms; epoch {} -> {}",
        outcome.profile,
        outcome.fault,
        outcome.devices,
        outcome.events_generated,
        outcome.events_in_db,
        outcome.events_lost,
        outcome.duplicate_events,
        outcome.restored_from,
        outcome.rpo_events,
        outcome.rpo_recovered,
        outcome.recovered_from_devices,
        outcome.fault_to_active_ms,
        opt(outcome.detect_ms),
        opt(outcome.promote_ms),
        opt(outcome.reconnect_p50_ms),
        opt(outcome.reconnect_p90_ms),
        opt(outcome.reconnect_p99_ms),
        opt(outcome.reconnect_all_ms),
        outcome.epoch_before,
        outcome.epoch_after
    );
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    }
    Ok(())
}

/// For each device connected to B (dr-1), the time from the fault to its
/// connection, in ms, sorted.
fn reconnect_times(fleet_status: &Value, fault_ms: u64) -> Vec<u64> {
    let mut times: Vec<u64> = fleet_status["devices"]
        .as_array()
        .map(|devs| {
            devs.iter()
                .filter(|d| d["server"]["node_id"] == "dr-1")
                .filter_map(|d| d["connected_since_ms"].as_u64())
                .map(|t| t.saturating_sub(fault_ms))
                .collect()
        })
        .unwrap_or_default();
    times.sort_unstable();
    times
}

/// The time by which `fraction` of all `devices` were on B; None when fewer
/// than that many got there.
fn percentile(sorted: &[u64], devices: usize, fraction: f64) -> Option<u64> {
    let needed = ((devices as f64) * fraction).ceil().max(1.0) as usize;
    sorted.get(needed - 1).copied()
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(String::from)
        .unwrap_or_else(|| v.to_string())
}

/// Copy a database with its WAL (the writer is stopped or gone).
fn copy_database(src: &Path, dest: &Path) -> Option<PathBuf> {
    std::fs::copy(src, dest).ok()?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", src.display()));
        if from.exists() {
            let _ = std::fs::copy(&from, format!("{}{suffix}", dest.display()));
        }
    }
    Some(dest.to_path_buf())
}

/// Copy the snapshot B restored from (named in its promotion report) before
/// B's own schedule prunes it: the check counts what it lacked.
fn keep_restored_copy(dir: &Path, restored_from: &str) -> Option<PathBuf> {
    let name = restored_from
        .split_whitespace()
        .find(|w| w.starts_with("biostar2-") && w.ends_with(".db"))?;
    let src = dir.join("dr").join("snapshots").join(name);
    let dest = dir.join("restored-copy.db");
    std::fs::copy(&src, &dest).ok()?;
    Some(dest)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_count_devices_that_never_reached_b() {
        let times = [100, 200, 300, 400];
        assert_eq!(percentile(&times, 4, 0.5), Some(200));
        assert_eq!(percentile(&times, 4, 1.0), Some(400));
        assert_eq!(percentile(&times, 4, 0.99), Some(400));
        // Five devices, four on B: the last one never came.
        assert_eq!(percentile(&times, 5, 1.0), None);
        assert_eq!(percentile(&times, 5, 0.5), Some(300));
        assert_eq!(percentile(&[], 1, 0.5), None);
    }
}
