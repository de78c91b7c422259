//! The driver for `blobhub-test-agent` (host/src/bin/test_agent.rs, protocol in docs/testing.md):
//! JSON lines both ways, `--session-id` to resume. It is the template for the other drivers.

use serde_json::{Value, json};

use super::{AgentEvent, Driver, Usage};
use crate::settings::Settings;

pub struct TestAgent;

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

impl Driver for TestAgent {
    fn args(&self, settings: &Settings, session_id: &str) -> Vec<String> {
        let mut args = Vec::new();
        if !session_id.is_empty() {
            args.extend(["--session-id".to_string(), session_id.to_string()]);
        }
        for (flag, value) in [("--model", &settings.model), ("--effort", &settings.effort)] {
            if !value.is_empty() {
                args.extend([flag.to_string(), value.clone()]);
            }
        }
        args.extend(["--permissions".to_string(), settings.permissions.clone()]);
        args
    }

    fn encode_turn(&self, text: &str) -> String {
        format!("{}\n", json!({"type": "turn", "text": text}))
    }

    fn encode_permission(&self, request_id: &str, approved: bool, answer: &str) -> String {
        format!(
            "{}\n",
            json!({"type": "permission_response", "request_id": request_id,
                   "approved": approved, "answer": answer})
        )
    }

    fn parse_line(&self, line: &str) -> Option<AgentEvent> {
        let v: Value = serde_json::from_str(line).ok()?;
        Some(match v.get("type")?.as_str()? {
            "session" => AgentEvent::Session(s(&v, "session_id")),
            "text" => AgentEvent::Text(s(&v, "text")),
            "thinking" => AgentEvent::Thinking(s(&v, "text")),
            "tool_call" => AgentEvent::ToolCall {
                id: s(&v, "id"),
                name: s(&v, "name"),
                input: v.get("input").cloned().unwrap_or(Value::Null),
            },
            "tool_result" => AgentEvent::ToolResult {
                id: s(&v, "id"),
                is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
                output: v.get("output").cloned().unwrap_or(Value::Null),
            },
            "status" => AgentEvent::Status {
                status: s(&v, "status"),
                detail: s(&v, "detail"),
            },
            "error" => AgentEvent::Status {
                status: "error".into(),
                detail: s(&v, "message"),
            },
            "permission_request" => AgentEvent::PermissionRequest {
                request_id: s(&v, "request_id"),
                tool: s(&v, "tool"),
                question: s(&v, "question"),
            },
            "turn_end" => {
                let u = v.get("usage").cloned().unwrap_or(Value::Null);
                let cached = n(&u, "cache_read_tokens");
                AgentEvent::TurnEnd {
                    status: v
                        .get("status")
                        .and_then(Value::as_str)
                        .unwrap_or("completed")
                        .to_string(),
                    usage: Usage {
                        input_tokens: n(&u, "input_tokens") + cached + n(&u, "cache_write_tokens"),
                        input_tokens_cached: cached,
                        output_tokens: n(&u, "output_tokens"),
                    },
                    duration_ms: v.get("duration_ms").and_then(Value::as_u64),
                    error: s(&v, "error"),
                }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            agent_type: "test_double".into(),
            executable: "blobhub-test-agent".into(),
            model: "m".into(),
            effort: String::new(),
            permissions: "approval".into(),
            work_folder: "/tmp".into(),
            env: Vec::new(),
        }
    }

    #[test]
    fn command_line_resumes_the_session() {
        let d = TestAgent;
        assert_eq!(
            d.args(&settings(), ""),
            ["--model", "m", "--permissions", "approval"]
        );
        assert_eq!(d.args(&settings(), "td_1")[..2], ["--session-id", "td_1"]);
    }

    #[test]
    fn parses_every_line_kind() {
        let d = TestAgent;
        assert_eq!(
            d.parse_line(r#"{"type":"session","session_id":"td_1"}"#),
            Some(AgentEvent::Session("td_1".into()))
        );
        assert_eq!(
            d.parse_line(r#"{"type":"text","text":"echo: hi"}"#),
            Some(AgentEvent::Text("echo: hi".into()))
        );
        assert!(matches!(
            d.parse_line(r#"{"type":"permission_request","request_id":"req_1","tool":"ask","question":"q?"}"#),
            Some(AgentEvent::PermissionRequest { ref question, .. }) if question == "q?"
        ));
        let end = d.parse_line(r#"{"type":"turn_end","status":"completed","usage":{"input_tokens":2,"output_tokens":3,"cache_read_tokens":1},"duration_ms":5}"#);
        assert_eq!(
            end,
            Some(AgentEvent::TurnEnd {
                status: "completed".into(),
                usage: Usage {
                    input_tokens: 3,
                    input_tokens_cached: 1,
                    output_tokens: 3
                },
                duration_ms: Some(5),
                error: String::new()
            })
        );
        assert_eq!(d.parse_line("not json"), None);
        assert_eq!(d.parse_line(r#"{"type":"mystery"}"#), None);
    }

    #[test]
    fn encodes_lines() {
        let d = TestAgent;
        assert_eq!(
            d.encode_turn("a\nb"),
            "{\"text\":\"a\\nb\",\"type\":\"turn\"}\n"
        );
        let p: Value =
            serde_json::from_str(d.encode_permission("req_1", true, "Approve").trim()).unwrap();
        assert_eq!(p["approved"], json!(true));
    }
}
