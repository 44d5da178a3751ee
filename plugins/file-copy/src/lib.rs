//! `file-copy`: a replication strategy that takes a consistent snapshot of the
//! database on a schedule, verifies it (checksum and `PRAGMA integrity_check`),
//! keeps the newest N, and ships it to the other site, which verifies it again
//! and installs it atomically.
//!
//! Settings (all optional):
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `every` | — | copy interval (`2s`, `10m`, `24h`); excludes `daily_at` |
//! | `daily_at` | `02:00` | UTC time of the daily copy |
//! | `retain` | 3 | verified snapshots kept on each side |
//! | `root` | `snapshots` | granted files root for snapshots |
//! | `ship` | `true` | send each verified snapshot to the peer |

use standby_plugin_sdk::caps::{clock, db, files, peer};
use standby_plugin_sdk::{
    describe_error, descriptor, Descriptor, Error, FileRef, HandoverProgress, NodeContext,
    PromoteReport, Received, Result, Role, Settings, Strategy, StrategyStatus, TickReport,
};

mod schedule;
use schedule::{parse_duration, parse_time_of_day, Schedule};

/// Prefix and suffix of snapshot file names: `biostar2-<13-digit ms>.db`.
const PREFIX: &str = "biostar2-";
const SUFFIX: &str = ".db";
/// Suffix of the manifest written next to a verified snapshot.
const VERIFIED: &str = ".verified";
/// Longest pause between ticks.
const MAX_TICK_MS: u64 = 1_000;

/// A snapshot that passed verification.
#[derive(Debug, Clone)]
pub struct Copy {
    /// File name inside the root.
    pub name: String,
    /// Snapshot id from the host.
    pub id: u64,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// When the snapshot began.
    pub taken_at: u64,
}

/// The strategy's state.
#[derive(Debug)]
pub struct FileCopy {
    schedule: Schedule,
    retain: usize,
    root: String,
    ship: bool,
    /// Whether copies are verified before they count. Always true in the
    /// shipped plugin; a test fixture builds a variant without it.
    verify: bool,
    last_local: Option<Copy>,
    last_shipped: Option<(Copy, u64)>,
    last_installed: Option<Copy>,
    last_error: Option<String>,
    /// A planned switchover's last copy (its snapshot id), and whether the
    /// standby said it installed it.
    handover: Option<(u64, bool)>,
}

impl Default for FileCopy {
    fn default() -> Self {
        Self {
            schedule: Schedule::default(),
            retain: 3,
            root: String::from("snapshots"),
            ship: true,
            verify: true,
            last_local: None,
            last_shipped: None,
            last_installed: None,
            last_error: None,
            handover: None,
        }
    }
}

impl FileCopy {
    /// A variant that skips verification (for a test fixture only).
    pub fn without_verification() -> Self {
        Self {
            verify: false,
            ..Self::default()
        }
    }

    fn file(&self, name: &str) -> FileRef {
        FileRef {
            root: self.root.clone(),
            path: String::from(name),
        }
    }

    /// Take, verify and record one snapshot.
    pub fn copy_now(&mut self) -> Result<Copy> {
        let name = format!("{PREFIX}{:013}{SUFFIX}", clock::now());
        let info = db::snapshot(&self.file(&name))?;
        if self.verify {
            if let Err(e) = self.verify_file(&name, &info.sha256) {
                // A copy that fails verification never counts; do not keep it.
                let _ = files::remove(&self.file(&name));
                return Err(e);
            }
            let manifest = format!(
                "id={}\nsize={}\nsha256={}\ntaken_at={}\nintegrity=ok\n",
                info.id, info.size, info.sha256, info.taken_at
            );
            files::write_small(
                &self.file(&format!("{name}{VERIFIED}")),
                manifest.as_bytes(),
            )?;
        }
        let copy = Copy {
            name,
            id: info.id,
            size: info.size,
            sha256: info.sha256,
            taken_at: info.taken_at,
        };
        self.prune()?;
        Ok(copy)
    }

    /// Check a snapshot file: re-read checksum equal to `sha256`, and `PRAGMA integrity_check` ok.
    fn verify_file(&self, name: &str, sha256: &str) -> Result<()> {
        let file = self.file(name);
        let on_disk = files::sha256(&file)?;
        if on_disk != sha256 {
            return Err(Error::Other(format!(
                "{name}: checksum mismatch (expected {sha256}, file has {on_disk})"
            )));
        }
        let report = db::integrity_check(&file)?;
        if !report.ok {
            return Err(Error::Other(format!(
                "{name}: integrity check failed: {}",
                report.problems.join("; ")
            )));
        }
        Ok(())
    }

    /// Snapshot names in the root, oldest first, with whether each is verified.
    fn snapshots(&self) -> Result<Vec<(String, bool)>> {
        let entries = files::list_dir(&self.file(""))?;
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        Ok(names
            .iter()
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
            .map(|n| {
                let manifest = format!("{n}{VERIFIED}");
                (String::from(*n), names.contains(&manifest.as_str()))
            })
            .collect())
    }

