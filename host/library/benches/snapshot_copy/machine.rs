//! What the bench reads of the machine (its filesystems, page cache and
//! load) and how it reports a stage's time.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Standard output of a command, trimmed; what went wrong otherwise.
pub(crate) fn sh(cmd: &str, args: &[&str]) -> String {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => format!(
            "({cmd} failed: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("({cmd} unavailable: {e})"),
    }
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `df -T` of the filesystem holding `dir`, without the header.
pub(crate) fn df_t(dir: &Path) -> String {
    let out = sh("df", &["-T", path_str(dir)]);
    out.lines().last().unwrap_or(&out).to_string()
}

/// Bytes free for this user on the filesystem holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    let out = sh("df", &["-Pk", path_str(dir)]);
    let kib: u64 = out
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// How much of `path` is in the page cache, by `fincore`.
pub(crate) fn cached(path: &Path) -> String {
    let out = sh("fincore", &["-b", "-n", "-o", "RES,SIZE", path_str(path)]);
    let nums: Vec<u64> = out
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match nums[..] {
        [res, size] if size > 0 => format!(
            "{} of {} MB in the page cache ({:.0} %, fincore)",
            mb(res),
            mb(size),
            100.0 * res as f64 / size as f64
        ),
        _ => format!("unknown ({out})"),
    }
}

pub(crate) fn first_line_with(path: &str, prefix: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with(prefix)).map(|l| {
                l[prefix.len()..]
                    .trim_matches([' ', '\t', ':', '=', '"'])
                    .to_string()
            })
        })
        .unwrap_or_else(|| "?".into())
}

/// The 1, 5 and 15 minute load averages (other work on the machine skews
/// the figures).
pub(crate) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub(crate) fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

pub(crate) fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

pub(crate) struct Timed {
    pub(crate) bytes: u64,
    pub(crate) took: Duration,
}

/// CPU time this process has used (user + system), from `/proc/self/stat`
/// (clock ticks of 10 ms): how busy a stage kept the two cores.
pub(crate) fn cpu_used() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: fields 3.. ; utime and stime
    // are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

impl Timed {
    pub(crate) fn line(&self, what: &str) -> String {
        format!(
            "  {what:<24} {:>9} MB {:>8.2} s {:>8.1} MB/s",
            mb(self.bytes),
            self.took.as_secs_f64(),
            mb_s(self.bytes, self.took)
        )
    }
}
