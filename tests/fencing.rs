//! The fencing hook end to end, with real processes (witness, two sites) and
//! real shell scripts as `cluster.fence_command`: what the command is told,
//! that it runs before the node calls itself active, what a failing command
//! does with and without `fence_required`, and a command that hangs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::step;
use serde_json::Value;
use standby_lab::cluster::{ever_active, Cluster, Which};

/// Generous bounds: the machine running the tests may be slow and busy.
const START: Duration = Duration::from_secs(60);
const FAILOVER: Duration = Duration::from_secs(60);

/// Write `body` as a shell script in `dir`; the fencing command is
/// `/bin/sh <script>`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    path
}

/// Replace a script atomically (the node may be starting it right now).
fn replace_script(path: &Path, body: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `--set` flags giving a node `script` as its fencing command, plus `extra`.
fn fence_flags(script: &Path, extra: &[&str]) -> Vec<String> {
    let mut flags = vec![format!(
        r#"cluster.fence_command=["/bin/sh", "{}"]"#,
        script.display()
    )];
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn step_names(timeline: &Value) -> Vec<String> {
    timeline["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Witness and A up, A active; then B with `flags`, standby and connected.
fn cluster_with_b(dir: &Path, b_flags: &[String]) -> Cluster {
    let mut c = Cluster::new(&crate::standby(), dir, true);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start(Which::A, &[]);
    c.wait_status(Which::A, START, |s| s["role"] == "active");
    c.start(Which::B, b_flags);
    c.wait_status(Which::B, START, |s| {
        s["role"] == "standby" && s["peer"]["connected"] == true
    });
    c
}

fn wait_active(c: &Cluster) -> Value {
    c.wait_status(Which::B, FAILOVER, |s| {
        s["role"] == "active" && s["last_failover"]["completed"] == true
    })
}

#[test]
fn the_fencing_command_is_told_epoch_node_and_peer_and_runs_before_the_node_is_active() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fenced = d.join("fenced.log");
    let during = d.join("status-during-fence.json");
    // The command records what it was told, and asks B for its status while
    // it runs (with STANDBY_EPOCH/NODE/PEER set, which the CLI must not take
    // for profile keys).
    let fence = script(
        d,
        "fence.sh",
        &format!(
            "echo \"$STANDBY_EPOCH $STANDBY_NODE $STANDBY_PEER\" >> {fenced}\n\
             {bin} status {profile} --site dr --json > {during}\n\
             exit 0",
            fenced = fenced.display(),
            bin = env!("CARGO_BIN_EXE_standby"),
            profile = d.join("profile.toml").display(),
            during = during.display(),
        ),
    );
    let mut c = cluster_with_b(d, &fence_flags(&fence, &["cluster.fence_timeout_ms=30000"]));
    assert!(
        !fenced.exists(),
        "nothing is fenced while A is active: {:?}",
        lines(&fenced)
    );

    c.kill(Which::A);
    let b = wait_active(&c);
    let epoch = b["epoch"].as_u64().unwrap();
    assert_eq!(
        lines(&fenced),
        [format!("{epoch} dr-1 onsite-1")],
        "one fencing run, with B's new epoch, B's id and A's id"
    );
    let t = &b["last_failover"];
    assert_eq!(t["epoch_after"].as_u64(), Some(epoch), "{t}");
    let fence_step = step(t, "fence");
    assert_eq!(fence_step["ok"], true, "{t}");
    assert!(
        fence_step["note"].as_str().unwrap().contains("exit 0"),
        "{t}"
    );
    let names = step_names(t);
    assert_eq!(
        &names[..2],
        ["lease", "fence"],
        "fencing comes right after the lease: {names:?}"
    );
    assert_eq!(names.last().map(String::as_str), Some("open-gateway"));
    assert!(
        step(t, "lease")["note"]
            .as_str()
            .unwrap()
            .contains(&format!("granted at epoch {epoch}")),
        "{t}"
    );

    // While the command ran, B held the lease but did not call itself active.
    let seen: Value = serde_json::from_str(&std::fs::read_to_string(&during).unwrap())
        .unwrap_or_else(|e| panic!("B's status during fencing: {e}"));
    assert_eq!(seen["role"], "candidate", "{seen}");
    assert_eq!(seen["acknowledging"], false, "{seen}");
    assert_eq!(seen["gateway"]["open"], false, "{seen}");
    assert!(seen["epoch"].as_u64().unwrap() < epoch, "{seen}");
    assert_eq!(seen["witness"]["holder"], "dr-1", "{seen}");
}

#[test]
fn a_required_fencing_command_that_fails_keeps_the_node_out_of_active_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let attempts = d.join("attempts");
    let fenced = d.join("fenced-ok");
    let fence = script(
        d,
        "fence.sh",
        &format!(
            "echo \"$STANDBY_EPOCH\" >> {}\necho 'power switch unreachable' >&2\nexit 1",
            attempts.display()
        ),
    );
    let mut c = cluster_with_b(d, &fence_flags(&fence, &["cluster.fence_required=true"]));
    c.kill(Which::A);

    // The command is run...
    let started = Instant::now();
    while !attempts.exists() {
        assert!(
            started.elapsed() < FAILOVER,
            "the fencing command never ran\n{}",
            c.log(Which::B)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...and for the next seconds B never calls itself active, never
    // acknowledges, never opens its gateway.
    let window = Instant::now();
    let mut polls = 0;
    while window.elapsed() < Duration::from_secs(6) {
        if let Some(s) = c.status(Which::B) {
            polls += 1;
            assert_ne!(s["role"], "active", "{s}");
            assert!(!ever_active(&s), "B was active at some point: {s}");
            assert_eq!(s["acknowledging"], false, "{s}");
            assert_eq!(s["gateway"]["open"], false, "{s}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(polls >= 5, "B answered only {polls} status requests");
    let failed: Vec<u64> = lines(&attempts)
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    // Tried again, each time under a fresh lease, but with a growing pause
    // (1 s, 2 s, 4 s, ...), not in a tight loop.
    assert!(
        !failed.is_empty() && failed.len() <= 6,
        "attempts in ~6 s: {failed:?}"
    );
    assert!(
        failed.windows(2).all(|w| w[0] < w[1]),
        "each attempt has a new epoch: {failed:?}"
    );
    // The lease is given back after each failed attempt.
    let b = c.wait_status(Which::B, Duration::from_secs(20), |s| {
        s["lease"].is_null() && s["witness"]["holder"] != "dr-1"
    });
    let witness_log = std::fs::read_to_string(d.join("witness.log")).unwrap_or_default();
    assert!(
        witness_log
            .lines()
            .any(|l| l.contains("lease released") && l.contains("dr-1")),
        "the witness saw no release by dr-1:\n{witness_log}"
    );
    let t = &b["last_failover"];
    assert_eq!(t["completed"], false, "{t}");
    let fence_step = step(t, "fence");
    assert_eq!(fence_step["ok"], false, "{t}");
    let note = fence_step["note"].as_str().unwrap();
    assert!(
        note.contains("exit status: 1") && note.contains("power switch unreachable"),
        "{note}"
    );
    assert!(
        !step_names(t).iter().any(|n| n == "open-gateway"),
        "an abandoned promotion opens nothing: {t}"
    );
    assert!(
        b["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["from"] == "candidate"
                && x["to"] == "standby"
                && x["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("promotion abandoned")),
        "{b}"
    );
    assert!(
        c.log(Which::B).contains("fencing command failed"),
        "{}",
        c.log(Which::B)
    );

    // Once fencing works, the next attempt promotes B.
    replace_script(
        &fence,
        &format!("echo \"$STANDBY_EPOCH\" >> {}\nexit 0", fenced.display()),
    );
    let b = wait_active(&c);
    let epoch = b["epoch"].as_u64().unwrap();
    assert_eq!(lines(&fenced), [epoch.to_string()]);
    assert!(failed.iter().all(|f| *f < epoch), "{failed:?} then {epoch}");
    let t = &b["last_failover"];
    assert_eq!(step(t, "fence")["ok"], true, "{t}");
    assert_eq!(b["gateway"]["open"], true, "{b}");
}

#[test]
fn a_failing_fencing_command_that_is_not_required_is_reported_and_the_node_promotes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let attempts = d.join("attempts");
    let fence = script(
        d,
        "fence.sh",
        &format!(
            "echo \"$STANDBY_EPOCH\" >> {}\necho 'no route to the power switch' >&2\nexit 3",
            attempts.display()
        ),
    );
    let mut c = cluster_with_b(d, &fence_flags(&fence, &[]));
    c.kill(Which::A);
    let b = wait_active(&c);
    let epoch = b["epoch"].as_u64().unwrap();
    assert_eq!(
        lines(&attempts),
        [epoch.to_string()],
        "run once, not retried"
    );
    let t = &b["last_failover"];
    let fence_step = step(t, "fence");
    assert_eq!(fence_step["ok"], false, "{t}");
    let note = fence_step["note"].as_str().unwrap();
    assert!(
        note.contains("exit status: 3") && note.contains("no route to the power switch"),
        "{note}"
    );
    assert_eq!(b["gateway"]["open"], true, "{b}");
    assert_eq!(b["acknowledging"], true, "{b}");
    let log = c.log(Which::B);
    assert!(
        log.lines()
            .any(|l| l.contains("fencing command failed") && l.contains("exit status: 3")),
        "{log}"
    );
}

#[test]
fn a_hanging_fencing_command_is_killed_at_its_timeout_and_the_node_promotes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pid_file = d.join("fence.pid");
    let after = d.join("after-sleep");
    let fence = script(
        d,
        "fence.sh",
        &format!(
            "echo $$ > {pid}\nsleep 60\necho done > {after}",
            pid = pid_file.display(),
            after = after.display()
        ),
    );
    let mut c = cluster_with_b(d, &fence_flags(&fence, &["cluster.fence_timeout_ms=500"]));
    c.kill(Which::A);
    let b = wait_active(&c);
    let t = &b["last_failover"];
    let fence_step = step(t, "fence");
    assert_eq!(fence_step["ok"], false, "{t}");
    assert!(
        fence_step["note"]
            .as_str()
            .unwrap()
            .contains("no answer within 500ms"),
        "{t}"
    );
    let took = fence_step["took_ms"].as_u64().unwrap();
    assert!(
        (500..60_000).contains(&took),
        "waited {took} ms for the command"
    );
    assert_eq!(b["gateway"]["open"], true, "{b}");
    assert!(c.log(Which::B).contains("fencing command failed"));
    // The command was started, and killed at the timeout: its shell is gone
    // (or a zombie awaiting its reaper) and never got past the sleep.
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    };
    let started = Instant::now();
    while !gone() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the fencing command {pid} still runs after its timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!after.exists());
}

#[test]
fn the_fencing_command_names_the_peer_even_when_it_was_never_heard() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fenced = d.join("fenced.log");
    let fence = script(
        d,
        "fence.sh",
        &format!(
            "echo \"$STANDBY_EPOCH $STANDBY_NODE $STANDBY_PEER\" >> {}",
            fenced.display()
        ),
    );
    // A never runs: B waits out its startup grace, then takes over.
    let mut c = Cluster::new(&crate::standby(), d, true);
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start(Which::B, &fence_flags(&fence, &[]));
    let b = wait_active(&c);
    assert!(
        b["peer"]["node_id"].is_null(),
        "B has heard A after all; the test proves nothing: {b}"
    );
    let epoch = b["epoch"].as_u64().unwrap();
    assert_eq!(lines(&fenced), [format!("{epoch} dr-1 onsite-1")]);
}
