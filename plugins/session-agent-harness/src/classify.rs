//! Which session objects are job threads, and what their envelopes say (docs/session-agent-harness.md).
//!
//! Every level is type-checked: a malformed value classifies as "not mine" or yields empty fields
//! and never panics, since envelopes are written by people and other programs.

use serde_json::Value;

/// The alias of the worker object (affinity lock and activity log).
pub const WORKER_ALIAS: &str = "worker";

/// The platform's alias grammar, defined once in `blobhub_alias`.
pub fn alias_is_valid(alias: &str) -> bool {
    blobhub_alias::is_valid(alias)
}

/// Whether an alias is in the section's watched range (`prefix` "" = the whole session).
pub fn in_range(alias: &str, prefix: &str) -> bool {
    alias != WORKER_ALIAS && alias.starts_with(prefix)
}

/// An event about the worker's own `worker` object (its heartbeat, its activity posts) other than
/// its deletion. A section ignores these, so replaying one after a restart is harmless.
pub fn own_echo(event: &Value) -> bool {
    str_at(event, "/session_object/alias") == WORKER_ALIAS
        && str_at(event, "/type") != "session_object_deleted"
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or("")
}

/// Is this object value a job thread? (`type == "thread"`, `thread.metadata` an object, and an
/// `agent` block or a non-empty `instance.state`.)
pub fn is_job_thread(value: &Value) -> bool {
    if value.get("type").and_then(Value::as_str) != Some("thread") {
        return false;
    }
    let Some(meta) = value.pointer("/thread/metadata").filter(|m| m.is_object()) else {
        return false;
    };
    let agent_truthy = match meta.get("agent") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Number(_)) => true,
    };
    agent_truthy || !str_at(meta, "/instance/state").is_empty()
}

/// The fields of a job envelope the harness reads. Wrong-typed fields read as "".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The control channel `metadata.instance.state`.
    pub state: String,
    pub agent_type: String,
    pub executable: String,
    pub model: String,
    pub effort: String,
    pub permissions: String,
    pub work_folder: String,
    /// The `policy` block as written (`None` when absent or null); checked at activation.
    pub policy: Option<Value>,
    /// The `artifacts` block as written (`None` when absent or null).
    pub artifacts: Option<Value>,
    /// The `attachments` block as written (`None` when absent or null).
    pub attachments: Option<Value>,
}

/// Longest string accepted from an envelope field; longer values are treated as malformed (they
/// are never legitimate and would bloat status rows and logs).
pub const MAX_FIELD_LEN: usize = 4096;

impl Envelope {
    pub fn parse(value: &Value) -> Envelope {
        let meta = value.pointer("/thread/metadata").unwrap_or(&Value::Null);
        let field = |p: &str| {
            let s = str_at(meta, p);
            if s.len() > MAX_FIELD_LEN {
                "\u{0}oversized".to_string()
            } else {
                s.to_string()
            }
        };
        Envelope {
            state: field("/instance/state"),
            agent_type: field("/agent/type"),
            executable: field("/agent/executable"),
            model: field("/agent/model"),
            effort: field("/agent/effort"),
            permissions: field("/agent/permissions"),
            work_folder: field("/workspace/work_folder"),
            policy: meta.get("policy").filter(|p| !p.is_null()).cloned(),
            artifacts: meta.get("artifacts").filter(|p| !p.is_null()).cloned(),
            attachments: meta.get("attachments").filter(|p| !p.is_null()).cloned(),
        }
    }
}

/// The envelope with its control channel replaced by `{"state": state}` and everything else kept
/// verbatim (the worker owns only `instance`).
pub fn with_state(value: &Value, state: &str) -> Value {
    let mut v = if value.is_object() {
        value.clone()
    } else {
        serde_json::json!({"type": "thread"})
    };
    if !v.get("thread").is_some_and(Value::is_object) {
        v["thread"] = serde_json::json!({});
    }
    if !v["thread"].get("metadata").is_some_and(Value::is_object) {
        v["thread"]["metadata"] = serde_json::json!({});
    }
    v["thread"]["metadata"]["instance"] = serde_json::json!({ "state": state });
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alias_grammar() {
        assert!(alias_is_valid("tasks/t1"));
        assert!(alias_is_valid("a.b@c-d_e"));
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            ".",
            "a b",
            &"x".repeat(257),
        ] {
            assert!(!alias_is_valid(bad), "{bad:?}");
        }
        assert!(in_range("tasks/t1", "tasks/"));
        assert!(!in_range("other/t1", "tasks/"));
        assert!(!in_range("worker", ""));
    }

    #[test]
    fn own_echoes_are_the_worker_objects_events_but_its_deletion() {
        let event = |ty: &str, alias: &str| json!({"type": ty, "session_object": {"alias": alias}});
        assert!(own_echo(&event("session_object_modified", "worker")));
        assert!(own_echo(&event("session_thread_item_posted", "worker")));
        assert!(!own_echo(&event("session_object_deleted", "worker")));
        assert!(!own_echo(&event("session_object_modified", "t1")));
        assert!(!own_echo(&event("session_closing", "")));
        assert!(!own_echo(&json!({"type": "session_object_modified"})));
        assert!(!own_echo(&json!({"session_object": {"alias": 7}})));
    }

    #[test]
    fn classification() {
        let pending =
            json!({"type": "thread", "thread": {"metadata": {"instance": {"state": "pending"}}}});
        assert!(is_job_thread(&pending));
        let agent_only =
            json!({"type": "thread", "thread": {"metadata": {"agent": {"type": "codex"}}}});
        assert!(is_job_thread(&agent_only));
        for not_mine in [
            json!({"type": "file"}),
            json!({"type": "thread", "thread": {"metadata": "x"}}),
            json!({"type": "thread", "thread": {"metadata": {"instance": {"state": ""}}}}),
            json!({"type": "thread", "thread": {"metadata": {"instance": {"state": 5}}}}),
            json!({"type": "thread", "thread": {"metadata": {"agent": {}}}}),
            json!("thread"),
            json!(null),
        ] {
            assert!(!is_job_thread(&not_mine), "{not_mine}");
        }
    }

    #[test]
    fn envelope_fields_are_type_checked() {
        let v = json!({"type": "thread", "thread": {"metadata": {
            "instance": {"state": "pending"},
            "agent": {"type": "test_double", "model": 7, "permissions": "approval"},
            "workspace": {"work_folder": "/tmp/w"}}}});
        let e = Envelope::parse(&v);
        assert_eq!(e.state, "pending");
        assert_eq!(e.agent_type, "test_double");
        assert_eq!(e.model, "");
        assert_eq!(e.work_folder, "/tmp/w");
        let huge = json!({"thread": {"metadata": {"agent": {"type": "x".repeat(10_000)}}}});
        assert_ne!(Envelope::parse(&huge).agent_type.len(), 10_000);
    }

    #[test]
    fn state_write_keeps_everything_else() {
        let v = json!({"type": "thread", "thread": {"attributes": {"name": "n"},
            "metadata": {"instance": {"state": "pending", "junk": 1}, "agent": {"type": "codex"}}}});
        let w = with_state(&v, "active");
        assert_eq!(
            w["thread"]["metadata"]["instance"],
            json!({"state": "active"})
        );
        assert_eq!(w["thread"]["attributes"]["name"], "n");
        assert_eq!(w["thread"]["metadata"]["agent"]["type"], "codex");
        assert_eq!(
            with_state(&json!(null), "failed")["thread"]["metadata"]["instance"]["state"],
            "failed"
        );
    }
}
