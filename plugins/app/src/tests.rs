use super::*;
use standby_plugin_sdk::{Setting, Value};

fn text(key: &str, value: &str) -> Setting {
    Setting {
        key: String::from(key),
        value: Value::Text(String::from(value)),
    }
}

fn parse(items: Vec<Setting>) -> Result<Mode> {
    Mode::parse(&Settings::new(items))
}

fn invalid_text(r: Result<Mode>) -> String {
    match r {
        Err(Error::InvalidArgument(s)) => s,
        other => panic!("expected invalid-argument, got {other:?}"),
    }
}

/// A stand-in host: records the calls, answers as told.
#[derive(Default)]
struct Fake {
    calls: Vec<String>,
    running: bool,
    exit_code: Option<i32>,
}

fn state(running: bool) -> exec::ServiceState {
    exec::ServiceState {
        running,
        pid: running.then_some(42),
        uptime_ms: 5,
        last_exit: None,
        starts: 1,
    }
}

impl Backend for Fake {
    fn start(&mut self, name: &str) -> Result<u32> {
        self.calls.push(format!("start {name}"));
        self.running = true;
        Ok(42)
    }
    fn stop(&mut self, name: &str, grace_ms: u32) -> Result<exec::ServiceState> {
        self.calls.push(format!("stop {name} {grace_ms}"));
        self.running = false;
        Ok(state(false))
    }
    fn service(&mut self, name: &str) -> Result<exec::ServiceState> {
        self.calls.push(format!("service {name}"));
        Ok(state(self.running))
    }
    fn run(&mut self, name: &str, timeout_ms: u32) -> Result<exec::Output> {
        self.calls.push(format!("run {name} {timeout_ms}"));
        Ok(exec::Output {
            code: self.exit_code,
            stdout: String::new(),
            stderr: String::from("unit failed"),
            duration_ms: 3,
            timed_out: false,
        })
    }
}

#[test]
fn a_service_or_a_start_and_stop_pair_is_required() {
    assert_eq!(
        parse(vec![text("service", "writer")]).unwrap(),
        Mode::Service {
            name: String::from("writer"),
            grace_ms: 1000
        }
    );
    assert!(invalid_text(parse(vec![])).contains("`service`"));
    assert!(invalid_text(parse(vec![text("start", "up")])).contains("`stop` is required"));
    assert!(invalid_text(parse(vec![
        text("service", "w"),
        text("start", "up"),
        text("stop", "down")
    ]))
    .contains("not both"));
    assert!(invalid_text(parse(vec![text("service", "w"), text("check", "c")])).contains("check"));
    assert!(invalid_text(parse(vec![text("servic", "w")])).contains("unknown setting(s) servic"));
    assert!(invalid_text(parse(vec![text("service", " ")])).contains("must not be empty"));
}

#[test]
fn a_service_is_started_on_activate_stopped_on_deactivate_and_verified_running() {
    let app = App {
        mode: parse(vec![text("service", "writer")]).unwrap(),
    };
    let mut host = Fake::default();
    assert!(
        matches!(app.verify_with(&mut host), Err(Error::Unavailable(m)) if m.contains("not running"))
    );
    let r = app.activate_with(&mut host).unwrap();
    assert!(r.summary.contains("pid 42"), "{}", r.summary);
    assert!(app.verify_with(&mut host).is_ok());
    app.deactivate_with(&mut host).unwrap();
    assert_eq!(
        host.calls,
        [
            "service writer",
            "start writer",
            "service writer",
            "stop writer 1000"
        ]
    );
}

#[test]
fn commands_must_exit_zero() {
    let app = App {
        mode: parse(vec![
            text("start", "up"),
            text("stop", "down"),
            text("check", "is-up"),
        ])
        .unwrap(),
    };
    let mut host = Fake {
        exit_code: Some(0),
        ..Fake::default()
    };
    assert!(app.activate_with(&mut host).is_ok());
    assert!(app.verify_with(&mut host).is_ok());
    host.exit_code = Some(3);
    let e = app.deactivate_with(&mut host).unwrap_err();
    assert!(
        matches!(&e, Error::Other(m) if m.contains("exit 3") && m.contains("unit failed")),
        "{e:?}"
    );
    assert_eq!(
        host.calls,
        ["run up 30000", "run is-up 30000", "run down 30000"]
    );
}
