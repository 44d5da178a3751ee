//! Golden tests of profiles: every file in tests/ui/invalid/ must be refused
//! by `standby check-config` with exactly the error in the matching `.err`
//! file (the profile's directory is written `$DIR`). Run with BLESS=1 to
//! rewrite the `.err` files after an intended change of wording.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn check_config(profile: &Path, envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_standby"));
    cmd.arg("check-config").arg(profile).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("STANDBY_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd.output().unwrap()
}

#[test]
fn invalid_profiles_fail_with_their_golden_errors() {
    let dir = standby_lab::fixtures::repo()
        .join("tests/ui/invalid")
        .canonicalize()
        .unwrap();
    let bless = std::env::var("BLESS").is_ok();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries
        .iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
    {
        let out = check_config(path, &[], &[]);
        let stderr =
            String::from_utf8_lossy(&out.stderr).replace(&dir.display().to_string(), "$DIR");
        let golden = path.with_extension("err");
        if out.status.success() {
            failures.push(format!("{}: was accepted", path.display()));
            continue;
        }
        if bless {
            std::fs::write(&golden, stderr.as_bytes()).unwrap();
        } else {
            let expected = std::fs::read_to_string(&golden)
                .unwrap_or_else(|_| panic!("missing {}", golden.display()));
            if expected != stderr {
                failures.push(format!(
                    "{}:\n  expected: {expected}  got:      {stderr}",
                    path.display()
                ));
            }
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 15, "only {checked} golden profiles");
}

#[test]
fn the_example_profiles_are_valid() {
    let dir = standby_lab::fixtures::repo().join("examples/profiles");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let out = check_config(&path, &[], &[]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("version = 1"), "{stdout}");
        n += 1;
    }
    assert!(n >= 1);
}

#[test]
fn layers_apply_in_order_defaults_file_environment_flags() {
    let profile = standby_lab::fixtures::repo().join("examples/profiles/local-file-copy.toml");
    // The file says 5000; the environment overrides the file.
    let out = check_config(&profile, &[("STANDBY_STORE__BUSY_TIMEOUT_MS", "1234")], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("busy_timeout_ms = 1234"));
    // A flag overrides the environment.
    let out = check_config(
        &profile,
        &[("STANDBY_STORE__BUSY_TIMEOUT_MS", "1234")],
        &["--set", "store.busy_timeout_ms=777"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("busy_timeout_ms = 777"));
    // Defaults fill what nobody set: the example does not set plugins.cache_dir.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("cache_dir"));
    // A bad environment value names the variable.
    let out = check_config(&profile, &[("STANDBY_STORE__JOURNAL", "memory")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("environment variable STANDBY_STORE__JOURNAL"),
        "{err}"
    );
    // A bad flag names the flag.
    let out = check_config(&profile, &[], &["--set", "store.journal=memory"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--set flag") && err.contains("store.journal"),
        "{err}"
    );
}
