//! The Claude Code driver: `claude -p` with stream-json both ways and the control protocol on
//! stdin (docs/session-agent-harness.md, "Claude Code").
//!
//! One process per attempt, in the thread's work folder, resuming the thread's Claude session
//! (`--resume`). The driver writes the `initialize` control request first (it needs no message, so
//! a process can be started ahead of the turn) and the turn's `user` message when the turn is
//! handed over, then maps every stdout line: assistant content blocks to items as they arrive,
//! `tool_result` blocks (with their `is_error`), `api_retry` to a status, `can_use_tool` control
//! requests to permission prompts, `mcp_message` control requests to the in-process `ask_user`
//! server, and `result` to the turn's outcome.
//!
//! Permissions: every mode runs with `--permission-prompt-tool stdio`, so each tool use Claude's
//! own rules do not already allow comes to the harness. `approval` asks the person;
//! `autonomous` allows at once. (Claude's bypass mode refuses to run as root unless told it is
//! sandboxed, and a worker must not claim a sandbox it does not have, so it is not used.)

use std::collections::HashMap;

use serde_json::{Value, json};

use super::ask_user::{self, Handled};
use super::{
    AgentEvent, Answer, Driver, Exit, Launch, Outcome, Start, Status, Step, Usage, str_of, u64_of,
};

/// Appended to Claude Code's own system prompt (never replacing it).
pub const INSTRUCTIONS: &str = "You are working on a task handed to you in a BlobHub thread. \
The person reads everything you write there, asynchronously. When you need a decision or \
information only they have, call the mcp__blobhub__ask_user tool with your questions and wait \
for its answer; do not end your turn just to ask. The AskUserQuestion tool is not available here.";

/// What was asked of the person and how to answer it.
#[derive(Debug, Clone)]
enum Pending {
    /// `can_use_tool`: allow carries the tool's input back unchanged.
    Permission { input: Value },
    /// `tools/call` of `ask_user`, carried by an `mcp_message` control request.
    Question { rpc_id: Value },
}

#[derive(Debug, Default)]
pub struct ClaudeCode {
    session_id: String,
    pending: HashMap<String, Pending>,
    interrupts: u32,
    result: Option<Outcome>,
    /// The user message's content blocks of a turn with images (else its text is sent).
    native: Option<Value>,
}

/// A turn with images as the user message's content blocks: text blocks, image blocks (base64,
/// read from disk by the harness), non-image files as `[name] at path` text.
pub fn native_content(native: &crate::attachments::NativeInput) -> Value {
    use crate::attachments::{Part, inline_reference, listing_line};
    let mut blocks = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, blocks: &mut Vec<Value>| {
        if !text.is_empty() {
            blocks.push(json!({"type": "text", "text": std::mem::take(text)}));
        }
    };
    for part in &native.parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::Unavailable { name, reason } => {
                text.push_str(&format!("\n- {name} — unavailable ({reason})\n"))
            }
            Part::File(f) => match native.image(&f.path).filter(|_| f.is_image()) {
                Some(data) => {
                    flush(&mut text, &mut blocks);
                    blocks.push(json!({"type": "image", "source": {"type": "base64",
                        "media_type": f.content_type, "data": data}}));
                    // The path too, so the agent can refer to the file on disk.
                    text.push_str(&format!("(the image above is {})", listing_line(f)));
                }
                None => text.push_str(&inline_reference(f)),
            },
        }
    }
    flush(&mut text, &mut blocks);
    Value::Array(blocks)
}

fn line(v: &Value) -> String {
    format!("{v}\n")
}

fn control_response(request_id: &str, response: Value) -> String {
    line(&json!({"type": "control_response", "response": {
        "subtype": "success", "request_id": request_id, "response": response}}))
}

fn control_error(request_id: &str, error: &str) -> String {
    line(&json!({"type": "control_response", "response": {
        "subtype": "error", "request_id": request_id, "error": error}}))
}

