//! The demo's phases, in order: start (DNS server, witness, A active, B
//! standby), connect (the fleet, every device on A), fault (normal running
//! for `kill_after` seconds, then SIGKILL or SIGSTOP of A), failover (B
//! active, the devices on B, a hung A resumed and fenced), drain (the fleet
//! stops and drains; every process stops), check (the independent checker).
//! With `--fault switchover` the fault is a planned switchover to B instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use standby_host::api::render_timeline;

use super::app;
use super::observe::{
    copy_database, keep_restored_copy, on, read_json, status, text, wait_status, wait_status_every,
};
use super::report::{percentile, reconnect_times, Outcome};
use super::setup::{self, Ports, Timings, A_IP, B_IP, SERVICE_NAME, SERVICE_TTL, ZONE};
use super::switchover;
use super::{DemoOptions, DemoProfile, Fault, Progress};
use crate::audit;
use crate::dns_server::DnsServer;
use crate::process::{Process, Signal, Standby};

/// A demo run between its phases: what runs, and what each phase saw.
pub struct Demo {
    options: DemoOptions,
    dir: PathBuf,
    progress: Progress,
    standby: Standby,
    ports: Ports,
    timings: Timings,
    dns: Option<DnsServer>,
    witness: Process,
    a: Process,
    b: Process,
    fleet: Option<Process>,
    epoch_before: u64,
    endpoints: String,
    fault: Option<FaultSeen>,
    failover: Option<FailoverSeen>,
    drained: Option<Drained>,
}

/// What the fault phase saw.
struct FaultSeen {
    at: Instant,
    at_unix_ms: u64,
    copies_at_dr: bool,
    /// A planned switchover's report.
    switchover: Option<Value>,
}

/// What the failover phase saw.
struct FailoverSeen {
    fault_to_active_ms: u64,
    timeline: Value,
    restored_from: String,
    restored_copy: Option<PathBuf>,
    a_at_fault: Option<PathBuf>,
    a_after: AfterResume,
}

/// A after the fault: killed, or what it did once resumed.
struct AfterResume {
    summary: String,
    acknowledging: Option<bool>,
    accepts_devices: Option<bool>,
    stored_after: Option<u64>,
}

/// What the drain phase saw.
struct Drained {
    fleet_summary: Value,
    fleet_status: Value,
}

impl Demo {
    /// Phase 1, start: keys, the profile, the DNS server, the witness, site
    /// A (until it is active) and site B (until it is standby with its peer
    /// link up), all in `dir`.
    pub async fn start(options: DemoOptions, dir: &Path, progress: Progress) -> Result<Self> {
        let standby = Standby::this_program().context("finding the standby program")?;
        Self::start_with(standby, options, dir, progress).await
    }

