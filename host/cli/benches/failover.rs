//! Failover benchmark: runs `standby demo --json` (witness, two sites, DNS
//! server and device fleet as separate processes on loopback) for each fleet
//! size and fault, and reports the fault-to-active time by the demo's own
//! clock (`fault_to_active_ms`, the "detection + promotion" figure), the
//! detection and promotion times of B's timeline, fault-to-all-reconnected
//! times, and the independent checker's loss count.
//!
//! ```text
//! cargo bench -p standby --bench failover
//! FAILOVER_BENCH_DEVICES=1000 FAILOVER_BENCH_FAULTS=kill FAILOVER_BENCH_RUNS=5 cargo bench -p standby --bench failover
//! FAILOVER_BENCH_AUTH=on,off cargo bench -p standby --bench failover   # with and without device authentication
//! FAILOVER_BENCH_PROFILES=case3,case1 cargo bench -p standby --bench failover   # the demo's cases (default case3)
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken from the command line.
    let devices = env_list("FAILOVER_BENCH_DEVICES", "1000,10000");
    let faults = env_list("FAILOVER_BENCH_FAULTS", "kill,hang");
    let auths = env_list("FAILOVER_BENCH_AUTH", "on");
    let profiles = env_list("FAILOVER_BENCH_PROFILES", "case3");
    let runs: usize = std::env::var("FAILOVER_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!(
        "| case | devices | device auth | fault | runs | detect ms (median) | promote ms (median) | fault to active ms, demo's clock (median / worst) | all devices on B ms (median / worst) | events | lost |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for n in &devices {
        let count: usize = n.parse().expect("FAILOVER_BENCH_DEVICES: numbers");
        let combos: Vec<(&String, &String, &String)> = profiles
            .iter()
            .flat_map(|p| faults.iter().map(move |f| (p, f)))
            .flat_map(|(p, f)| auths.iter().map(move |a| (p, f, a)))
            .collect();
        for (profile, fault, auth) in combos {
            let (mut detect, mut promote, mut both, mut reconnect) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut events, mut lost) = (0u64, 0u64);
            for run in 0..runs {
                let kill_after = 6 + count / 1000;
                let rate = (count as f64 / 10.0).clamp(100.0, 1_000.0);
                let out = Command::new(env!("CARGO_BIN_EXE_standby"))
                    .args(["--log", "warn", "demo", "--json", "--fault", fault])
                    .args(["--profile", profile])
                    .args(["--devices", &count.to_string()])
                    .args(["--event-rate", &rate.to_string()])
                    .args(["--kill-after", &kill_after.to_string()])
                    .args(["--run-after", "8"])
                    .args(["--device-auth", auth])
                    .env_remove("STANDBY_LOG")
                    .output()
                    .expect("running standby demo");
                let line = String::from_utf8_lossy(&out.stdout);
                let o: Value = match line.lines().last().map(serde_json::from_str) {
                    Some(Ok(v)) => v,
                    _ => {
                        eprintln!(
                            "run {run} ({count} devices, {fault}) failed:\n{}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                        continue;
                    }
                };
                let g = |k: &str| o[k].as_u64().unwrap_or(u64::MAX);
                eprintln!(
                    "run {run}: {profile}, {count} devices, auth {auth}, {fault}: fault to active {} ms (detect {} ms, promote {} ms), on B: half {} ms, 90 % {} ms, 99 % {} ms, all {} ms, {} events, {} lost",
                    g("fault_to_active_ms"), g("detect_ms"), g("promote_ms"), g("reconnect_p50_ms"), g("reconnect_p90_ms"), g("reconnect_p99_ms"), g("reconnect_all_ms"), g("events_generated"), g("events_lost")
                );
                detect.push(g("detect_ms"));
                promote.push(g("promote_ms"));
                both.push(g("fault_to_active_ms"));
                reconnect.push(g("reconnect_all_ms"));
                events += g("events_generated");
                lost += g("events_lost");
            }
            let worst = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
            println!(
                "| {profile} | {count} | {auth} | {fault} | {} | {} | {} | {} / {} | {} / {} | {events} | {lost} |",
                detect.len(),
                median(&mut detect.clone()),
                median(&mut promote.clone()),
                median(&mut both.clone()),
                worst(&both),
                median(&mut reconnect.clone()),
                worst(&reconnect),
            );
        }
    }
}
