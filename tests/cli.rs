//! The `standby` binary as an operator uses it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn standby() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_standby"));
    for (k, _) in std::env::vars() {
        if k.starts_with("STANDBY_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = standby().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_subcommands() {
    let (ok, out, _) = run(&["--help"]);
    assert!(ok);
    for sub in ["run", "check-config", "plugin"] {
        assert!(out.contains(sub), "--help lacks {sub}: {out}");
    }
    let (ok, out, _) = run(&["plugin", "--help"]);
    assert!(ok);
    for sub in ["list", "inspect", "componentize"] {
        assert!(out.contains(sub), "plugin --help lacks {sub}: {out}");
    }
}

#[test]
fn plugin_list_names_the_builtins() {
    let (ok, out, err) = run(&["plugin", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("builtin:file-copy") && out.contains("replication-strategy"),
        "{out}"
    );
    let (ok, out, _) = run(&["plugin", "list", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "builtin:file-copy"));
}

#[test]
fn plugin_inspect_shows_world_imports_and_grants_and_refuses_non_components() {
    let (ok, out, err) = run(&["plugin", "inspect", "builtin:file-copy"]);
    assert!(ok, "{err}");
    assert!(out.contains("world:   replication-strategy"), "{out}");
    assert!(out.contains("standby:plugin/db@0.1.0"), "{out}");
    assert!(out.contains("grants needed: db, files, peer"), "{out}");

    let fixture = standby_lab::fixtures::fixture("wrong-world");
    let (ok, out, _) = run(&["plugin", "inspect", "--json", fixture.to_str().unwrap()]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["world"], "failover-action");

    let toml = standby_lab::fixtures::repo().join("Cargo.toml");
    let (ok, out, err) = run(&["plugin", "inspect", toml.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(err.contains("is not a WebAssembly component"), "{err}");
}

fn write_profile(dir: &Path) -> std::path::PathBuf {
    let profile = dir.join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            r#"version = 1
name = "cli-test"
[sites.onsite]
node_id = "n1"
data_dir = "{}"
role = "active"
[[strategy]]
plugin = "builtin:file-copy"
[strategy.settings]
every = "500ms"
retain = 2
[strategy.grants]
db = {{}}
files = {{ snapshots = "snapshots" }}
peer = {{ inbox = "snapshots" }}
"#,
            dir.join("data").display()
        ),
    )
    .unwrap();
    profile
}

#[test]
fn run_takes_scheduled_copies_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path());
    let child = standby()
        .args(["--log-format", "json", "run"])
        .arg(&profile)
        .args(["--site", "onsite"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let snapshots = dir.path().join("data/snapshots");
    let deadline = Instant::now() + Duration::from_secs(30);
    let count = || {
        std::fs::read_dir(&snapshots)
            .map(|r| {
                r.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .to_string_lossy()
                        .ends_with(".db.verified")
                })
                .count()
            })
            .unwrap_or(0)
    };
    while count() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(count() >= 2, "no verified copies appeared");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit: {:?}", out.status);
    assert!(out.stdout.is_empty(), "logs must not go to stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap();
    let line: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(line.get("level").is_some());
    assert!(
        stderr.contains("node running") && stderr.contains("node stopped"),
        "{stderr}"
    );
    // Retention held.
    let kept = std::fs::read_dir(&snapshots)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .and_then(|x| x.to_str())
                == Some("db")
        })
        .count();
    assert!(kept <= 2, "{kept} snapshots kept");
}

#[test]
fn run_names_a_missing_site() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path());
    let (ok, _, err) = run(&["run", profile.to_str().unwrap(), "--site", "mars"]);
    assert!(!ok);
    assert!(
        err.contains("no site `mars`") && err.contains("onsite"),
        "{err}"
    );
}

#[test]
fn devices_simulate_prints_progress_and_a_json_summary() {
    use standby_lab::server::{Server, ServerSpec};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &crate::standby(),
        ServerSpec::new("a", 1),
        &dir.path().join("a"),
    );
    let status = dir.path().join("status.json");
    let out = standby()
        .args([
            "devices",
            "simulate",
            "--count",
            "3",
            "--event-rate",
            "30",
            "--duration",
            "2",
            "--json",
        ])
        .args(["--endpoints", &format!("127.0.0.1:{}", server.spec.port)])
        .arg("--data-dir")
        .arg(dir.path().join("devices"))
        .arg("--status-file")
        .arg(&status)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["devices"], 3);
    assert_eq!(summary["connected"], 3);
    assert!(summary["access_events"].as_u64().unwrap() > 10, "{summary}");
    assert_eq!(summary["events_acked"], summary["events_logged"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("connected 3/3"));
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
    assert_eq!(st["devices"].as_array().unwrap().len(), 3);
    // The independent check agrees: every logged entry is in the server's database.
    let report = standby_lab::audit::check(&dir.path().join("devices"), &server.db()).unwrap();
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.found, summary["events_logged"].as_u64().unwrap());
}

#[test]
fn devices_simulate_names_a_bad_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(&[
        "devices",
        "simulate",
        "--endpoints",
        "127.0.0.1",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("endpoint `127.0.0.1`") && err.contains("no port"),
        "{err}"
    );
}

