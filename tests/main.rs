//! The end-to-end tests: one target across nodes, devices and plugins, each
//! area a module. Nodes, witnesses, fleets and the demo are processes of the
//! `standby` binary this package builds; faults are real signals and cut
//! links; loss is judged by the independent checker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod application;
mod cdc;
mod cli;
mod config_golden;
mod device_auth;
mod device_link;
mod device_memory;
mod device_servers;
mod dns;
mod dns_ip;
mod durable_marks;
mod failover;
mod fencing;
mod file_copy;
mod flood;
mod plugin_runtime;
mod plugin_sdk;
mod promotion_limits;
mod raw_device;
mod returning;
mod switchover;

use standby_lab::process::Standby;

/// The named step of a failover timeline (status JSON).
fn step<'a>(timeline: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    timeline["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps: {timeline}"))
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` step: {timeline}"))
}

/// Every row of `table` in the database at `db` (opened read-only), each
/// as text, sorted; none when the database cannot be opened (yet).
fn table_rows(db: &std::path::Path, table: &str) -> Vec<String> {
    use rusqlite::{Connection, OpenFlags};
    let Ok(c) = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return Vec::new();
    };
    let mut stmt = c.prepare(&format!("SELECT * FROM {table}")).unwrap();
    let n = stmt.column_count();
    let mut out: Vec<String> = stmt
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    out.sort();
    out
}

/// The `standby` binary under test.
fn standby() -> Standby {
    Standby::at(env!("CARGO_BIN_EXE_standby"))
}

/// Run `standby ARGS` to its end: (success, stdout, stderr).
fn run_standby(args: &[&str]) -> (bool, String, String) {
    standby().run(args).unwrap()
}
