//! The device's local event log, persisted to a file so a restart keeps it.
//!
//! File: a sequence of records, each `u32 length | MessagePack | u32 CRC-32C`.
//! The first record names the device and its log incarnation; then events and
//! "durable up to" marks. Events stay until the DR-durable watermark passes
//! them, within a bounded capacity. A device whose log is lost or reset starts
//! a new incarnation, so sequence numbers are never reused silently.
//!
//! Optionally every event is also appended to an audit file (JSON lines,
//! never trimmed), which an independent checker compares with a database.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::messages::Event;

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Header {
        device_id: u32,
        incarnation: u64,
        created_ms: u64,
    },
    Event(Event),
    Durable(u64),
    /// The highest server epoch the device has accepted (appended when it
    /// rises, so that learning a new epoch is one append, not a file
    /// rewrite; last so older logs decode unchanged).
    Epoch(u64),
}

/// One line of the audit file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLine {
    /// Device id.
    pub device: u32,
    /// Incarnation.
    pub incarnation: u64,
    /// Sequence.
    pub seq: u64,
    /// Event code.
    pub code: u16,
    /// SHA-256 of the payload, hex.
    pub sha256: String,
}

/// How a log is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Most events kept (default: a day of a busy door, one event a second).
    pub capacity: usize,
    /// fsync after every write (a real device); off trades crash safety for speed.
    pub fsync: bool,
    /// Also append every event to `<device>.audit` (JSON lines, never trimmed).
    pub audit: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            fsync: true,
            audit: false,
        }
    }
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// An existing log, continued.
    Continued,
    /// No log: a new incarnation.
    New,
    /// The log was unreadable (kept aside as `.corrupt`): a new incarnation.
    Reset(String),
}

/// The log of one device.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    audit: Option<PathBuf>,
    device_id: u32,
    incarnation: u64,
    next_seq: u64,
    durable: u64,
    entries: VecDeque<Event>,
    options: LogOptions,
    records_in_file: usize,
    dropped_undurable: u64,
    max_epoch: u64,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {e}", path.display()))
}

fn encode_record(r: &Record) -> Vec<u8> {
    let body = rmp_serde::to_vec(r).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out
}

/// Records of a file, and the byte length of its valid prefix.
fn decode_records(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 8 {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        if bytes.len() < at + 8 + len {
            break;
        }
        let body = &bytes[at + 4..at + 4 + len];
        let sum = u32::from_le_bytes([
            bytes[at + 4 + len],
            bytes[at + 5 + len],
            bytes[at + 6 + len],
            bytes[at + 7 + len],
        ]);
        if crc32c::crc32c(body) != sum {
            break;
        }
        match rmp_serde::from_slice::<Record>(body) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        at += 8 + len;
    }
    (records, at)
}

fn new_incarnation() -> u64 {
    rand::rng().random_range(1..(1u64 << 62))
}

impl EventLog {
    /// The log file of `device_id` in `dir`.
    pub fn path_in(dir: &Path, device_id: u32) -> PathBuf {
        dir.join(format!("{device_id}.log"))
    }

    /// The audit file of `device_id` in `dir`.
    pub fn audit_path_in(dir: &Path, device_id: u32) -> PathBuf {
        dir.join(format!("{device_id}.audit"))
    }

