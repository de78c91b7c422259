//! Local state files (docs/session-agent-harness.md, "Local state and recovery"), written atomically through the `state` import before the
//! side effect they describe.
//!
//! Extensions over the reference shape, all additive: `items.last_consumed` / the fetch cursor keep
//! the ids seen in the overlap window (`recent`), `turn` records the turn in flight (so a restart
//! can tell from the thread whether that turn's output was already posted), and `events.cursor`
//! holds the host feed's opaque cursor, and `registered` the threads already announced in the
//! activity log.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cursor::ItemCursor;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeMessage {
    pub code: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// `attached`, `quiescing`, `waiting` or `refused`.
    pub status: String,
    pub attached_at: String,
    pub error: CodeMessage,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Events {
    /// `created_at` of the last dispatched event.
    #[serde(default)]
    pub last_processed_at: String,
    /// The host feed's cursor after the last handled batch.
    #[serde(default)]
    pub cursor: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SectionRecord {
    pub name: String,
    pub job_type: String,
    /// The section's `session` block as configured.
    pub session: Value,
    pub attachment: Attachment,
    #[serde(default)]
    pub events: Events,
    /// The aliases whose `thread_registered` activity item was posted by this section, in this
    /// run or an earlier one: a restart does not post it again. An alias leaves the set when its
    /// object is deleted, so a thread created again under that alias is announced again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub registered: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub agent_type: String,
    pub work_folder: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// `""`, `active`, `completed`, `failed` or another observed stop state; never `pending`.
    pub state: String,
    pub agent_session_id: String,
    pub error: CodeMessage,
    /// The one-shot grant (crate::grants): `{subject, verdict, granted_by, grant_key}`.
    pub grant: Option<Value>,
    /// Parked prompts are not implemented; kept for shape compatibility.
    pub park: Option<Value>,
    pub usage_total: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Items {
    pub last_consumed: ItemCursor,
    pub last_posted: ItemCursor,
}

/// The turn in flight: written before the agent is started, cleared when the turn is settled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// `trn_<ULID>`, stamped on every item of the turn as `metadata.turn_id`.
    pub turn_id: String,
    /// Where `last_consumed` moves once the turn has been read by the agent.
    pub boundary: ItemCursor,
    /// The agent answered after it was given the turn: it has the person's messages (in its
    /// own session too), so a restart must not hand them over again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_started: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub alias: String,
    pub session: Value,
    pub workspace: Workspace,
    pub agent: AgentRecord,
    pub items: Items,
    #[serde(default)]
    pub turn: Option<TurnRecord>,
    pub last_event: String,
    /// A write the thread's state depends on that has not landed yet (e.g. `envelope write:
    /// failed`); cleared when it lands. It is retried for the section's life, and a restart
    /// re-drives it from the envelope and this record.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outstanding: String,
}

/// `threads/<alias segments>/` — the alias grammar makes every segment a safe folder name.
pub fn thread_dir(alias: &str) -> String {
    format!("threads/{alias}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_record_has_the_spec_shape() {
        let mut r = ThreadRecord {
            alias: "tasks/t1".into(),
            ..Default::default()
        };
        r.agent.state = "active".into();
        let y = serde_yaml::to_string(&r).unwrap();
        for key in [
            "alias:",
            "workspace:",
            "agent_type:",
            "agent_session_id:",
            "last_consumed:",
            "last_posted:",
            "last_event:",
        ] {
            assert!(y.contains(key), "{key} in {y}");
        }
        assert_eq!(serde_yaml::from_str::<ThreadRecord>(&y).unwrap(), r);
        assert_eq!(thread_dir("tasks/t1"), "threads/tasks/t1");
    }

    #[test]
    fn section_record_round_trips() {
        let r = SectionRecord {
            name: "s".into(),
            job_type: "session_agent_harness".into(),
            session: serde_json::json!({"org_id": "o"}),
            attachment: Attachment {
                status: "attached".into(),
                ..Default::default()
            },
            events: Events::default(),
            registered: ["tasks/t1".to_string()].into(),
        };
        let y = serde_yaml::to_string(&r).unwrap();
        assert!(y.contains("status: attached"));
        assert_eq!(serde_yaml::from_str::<SectionRecord>(&y).unwrap(), r);
    }

    /// A section.yaml written before `registered` existed still loads (nothing announced yet).
    #[test]
    fn section_record_without_registered_loads() {
        let y = "name: s\njob_type: j\nsession: {}\nattachment: {status: attached, attached_at: '', error: {code: null, message: null}}\n";
        let r: SectionRecord = serde_yaml::from_str(y).unwrap();
        assert!(r.registered.is_empty());
        assert!(!serde_yaml::to_string(&r).unwrap().contains("registered"));
    }
}