#[test]
fn witness_with_an_unreadable_state_file_exits_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/witness.json"), b"{ not json").unwrap();
    standby_host::secret_file::write_secret(
        &dir.path().join("psk"),
        &standby_host::peer::Psk::generate(),
        true,
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", standby_lab::ports::free_port());
    let data = dir.path().join("data").display().to_string();
    let psk = dir.path().join("psk").display().to_string();
    let (ok, _, err) = run(&[
        "witness",
        "--listen",
        &listen,
        "--data-dir",
        &data,
        "--psk-file",
        &psk,
    ]);
    assert!(!ok, "the witness started on a state file it cannot read");
    assert!(
        err.contains("witness.json") && err.contains("refusing to guess an epoch"),
        "{err}"
    );
}

#[test]
fn check_config_reads_only_standby_variables_that_name_a_profile_section() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(dir.path());
    let check = |var: &str, value: &str| {
        let out = standby()
            .arg("check-config")
            .arg(&profile)
            .env(var, value)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // Another tool's switch that happens to share the prefix is not a profile key.
    let (ok, out) = check("STANDBY_SOME_HARNESS_SWITCH", "1");
    assert!(
        ok,
        "an unrelated STANDBY_ variable broke the profile: {out}"
    );
    // A variable naming a section is read, and its unknown key is an error.
    let (ok, out) = check("STANDBY_STORE__NO_SUCH_KEY", "1");
    assert!(!ok, "an unknown store key was accepted: {out}");
    assert!(out.contains("no_such_key"), "{out}");
}

#[test]
fn an_error_names_its_cause_once() {
    let (ok, out, err) = run(&["check-config", "/nonexistent/standby-profile.toml"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("cannot read the profile"), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the cause is repeated: {err}"
    );
}

#[test]
fn keygen_writes_an_owner_only_32_byte_key_and_short_or_exposed_keys_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let key_arg = key.to_str().unwrap();
    let (ok, _, err) = run(&["keygen", key_arg]);
    assert!(ok, "{err}");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 44);
    let (ok, _, err) = run(&["keygen", key_arg]);
    assert!(
        !ok && err.contains("--force"),
        "an existing key was replaced: {err}"
    );

    let listen = format!("127.0.0.1:{}", standby_lab::ports::free_port());
    let data = dir.path().join("witness").display().to_string();
    let witness = |psk: &str| {
        run(&[
            "witness",
            "--listen",
            &listen,
            "--data-dir",
            &data,
            "--psk-file",
            psk,
        ])
    };
    // A key of 16 bytes.
    let short = dir.path().join("short.key");
    standby_host::secret_file::write_secret(&short, "MDEyMzQ1Njc4OWFiY2RlZg==", true).unwrap();
    let (ok, _, err) = witness(short.to_str().unwrap());
    assert!(!ok, "the witness started with a 16-byte key");
    assert!(
        err.contains("has 16 bytes") && err.contains("at least 32"),
        "{err}"
    );
    // A key others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = witness(key_arg);
    assert!(!ok, "the witness started with a world-readable key");
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");

    // A node refuses the short key too.
    let profile = write_cluster_profile(dir.path(), "short.key", "");
    let (ok, _, err) = run(&["run", profile.to_str().unwrap(), "--site", "a"]);
    assert!(!ok, "the node started with a 16-byte key");
    assert!(
        err.contains("has 16 bytes") && err.contains("short.key"),
        "{err}"
    );
}

#[test]
fn check_config_passes_with_absent_key_files_and_run_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let profile = write_cluster_profile(
        dir.path(),
        "absent.key",
        "[[failover]]\nplugin = \"builtin:dns-ip\"\n\
         [failover.settings]\nmode = \"dns\"\nserver = \"primary\"\nname = \"www.site.test\"\n\
         address = { a = \"192.0.2.1\", b = \"192.0.2.2\" }\n\
         [failover.grants.dns.primary]\nserver = \"127.0.0.1:5353\"\nkey_name = \"k\"\n\
         key_file = \"absent-tsig.key\"\nalgorithm = \"hmac-sha256\"\nzones = [\"site.test\"]\n",
    );
    let (ok, _, err) = run(&["check-config", profile.to_str().unwrap()]);
    assert!(
        ok,
        "check-config failed on key files it does not read: {err}"
    );
    let (ok, _, err) = run(&["run", profile.to_str().unwrap(), "--site", "a"]);
    assert!(!ok, "the node started without its key");
    assert!(err.contains("absent.key"), "{err}");
}

/// A profile in `dir` with two sites a and b, a `[cluster]` keyed by
/// `psk_file`, and `extra` TOML after it.
fn write_cluster_profile(dir: &Path, psk_file: &str, extra: &str) -> std::path::PathBuf {
    let profile = dir.join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            "version = 1\nname = \"two-sites\"\n\
             [sites.a]\nnode_id = \"a-1\"\ndata_dir = \"a\"\nrole = \"active\"\npeer_listen = \"127.0.0.1:{}\"\n\
             [sites.b]\nnode_id = \"b-1\"\ndata_dir = \"b\"\npeer_listen = \"127.0.0.2:{}\"\n\
             [cluster]\npsk_file = \"{psk_file}\"\n{extra}",
            standby_lab::ports::free_port(),
            standby_lab::ports::free_port()
        ),
    )
    .unwrap();
    profile
}
