//! The admin endpoint's answers as lines for people (`standby status`,
//! `standby promote`, the demo).

use serde_json::Value;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A node's status as lines for people.
pub fn render_status(s: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14} {v}\n"));
    line(
        "node",
        format!("{} (site {})", text(&s["node_id"]), text(&s["site"])),
    );
    line(
        "role",
        format!(
            "{} at epoch {} ({} mode){}",
            text(&s["role"]),
            text(&s["epoch"]),
            text(&s["mode"]),
            if s["acknowledging"] == Value::Bool(true) {
                ", acknowledging device events"
            } else {
                ""
            }
        ),
    );
    if let Some(l) = s["lease"].as_object() {
        line(
            "lease",
            format!(
                "epoch {}, acknowledging for {} ms more",
                text(&l["epoch"]),
                text(&l["acknowledging_for_ms"])
            ),
        );
    }
    let p = &s["peer"];
    if p.is_object() {
        line(
            "peer",
            format!(
                "{} {} (epoch {}, role {}, rtt {} ms)",
                if p["connected"] == Value::Bool(true) {
                    "connected to"
                } else {
                    "not connected to"
                },
                text(&p["node_id"]),
                text(&p["epoch"]),
                text(&p["role"]),
                text(&p["rtt_ms"])
            ),
        );
    }
    let w = &s["witness"];
    if w.is_object() {
        line(
            "witness",
            if w["reachable"] == Value::Bool(true) {
                format!(
                    "{} reachable: epoch {}, lease held by {} for {} ms",
                    text(&w["addr"]),
                    text(&w["epoch"]),
                    text(&w["holder"]),
                    text(&w["remaining_ms"])
                )
            } else {
                format!("{} NOT reachable: {}", text(&w["addr"]), text(&w["error"]))
            },
        );
    }
    let g = &s["gateway"];
    if g.is_object() {
        line(
            "gateway",
            format!(
                "{} on {}, {} devices connected, {} events stored",
                if g["open"] == Value::Bool(true) {
                    "open"
                } else {
                    "closed"
                },
                text(&g["listen"]),
                text(&g["devices"]),
                text(&g["events_stored"])
            ),
        );
    }
    for h in s["plugins"].as_array().into_iter().flatten() {
        line(
            "plugin",
            format!(
                "{}: {} ({} calls, {} restarts)",
                text(&h["plugin"]),
                text(&h["state"]),
                text(&h["calls"]),
                text(&h["restarts"])
            ),
        );
    }
    for st in s["strategies"].as_array().into_iter().flatten() {
        let status = &st["status"];
        let v = if status["Ok"].is_object() {
            &status["Ok"]
        } else {
            status
        };
        line(
            "copy",
            format!(
                "{}: {} (last success {}, size {})",
                text(&st["name"]),
                text(&v["summary"]),
                text(&v["last_success_ms"]),
                text(&v["last_size"])
            ),
        );
    }
    if s["last_failover"].is_object() {
        out.push_str("last failover:\n");
        out.push_str(&render_timeline(&s["last_failover"]));
        out.push('\n');
    }
    out
}

/// A timeline as lines for people.
pub fn render_timeline(t: &Value) -> String {
    let mut out = format!(
        "  {} ({}): epoch {} -> {}, detected after {} ms, {} ms from suspicion to the end\n",
        text(&t["kind"]),
        text(&t["reason"]),
        text(&t["epoch_before"]),
        text(&t["epoch_after"]),
        text(&t["detect_ms"]),
        text(&t["total_ms"])
    );
    for step in t["steps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:>6} ms  {:<28} {:>5} ms  {} {}\n",
            text(&step["at_ms"]),
            text(&step["name"]),
            text(&step["took_ms"]),
            if step["ok"] == Value::Bool(true) {
                "ok  "
            } else {
                "FAIL"
            },
            text(&step["note"])
        ));
    }
    out
}