    /// Open the log of `device_id` in `dir`, or start a new incarnation.
    pub fn open(
        dir: &Path,
        device_id: u32,
        options: LogOptions,
    ) -> std::io::Result<(Self, Opened)> {
        std::fs::create_dir_all(dir)?;
        let path = Self::path_in(dir, device_id);
        let audit = options.audit.then(|| Self::audit_path_in(dir, device_id));
        let mut log = Self {
            path: path.clone(),
            audit,
            device_id,
            incarnation: 0,
            next_seq: 1,
            durable: 0,
            entries: VecDeque::new(),
            options,
            records_in_file: 0,
            dropped_undurable: 0,
            max_epoch: 0,
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log.start_incarnation()?;
                return Ok((log, Opened::New));
            }
            Err(e) => return Err(e),
        };
        let (records, valid) = decode_records(&bytes);
        let mut records = records.into_iter();
        match records.next() {
            Some(Record::Header {
                device_id: d,
                incarnation,
                ..
            }) if d == device_id => log.incarnation = incarnation,
            other => {
                let why = match other {
                    None => "no readable header".to_string(),
                    Some(Record::Header { device_id: d, .. }) => {
                        format!("it belongs to device {d}")
                    }
                    Some(_) => "it does not start with a header".to_string(),
                };
                let aside = path.with_extension("log.corrupt");
                std::fs::rename(&path, &aside)?;
                log.start_incarnation()?;
                return Ok((
                    log,
                    Opened::Reset(format!(
                        "{} was unreadable ({why}); kept as {}",
                        path.display(),
                        aside.display()
                    )),
                ));
            }
        }
        log.records_in_file = 1;
        for r in records {
            log.records_in_file += 1;
            match r {
                Record::Event(e) => {
                    log.next_seq = log.next_seq.max(e.seq + 1);
                    if e.seq > log.durable {
                        log.entries.push_back(e);
                    }
                }
                Record::Durable(seq) => {
                    log.durable = log.durable.max(seq);
                    while log.entries.front().is_some_and(|e| e.seq <= log.durable) {
                        log.entries.pop_front();
                    }
                }
                Record::Epoch(epoch) => log.max_epoch = log.max_epoch.max(epoch),
                Record::Header { .. } => {}
            }
        }
        log.next_seq = log.next_seq.max(log.durable + 1);
        if valid < bytes.len() {
            // A torn last write: drop the partial record.
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(valid as u64)?;
            f.sync_all()?;
        }
        Ok((log, Opened::Continued))
    }

    fn start_incarnation(&mut self) -> std::io::Result<()> {
        self.incarnation = new_incarnation();
        self.next_seq = 1;
        self.durable = 0;
        self.entries.clear();
        self.rewrite()
    }

    /// Rewrite the file from memory: header, durable mark, highest epoch,
    /// kept events.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut bytes = encode_record(&Record::Header {
            device_id: self.device_id,
            incarnation: self.incarnation,
            created_ms: super::unix_ms(),
        });
        bytes.extend(encode_record(&Record::Durable(self.durable)));
        let mut records = 2;
        if self.max_epoch > 0 {
            bytes.extend(encode_record(&Record::Epoch(self.max_epoch)));
            records += 1;
        }
        // Keep the highest sequence even if every event is durable, so a
        // restart continues numbering after it.
        for e in &self.entries {
            bytes.extend(encode_record(&Record::Event(e.clone())));
        }
        let tmp = self.path.with_extension("log.tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            if self.options.fsync {
                f.sync_all()?;
            }
        }
        std::fs::rename(&tmp, &self.path)?;
        self.records_in_file = records + self.entries.len();
        Ok(())
    }

    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        let mut f = OpenOptions::new().append(true).open(&self.path)?;
        f.write_all(&encode_record(record))?;
        if self.options.fsync {
            f.sync_data()?;
        }
        self.records_in_file += 1;
        Ok(())
    }

    /// Log a new event and return it with its sequence. If the log is full of
    /// events not yet durable at DR, the oldest is dropped and counted (see
    /// [`EventLog::dropped_undurable`]); this is reported, never silent.
    pub fn append(
        &mut self,
        code: u16,
        user_id: Option<String>,
        occurred_at_ms: u64,
        payload: Vec<u8>,
    ) -> std::io::Result<Event> {
        let entry = Event {
            seq: self.next_seq,
            code,
            user_id,
            occurred_at_ms,
            payload,
        };
        self.write(&Record::Event(entry.clone()))?;
        if let Some(audit) = &self.audit {
            use sha2::Digest;
            let line = AuditLine {
                device: self.device_id,
                incarnation: self.incarnation,
                seq: entry.seq,
                code,
                sha256: hex::encode(sha2::Sha256::digest(&entry.payload)),
            };
            let mut text = serde_json::to_string(&line).map_err(|e| io_err(audit, e))?;
            text.push('\n');
            let mut f = OpenOptions::new().create(true).append(true).open(audit)?;
            f.write_all(text.as_bytes())?;
        }
        self.next_seq += 1;
        if self.entries.len() >= self.options.capacity {
            if let Some(dropped) = self.entries.pop_front() {
                self.dropped_undurable += 1;
                tracing::error!(
                    device = self.device_id,
                    seq = dropped.seq,
                    capacity = self.options.capacity,
                    "event log full: dropping an event not yet durable at the DR site"
                );
            }
        }
        self.entries.push_back(entry.clone());
        Ok(entry)
    }

    /// The server says everything up to `seq` is safe at the DR site: forget it.
    pub fn mark_durable(&mut self, seq: u64) -> std::io::Result<()> {
        let seq = seq.min(self.next_seq.saturating_sub(1));
        if seq <= self.durable {
            return Ok(());
        }
        self.durable = seq;
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            self.entries.pop_front();
        }
        if self.records_in_file > 2 * self.entries.len() + 1_000 {
            self.rewrite()
        } else {
            self.write(&Record::Durable(seq))
        }
    }

    /// The highest server epoch recorded in this log (0 when none).
    pub fn max_epoch(&self) -> u64 {
        self.max_epoch
    }

    /// Record that the device accepted a server at `epoch`, if it is higher
    /// than any recorded (one appended record).
    pub fn raise_epoch(&mut self, epoch: u64) -> std::io::Result<()> {
        if epoch <= self.max_epoch {
            return Ok(());
        }
        self.write(&Record::Epoch(epoch))?;
        self.max_epoch = epoch;
        Ok(())
    }

    /// Up to `max` kept events after `seq`, in order.
    pub fn after(&self, seq: u64, max: usize) -> Vec<Event> {
        let start = self.entries.partition_point(|e| e.seq <= seq);
        self.entries.iter().skip(start).take(max).cloned().collect()
    }

    /// The device.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// The log incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Highest sequence logged (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The DR-durable watermark.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Events kept (not yet durable).
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    /// Events dropped before they were durable because the log was full.
    pub fn dropped_undurable(&self) -> u64 {
        self.dropped_undurable
    }

    /// Read an audit file.
    pub fn read_audit(path: &Path) -> std::io::Result<Vec<AuditLine>> {
        let mut text = String::new();
        File::open(path)?.read_to_string(&mut text)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| io_err(path, e)))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts() -> LogOptions {
        LogOptions {
            capacity: 5,
            fsync: false,
            audit: true,
        }
    }

    #[test]
    fn survives_a_restart_and_keeps_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, opened) = EventLog::open(dir.path(), 7, opts()).unwrap();
        assert_eq!(opened, Opened::New);
        let inc = log.incarnation();
        for i in 0..3 {
            log.append(0x1000, None, i, vec![i as u8]).unwrap();
        }
        log.mark_durable(2).unwrap();
        drop(log);
        let (mut log, opened) = EventLog::open(dir.path(), 7, opts()).unwrap();
        assert_eq!(opened, Opened::Continued);
        assert_eq!(log.incarnation(), inc);
        assert_eq!(log.durable(), 2);
        assert_eq!(
            log.after(0, 10).iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(log.append(0x1000, None, 9, vec![]).unwrap().seq, 4);
        let audit = EventLog::read_audit(&EventLog::audit_path_in(dir.path(), 7)).unwrap();
        assert_eq!(audit.len(), 4);
    }

    #[test]
    fn the_highest_epoch_survives_a_restart_and_a_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(dir.path(), 7, opts()).unwrap();
        assert_eq!(log.max_epoch(), 0);
        log.raise_epoch(3).unwrap();
        log.raise_epoch(2).unwrap();
        let records = log.records_in_file;
        log.raise_epoch(3).unwrap();
        assert_eq!(
            log.records_in_file, records,
            "an epoch not above is not written"
        );
        drop(log);
        let (mut log, _) = EventLog::open(dir.path(), 7, opts()).unwrap();
        assert_eq!(log.max_epoch(), 3);
        log.append(0x1000, None, 1, vec![1]).unwrap();
        log.rewrite().unwrap();
        drop(log);
        let (log, opened) = EventLog::open(dir.path(), 7, opts()).unwrap();
        assert_eq!(opened, Opened::Continued);
        assert_eq!(log.max_epoch(), 3);
        assert_eq!(log.last_seq(), 1);
    }

    #[test]
    fn a_reset_device_starts_a_new_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(dir.path(), 7, opts()).unwrap();
        let inc = log.incarnation();
        log.append(1, None, 0, vec![]).unwrap();
        drop(log);
        std::fs::remove_file(EventLog::path_in(dir.path(), 7)).unwrap();
        let (log, opened) = EventLog::open(dir.path(), 7, opts()).unwrap();
        assert_eq!(opened, Opened::New);
        assert_ne!(log.incarnation(), inc);
        assert_eq!(log.last_seq(), 0);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_garbage_resets() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(dir.path(), 7, opts()).unwrap();
        log.append(1, None, 0, vec![1]).unwrap();
        log.append(1, None, 0, vec![2]).unwrap();
        drop(log);
        let path = EventLog::path_in(dir.path(), 7);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (log, opened) = EventLog::open(dir.path(), 7, opts()).unwrap();
        assert_eq!(opened, Opened::Continued);
        assert_eq!(log.last_seq(), 1);
        drop(log);
        std::fs::write(&path, b"garbage").unwrap();
        let (_, opened) = EventLog::open(dir.path(), 7, opts()).unwrap();
        assert!(matches!(opened, Opened::Reset(_)));
    }

    #[test]
    fn a_full_log_reports_what_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(dir.path(), 7, opts()).unwrap();
        for i in 0..7 {
            log.append(1, None, i, vec![]).unwrap();
        }
        assert_eq!(log.pending(), 5);
        assert_eq!(log.dropped_undurable(), 2);
        assert_eq!(log.after(0, 1)[0].seq, 3);
    }
}