    /// [`Demo::start`] with children started from `standby` (tests name the
    /// binary they built).
    pub async fn start_with(
        standby: Standby,
        options: DemoOptions,
        dir: &Path,
        progress: Progress,
    ) -> Result<Self> {
        let ports = Ports::pick()?;
        let secret = setup::write_keys(dir)?;
        if options.device_auth {
            setup::enrol_fleet(dir, options.devices)?;
        }
        let timings = Timings {
            copy_every: "2s".into(),
            keepalive_ms: 1_000,
            dead_link_ms: 3_000,
        };
        let profile = dir.join("profile.toml");
        let writer = (options.app_write_rate > 0.0).then(|| setup::Writer {
            exe: standby.exe(),
            dir,
            rate: options.app_write_rate,
        });
        std::fs::write(
            &profile,
            setup::profile(&options, &ports, &timings, writer.as_ref())?,
        )
        .context("writing the demo profile")?;
        progress.say(format!("working directory {}", dir.display()));
        progress.say(if options.device_auth {
            format!(
                "device authentication on: {} devices enrolled, their keys in {}",
                options.devices,
                setup::DEVICE_KEYS
            )
        } else {
            "device authentication off (devices.auth.mode = \"off\")".to_string()
        });

        let dns = DnsServer::start(
            ports.dns,
            ZONE,
            setup::TSIG_KEY_NAME,
            &secret,
            &[(SERVICE_NAME, A_IP)],
            SERVICE_TTL,
        )
        .await
        .context("starting the built-in DNS server")?;
        progress.say(format!(
            "DNS server on {} (udp+tcp): {SERVICE_NAME} -> {A_IP}",
            dns.local_addr()
        ));

        let spawn = |name: &str, args: &[String], log: &str| {
            standby.spawn(name, args, &dir.join(log), &options.child_log, false)
        };
        let witness = spawn(
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
            "witness.log",
        )?;
        let node = |site: &str| -> Vec<String> {
            vec![
                "run".into(),
                profile.display().to_string(),
                "--site".into(),
                site.into(),
            ]
        };
        // Each site is a process group: its node and the application the
        // node runs, so a fault hits the site as a whole.
        let site = |name: &str, args: &[String], log: &str| {
            standby.spawn_site(name, args, &dir.join(log), &options.child_log)
        };
        let a = site("site A", &node("onsite"), "onsite.log")?;
        let sa = wait_status(
            ports.admin_a(),
            Duration::from_secs(60),
            "site A becoming active",
            |s| s["role"] == "active",
        )
        .await
        .with_context(|| format!("site A's log ends:\n{}", a.tail(20)))?;
        let epoch_before = sa["epoch"].as_u64().unwrap_or(0);
        progress.say(format!(
            "site A (onsite-1, {A_IP}) is active at epoch {epoch_before}{}",
            if options.app_write_rate > 0.0 {
                format!(
                    "; its application writes {} users/s (changes and additions)",
                    options.app_write_rate
                )
            } else {
                String::new()
            }
        ));
        let b = site("site B", &node("dr"), "dr.log")?;
        wait_status(
            ports.admin_b(),
            Duration::from_secs(60),
            "site B joining as standby",
            |s| s["role"] == "standby" && s["peer"]["connected"] == true,
        )
        .await
        .with_context(|| format!("site B's log ends:\n{}", b.tail(20)))?;
        progress.say(format!("site B (dr-1, {B_IP}) is standby, peer link up"));
        let endpoints = format!("{A_IP}:{},{SERVICE_NAME}:{}", ports.device, ports.device);
        Ok(Self {
            options,
            dir: dir.to_path_buf(),
            progress,
            standby,
            ports,
            timings,
            dns: Some(dns),
            witness,
            a,
            b,
            fleet: None,
            epoch_before,
            endpoints,
            fault: None,
            failover: None,
            drained: None,
        })
    }

    /// The working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Phase 2, connect: start the fleet and wait until every device is on A
    /// (the fault must meet a fleet in normal running, not one still
    /// creating its logs: with 10,000 devices that takes seconds).
    pub async fn connect(&mut self) -> Result<()> {
        let dns = self.dns.as_ref().context("the DNS server is stopped")?;
        let fleet = self.standby.spawn(
            "device fleet",
            &setup::fleet_args(
                &self.options,
                &self.timings,
                &self.endpoints,
                dns.local_addr(),
                &self.dir,
            ),
            &self.dir.join("fleet.log"),
            &self.options.child_log,
            true,
        )?;
        let fleet = self.fleet.insert(fleet);
        self.progress.say(format!(
            "{} devices dial {A_IP}:{} first, then {SERVICE_NAME}:{}; {} events/s",
            self.options.devices, self.ports.device, self.ports.device, self.options.event_rate
        ));
        let devices = self.options.devices;
        let limit = Duration::from_secs(60 + devices as u64 / 100);
        let until = Instant::now() + limit;
        let summary = self.dir.join("fleet-summary.json");
        loop {
            let on_a = read_json(&summary).map(|f| on(&f, "onsite-1")).unwrap_or(0);
            if on_a >= devices {
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
                    "only {on_a} of {devices} devices connected to site A within {limit:?}; the fleet's log ends:\n{}",
                    fleet.tail(30)
                );
            }
            self.progress
                .say(format!("devices connecting to A: {on_a}/{devices}"));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.progress.say(format!(
            "every device is on A; the fault comes in {} s",
            self.options.kill_after
        ));
        Ok(())
    }

    /// Phase 3, fault: normal running for `kill_after` seconds (longer only
    /// while no verified copy has reached B, at most 30 s more), then SIGKILL
    /// or SIGSTOP of site A.
    pub async fn fault(&mut self) -> Result<()> {
        let copies_at_dr = self.run_normally().await;
        if !copies_at_dr {
            self.progress.say(
                "no verified copy reached B before the fault; B will start from its own database",
            );
        }
        let signal = match self.options.fault {
            Fault::Kill => Signal::KILL,
            Fault::Hang => Signal::STOP,
            Fault::Switchover => return self.switch_over(copies_at_dr).await,
        };
        self.a.signal(signal)?;
        // The fault's moment is taken once the signal is delivered.
        self.fault = Some(FaultSeen {
            at: Instant::now(),
            at_unix_ms: standby_host::store::unix_ms(),
            copies_at_dr,
            switchover: None,
        });
        self.progress.say(format!(
            "FAULT: site A {}",
            match self.options.fault {
                Fault::Kill => "killed (SIGKILL to its node and application)",
                _ => "hung (SIGSTOP to its node and application): its sockets stay open",
            }
        ));
        Ok(())
    }

