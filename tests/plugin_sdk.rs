//! A plugin built outside this repository, as a third party would: the SDK
//! as a git dependency (a `file://` URL to a repository holding only the
//! SDK, so nothing of this repository's layout can help), a wasm32 build,
//! `standby plugin componentize`, `standby plugin inspect`, and a profile
//! that loads the component from a path. Without a wasm toolchain the test
//! says so and skips, unless `STANDBY_REQUIRE_WASM_TOOLCHAIN=1` (CI) makes
//! the toolchain required. The SDK's WIT must equal the repository's.

use std::path::{Path, PathBuf};
use std::process::Command;

use standby_lab::fixtures::repo;

/// A wasm32 toolchain: the `cargo` to run, its arguments and environment,
/// and whether dependencies must be fetched beforehand by the host's cargo.
struct Toolchain {
    cargo: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    fetch_first: bool,
}

/// rustup's wasm32 target, or Debian's rustc-web with `-Zbuild-std` (the
/// recipe in docs/plugins.md), or None.
fn wasm_toolchain() -> Option<Toolchain> {
    let rustup_target = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown"));
    if rustup_target {
        return Some(Toolchain {
            cargo: "cargo".into(),
            args: vec![],
            env: vec![],
            fetch_first: false,
        });
    }
    let debian = Path::new("/usr/bin/rustc").exists()
        && Path::new("/usr/lib/rustlib/src/rust/library").exists()
        && Command::new("sh")
            .args(["-c", "command -v wasm-ld"])
            .output()
            .is_ok_and(|o| o.status.success());
    // Debian's cargo cannot fetch git dependencies ("invalid version 0 on
    // git_proxy_options", with or without the git CLI): the host's cargo
    // fetches them, and Debian's builds offline.
    debian.then(|| Toolchain {
        cargo: "/usr/bin/cargo".into(),
        args: vec!["-Zbuild-std=std,panic_abort".into(), "--offline".into()],
        fetch_first: true,
        env: vec![
            ("RUSTC".into(), "/usr/bin/rustc".into()),
            ("RUSTC_BOOTSTRAP".into(), "1".into()),
            (
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER".into(),
                "wasm-ld".into(),
            ),
        ],
    })
}

fn required() -> bool {
    std::env::var("STANDBY_REQUIRE_WASM_TOOLCHAIN").is_ok_and(|v| v == "1")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_sdk_carries_the_wit_it_was_written_against() {
    let wit = repo().join("wit");
    let sdk_wit = repo().join("plugins/sdk/wit");
    let names = |dir: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&wit), names(&sdk_wit), "the same files");
    for name in names(&wit) {
        assert_eq!(
            std::fs::read(wit.join(&name)).unwrap(),
            std::fs::read(sdk_wit.join(&name)).unwrap(),
            "plugins/sdk/wit/{name} differs from wit/{name}: copy wit/ into plugins/sdk/wit/"
        );
    }
}