/// A tool result's content as text: a string as is, text blocks joined, other blocks named.
fn flatten(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => str_of(b, "text"),
                Some(other) => format!("[{other}]"),
                None => b.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The question of a permission prompt: the tool, then what it would run or touch.
fn permission_question(tool: &str, input: &Value) -> String {
    let detail = ["command", "file_path", "path", "url", "pattern"]
        .iter()
        .find_map(|k| {
            input
                .get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        });
    match detail {
        Some(d) => format!("Allow Claude to use `{tool}`?\n\n`{d}`"),
        None => format!("Allow Claude to use `{tool}`?"),
    }
}

/// Model-API failures worth resuming later: rate limits, overload and server errors.
fn transient(status: Option<u64>) -> bool {
    matches!(status, Some(429 | 500..=599))
}

impl ClaudeCode {
    fn assistant(&mut self, v: &Value) -> Step {
        let blocks = v
            .pointer("/message/content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // A line the CLI made up itself to report a failed request ("API Error: 529 …") is not
        // the model speaking: it becomes an error status, and the `result` decides the turn.
        let synthetic = v.get("error").is_some_and(|e| !e.is_null())
            || v.pointer("/message/model").and_then(Value::as_str) == Some("<synthetic>");
        let mut events = Vec::new();
        for b in &blocks {
            match b.get("type").and_then(Value::as_str).unwrap_or("") {
                "text" if synthetic => events.push(AgentEvent::Status {
                    status: "error".into(),
                    detail: str_of(b, "text"),
                }),
                "text" => {
                    let text = str_of(b, "text");
                    if !text.is_empty() {
                        events.push(AgentEvent::Text(text));
                    }
                }
                "thinking" => {
                    let text = str_of(b, "thinking");
                    if !text.is_empty() {
                        events.push(AgentEvent::Thinking(text));
                    }
                }
                "tool_use" | "server_tool_use" => events.push(AgentEvent::ToolCall {
                    id: str_of(b, "id"),
                    name: str_of(b, "name"),
                    input: b.get("input").cloned().unwrap_or(Value::Null),
                }),
                _ => {}
            }
        }
        Step {
            events,
            ..Step::default()
        }
    }

    fn user(&mut self, v: &Value) -> Step {
        let events = v
            .pointer("/message/content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| AgentEvent::ToolResult {
                id: str_of(b, "tool_use_id"),
                is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
                output: Value::String(flatten(b.get("content").unwrap_or(&Value::Null))),
            })
            .collect();
        Step {
            events,
            ..Step::default()
        }
    }

    fn system(&mut self, v: &Value) -> Step {
        match v.get("subtype").and_then(Value::as_str).unwrap_or("") {
            // Always reported: it also says the CLI has begun on the turn.
            "init" => {
                self.session(v);
                Step::event(AgentEvent::Session(self.session_id.clone()))
            }
            "api_retry" => {
                let delay_s = u64_of(v, "retry_delay_ms") as f64 / 1000.0;
                let error = match v.get("error") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => match v.get("error_status").and_then(Value::as_u64)
                    {
                        Some(s) => format!("HTTP {s}"),
                        None => "error".into(),
                    },
                    Some(other) => other.to_string(),
                };
                Step::event(AgentEvent::Status {
                    status: "api_retry".into(),
                    detail: format!(
                        "API retry {}/{}, next attempt in {delay_s:.1}s ({error})",
                        u64_of(v, "attempt"),
                        u64_of(v, "max_retries"),
                    ),
                })
            }
            _ => Step::default(),
        }
    }

    /// A line naming the session: the thread resumes it next time.
    fn session(&mut self, v: &Value) -> Step {
        let id = str_of(v, "session_id");
        if id.is_empty() || id == self.session_id {
            return Step::default();
        }
        self.session_id = id.clone();
        Step::event(AgentEvent::Session(id))
    }

    fn result(&mut self, v: &Value) -> Step {
        let mut step = self.session(v);
        let u = v.get("usage").cloned().unwrap_or(Value::Null);
        let cached = u64_of(&u, "cache_read_input_tokens");
        let usage = Usage {
            input_tokens: u64_of(&u, "input_tokens")
                + cached
                + u64_of(&u, "cache_creation_input_tokens"),
            input_tokens_cached: cached,
            output_tokens: u64_of(&u, "output_tokens"),
        };
        let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
        let subtype = str_of(v, "subtype");
        // `is_error` decides, not `subtype`: an API failure reports `subtype: success`.
        let status = if !is_error && subtype == "success" {
            Status::Completed
        } else if self.interrupts > 0 {
            Status::Interrupted
        } else if transient(v.get("api_error_status").and_then(Value::as_u64)) {
            Status::TransientError
        } else {
            Status::Failed
        };
        let error = if status == Status::Completed {
            String::new()
        } else {
            match v.get("result") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => v
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|e| e.iter().map(flatten).collect::<Vec<_>>().join("; "))
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| format!("claude ended the turn with {subtype}")),
            }
        };
        self.result = Some(Outcome {
            status,
            error,
            usage,
            duration_ms: v.get("duration_ms").and_then(Value::as_u64),
            ended_by_agent: true,
            usage_total: None,
        });
        step.finished = true;
        step
    }

    fn control_request(&mut self, v: &Value) -> Step {
        let request_id = str_of(v, "request_id");
        let request = v.get("request").cloned().unwrap_or(Value::Null);
        match request.get("subtype").and_then(Value::as_str).unwrap_or("") {
            "can_use_tool" => {
                let tool = str_of(&request, "tool_name");
                let input = request.get("input").cloned().unwrap_or(json!({}));
                let question = permission_question(&tool, &input);
                self.pending.insert(
                    request_id.clone(),
                    Pending::Permission {
                        input: input.clone(),
                    },
                );
                Step::event(AgentEvent::PermissionRequest {
                    request_id,
                    tool,
                    input,
                    question,
                    session_option: false,
                })
            }
            "mcp_message" => {
                let message = request.get("message").cloned().unwrap_or(Value::Null);
                if str_of(&request, "server_name") != ask_user::SERVER {
                    let reply = json!({"jsonrpc": "2.0", "id": message.get("id"),
                        "error": {"code": -32601, "message": "no such server"}});
                    return Step {
                        replies: vec![control_response(
                            &request_id,
                            json!({"mcp_response": reply}),
                        )],
                        ..Step::default()
                    };
                }
                match ask_user::handle(&message) {
                    Handled::Reply(reply) => Step {
                        replies: vec![control_response(
                            &request_id,
                            json!({"mcp_response": reply}),
                        )],
                        ..Step::default()
                    },
                    Handled::Ask { rpc_id, questions } => {
                        self.pending
                            .insert(request_id.clone(), Pending::Question { rpc_id });
                        Step::event(AgentEvent::Question {
                            request_id,
                            questions,
                        })
                    }
                }
            }
            other => Step {
                replies: vec![control_error(
                    &request_id,
                    &format!("unsupported control request {other:?}"),
                )],
                ..Step::default()
            },
        }
    }
}

