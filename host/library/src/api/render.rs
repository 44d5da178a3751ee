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
        let a = &g["device_auth"];
        if a.is_object() {
            line("device auth", device_auth(a));
            for e in a["credentials"]["expiring"]
                .as_array()
                .into_iter()
                .flatten()
            {
                line(
                    "credential",
                    format!(
                        "device {} (generation {}) expires {}",
                        text(&e["device_id"]),
                        text(&e["generation"]),
                        date(&e["expires_at_ms"])
                    ),
                );
            }
        }
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
    if s["database_frozen"] == Value::Bool(true) {
        line(
            "database",
            "FROZEN by a plugin: writes wait until it thaws (60 s at most)".to_string(),
        );
    }
    for f in s["set_aside"].as_array().into_iter().flatten() {
        line("set aside", text(f));
    }
    let stop = &s["change_stream_stopped"];
    if stop.is_object() {
        line(
            "STREAM STOPPED",
            format!(
                "at batch {}..{} ({} changes; change {} failed) since {}: {}; \
                 `standby replication retry` once fixed, or `standby replication skip`",
                text(&stop["first_seq"]),
                text(&stop["last_seq"]),
                text(&stop["count"]),
                text(&stop["failed_seq"]),
                date(&stop["since_ms"]),
                text(&stop["cause"])
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
    // A demotion, or a switchover (done or abandoned) run on this node.
    let last = &s["last_demotion"];
    if last.is_object() {
        out.push_str(&format!("last {}:\n", text(&last["kind"])));
        out.push_str(&render_timeline(last));
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

/// One line on device authentication: mode, credentials, refusals.
fn device_auth(a: &Value) -> String {
    let c = &a["credentials"];
    let mut s = format!(
        "{}{}, {} devices enrolled ({} valid, {} revoked, {} expired credentials), {} expiring soon, {} links without a credential, {} handshakes refused",
        text(&a["mode"]),
        if a["migrate_until_ms"].is_u64() {
            format!(" until {}", date(&a["migrate_until_ms"]))
        } else {
            String::new()
        },
        text(&c["devices"]),
        text(&c["valid"]),
        text(&c["revoked"]),
        text(&c["expired"]),
        c["expiring"].as_array().map_or(0, Vec::len),
        text(&a["unauthenticated_links"]),
        text(&a["refused"]),
    );
    s.truncate(s.trim_end().len());
    s
}

/// A Unix-ms time as a UTC date and time.
fn date(ms: &Value) -> String {
    ms.as_u64()
        .and_then(|ms| i64::try_from(ms / 1_000).ok())
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .map(|t| {
            let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
            t.format(&f).unwrap_or_default()
        })
        .unwrap_or_else(|| text(ms))
}