#[test]
fn a_plugin_outside_this_repository_builds_against_the_sdk_by_git_and_loads() {
    let Some(toolchain) = wasm_toolchain() else {
        assert!(
            !required(),
            "no wasm32 toolchain, and STANDBY_REQUIRE_WASM_TOOLCHAIN=1 requires one"
        );
        eprintln!("SKIPPED: no wasm32 toolchain (see docs/plugins.md, \"Building a plugin outside this repository\")");
        return;
    };
    // Outside the workspace: nothing of this repository is found by walking up.
    let t = tempfile::Builder::new()
        .prefix("standby-third-party-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();

    // The SDK as a git repository of its own.
    let sdk = t.path().join("sdk");
    for part in ["src", "wit"] {
        copy_dir(&repo().join("plugins/sdk").join(part), &sdk.join(part));
    }
    std::fs::copy(
        repo().join("plugins/sdk/Cargo.toml"),
        sdk.join("Cargo.toml"),
    )
    .unwrap();
    let git = |args: &[&str]| {
        run(
            Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
                .arg(&sdk)
                .args(args),
            "git",
        )
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "sdk"]);

    // A failover action that depends on it by git.
    let plugin = t.path().join("hello-action");
    std::fs::create_dir_all(plugin.join("src")).unwrap();
    std::fs::write(
        plugin.join("Cargo.toml"),
        format!(
            "[package]\nname = \"hello-action\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nstandby-plugin-sdk = {{ git = \"file://{}\" }}\n\n\
             [profile.release]\nopt-level = \"s\"\npanic = \"abort\"\nstrip = true\n\n\
             [workspace]\n",
            sdk.display()
        ),
    )
    .unwrap();
    std::fs::write(plugin.join("src/lib.rs"), HELLO).unwrap();
    if toolchain.fetch_first {
        run(
            Command::new("cargo")
                .current_dir(&plugin)
                .arg("fetch")
                .env_remove("CARGO_TARGET_DIR"),
            "fetching the plugin's dependencies",
        );
    }
    let mut build = Command::new(&toolchain.cargo);
    build
        .current_dir(&plugin)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .args(&toolchain.args)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    for (k, v) in &toolchain.env {
        build.env(k, v);
    }
    run(&mut build, "building the plugin for wasm32");
    let core = plugin.join("target/wasm32-unknown-unknown/release/hello_action.wasm");
    assert!(core.exists(), "no core module at {}", core.display());

    // Componentize and inspect it.
    let component = t.path().join("hello.wasm");
    let standby = crate::standby();
    let (ok, _, err) = standby
        .run(&[
            "plugin".into(),
            "componentize".into(),
            core.display().to_string(),
            "-o".into(),
            component.display().to_string(),
        ])
        .unwrap();
    assert!(ok, "componentize: {err}");
    let (ok, out, err) = standby
        .run(&["plugin", "inspect", component.to_str().unwrap(), "--json"])
        .unwrap();
    assert!(ok, "inspect: {err}");
    let inspection: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspection["world"], "failover-action", "{inspection}");

    // Load it from a path in a profile.
    let profile = t.path().join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            "version = 1\nname = \"third-party\"\n\
             [sites.s]\nnode_id = \"s-1\"\ndata_dir = \"data\"\nrole = \"active\"\n\
             [[failover]]\nplugin = \"{}\"\n[failover.settings]\ngreeting = \"hello\"\n",
            component.display()
        ),
    )
    .unwrap();
    let (ok, out, err) = standby
        .run(&["check-config", profile.to_str().unwrap()])
        .unwrap();
    assert!(ok, "check-config: {err}\n{out}");
    assert!(out.contains("failover-action"), "{out}");
}

/// The third party's plugin: a failover action that checks its one setting.
const HELLO: &str = r#"
use standby_plugin_sdk::{
    descriptor, report, ActionReport, Descriptor, FailoverAction, NodeContext, Result, Settings,
};

#[derive(Default)]
struct Hello {
    greeting: String,
}

impl FailoverAction for Hello {
    fn describe(&self) -> Descriptor {
        descriptor("hello-action", "0.1.0", "a third party's failover action")
    }
    fn configure(&mut self, settings: &Settings) -> Result<()> {
        settings.deny_unknown(&["greeting"])?;
        self.greeting = settings.text("greeting", "hello")?;
        Ok(())
    }
    fn activate(&mut self, ctx: &NodeContext) -> Result<ActionReport> {
        Ok(report(format!("{} from {}", self.greeting, ctx.node_id)))
    }
    fn deactivate(&mut self, ctx: &NodeContext) -> Result<ActionReport> {
        Ok(report(format!("goodbye from {}", ctx.node_id)))
    }
    fn verify(&mut self, _ctx: &NodeContext) -> Result<ActionReport> {
        Ok(report(String::from("nothing to verify")))
    }
}

standby_plugin_sdk::export_action!(Hello);
"#;