impl Driver for ClaudeCode {
    fn launch(&mut self, start: &Start<'_>) -> Launch {
        let s = start.settings;
        self.session_id = start.resume.to_string();
        let mut args: Vec<String> = [
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "default",
            "--permission-prompt-tool",
            "stdio",
            "--mcp-config",
            r#"{"mcpServers":{"blobhub":{"type":"sdk","name":"blobhub"}}}"#,
            "--allowedTools",
            ask_user::QUALIFIED_TOOL,
            "--disallowedTools",
            "AskUserQuestion",
            "--append-system-prompt",
            INSTRUCTIONS,
        ]
        .map(String::from)
        .to_vec();
        // `--flag=value`, never `--flag value`: the values come from the session (a thread's
        // model, a session id rebuilt from its items), and one starting with `-` must stay a
        // value rather than become another flag.
        for (flag, value) in [
            ("--model", s.model.as_str()),
            ("--effort", s.effort.as_str()),
            ("--resume", start.resume),
        ] {
            if !value.is_empty() {
                args.push(format!("{flag}={value}"));
            }
        }
        let initialize = json!({"type": "control_request", "request_id": "blobhub_init",
            "request": {"subtype": "initialize", "hooks": null}});
        Launch {
            args,
            env: Vec::new(),
            stdin: vec![line(&initialize)],
        }
    }

