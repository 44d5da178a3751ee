//! Device agents for tests: a configuration with short timeouts and an audit
//! file, and waits on what an agent sees.
//!
//! Test tool: a wait that runs out panics with the agent's status.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use standby_device::agent::{AgentConfig, Backoff, Endpoint, LinkPhase, LogOptions};
use standby_device::frame::event_code;
use standby_device::Agent;

use crate::wait_for;

/// An endpoint on 127.0.0.1.
pub fn endpoint(port: u16, priority: u8) -> Endpoint {
    Endpoint::parse(&format!("127.0.0.1:{port}"), priority).unwrap()
}

/// Device `id` in `dir` dialling `endpoints`: keep-alive 200 ms, dead link
/// and timeouts 1 s, backoff 100-500 ms, no fsync, an audit file for the
/// independent checker.
pub fn config(dir: &Path, id: u32, endpoints: Vec<Endpoint>) -> AgentConfig {
    let mut c = AgentConfig::new(id, endpoints, dir);
    c.keepalive = Duration::from_millis(200);
    c.dead_link = Duration::from_millis(1_000);
    c.connect_timeout = Duration::from_millis(1_000);
    c.request_timeout = Duration::from_millis(1_000);
    c.backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500)).unwrap();
    c.log = LogOptions {
        fsync: false,
        audit: true,
        ..LogOptions::default()
    };
    c
}

/// The node the agent is connected to, if it is.
pub fn on_node(agent: &Agent) -> Option<String> {
    let s = agent.status();
    (s.link == LinkPhase::Connected)
        .then(|| s.server.map(|x| x.node_id))
        .flatten()
}

/// Wait until the agent is connected to `node`.
pub async fn wait_on(agent: &Agent, node: &str, limit: Duration) {
    let ok = wait_for(limit, || on_node(agent).as_deref() == Some(node)).await;
    assert!(
        ok,
        "device not on {node} within {limit:?}: {:?}",
        agent.status()
    );
}

/// Log `n` access events (`event 0`, `event 1`, ...).
pub fn record(agent: &Agent, n: usize) {
    for i in 0..n {
        agent
            .record(
                event_code::ACCESS_GRANTED,
                Some(format!("{i}")),
                format!("event {i}").into_bytes(),
            )
            .unwrap();
    }
}

/// Wait until every event the agent logged is acknowledged.
pub async fn all_acked(agent: &Agent, limit: Duration) {
    let ok = wait_for(limit, || {
        let s = agent.status();
        s.link == LinkPhase::Connected && s.acked >= s.last_seq
    })
    .await;
    assert!(ok, "events not acknowledged: {:?}", agent.status());
}
