//! Conversions between the host's plugin types and the generated WIT bindings.

use super::types::*;
use crate::caps::output::InstanceOutput;
use crate::wit::action::exports::standby::plugin::action as wit_action;
use crate::wit::strategy::exports::standby::plugin::strategy as wit_strategy;
use crate::wit::strategy::standby::plugin::types as wit;

pub(crate) fn ctx(c: &NodeContext) -> wit::NodeContext {
    wit::NodeContext {
        node_id: c.node_id.clone(),
        site: c.site.clone(),
        role: match c.role {
            Role::Standby => wit::Role::Standby,
            Role::Candidate => wit::Role::Candidate,
            Role::Active => wit::Role::Active,
            Role::Fenced => wit::Role::Fenced,
        },
        epoch: c.epoch,
        now: c.now_ms,
    }
}

pub(crate) fn setting(s: &Setting) -> wit::Setting {
    wit::Setting {
        key: s.key.clone(),
        value: match &s.value {
            SettingValue::Text(t) => wit::Value::Text(t.clone()),
            SettingValue::Integer(i) => wit::Value::Integer(*i),
            SettingValue::Number(n) => wit::Value::Number(*n),
            SettingValue::Boolean(b) => wit::Value::Boolean(*b),
            SettingValue::Texts(t) => wit::Value::Texts(t.clone()),
        },
    }
}

/// An error a plugin returned, its message bounded.
pub(crate) fn error(e: wit::Error, out: &InstanceOutput) -> CallError {
    match e {
        wit::Error::AccessDenied(s) => CallError::AccessDenied(out.bound(s)),
        wit::Error::NotFound(s) => CallError::NotFound(out.bound(s)),
        wit::Error::InvalidArgument(s) => CallError::InvalidArgument(out.bound(s)),
        wit::Error::Unavailable(s) => CallError::Unavailable(out.bound(s)),
        wit::Error::Conflict(s) => CallError::Conflict(out.bound(s)),
        wit::Error::Other(s) => CallError::Other(out.bound(s)),
    }
}

pub(crate) fn descriptor(d: wit::Descriptor, out: &InstanceOutput) -> Descriptor {
    Descriptor {
        name: out.bound(d.name),
        version: out.bound(d.version),
        summary: out.bound(d.summary),
    }
}

fn file_ref(f: &FileRef) -> wit::FileRef {
    wit::FileRef {
        root: f.root.clone(),
        path: f.path.clone(),
    }
}

fn batch(b: &ChangeBatch) -> wit::ChangeBatch {
    wit::ChangeBatch {
        id: b.id,
        first_seq: b.first_seq,
        last_seq: b.last_seq,
        count: b.count,
        bytes: b.bytes,
        oldest_commit: b.oldest_commit_ms,
    }
}

pub(crate) fn received(r: &Received) -> wit_strategy::Received {
    match r {
        Received::File(f) => wit_strategy::Received::File(wit_strategy::ReceivedFile {
            file: file_ref(&f.file),
            tag: f.tag.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
        }),
        Received::Batch(b) => wit_strategy::Received::Batch(batch(b)),
        Received::Message(kind, body) => {
            wit_strategy::Received::Message((kind.clone(), body.clone()))
        }
    }
}

pub(crate) fn tick(t: wit_strategy::TickReport, out: &InstanceOutput) -> TickReport {
    TickReport {
        next_tick_ms: t.next_tick_ms,
        did: out.bound(t.did),
    }
}

pub(crate) fn promote(p: wit_strategy::PromoteReport, out: &InstanceOutput) -> PromoteReport {
    PromoteReport {
        restored_from: out.bound(p.restored_from),
        restored_at_ms: p.restored_at,
        note: out.bound(p.note),
    }
}

pub(crate) fn handover(
    p: wit_strategy::HandoverProgress,
    out: &InstanceOutput,
) -> HandoverProgress {
    HandoverProgress {
        done: p.done,
        note: out.bound(p.note),
    }
}

pub(crate) fn status(s: wit_strategy::StrategyStatus, out: &InstanceOutput) -> StrategyStatus {
    StrategyStatus {
        healthy: s.healthy,
        last_success_ms: s.last_success,
        last_size: s.last_size,
        lag_ms: s.lag_ms,
        summary: out.bound(s.summary),
        details: out.bound_details(s.details),
    }
}

pub(crate) fn action(a: wit_action::ActionReport, out: &InstanceOutput) -> ActionReport {
    ActionReport {
        summary: out.bound(a.summary),
        details: out.bound_details(a.details),
    }
}