    /// Keep the newest `retain` verified snapshots; remove older ones and any
    /// unverified leftovers.
    fn prune(&self) -> Result<()> {
        let all = self.snapshots()?;
        let verified = all.iter().filter(|(_, ok)| *ok || !self.verify).count();
        let mut to_drop = verified.saturating_sub(self.retain);
        for (name, ok) in &all {
            let counts = *ok || !self.verify;
            if !counts || to_drop > 0 {
                if counts {
                    to_drop -= 1;
                }
                files::remove(&self.file(name))?;
                if *ok {
                    files::remove(&self.file(&format!("{name}{VERIFIED}")))?;
                }
            }
        }
        Ok(())
    }

    fn ship(&mut self, copy: &Copy) -> Result<()> {
        if !self.ship || !peer::status().connected {
            return Ok(());
        }
        let receipt = peer::send_file(
            &self.file(&copy.name),
            &format!("{}:{}", copy.id, copy.taken_at),
        )?;
        if receipt.sha256 != copy.sha256 {
            return Err(Error::Other(format!(
                "{}: peer stored a different checksum ({})",
                copy.name, receipt.sha256
            )));
        }
        self.last_shipped = Some((copy.clone(), clock::now()));
        Ok(())
    }

    /// Standby side: verify a received snapshot and install it.
    fn install_received(
        &mut self,
        file: &FileRef,
        tag: &str,
        sha256: &str,
        size: u64,
    ) -> Result<()> {
        let (id, taken_at) = parse_tag(tag)?;
        let report = db::integrity_check(file)?;
        if !report.ok {
            let _ = files::remove(file);
            return Err(Error::Other(format!(
                "received snapshot failed its integrity check: {}",
                report.problems.join("; ")
            )));
        }
        db::install(file)?;
        // Record it as verified here too, so retention counts it.
        let manifest = format!(
            "id={id}\nsize={size}\nsha256={sha256}\ntaken_at={taken_at}\nintegrity=ok\ninstalled=yes\n"
        );
        files::write_small(
            &self.file(&format!("{}{VERIFIED}", file.path)),
            manifest.as_bytes(),
        )?;
        self.prune()?;
        self.last_installed = Some(Copy {
            name: file.path.clone(),
            id,
            size,
            sha256: String::from(sha256),
            taken_at,
        });
        peer::send_message("installed", id.to_string().as_bytes())?;
        Ok(())
    }
}

fn parse_tag(tag: &str) -> Result<(u64, u64)> {
    let bad = || Error::InvalidArgument(format!("snapshot tag `{tag}` is not <id>:<taken_at>"));
    let (id, at) = tag.split_once(':').ok_or_else(bad)?;
    Ok((
        id.parse().map_err(|_| bad())?,
        at.parse().map_err(|_| bad())?,
    ))
}

impl Strategy for FileCopy {
    fn describe(&self) -> Descriptor {
        descriptor(
            "file-copy",
            env!("CARGO_PKG_VERSION"),
            "scheduled, verified snapshot copies of the database to the other site",
        )
    }

