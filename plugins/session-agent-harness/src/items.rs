//! The items the harness posts, in the reference's shapes so the BlobHub web UI renders them
//! (docs/session-agent-harness.md). Each function returns `(content, metadata)`;
//! the poster adds `metadata.post_id`.

use serde_json::{Value, json};

use crate::agent::{AgentEvent, Usage};

/// `metadata.type` values the worker writes on job threads and on the `worker` thread. An item
/// carrying one of these *and* a `pst_` post id was written by a worker, whoever the user is.
pub const WORKER_TYPES: &[&str] = &[
    "text",
    "injected",
    "thinking",
    "tool_call",
    "tool_result",
    "status",
    "turn_end",
    "pending_prompt",
    "pending_prompt_resolved",
    "approval_granted",
    "policy_applied",
    "policy_denied",
    "artifacts_published",
    "attached",
    "thread_registered",
    "thread_active",
    "thread_failed",
    "thread_completed",
    "thread_removed",
    "thread_recovered",
    "detached",
];

pub type Item = (Value, Value);

fn text_block(text: &str) -> Value {
    json!([{"type": "text", "text": text}])
}

fn first_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The item for an agent event; `None` for events that are not posted (session ids, permission
/// requests, which go through the prompt protocol, and the suppressed `running`/`completed`).
pub fn agent_item(event: &AgentEvent) -> Option<Item> {
    Some(match event {
        AgentEvent::Session(_)
        | AgentEvent::PermissionRequest { .. }
        | AgentEvent::Question { .. } => {
            return None;
        }
        AgentEvent::Text(t) => (text_block(t), json!({"type": "text"})),
        AgentEvent::Thinking(t) => {
            let brief = if t.chars().count() > 120 {
                format!("[thinking] {}…", first_chars(t, 120))
            } else {
                format!("[thinking] {t}")
            };
            (
                text_block(&brief),
                json!({"type": "thinking", "text": t, "full_text_length": t.chars().count()}),
            )
        }
        AgentEvent::ToolCall { id, name, input } => {
            let brief = match input.get("command").and_then(Value::as_str) {
                Some(c) => first_chars(c, 80),
                None if input.is_null() || input.as_object().is_some_and(|o| o.is_empty()) => {
                    String::new()
                }
                None => first_chars(&input.to_string(), 80),
            };
            let text = if brief.is_empty() {
                name.clone()
            } else {
                format!("{name} → {brief}")
            };
            (
                text_block(&text),
                json!({"type": "tool_call", "tool": {"name": name, "invocation_id": id, "input": input}}),
            )
        }
        AgentEvent::ToolResult {
            id,
            is_error,
            output,
        } => {
            let out = match output {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let lines = out.lines().count();
            let mut text = format!(
                "→ {}{}",
                if *is_error { "error " } else { "" },
                first_chars(out.lines().next().unwrap_or(""), 80)
            );
            if lines > 1 {
                text.push_str(&format!(" ({lines} lines)"));
            }
            (
                text_block(&text),
                json!({"type": "tool_result", "tool": {"invocation_id": id, "is_error": is_error, "output": output}}),
            )
        }
        AgentEvent::Status { status, detail } => {
            if status == "running" || status == "completed" {
                return None;
            }
            if status == "error" {
                (
                    text_block(&format!("[error] {detail}")),
                    json!({"type": "status", "status": "error", "detail": detail}),
                )
            } else {
                let text = if detail.is_empty() {
                    status.clone()
                } else {
                    detail.clone()
                };
                let mut m = json!({"type": "status", "status": status});
                if !detail.is_empty() {
                    m["detail"] = json!(detail);
                }
                (text_block(&text), m)
            }
        }
    })
}

/// The `turn_end` item. `consumed` (an extension) names the last person's item the turn read, so a
/// worker that lost its local state can rebuild the cursor from the thread itself.
pub fn turn_end(status: &str, usage: &Usage, duration_ms: u64, error: &str) -> Item {
    let text = if status == "completed" {
        "Turn complete".to_string()
    } else {
        format!("Turn ended ({status})")
    };
    let mut m = json!({"type": "turn_end", "status": status, "stats": {
        "input_tokens": usage.input_tokens, "input_tokens_cached": usage.input_tokens_cached,
        "output_tokens": usage.output_tokens, "duration_ms": duration_ms}});
    if !error.is_empty() {
        m["error"] = json!(error);
    }
    (text_block(&text), m)
}

/// The failure reason posted before the envelope flips to `failed`.
pub fn failure_reason(code: &str, message: &str) -> Item {
    let text = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    (
        text_block(&text),
        json!({"type": "status", "status": "error", "code": code, "detail": message}),
    )
}

/// A worker status marker (`type: status`) such as `waiting_for_slot` or `interrupted`.
pub fn status(status: &str, text: &str) -> Item {
    (
        text_block(text),
        json!({"type": "status", "status": status, "detail": text}),
    )
}

/// Activity-log items for the `worker` thread.
pub fn attached() -> Item {
    (text_block("Worker attached"), json!({"type": "attached"}))
}

pub fn thread_registered(alias: &str) -> Item {
    (
        text_block(&format!("Thread registered: {alias}")),
        json!({"type": "thread_registered", "thread": {"alias": alias}}),
    )
}

pub fn thread_active(alias: &str, session_id: &str) -> Item {
    (
        text_block(&format!("Thread active: {alias}")),
        json!({"type": "thread_active", "thread": {"alias": alias, "agent_session_id": session_id}}),
    )
}

pub fn thread_recovered(alias: &str, session_id: &str) -> Item {
    (
        text_block(&format!("Thread recovered after restart: {alias}")),
        json!({"type": "thread_recovered", "thread": {"alias": alias, "agent_session_id": session_id}}),
    )
}

pub fn thread_failed(alias: &str, code: &str, message: &str) -> Item {
    (
        text_block(&format!("Thread failed: {alias} ({code})")),
        json!({"type": "thread_failed", "thread": {"alias": alias, "error": {"code": code, "message": message}}}),
    )
}

pub fn thread_completed(alias: &str) -> Item {
    (
        text_block(&format!("Thread completed: {alias}")),
        json!({"type": "thread_completed", "thread": {"alias": alias}}),
    )
}

pub fn thread_removed(alias: &str) -> Item {
    (
        text_block(&format!("Thread removed: {alias}")),
        json!({"type": "thread_removed", "thread": {"alias": alias}}),
    )
}

/// The readable text of an item (its text blocks joined), for the dashboard's last event.
pub fn text_of(content: &Value) -> String {
    content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a person's item says to the agent: its non-empty text blocks in order (concatenated), or
/// `None` when it has nothing usable. File blocks are named inline: the message's plain text
/// (an answer's words, logs); the turn itself is built from [`crate::attachments::blocks`], with
/// the files downloaded (guest/files.rs).
pub fn inbound_text(item: &Value) -> Option<String> {
    let mut out = String::new();
    for block in item
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = block.get("text").and_then(Value::as_str) {
                    out.push_str(t);
                }
            }
            Some("file") => {
                if let Some(alias) = block
                    .pointer("/file/alias")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    let name = block
                        .pointer("/file/name")
                        .and_then(Value::as_str)
                        .unwrap_or(alias);
                    out.push_str(&format!("[attachment {name}: session file {alias}]"));
                }
            }
            _ => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Is this item one the worker wrote? Only an item posted under the worker's user id can be: then
/// it is the worker's if its `metadata.post_id` is one this worker recorded posting
/// (`own_post_ids`, kept in the thread's log), or — only when that record is empty, i.e. the local
/// state was lost — if it has a `pst_` post id and a worker item type. Another user's item is
/// always a message, whatever it carries (copying a post id hides nothing), and a person
/// sharing the worker's account is heard (the web UI sets no post id).
pub fn is_own(
    item: &Value,
    worker_user: &str,
    own_post_ids: &std::collections::HashSet<String>,
) -> bool {
    if worker_user.is_empty() || item.get("user_id").and_then(Value::as_str) != Some(worker_user) {
        return false;
    }
    let post_id = item
        .pointer("/metadata/post_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    if post_id.is_empty() {
        return false;
    }
    if !own_post_ids.is_empty() {
        return own_post_ids.contains(post_id);
    }
    let ty = item
        .pointer("/metadata/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    post_id.starts_with("pst_") && WORKER_TYPES.contains(&ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn agent_stream_shapes() {
        let (c, m) = agent_item(&AgentEvent::Text("echo: hi".into())).unwrap();
        assert_eq!(c, json!([{"type": "text", "text": "echo: hi"}]));
        assert_eq!(m, json!({"type": "text"}));
        let long = "t".repeat(130);
        let (c, m) = agent_item(&AgentEvent::Thinking(long.clone())).unwrap();
        assert_eq!(c[0]["text"], format!("[thinking] {}…", "t".repeat(120)));
        assert_eq!(m["full_text_length"], 130);
        let (c, _) = agent_item(&AgentEvent::ToolCall {
            id: "1".into(),
            name: "Bash".into(),
            input: json!({"command": "ls"}),
        })
        .unwrap();
        assert_eq!(c[0]["text"], "Bash → ls");
        let (c, _) = agent_item(&AgentEvent::ToolCall {
            id: "1".into(),
            name: "Read".into(),
            input: json!({}),
        })
        .unwrap();
        assert_eq!(c[0]["text"], "Read");
        let (c, m) = agent_item(&AgentEvent::ToolResult {
            id: "1".into(),
            is_error: true,
            output: json!("a\nb\nc"),
        })
        .unwrap();
        assert_eq!(c[0]["text"], "→ error a (3 lines)");
        assert_eq!(m["tool"]["is_error"], true);
        assert!(
            agent_item(&AgentEvent::Status {
                status: "running".into(),
                detail: String::new()
            })
            .is_none()
        );
        let (c, _) = agent_item(&AgentEvent::Status {
            status: "error".into(),
            detail: "boom".into(),
        })
        .unwrap();
        assert_eq!(c[0]["text"], "[error] boom");
        assert!(agent_item(&AgentEvent::Session("x".into())).is_none());
    }

    #[test]
    fn turn_end_and_failures() {
        let (c, m) = turn_end(
            "completed",
            &Usage {
                input_tokens: 1,
                input_tokens_cached: 0,
                output_tokens: 2,
            },
            7,
            "",
        );
        assert_eq!(c[0]["text"], "Turn complete");
        assert_eq!(m["stats"]["duration_ms"], 7);
        let (c, _) = turn_end("failed", &Usage::default(), 0, "x");
        assert_eq!(c[0]["text"], "Turn ended (failed)");
        let (c, m) = failure_reason("AGENT_CRASHED", "agent exited with status 3");
        assert_eq!(c[0]["text"], "AGENT_CRASHED: agent exited with status 3");
        assert_eq!(m["code"], "AGENT_CRASHED");
    }

    #[test]
    fn activity_log_texts() {
        assert_eq!(attached().0[0]["text"], "Worker attached");
        assert_eq!(
            thread_registered("t/1").0[0]["text"],
            "Thread registered: t/1"
        );
        assert_eq!(
            thread_active("t/1", "s").1["thread"]["agent_session_id"],
            "s"
        );
        assert_eq!(
            thread_failed("t/1", "C", "m").0[0]["text"],
            "Thread failed: t/1 (C)"
        );
        assert_eq!(
            thread_recovered("t/1", "").0[0]["text"],
            "Thread recovered after restart: t/1"
        );
        assert_eq!(
            thread_completed("t/1").0[0]["text"],
            "Thread completed: t/1"
        );
        assert_eq!(thread_removed("t/1").0[0]["text"], "Thread removed: t/1");
    }

    #[test]
    fn own_items_are_recognised_by_what_the_worker_wrote() {
        let mut own = HashSet::new();
        own.insert("pst_A".to_string());
        let mine = json!({"user_id": "u1", "metadata": {"type": "text", "post_id": "pst_A"}});
        assert!(is_own(&mine, "u1", &own));
        // Same account, typed by a person in the web UI: heard.
        let person =
            json!({"user_id": "u1", "content": [{"type": "text", "text": "hi"}], "metadata": {}});
        assert!(!is_own(&person, "u1", &own));
        // A worker-shaped item this worker did not record posting is heard while it has a record.
        let lost = json!({"user_id": "u1", "metadata": {"type": "turn_end", "post_id": "pst_Z"}});
        assert!(!is_own(&lost, "u1", &own));
        // With the local record lost, the worker's own items are still recognised by shape.
        assert!(is_own(&lost, "u1", &HashSet::new()));
        // Another user's item with a worker-looking shape is a message.
        let other = json!({"user_id": "u2", "metadata": {"type": "text", "post_id": "pst_Q"}});
        assert!(!is_own(&other, "u1", &own));
        // ... even when it copies a post id the worker used.
        let copied = json!({"user_id": "u2", "metadata": {"type": "text", "post_id": "pst_A"}});
        assert!(!is_own(&copied, "u1", &own));
        assert!(!is_own(&copied, "u1", &HashSet::new()));
    }

    #[test]
    fn inbound_text_walks_blocks() {
        let item = json!({"content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"},
            {"type": "file", "file": {"alias": "f/x.txt", "name": "x.txt"}}, {"type": "file", "file": {}}]});
        assert_eq!(
            inbound_text(&item).unwrap(),
            "ab[attachment x.txt: session file f/x.txt]"
        );
        assert_eq!(
            inbound_text(&json!({"content": [{"type": "text", "text": ""}]})),
            None
        );
        assert_eq!(inbound_text(&json!({"content": "nope"})), None);
    }
}