    fn turn(&mut self, text: &str) -> Vec<String> {
        // The CLI reads its stdin in order: the message may follow `initialize` before the
        // answer to it has come back.
        let content = self.native.take().unwrap_or_else(|| json!(text));
        let user = json!({"type": "user", "message": {"role": "user", "content": content},
            "parent_tool_use_id": null, "session_id": ""});
        vec![line(&user)]
    }

    fn set_native(&mut self, native: &crate::attachments::NativeInput) {
        self.native = Some(native_content(native));
    }

    fn on_stdout(&mut self, raw: &str) -> Step {
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            return Step {
                log: Some(raw.to_string()),
                ..Step::default()
            };
        };
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "system" => self.system(&v),
            "assistant" => self.assistant(&v),
            "user" => self.user(&v),
            "result" => self.result(&v),
            "control_request" => self.control_request(&v),
            "control_cancel_request" => {
                // The CLI gave up on a request (its turn was interrupted): forget it.
                self.pending.remove(&str_of(&v, "request_id"));
                Step::default()
            }
            // Answers to our own requests, stream events, rate-limit notices: nothing for the
            // thread.
            _ => Step::default(),
        }
    }

    fn answer(&mut self, request_id: &str, answer: Answer<'_>) -> Vec<String> {
        let Some(pending) = self.pending.remove(request_id) else {
            return Vec::new();
        };
        let response = match (pending, answer) {
            (Pending::Permission { input }, Answer::Approve | Answer::ApproveForSession) => {
                json!({"behavior": "allow", "updatedInput": input})
            }
            (Pending::Permission { input }, Answer::Answers(a)) if crate::prompt::approved(a) => {
                json!({"behavior": "allow", "updatedInput": input})
            }
            (Pending::Permission { .. }, Answer::Deny(why) | Answer::Unanswered(why)) => {
                json!({"behavior": "deny", "message": why})
            }
            (Pending::Permission { .. }, _) => {
                json!({"behavior": "deny", "message": "The person denied this tool use."})
            }
            (Pending::Question { rpc_id }, Answer::Answers(a)) => {
                json!({"mcp_response": ask_user::answered(&rpc_id, a)})
            }
            (Pending::Question { rpc_id }, Answer::Unanswered(why) | Answer::Deny(why)) => {
                json!({"mcp_response": ask_user::unanswered(&rpc_id, why)})
            }
            (Pending::Question { rpc_id }, Answer::Approve | Answer::ApproveForSession) => {
                let yes = [json!({"question": "", "answer": ["Approve"]})];
                json!({"mcp_response": ask_user::answered(&rpc_id, &yes)})
            }
        };
        vec![control_response(request_id, response)]
    }

    fn interrupt(&mut self) -> Vec<String> {
        self.interrupts += 1;
        vec![line(&json!({"type": "control_request",
            "request_id": format!("blobhub_interrupt_{}", self.interrupts),
            "request": {"subtype": "interrupt"}}))]
    }

    fn on_exit(&mut self, exit: Exit) -> Outcome {
        match self.result.take() {
            Some(outcome) => outcome,
            None if self.interrupts > 0 => Outcome {
                status: Status::Interrupted,
                ..Outcome::without_end(exit)
            },
            None => Outcome::without_end(exit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use blobhub_agent_types::DriverKind;

    /// Everything the driver made of a recorded stdout, answering every request it raised with
    /// `answer`.
    struct Run {
        events: Vec<AgentEvent>,
        replies: Vec<Value>,
        finished: bool,
        logged: Vec<String>,
        outcome: Outcome,
    }

    fn replay<'a>(fixture: &str, answer: impl Fn(&AgentEvent) -> Option<Answer<'a>>) -> Run {
        let mut d = ClaudeCode::default();
        let mut run = Run {
            events: Vec::new(),
            replies: Vec::new(),
            finished: false,
            logged: Vec::new(),
            outcome: Outcome::without_end(Exit::default()),
        };
        for line in fixture.lines() {
            let step = d.on_stdout(line);
            run.replies.extend(
                step.replies
                    .iter()
                    .map(|r| serde_json::from_str::<Value>(r).unwrap()),
            );
            run.logged.extend(step.log);
            run.finished |= step.finished;
            for e in step.events {
                let request = match &e {
                    AgentEvent::PermissionRequest { request_id, .. }
                    | AgentEvent::Question { request_id, .. } => Some(request_id.clone()),
                    _ => None,
                };
                if let (Some(id), Some(a)) = (request, answer(&e)) {
                    run.replies.extend(
                        d.answer(&id, a)
                            .iter()
                            .map(|r| serde_json::from_str::<Value>(r).unwrap()),
                    );
                }
                run.events.push(e);
            }
        }
        run.outcome = d.on_exit(Exit {
            code: Some(0),
            signal: None,
        });
        run
    }

    fn settings() -> Settings {
        Settings {
            driver: DriverKind::ClaudeCode,
            executable: "claude".into(),
            model: "sonnet".into(),
            ..Settings::for_tests("claude_code")
        }
    }

    #[test]
    fn launch_speaks_stream_json_appends_instructions_and_resumes() {
        let s = settings();
        let mut d = ClaudeCode::default();
        let l = d.launch(&Start {
            resume: "",
            settings: &s,
            usage_total: None,
        });
        let args = l.args.join(" ");
        for flag in [
            "-p --input-format stream-json --output-format stream-json --verbose",
            "--permission-prompt-tool stdio",
            "--allowedTools mcp__blobhub__ask_user",
            "--disallowedTools AskUserQuestion",
            "--model=sonnet",
        ] {
            assert!(args.contains(flag), "{flag} missing from {args}");
        }
        assert!(l.args.contains(&"--append-system-prompt".to_string()));
        assert!(!l.args.contains(&"--system-prompt".to_string()));
        assert!(!args.contains("--resume"));
        // The handshake only: the message comes with the turn, so the process can start first.
        assert_eq!(l.stdin.len(), 1);
        let first: Value = serde_json::from_str(&l.stdin[0]).unwrap();
        assert_eq!(first["request"]["subtype"], "initialize");
        let turn = d.turn("hi");
        assert_eq!(turn.len(), 1);
        let user: Value = serde_json::from_str(&turn[0]).unwrap();
        assert_eq!(user["type"], "user");
        assert_eq!(user["message"]["content"], "hi");
        let l = ClaudeCode::default().launch(&Start {
            resume: "c536",
            settings: &s,
            usage_total: None,
        });
        assert!(l.args.join(" ").ends_with("--resume=c536"));
        let hostile = Settings {
            model: "--dangerously-skip-permissions".into(),
            ..settings()
        };
        let l = ClaudeCode::default().launch(&Start {
            resume: "-r",
            settings: &hostile,
            usage_total: None,
        });
        assert!(
            l.args
                .contains(&"--model=--dangerously-skip-permissions".to_string())
        );
        assert!(l.args.contains(&"--resume=-r".to_string()));
        assert!(
            !l.args
                .contains(&"--dangerously-skip-permissions".to_string())
        );
    }

    #[test]
    fn a_turn_with_an_image_sends_content_blocks() {
        use crate::attachments::{Local, NativeInput, Part};
        let file = |name: &str, ct: &str| Local {
            name: name.into(),
            rel: format!("in/i1/{name}"),
            path: format!("/w/in/i1/{name}"),
            content_type: ct.into(),
            size: 3,
        };
        let native = NativeInput {
            parts: vec![
                Part::Text("see ".into()),
                Part::File(file("a.png", "image/png")),
                Part::File(file("b.txt", "text/plain")),
            ],
            images: vec![("/w/in/i1/a.png".into(), "AAAA".into())],
        };
        let mut d = ClaudeCode::default();
        d.launch(&Start {
            resume: "",
            settings: &settings(),
            usage_total: None,
        });
        d.set_native(&native);
        let turn = d.turn("see [a.png][b.txt]");
        let user: Value = serde_json::from_str(turn[0].trim()).unwrap();
        let content = &user["message"]["content"];
        assert_eq!(content[0], json!({"type": "text", "text": "see "}));
        assert_eq!(
            content[1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}})
        );
        let after = content[2]["text"].as_str().unwrap();
        assert!(after.contains("/w/in/i1/a.png"), "{after}");
        assert!(after.ends_with("[b.txt] at /w/in/i1/b.txt"), "{after}");
        // Without images the text goes as it is.
        let mut d = ClaudeCode::default();
        d.launch(&Start {
            resume: "",
            settings: &settings(),
            usage_total: None,
        });
        let user: Value = serde_json::from_str(d.turn("plain")[0].trim()).unwrap();
        assert_eq!(user["message"]["content"], "plain");
    }

    #[test]
    fn a_plain_turn() {
        let run = replay(
            include_str!("../../fixtures/claude_code/plain.jsonl"),
            |_| None,
        );
        assert!(
            matches!(&run.events[..], [AgentEvent::Session(_), AgentEvent::Text(t)] if t.starts_with("reply: hello"))
        );
        assert!(run.finished);
        assert_eq!(run.outcome.status, Status::Completed);
        assert!(run.outcome.ended_by_agent);
        assert_eq!(
            run.outcome.usage,
            Usage {
                input_tokens: 16,
                input_tokens_cached: 4,
                output_tokens: 7
            }
        );
        // The sdk MCP server's handshake was answered: initialize, the notification, tools/list.
        let answered: Vec<&Value> = run
            .replies
            .iter()
            .map(|r| &r["response"]["response"]["mcp_response"])
            .collect();
        assert_eq!(answered.len(), 3);
        assert!(answered[0]["result"]["protocolVersion"].is_string());
        assert_eq!(answered[2]["result"]["tools"][0]["name"], "ask_user");
    }

    #[test]
    fn thinking_then_text() {
        let run = replay(
            include_str!("../../fixtures/claude_code/thinking.jsonl"),
            |_| None,
        );
        assert!(matches!(
            &run.events[1..],
            [AgentEvent::Thinking(t), AgentEvent::Text(_)] if t == "about it"
        ));
    }

    #[test]
    fn an_approved_tool_call_allows_with_the_original_input() {
        let run = replay(
            include_str!("../../fixtures/claude_code/bash_approved.jsonl"),
            |_| Some(Answer::Approve),
        );
        let kinds: Vec<&str> = run
            .events
            .iter()
            .map(|e| match e {
                AgentEvent::Session(_) => "session",
                AgentEvent::ToolCall { .. } => "tool_call",
                AgentEvent::PermissionRequest { .. } => "permission",
                AgentEvent::ToolResult { .. } => "tool_result",
                AgentEvent::Text(_) => "text",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["session", "tool_call", "permission", "tool_result", "text"]
        );
        let AgentEvent::PermissionRequest { tool, question, .. } = &run.events[2] else {
            unreachable!()
        };
        assert_eq!(tool, "Bash");
        assert_eq!(
            question,
            "Allow Claude to use `Bash`?\n\n`echo hi > out.txt`"
        );
        let allow = run
            .replies
            .iter()
            .find(|r| r["response"]["response"]["behavior"] == "allow")
            .expect("an allow went back");
        assert_eq!(
            allow["response"]["response"]["updatedInput"]["command"],
            "echo hi > out.txt"
        );
        assert!(matches!(
            &run.events[3],
            AgentEvent::ToolResult {
                is_error: false,
                ..
            }
        ));
    }

    #[test]
    fn a_denied_tool_call_is_an_error_result() {
        let run = replay(
            include_str!("../../fixtures/claude_code/bash_denied.jsonl"),
            |_| Some(Answer::Deny("no")),
        );
        assert!(run.events.iter().any(|e| matches!(e,
            AgentEvent::ToolResult { is_error: true, output, .. } if output == "The person said no")));
        assert!(
            run.replies
                .iter()
                .any(|r| r["response"]["response"]["behavior"] == "deny"
                    && r["response"]["response"]["message"] == "no")
        );
    }

    #[test]
    fn ask_user_becomes_a_question_and_the_answer_its_tool_result() {
        let answers = [json!({"question": "Which colour?", "answer": ["blue"]})];
        let run = replay(
            include_str!("../../fixtures/claude_code/ask_user.jsonl"),
            |e| matches!(e, AgentEvent::Question { .. }).then_some(Answer::Answers(&answers)),
        );
        let q = run
            .events
            .iter()
            .find_map(|e| match e {
                AgentEvent::Question { questions, .. } => Some(questions.clone()),
                _ => None,
            })
            .expect("a question");
        assert_eq!(q[0]["question"], "Which colour?");
        let reply = run
            .replies
            .iter()
            .find(|r| r["response"]["response"]["mcp_response"]["id"] == 2)
            .expect("the tools/call was answered");
        let text = reply["response"]["response"]["mcp_response"]["result"]["content"][0]["text"]
            .as_str()
            .unwrap();
        assert!(text.contains("blue"), "{text}");
        assert_eq!(run.outcome.status, Status::Completed);
    }

    #[test]
    fn an_overloaded_api_is_a_transient_failure_not_model_text() {
        let run = replay(
            include_str!("../../fixtures/claude_code/api_error_529.jsonl"),
            |_| None,
        );
        assert!(
            !run.events.iter().any(|e| matches!(e, AgentEvent::Text(_))),
            "the CLI's error line is not the model speaking"
        );
        assert!(run.events.iter().any(|e| matches!(e,
            AgentEvent::Status { status, detail } if status == "error" && detail.contains("529"))));
        assert_eq!(run.outcome.status, Status::TransientError);
        assert!(run.outcome.error.contains("529"));
    }

    #[test]
    fn an_interrupted_turn() {
        let mut d = ClaudeCode::default();
        let lines = d.interrupt();
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["request"]["subtype"], "interrupt");
        for line in include_str!("../../fixtures/claude_code/interrupted.jsonl").lines() {
            d.on_stdout(line);
        }
        assert_eq!(d.on_exit(Exit::default()).status, Status::Interrupted);
    }

    #[test]
    fn malformed_lines_are_logged_and_an_exit_without_result_fails() {
        let mut d = ClaudeCode::default();
        assert_eq!(
            d.on_stdout("Error: oops").log.as_deref(),
            Some("Error: oops")
        );
        assert_eq!(d.on_stdout("{\"type\":").log.as_deref(), Some("{\"type\":"));
        assert_eq!(d.on_stdout(r#"{"type":"assistant"}"#), Step::default());
        assert_eq!(
            d.on_stdout(r#"{"type":"assistant","message":{"content":"x"}}"#),
            Step::default()
        );
        assert_eq!(d.on_stdout(r#"[1,2]"#), Step::default());
        let unknown = d.on_stdout(
            r#"{"type":"control_request","request_id":"r1","request":{"subtype":"hook_callback"}}"#,
        );
        let v: Value = serde_json::from_str(&unknown.replies[0]).unwrap();
        assert_eq!(v["response"]["subtype"], "error");
        assert_eq!(
            d.answer("never-asked", Answer::Approve),
            Vec::<String>::new()
        );
        let o = d.on_exit(Exit {
            code: Some(1),
            signal: None,
        });
        assert_eq!(o.status, Status::Failed);
        assert!(!o.ended_by_agent);
    }

    #[test]
    fn a_failed_result_fails_whatever_its_subtype() {
        let mut d = ClaudeCode::default();
        let step = d.on_stdout(r#"{"type":"result","subtype":"success","is_error":true,"result":"Credit balance too low","session_id":"s1"}"#);
        assert!(step.finished);
        let o = d.on_exit(Exit::default());
        assert_eq!(
            (o.status, o.error.as_str()),
            (Status::Failed, "Credit balance too low")
        );
        let mut d = ClaudeCode::default();
        d.on_stdout(r#"{"type":"result","subtype":"error_max_turns","is_error":false}"#);
        assert_eq!(d.on_exit(Exit::default()).status, Status::Failed);
    }

    #[test]
    fn api_retry_is_a_status() {
        let mut d = ClaudeCode::default();
        let step = d.on_stdout(r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":1500,"error_status":529,"error":"overloaded"}"#);
        assert_eq!(
            step.events,
            [AgentEvent::Status {
                status: "api_retry".into(),
                detail: "API retry 1/10, next attempt in 1.5s (overloaded)".into()
            }]
        );
    }
}
