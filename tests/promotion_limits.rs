//! A promotion never waits on a plugin without a bound, end to end: real
//! processes (witness, two sites) and a fixture strategy whose `on-promote`
//! blocks inside the files capability (reading a FIFO nobody writes). With
//! the default `cluster.failover_step_timeout = "continue"` the step fails
//! at `plugins.failover_call_limit_ms` and the node becomes active all the
//! same; with `"abandon"` it goes back to standby, gives the lease back and
//! never opens its gateway. And a `tick` blocked the same way gives way to
//! the promotion at once (preempted, not waited for).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use crate::step;
use serde_json::Value;
use standby_lab::cluster::{ever_active, Cluster, Which};

const START: Duration = Duration::from_secs(60);
const FAILOVER: Duration = Duration::from_secs(60);

/// The call limit the tests set (the default is 5,000 ms).
const LIMIT_MS: u64 = 500;

/// A cluster whose profile adds the stalling strategy; only B's data
/// directory holds the FIFO, so A's `on-promote` fails at once (no such
/// file) instead of blocking, and A becomes active.
fn cluster(dir: &Path, mode: &str, b_flags: &[&str]) -> Cluster {
    let plugin = standby_lab::fixtures::fixture("misbehave");
    let extra = format!(
        "[[strategy]]\nname = \"staller\"\nplugin = \"{}\"\n\
         [strategy.settings]\nmode = \"{mode}\"\n\
         [strategy.grants]\nfiles = {{ data = \"staller\" }}\n",
        plugin.display()
    );
    let mut c = Cluster::with_extra(&crate::standby(), dir, true, &extra);
    standby_lab::fixtures::stalling_fifo(&dir.join("dr").join("staller"));
    let witness = c.witness_addr.clone().unwrap();
    c.start_witness(&witness);
    c.start(Which::A, &[]);
    c.wait_status(Which::A, START, |s| s["role"] == "active");
    let mut flags = vec![format!("plugins.failover_call_limit_ms={LIMIT_MS}")];
    flags.extend(b_flags.iter().map(|f| f.to_string()));
    c.start(Which::B, &flags);
    c.wait_status(Which::B, START, |s| {
        s["role"] == "standby" && s["peer"]["connected"] == true
    });
    c
}

fn assert_ran_out(timeline: &Value) {
    let s = step(timeline, "on-promote:staller");
    assert_eq!(s["ok"], false, "{timeline}");
    let note = s["note"].as_str().unwrap();
    assert!(
        note.contains(&format!("did not finish within {LIMIT_MS} ms")),
        "the step names the limit it ran out of: {note}"
    );
    // The step ended at the limit, not when the capability returned (it
    // never does): a bound, not a speed goal.
    let took = s["took_ms"].as_u64().unwrap();
    eprintln!("on-promote:staller stopped after {took} ms (limit {LIMIT_MS} ms)");
    assert!(
        took < 10 * LIMIT_MS,
        "the stalled step took {took} ms: {timeline}"
    );
}

#[test]
fn a_stalled_on_promote_fails_its_step_and_the_promotion_goes_on_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path(), "stall", &[]);
    c.kill(Which::A);
    let b = c.wait_status(Which::B, FAILOVER, |s| {
        s["role"] == "active" && s["last_failover"]["completed"] == true
    });
    let t = &b["last_failover"];
    assert_ran_out(t);
    assert_eq!(step(t, "open-gateway")["ok"], true, "{t}");
    assert_eq!(b["gateway"]["open"], true, "{b}");
    // A stopped call is not a fault: the instance is healthy.
    let staller = b["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plugin"] == "staller")
        .unwrap_or_else(|| panic!("no staller in {b}"));
    assert_eq!(staller["state"], "healthy", "{staller}");
}

#[test]
fn with_abandon_a_stalled_on_promote_sends_the_node_back_to_standby_without_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(
        dir.path(),
        "stall",
        &["cluster.failover_step_timeout=\"abandon\""],
    );
    c.kill(Which::A);
    // B wins the lease, its on-promote runs out, and it abandons.
    let b = c.wait_status(Which::B, FAILOVER, |s| {
        s["last_failover"]["completed"] == false
            && s["last_failover"]["steps"]
                .as_array()
                .is_some_and(|st| st.iter().any(|x| x["name"] == "abandon"))
    });
    let t = &b["last_failover"];
    assert_ran_out(t);
    assert!(
        step(t, "abandon")["note"]
            .as_str()
            .unwrap()
            .contains("failover_step_timeout"),
        "{t}"
    );
    assert!(
        t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "open-gateway"),
        "an abandoned promotion never opens the gateway: {t}"
    );
    // From then on B is never active with its gateway open, and each time it
    // tries again the witness sees the lease given back.
    let window = Instant::now();
    let mut polls = 0;
    let mut released = false;
    while window.elapsed() < Duration::from_secs(5) {
        if let Some(s) = c.status(Which::B) {
            polls += 1;
            assert_eq!(s["gateway"]["open"], false, "{s}");
            assert_eq!(s["acknowledging"], false, "{s}");
            released |= s["role"] == "standby" && s["witness"]["holder"].is_null();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(polls >= 5, "B answered only {polls} status requests");
    assert!(released, "B never gave the lease back while standby");
    let s = c.status(Which::B).unwrap();
    let abandoned = s["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["from"] == "active" && t["to"] == "standby")
        .count();
    assert!(abandoned >= 1, "no active -> standby transition: {s}");
    assert!(ever_active(&s));
}

#[test]
fn a_tick_blocked_inside_a_capability_gives_way_to_the_promotion() {
    // The finding: a long tick holding the instance kept the gateway closed
    // for 7.9 s after the node called itself active. Now the promotion
    // preempts it: on-promote gets the instance long before its own limit.
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(
        dir.path(),
        "stall-tick",
        &["plugins.failover_call_limit_ms=5000"],
    );
    // B's tick is blocked on the FIFO by now (it ticks every second).
    std::thread::sleep(Duration::from_secs(2));
    c.kill(Which::A);
    let b = c.wait_status(Which::B, FAILOVER, |s| {
        s["role"] == "active" && s["last_failover"]["completed"] == true
    });
    let t = &b["last_failover"];
    let s = step(t, "on-promote:staller");
    assert_eq!(
        s["ok"], true,
        "on-promote waited for the blocked tick instead of preempting it: {t}"
    );
    eprintln!(
        "on-promote:staller took {} ms with a tick blocked inside `files`; promotion total {} ms",
        s["took_ms"], t["total_ms"]
    );
    assert_eq!(step(t, "open-gateway")["ok"], true, "{t}");
    assert!(
        c.log(Which::B).contains("stopped for a promotion"),
        "the preempted tick is logged as such, not as a fault"
    );
}
