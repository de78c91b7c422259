//! The driver for `blobhub-test-agent` (host/src/test_agent.rs, protocol in docs/testing.md):
//! JSON lines both ways, `--session-id` to resume, one `turn_end` line per turn.

use serde_json::{Value, json};

use super::{
    AgentEvent, Answer, Driver, Exit, Launch, Outcome, Start, Status, Step, Usage, str_of as s,
    u64_of as n,
};

/// One attempt's state: the outcome its `turn_end` line announced.
#[derive(Debug, Default)]
pub struct TestAgent {
    ended: Option<Outcome>,
}

impl Driver for TestAgent {
    fn launch(&mut self, start: &Start<'_>) -> Launch {
        let settings = start.settings;
        let mut args = Vec::new();
        if !start.resume.is_empty() {
            args.extend(["--session-id".to_string(), start.resume.to_string()]);
        }
        for (flag, value) in [("--model", &settings.model), ("--effort", &settings.effort)] {
            if !value.is_empty() {
                args.extend([flag.to_string(), value.clone()]);
            }
        }
        args.extend(["--permissions".to_string(), settings.permissions.clone()]);
        Launch {
            args,
            env: Vec::new(),
            stdin: Vec::new(),
        }
    }

    fn turn(&mut self, text: &str) -> Vec<String> {
        vec![format!("{}\n", json!({"type": "turn", "text": text}))]
    }

    fn on_stdout(&mut self, line: &str) -> Step {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return Step {
                log: Some(line.to_string()),
                ..Step::default()
            };
        };
        let event = match v.get("type").and_then(Value::as_str).unwrap_or("") {
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
                input: v.get("input").cloned().unwrap_or(Value::Null),
                question: s(&v, "question"),
                session_option: false,
            },
            "turn_end" => {
                let u = v.get("usage").cloned().unwrap_or(Value::Null);
                let cached = n(&u, "cache_read_tokens");
                let status = match v.get("status").and_then(Value::as_str) {
                    None | Some("completed") => Status::Completed,
                    Some("interrupted") => Status::Interrupted,
                    Some(_) => Status::Failed,
                };
                let error = match (&status, s(&v, "error")) {
                    (Status::Failed, e) if e.is_empty() => {
                        format!("agent turn {}", s(&v, "status"))
                    }
                    (_, e) => e,
                };
                self.ended = Some(Outcome {
                    status,
                    error,
                    usage: Usage {
                        input_tokens: n(&u, "input_tokens") + cached + n(&u, "cache_write_tokens"),
                        input_tokens_cached: cached,
                        output_tokens: n(&u, "output_tokens"),
                    },
                    duration_ms: v.get("duration_ms").and_then(Value::as_u64),
                    ended_by_agent: true,
                    usage_total: None,
                });
                return Step {
                    finished: true,
                    ..Step::default()
                };
            }
            _ => return Step::default(),
        };
        Step::event(event)
    }

    fn answer(&mut self, request_id: &str, answer: Answer<'_>) -> Vec<String> {
        let (approved, text) = match answer {
            Answer::Approve | Answer::ApproveForSession => (true, "Approve".to_string()),
            Answer::Deny(why) | Answer::Unanswered(why) => (false, why.to_string()),
            Answer::Answers(answers) => (
                crate::prompt::approved(answers),
                crate::prompt::answer_for_agent(answers),
            ),
        };
        vec![format!(
            "{}\n",
            json!({"type": "permission_response", "request_id": request_id,
                   "approved": approved, "answer": text})
        )]
    }

    /// The test agent has no interrupt request: the turn loop terminates it.
    fn interrupt(&mut self) -> Vec<String> {
        Vec::new()
    }

    fn on_exit(&mut self, exit: Exit) -> Outcome {
        self.ended
            .take()
            .unwrap_or_else(|| Outcome::without_end(exit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn settings() -> Settings {
        Settings {
            model: "m".into(),
            ..Settings::for_tests("test_double")
        }
    }

    fn start<'a>(settings: &'a Settings, resume: &'a str) -> Start<'a> {
        Start {
            resume,
            settings,
            usage_total: None,
        }
    }

    #[test]
    fn launch_resumes_the_session_and_writes_the_turn() {
        let s = settings();
        let mut d = TestAgent::default();
        let l = d.launch(&start(&s, ""));
        assert_eq!(l.args, ["--model", "m", "--permissions", "approval"]);
        assert!(
            l.stdin.is_empty(),
            "no handshake: the turn is the first line"
        );
        assert_eq!(d.turn("a\nb"), ["{\"text\":\"a\\nb\",\"type\":\"turn\"}\n"]);
        let l = TestAgent::default().launch(&start(&s, "td_1"));
        assert_eq!(l.args[..2], ["--session-id", "td_1"]);
    }

    #[test]
    fn parses_every_line_kind() {
        let mut d = TestAgent::default();
        assert_eq!(
            d.on_stdout(r#"{"type":"session","session_id":"td_1"}"#),
            Step::event(AgentEvent::Session("td_1".into()))
        );
        assert_eq!(
            d.on_stdout(r#"{"type":"text","text":"echo: hi"}"#),
            Step::event(AgentEvent::Text("echo: hi".into()))
        );
        assert!(matches!(
            &d.on_stdout(r#"{"type":"permission_request","request_id":"req_1","tool":"ask","question":"q?"}"#).events[..],
            [AgentEvent::PermissionRequest { question, .. }] if question == "q?"
        ));
        let end = d.on_stdout(r#"{"type":"turn_end","status":"completed","usage":{"input_tokens":2,"output_tokens":3,"cache_read_tokens":1},"duration_ms":5}"#);
        assert!(end.finished && end.events.is_empty());
        assert_eq!(
            d.on_exit(Exit {
                code: Some(0),
                signal: None
            }),
            Outcome {
                status: Status::Completed,
                error: String::new(),
                usage: Usage {
                    input_tokens: 3,
                    input_tokens_cached: 1,
                    output_tokens: 3
                },
                duration_ms: Some(5),
                ended_by_agent: true,
                usage_total: None,
            }
        );
        assert_eq!(d.on_stdout("not json").log.as_deref(), Some("not json"));
        assert_eq!(d.on_stdout(r#"{"type":"mystery"}"#), Step::default());
    }

    #[test]
    fn an_exit_without_turn_end_fails_the_attempt() {
        let mut d = TestAgent::default();
        let o = d.on_exit(Exit {
            code: Some(3),
            signal: None,
        });
        assert_eq!(o.status, Status::Failed);
        assert!(!o.ended_by_agent);
        assert!(o.error.contains("status 3"), "{}", o.error);
        d.on_stdout(r#"{"type":"turn_end","status":"cancelled"}"#);
        let o = d.on_exit(Exit::default());
        assert_eq!(
            (o.status, o.error.as_str()),
            (Status::Failed, "agent turn cancelled")
        );
    }

    #[test]
    fn answers_are_permission_responses() {
        let mut d = TestAgent::default();
        let lines = d.answer("req_1", Answer::Approve);
        let p: Value = serde_json::from_str(lines[0].trim()).unwrap();
        assert_eq!(p["approved"], json!(true));
        let lines = d.answer("req_1", Answer::Deny("no"));
        let p: Value = serde_json::from_str(lines[0].trim()).unwrap();
        assert_eq!(
            (p["approved"].clone(), p["answer"].clone()),
            (json!(false), json!("no"))
        );
    }
}