    /// The planned switchover in place of a fault: its moment is when A is
    /// asked; A answers once B says it is active.
    async fn switch_over(&mut self, copies_at_dr: bool) -> Result<()> {
        self.progress
            .say("SWITCHOVER: site A is asked (admin socket) to hand the service over to B");
        let (at, at_unix_ms) = (Instant::now(), standby_host::store::unix_ms());
        let report = switchover::request(&self.dir.join("profile.toml")).await?;
        self.progress.say(switchover::summary(&report));
        self.fault = Some(FaultSeen {
            at,
            at_unix_ms,
            copies_at_dr,
            switchover: Some(report),
        });
        Ok(())
    }

    /// Normal running, with progress every second; whether a verified copy
    /// reached B.
    async fn run_normally(&self) -> bool {
        let run_until = Instant::now() + Duration::from_secs_f64(self.options.kill_after);
        let summary = self.dir.join("fleet-summary.json");
        let mut copies_at_dr = false;
        while Instant::now() < run_until
            || (!copies_at_dr && Instant::now() < run_until + Duration::from_secs(30))
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let sb = status(self.ports.admin_b()).await;
            let copy = sb.as_ref().map(|s| &s["strategies"][0]["status"]["Ok"]);
            copies_at_dr = copy.is_some_and(|c| c["last_success_ms"].as_u64().is_some());
            let f = read_json(&summary);
            let count = |k: &str| {
                f.as_ref()
                    .and_then(|f| f["summary"][k].as_u64())
                    .unwrap_or(0)
            };
            self.progress.say(format!(
                "devices on A {} | events logged {} acked {} | app writes on A {} | replication: {}",
                f.as_ref().map(|f| on(f, "onsite-1")).unwrap_or(0),
                count("events_logged"),
                count("events_acked"),
                app::logged(&self.dir, "onsite"),
                copy.and_then(|c| c["summary"].as_str()).unwrap_or("-")
            ));
        }
        copies_at_dr
    }

    /// Phase 4, failover: B active (timed by this process's clock), the
    /// devices back on B, and a hung A resumed and seen to step down.
    pub async fn failover(&mut self) -> Result<()> {
        let fault_at = self
            .fault
            .as_ref()
            .context("the fault phase has not run")?
            .at;
        // B is asked every 10 ms, so the time to the answer that says it is
        // active (and its promotion complete) overstates the truth by at most
        // that much plus one status round trip.
        let (sb, b_active_at) = wait_status_every(
            self.ports.admin_b(),
            Duration::from_secs(30),
            Duration::from_millis(10),
            "site B becoming active",
            |s| s["role"] == "active" && s["last_failover"]["completed"] == true,
        )
        .await
        .with_context(|| format!("site B's log ends:\n{}", self.b.tail(30)))?;
        let fault_to_active_ms = b_active_at.duration_since(fault_at).as_millis() as u64;
        // What A had committed when it stopped (it may later become standby
        // and take B's copies, so its live file no longer tells). A stays
        // stopped or dead until it is resumed below.
        let a_at_fault = match self.options.fault {
            Fault::Switchover => switchover::copy_a(&self.dir),
            _ => copy_database(
                &self.dir.join("onsite").join("biostar2.db"),
                &self.dir.join("a-at-fault.db"),
            ),
        };
        let timeline = sb["last_failover"].clone();
        self.progress.say(format!(
            "site B is active at epoch {} ({fault_to_active_ms} ms after the fault)",
            sb["epoch"],
        ));
        eprint!("{}", render_timeline(&timeline));
        let restored_from = sb["promoted_from"][0]["report"]["restored_from"]
            .as_str()
            .unwrap_or("-")
            .to_string();
        let restored_copy = keep_restored_copy(&self.dir, &restored_from);
        self.wait_devices_on_b().await;
        let a_after = match self.options.fault {
            Fault::Kill => AfterResume {
                summary: "killed".into(),
                acknowledging: None,
                accepts_devices: None,
                stored_after: None,
            },
            Fault::Hang => self.resume_a(a_at_fault.as_deref()).await?,
            Fault::Switchover => {
                let sa = status(self.ports.admin_a()).await.unwrap_or_default();
                AfterResume {
                    summary: format!(
                        "handed over: {} at epoch {}",
                        text(&sa["role"]),
                        sa["epoch"]
                    ),
                    acknowledging: sa["acknowledging"].as_bool(),
                    accepts_devices: None,
                    stored_after: None,
                }
            }
        };
        self.failover = Some(FailoverSeen {
            fault_to_active_ms,
            timeline,
            restored_from,
            restored_copy,
            a_at_fault,
            a_after,
        });
        Ok(())
    }

    /// Devices come back through DNS: progress until all are on B (at most
    /// 60 s, or until the fleet exits).
    async fn wait_devices_on_b(&mut self) {
        let summary = self.dir.join("fleet-summary.json");
        let until = Instant::now() + Duration::from_secs(60);
        let mut last_said = usize::MAX;
        loop {
            let n = read_json(&summary).map(|f| on(&f, "dr-1")).unwrap_or(0);
            if n != last_said {
                self.progress
                    .say(format!("devices on B: {n}/{}", self.options.devices));
                last_said = n;
            }
            let fleet_running = self.fleet.as_mut().is_some_and(Process::running);
            if n >= self.options.devices || Instant::now() > until || !fleet_running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A hung node comes back fenced: resume it, see it step down, check its
    /// gateway is closed, and count what it stored after it resumed.
    async fn resume_a(&mut self, a_at_fault: Option<&Path>) -> Result<AfterResume> {
        self.a.signal(Signal::CONT)?;
        self.progress.say("site A resumed (SIGCONT)");
        let s = wait_status(
            self.ports.admin_a(),
            Duration::from_secs(15),
            "site A stepping down",
            |s| s["role"] != "active",
        )
        .await;
        let acknowledging = s.as_ref().ok().and_then(|s| s["acknowledging"].as_bool());
        let accepts_devices = Some(
            tokio::net::TcpStream::connect((A_IP, self.ports.device))
                .await
                .is_ok(),
        );
        let summary = match s {
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
        self.progress.say(format!("site A is now {summary}"));
        // Whatever A had read from the devices' sockets before it stopped is
        // now handled: none of it may be stored. (A standby A may meanwhile
        // install B's copies; their rows received by A are ones A held at
        // the fault.)
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut stored_after = None;
        if let Some(at_fault) = a_at_fault {
            let before = audit::received_by(at_fault, "onsite-1")?;
            let now = audit::received_by(&self.dir.join("onsite").join("biostar2.db"), "onsite-1")?;
            let stored = now.difference(&before).count() as u64;
            self.progress
                .say(format!("site A stored {stored} entries after it resumed"));
            stored_after = Some(stored);
        }
        Ok(AfterResume {
            summary,
            acknowledging,
            accepts_devices,
            stored_after,
        })
    }

    /// Phase 5, drain: `run_after` seconds after the fault the fleet stops
    /// generating and drains; then the nodes, the witness and the DNS server
    /// stop.
    pub async fn drain(&mut self) -> Result<()> {
        let fault_at = self
            .fault
            .as_ref()
            .context("the fault phase has not run")?
            .at;
        let stop_at = fault_at + Duration::from_secs_f64(self.options.run_after);
        tokio::time::sleep_until(stop_at.into()).await;
        self.progress
            .say("stopping the fleet: it stops generating and drains");
        let mut fleet = self.fleet.take().context("the connect phase has not run")?;
        fleet.signal(Signal::TERM)?;
        let out = fleet.output(Duration::from_secs(90)).await?;
        let fleet_summary: Value = out
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        if fleet_summary.is_null() {
            self.progress
                .say("the fleet printed no summary: degraded_ms is unknown");
        }
        let fleet_status = read_json(&self.dir.join("fleet.json")).unwrap_or(Value::Null);
        self.b.stop(Duration::from_secs(10)).await;
        self.a.stop(Duration::from_secs(5)).await;
        self.witness.stop(Duration::from_secs(5)).await;
        if let Some(dns) = self.dns.take() {
            dns.shutdown().await;
        }
        self.drained = Some(Drained {
            fleet_summary,
            fleet_status,
        });
        Ok(())
    }

    /// Phase 6, check: every device's own log against B's database (and the
    /// copy B restored from, and A's database at the fault), opened
    /// read-only; the outcome.
    pub fn check(&self) -> Result<Outcome> {
        let (Some(fault), Some(failover), Some(drained)) =
            (&self.fault, &self.failover, &self.drained)
        else {
            bail!("the check needs the fault, failover and drain phases first");
        };
        self.progress
            .say("checking every device's log against B's database (read-only)");
        let devices = self.dir.join("devices");
        let b_db = self.dir.join("dr").join("biostar2.db");
        let in_b = audit::check(&devices, &b_db)?;
        let b_keys = audit::found_keys(&devices, &b_db)?;
        // What B held through replication when it became active: in case 1
        // the copy it restored from; in case 3 the rows it applied from A's
        // stream (stored by A), as devices re-send to B itself.
        let copy_keys = match (self.options.profile, &failover.restored_copy) {
            (DemoProfile::Case3, _) => {
                let by_a = audit::received_by(&b_db, "onsite-1")?;
                b_keys.intersection(&by_a).copied().collect()
            }
            (DemoProfile::Case1, Some(p)) => audit::found_keys(&devices, p)?,
            (DemoProfile::Case1, None) => Default::default(),
        };
        let copy_found = copy_keys.len() as u64;
        let lease_end_ms = fault.at_unix_ms + failover.fault_to_active_ms;
        let writes = app::check(&self.dir, &b_db, fault.at_unix_ms, lease_end_ms)?;
        let a_keys = match &failover.a_at_fault {
            // After a switchover A goes on as B's standby: what it received
            // itself is what it must have handed over.
            Some(p) if self.options.fault == Fault::Switchover => {
                let own = audit::received_by(p, "onsite-1")?;
                audit::found_keys(&devices, p)?
                    .intersection(&own)
                    .copied()
                    .collect()
            }
            Some(p) => audit::found_keys(&devices, p)?,
            None => Default::default(),
        };
        let lacked: Vec<_> = a_keys.difference(&copy_keys).collect();
        let rpo_recovered = lacked.iter().filter(|k| b_keys.contains(k)).count() as u64;
        let reconnects = reconnect_times(&drained.fleet_status, fault.at_unix_ms);
        let n = self.options.devices;
        let timeline = &failover.timeline;
        Ok(Outcome {
            profile: self.options.profile,
            fault: self.options.fault,
            devices: n,
            events_generated: in_b.entries,
            events_in_db: in_b.found,
            events_lost: in_b.missing + in_b.mismatched,
            duplicate_events: in_b.duplicate_entries + in_b.unknown_rows,
            recovered_from_devices: in_b.found.saturating_sub(copy_found),
            rpo_events: lacked.len() as u64,
            rpo_recovered,
            restored_from: failover.restored_from.clone(),
            detect_ms: timeline["detect_ms"].as_u64(),
            promote_ms: timeline["total_ms"].as_u64(),
            fault_to_active_ms: failover.fault_to_active_ms,
            reconnect_all_ms: percentile(&reconnects, n, 1.0),
            reconnect_p50_ms: percentile(&reconnects, n, 0.5),
            reconnect_p90_ms: percentile(&reconnects, n, 0.9),
            reconnect_p99_ms: percentile(&reconnects, n, 0.99),
            devices_on_b: on(&drained.fleet_status, "dr-1"),
            degraded_ms: drained.fleet_summary["longest_degraded_ms"].as_u64(),
            epoch_before: self.epoch_before,
            epoch_after: timeline["epoch_after"].as_u64().unwrap_or(0),
            a_after_fault: failover.a_after.summary.clone(),
            a_acknowledging_after_resume: failover.a_after.acknowledging,
            a_accepts_devices_after_resume: failover.a_after.accepts_devices,
            a_entries_stored_after_resume: failover.a_after.stored_after,
            endpoints: self.endpoints.clone(),
            copies_at_dr_before_fault: fault.copies_at_dr,
            app_writes: writes.writes,
            app_writes_divergent: writes.divergent,
            app_writes_unreplicated: writes.unreplicated,
            lag_ms_at_fault: writes.lag_ms_at_fault,
            app_writes_on_b: writes.writes_on_b,
            switchover_handover_ms: fault
                .switchover
                .as_ref()
                .and_then(|r| r["handover_ms"].as_u64()),
            switchover_no_active_server_ms: fault
                .switchover
                .as_ref()
                .and_then(|r| r["no_active_server_ms"].as_u64()),
            dir: None,
        })
    }
}