    fn configure(&mut self, settings: &Settings) -> Result<()> {
        settings.deny_unknown(&["every", "daily_at", "retain", "root", "ship"])?;
        self.schedule = match (settings.text_opt("every")?, settings.text_opt("daily_at")?) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidArgument(String::from(
                    "settings `every` and `daily_at` exclude each other; give one",
                )))
            }
            (Some(every), None) => Schedule::Every(parse_duration("every", &every)?),
            (None, Some(at)) => Schedule::DailyAt(parse_time_of_day("daily_at", &at)?),
            (None, None) => Schedule::default(),
        };
        self.retain = settings.integer("retain", 3, 1, 1_000)? as usize;
        self.root = settings.text("root", "snapshots")?;
        self.ship = settings.boolean("ship", true)?;
        Ok(())
    }

    fn tick(&mut self, ctx: &NodeContext) -> Result<TickReport> {
        if ctx.role != Role::Active {
            return Ok(TickReport {
                next_tick_ms: MAX_TICK_MS as u32,
                did: String::new(),
            });
        }
        let now = clock::now();
        let due = self
            .schedule
            .next_due(self.last_local.as_ref().map(|c| c.taken_at), now);
        if now < due {
            let wait = (due - now).min(MAX_TICK_MS);
            return Ok(TickReport {
                next_tick_ms: wait as u32,
                did: String::new(),
            });
        }
        let copy = match self.copy_now() {
            Ok(copy) => copy,
            Err(e) => {
                self.last_error = Some(describe_error(&e));
                return Err(e);
            }
        };
        self.last_local = Some(copy.clone());
        let did = match self.ship(&copy) {
            Ok(()) => {
                self.last_error = None;
                format!("snapshot {} ({} bytes)", copy.name, copy.size)
            }
            Err(e) => {
                let text = describe_error(&e);
                self.last_error = Some(text.clone());
                format!(
                    "snapshot {} kept locally; shipping failed: {text}",
                    copy.name
                )
            }
        };
        let next = self.schedule.next_due(Some(copy.taken_at), clock::now());
        let wait = next.saturating_sub(clock::now()).min(MAX_TICK_MS);
        Ok(TickReport {
            next_tick_ms: wait as u32,
            did,
        })
    }

    fn on_receive(&mut self, ctx: &NodeContext, item: Received) -> Result<()> {
        match item {
            Received::File(f) if ctx.role != Role::Active => {
                self.install_received(&f.file, &f.tag, &f.sha256, f.size)
            }
            Received::File(f) => Err(Error::Conflict(format!(
                "an active node does not install snapshots (got {})",
                f.file.path
            ))),
            Received::Message((kind, body)) if kind == "installed" => {
                let id: u64 = core::str::from_utf8(&body)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        Error::InvalidArgument(String::from("bad `installed` message"))
                    })?;
                if let Some((awaited, confirmed)) = &mut self.handover {
                    *confirmed |= *awaited == id;
                }
                db::confirm_durable(db::DurableMark::Snapshot(id))
            }
            Received::Message((kind, _)) => {
                Err(Error::InvalidArgument(format!("unknown message `{kind}`")))
            }
            // This host sends no change batches yet; were one to arrive,
            // refusing it is all file-copy can do.
            Received::Batch(_) => Err(Error::InvalidArgument(String::from(
                "file-copy does not take change batches",
            ))),
        }
    }

    fn on_promote(&mut self, _ctx: &NodeContext) -> Result<PromoteReport> {
        // The newest verified snapshot was installed when it arrived; the live
        // database is already the latest copy.
        Ok(match &self.last_installed {
            Some(c) => PromoteReport {
                restored_from: format!("snapshot {} ({} bytes)", c.name, c.size),
                restored_at: Some(c.taken_at),
                note: String::new(),
            },
            None => PromoteReport {
                restored_from: String::from("the database already on this node"),
                restored_at: None,
                note: String::from("no snapshot was received by this node's plugin instance"),
            },
        })
    }

    fn on_demote(&mut self, _ctx: &NodeContext) -> Result<()> {
        self.last_local = None;
        self.handover = None;
        Ok(())
    }

    fn handover(&mut self, ctx: &NodeContext, first: bool) -> Result<HandoverProgress> {
        if ctx.role != Role::Active {
            return Err(Error::Conflict(String::from(
                "only the active node hands over",
            )));
        }
        if first || self.handover.is_none() {
            // The database is frozen: this copy holds every commit.
            if !self.ship || !peer::status().connected {
                return Err(Error::Unavailable(String::from(
                    "the last copy cannot reach the other site (shipping off, or the peer link down)",
                )));
            }
            let copy = self.copy_now()?;
            self.last_local = Some(copy.clone());
            self.ship(&copy)?;
            self.handover = Some((copy.id, false));
            return Ok(HandoverProgress {
                done: false,
                note: format!(
                    "sent the last copy {} ({} bytes); waiting for the standby to install it",
                    copy.name, copy.size
                ),
            });
        }
        let done = self.handover.is_some_and(|(_, confirmed)| confirmed);
        Ok(HandoverProgress {
            done,
            note: String::from(if done {
                "the standby installed the last copy"
            } else {
                "waiting for the standby to install the last copy"
            }),
        })
    }

    fn status(&self, _ctx: &NodeContext) -> StrategyStatus {
        let last = self.last_local.as_ref().or(self.last_installed.as_ref());
        let mut details = vec![(String::from("verify"), self.verify.to_string())];
        if let Some((c, at)) = &self.last_shipped {
            details.push((String::from("last_shipped"), format!("{} at {at}", c.name)));
        }
        if let Some(c) = &self.last_local {
            details.push((String::from("last_snapshot"), c.name.clone()));
        }
        if let Some(e) = &self.last_error {
            details.push((String::from("last_error"), e.clone()));
        }
        StrategyStatus {
            healthy: self.last_error.is_none(),
            last_success: last.map(|c| c.taken_at),
            last_size: last.map(|c| c.size),
            lag_ms: last.map(|c| clock::now().saturating_sub(c.taken_at)),
            summary: match (last, &self.last_error) {
                (_, Some(e)) => format!("failing: {e}"),
                (Some(c), None) => format!("last copy {} ({} bytes)", c.name, c.size),
                (None, None) => String::from("no copy yet"),
            },
            details,
        }
    }
}

#[cfg(feature = "export")]
standby_plugin_sdk::export_strategy!(FileCopy);
