//! The Codex driver: `codex app-server`, JSON-RPC lines (without the `jsonrpc` member) on stdio
//! (docs/session-agent-harness.md, "Codex").
//!
//! One process per attempt, in the thread's work folder. The driver writes `initialize` and
//! `initialized` at once (no message needed, so the process can be started ahead of the turn),
//! and `thread/start` (or `thread/resume` of the thread's Codex thread) when the turn is handed
//! over; the thread's id in that response lets it send `turn/start` with the turn's text. Then every
//! notification of the turn is mapped (`item/started` / `item/completed` to items, usage,
//! errors), every server request gets an answer (approvals through the person, the rest a
//! defined refusal), and `turn/completed` for the turn ends it with the turn's own status.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::{
    AgentEvent, Answer, Driver, Exit, Launch, Outcome, Start, Status, Step, Usage, str_of, u64_of,
};

/// The client name Codex sees (it becomes the `originator` header of model requests).
pub const CLIENT_NAME: &str = "blobhub_worker";

// Ids of the driver's own requests; interrupts count up from `INTERRUPT_IDS`.
const INITIALIZE: u64 = 1;
const THREAD: u64 = 2;
const TURN: u64 = 3;
const INTERRUPT_IDS: u64 = 10;

/// A request Codex made and waits on.
#[derive(Debug, Clone)]
enum Pending {
    /// Command or file-change approval: answered with a `decision`.
    Decision { rpc_id: Value },
    /// Extra permissions: granted with the requested profile, or an empty one.
    Permissions { rpc_id: Value, permissions: Value },
    /// `request_user_input`: answers keyed by question id.
    Questions { rpc_id: Value, ids: Vec<String> },
}

#[derive(Debug, Default)]
pub struct Codex {
    thread_id: String,
    turn_id: String,
    resumed: bool,
    /// `thread/start` or `thread/resume`, written with the turn.
    thread_request: String,
    turn_start: Value,
    pending: HashMap<String, Pending>,
    /// Items already shown as started (their call precedes their result).
    started: HashSet<String>,
    /// The paths of file-change items, for the approval question (the request carries none).
    file_changes: HashMap<String, Vec<String>>,
    interrupts: u64,
    baseline: Option<Usage>,
    /// A total Codex reported for an earlier turn of a resumed thread.
    replayed_total: Option<Usage>,
    total: Option<Usage>,
    /// `total - last` of the turn's first report: the baseline when nothing else is known.
    before_first: Option<Usage>,
    outcome: Option<Outcome>,
    /// `turn/start`'s input items of a turn with images (else one text item).
    native: Option<Value>,
}

/// A turn with images as `turn/start` input items: text items, `localImage` items (absolute
/// paths; codex reads the file), non-image files as `[name] at path` text.
pub fn native_input(native: &crate::attachments::NativeInput) -> Value {
    use crate::attachments::{Part, inline_reference};
    let mut items = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, items: &mut Vec<Value>| {
        if !text.is_empty() {
            items.push(json!({"type": "text", "text": std::mem::take(text)}));
        }
    };
    for part in &native.parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::Unavailable { name, reason } => {
                text.push_str(&format!("\n- {name} — unavailable ({reason})\n"))
            }
            Part::File(f) if f.is_image() => {
                flush(&mut text, &mut items);
                items.push(json!({"type": "localImage", "path": f.path}));
                text.push_str(&format!("(the image above is {})", f.path));
            }
            Part::File(f) => text.push_str(&inline_reference(f)),
        }
    }
    flush(&mut text, &mut items);
    Value::Array(items)
}

fn line(v: &Value) -> String {
    format!("{v}\n")
}

fn request(id: u64, method: &str, params: Value) -> String {
    line(&json!({"id": id, "method": method, "params": params}))
}

fn result(rpc_id: &Value, result: Value) -> String {
    line(&json!({"id": rpc_id, "result": result}))
}

fn error(rpc_id: &Value, code: i64, message: &str) -> String {
    line(&json!({"id": rpc_id, "error": {"code": code, "message": message}}))
}

/// Approval policy and sandbox for a permissions setting (the table in the docs says why).
fn policy(permissions: &str) -> (&'static str, &'static str, &'static str) {
    match permissions {
        // Nobody is asked; the sandbox still keeps writes inside the work folder.
        "autonomous" => ("never", "workspace-write", "workspaceWrite"),
        _ => ("on-request", "workspace-write", "workspaceWrite"),
    }
}

fn usage_of(v: &Value) -> Usage {
    Usage {
        input_tokens: u64_of(v, "inputTokens"),
        input_tokens_cached: u64_of(v, "cachedInputTokens"),
        output_tokens: u64_of(v, "outputTokens"),
    }
}

fn minus(a: &Usage, b: &Usage) -> Usage {
    Usage {
        input_tokens: a.input_tokens.saturating_sub(b.input_tokens),
        input_tokens_cached: a.input_tokens_cached.saturating_sub(b.input_tokens_cached),
        output_tokens: a.output_tokens.saturating_sub(b.output_tokens),
    }
}

/// Model-API failures worth resuming later: overload, rate limits, server errors, dropped
/// connections.
fn transient(info: &Value) -> bool {
    match info {
        Value::String(s) => matches!(
            s.as_str(),
            "serverOverloaded" | "internalServerError" | "rateLimitExceeded"
        ),
        Value::Object(o) => o.keys().any(|k| {
            matches!(
                k.as_str(),
                "httpConnectionFailed"
                    | "responseStreamConnectionFailed"
                    | "responseStreamDisconnected"
                    | "responseTooManyFailedAttempts"
            )
        }),
        _ => false,
    }
}

/// A JSON-RPC error's message.
fn error_message(v: &Value) -> String {
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.get("error").map(Value::to_string).unwrap_or_default())
}

fn texts(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            Value::String(s) => Some(s.clone()),
            other => other
                .get("text")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn change_paths(item: &Value) -> Vec<String> {
    item.get("changes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let kind = c
                .pointer("/kind/type")
                .or_else(|| c.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or("update");
            format!("{kind} {}", str_of(c, "path"))
        })
        .collect()
}

impl Codex {
    fn fail(&mut self, error: String) -> Step {
        self.outcome = Some(Outcome {
            status: Status::Failed,
            error,
            usage: Usage::default(),
            duration_ms: None,
            ended_by_agent: false,
            usage_total: self.baseline.clone(),
        });
        Step {
            finished: true,
            ..Step::default()
        }
    }

    /// A response to one of the driver's requests.
    fn response(&mut self, v: &Value) -> Step {
        let id = v.get("id").and_then(Value::as_u64).unwrap_or(0);
        let failed = v.get("error").is_some_and(|e| !e.is_null());
        match id {
            INITIALIZE if failed => {
                self.fail(format!("codex refused to initialize: {}", error_message(v)))
            }
            THREAD if failed => {
                let what = if self.resumed {
                    format!("resume its thread {}", self.thread_id)
                } else {
                    "start a thread".to_string()
                };
                self.fail(format!("codex could not {what}: {}", error_message(v)))
            }
            THREAD => {
                let id = v
                    .pointer("/result/thread/id")
                    .and_then(Value::as_str)
                    .unwrap_or(&self.thread_id)
                    .to_string();
                self.thread_id = id.clone();
                self.turn_start["threadId"] = json!(id);
                Step {
                    events: vec![AgentEvent::Session(id)],
                    replies: vec![request(TURN, "turn/start", self.turn_start.clone())],
                    ..Step::default()
                }
            }
            TURN if failed => {
                self.fail(format!("codex did not take the turn: {}", error_message(v)))
            }
            TURN => {
                if let Some(t) = v.pointer("/result/turn/id").and_then(Value::as_str) {
                    self.turn_id = t.to_string();
                }
                Step::default()
            }
            // initialize's result, interrupts' results.
            _ => Step::default(),
        }
    }

    /// Whether a notification belongs to another turn than this attempt's.
    fn other_turn(&self, params: &Value) -> bool {
        let turn = params
            .get("turnId")
            .or_else(|| params.pointer("/turn/id"))
            .and_then(Value::as_str);
        matches!(turn, Some(t) if !self.turn_id.is_empty() && t != self.turn_id)
    }

    fn notification(&mut self, method: &str, params: &Value) -> Step {
        if method == "thread/tokenUsage/updated" {
            self.token_usage(params);
            return Step::default();
        }
        if self.other_turn(params) {
            return Step::default();
        }
        match method {
            "turn/started" => {
                if self.turn_id.is_empty()
                    && let Some(t) = params.pointer("/turn/id").and_then(Value::as_str)
                {
                    self.turn_id = t.to_string();
                }
                Step::default()
            }
            "item/started" => self.item_started(params.get("item").unwrap_or(&Value::Null)),
            "item/completed" => self.item_completed(params.get("item").unwrap_or(&Value::Null)),
            "error" => {
                let message = params
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("codex reported an error")
                    .to_string();
                let retrying = params
                    .get("willRetry")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                Step::event(AgentEvent::Status {
                    status: if retrying { "api_retry" } else { "error" }.into(),
                    detail: message,
                })
            }
            "turn/completed" => {
                let turn = params.get("turn").cloned().unwrap_or(Value::Null);
                self.end(&turn)
            }
            // Not in the pinned protocol, but older servers sent it: the turn failed.
            "turn/failed" => {
                let turn = json!({"status": "failed",
                    "error": params.get("error").cloned().unwrap_or(json!({"message": "turn failed"}))});
                self.end(&turn)
            }
            _ => Step::default(),
        }
    }

    fn token_usage(&mut self, params: &Value) {
        let total = usage_of(params.pointer("/tokenUsage/total").unwrap_or(&Value::Null));
        let ours = !self.turn_id.is_empty() && str_of(params, "turnId") == self.turn_id;
        if !ours {
            // Reported for an earlier turn (Codex replays it on resume): the running total
            // this turn starts from.
            self.replayed_total = Some(total);
            return;
        }
        if self.before_first.is_none() {
            let last = usage_of(params.pointer("/tokenUsage/last").unwrap_or(&Value::Null));
            self.before_first = Some(minus(&total, &last));
        }
        self.total = Some(total);
    }

    fn item_started(&mut self, item: &Value) -> Step {
        let id = str_of(item, "id");
        let call = |name: &str, input: Value| AgentEvent::ToolCall {
            id: id.clone(),
            name: name.to_string(),
            input,
        };
        let event = match item.get("type").and_then(Value::as_str).unwrap_or("") {
            "commandExecution" => call("shell", json!({"command": str_of(item, "command")})),
            "fileChange" => {
                let paths = change_paths(item);
                self.file_changes.insert(id.clone(), paths.clone());
                call(
                    "apply_patch",
                    json!({"command": paths.join(", "), "changes": paths}),
                )
            }
            "mcpToolCall" => call(
                &format!("{}.{}", str_of(item, "server"), str_of(item, "tool")),
                item.get("arguments").cloned().unwrap_or(Value::Null),
            ),
            "webSearch" => call("web_search", json!({"command": str_of(item, "query")})),
            _ => return Step::default(),
        };
        self.started.insert(id);
        Step::event(event)
    }

    fn item_completed(&mut self, item: &Value) -> Step {
        let id = str_of(item, "id");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        let status = str_of(item, "status");
        let failed = matches!(status.as_str(), "failed" | "declined");
        let result = |is_error: bool, output: String| AgentEvent::ToolResult {
            id: id.clone(),
            is_error,
            output: Value::String(output),
        };
        let mut events = Vec::new();
        if matches!(
            kind,
            "commandExecution" | "fileChange" | "mcpToolCall" | "webSearch"
        ) && !self.started.contains(&id)
        {
            events.extend(self.item_started(item).events);
        }
        match kind {
            "agentMessage" => {
                let text = str_of(item, "text");
                if !text.is_empty() {
                    events.push(AgentEvent::Text(text));
                }
            }
            "reasoning" => {
                let mut parts = texts(item.get("summary"));
                if parts.is_empty() {
                    parts = texts(item.get("content"));
                }
                if !parts.is_empty() {
                    events.push(AgentEvent::Thinking(parts.join("\n\n")));
                }
            }
            "commandExecution" => {
                let exit = item.get("exitCode").and_then(Value::as_i64);
                let output = match (
                    item.get("aggregatedOutput").and_then(Value::as_str),
                    &*status,
                ) {
                    (Some(o), _) if !o.is_empty() => o.to_string(),
                    (_, "declined") => "declined: the command did not run".to_string(),
                    (_, "failed") => "the command failed".to_string(),
                    _ => String::new(),
                };
                events.push(result(failed || exit.is_some_and(|c| c != 0), output));
            }
            "fileChange" => {
                let paths = change_paths(item);
                events.push(result(
                    failed,
                    format!("patch {status}: {}", paths.join(", ")),
                ));
            }
            "mcpToolCall" => {
                let error = item.pointer("/error/message").and_then(Value::as_str);
                let output = match error {
                    Some(e) => e.to_string(),
                    None => item
                        .pointer("/result/content")
                        .map(Value::to_string)
                        .unwrap_or_default(),
                };
                events.push(result(failed || error.is_some(), output));
            }
            "webSearch" => events.push(result(
                false,
                format!("searched: {}", str_of(item, "query")),
            )),
            "error" => events.push(AgentEvent::Status {
                status: "error".into(),
                detail: str_of(item, "message"),
            }),
            _ => {}
        }
        Step {
            events,
            ..Step::default()
        }
    }

    /// The turn ended, with `turn` (its id, status, error, duration).
    fn end(&mut self, turn: &Value) -> Step {
        let error = turn.get("error").cloned().unwrap_or(Value::Null);
        let message = str_of(&error, "message");
        let status = match turn.get("status").and_then(Value::as_str).unwrap_or("") {
            "completed" => Status::Completed,
            "interrupted" => Status::Interrupted,
            _ if transient(error.get("codexErrorInfo").unwrap_or(&Value::Null)) => {
                Status::TransientError
            }
            _ => Status::Failed,
        };
        let error = match (&status, message.is_empty()) {
            (Status::Completed, _) => String::new(),
            (_, false) => message,
            (Status::Interrupted, true) => "the turn was interrupted".into(),
            (_, true) => format!(
                "codex ended the turn {}",
                turn.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("failed")
            ),
        };
        let baseline = self
            .baseline
            .clone()
            .or_else(|| self.replayed_total.clone())
            .or_else(|| (!self.resumed).then(Usage::default))
            .or_else(|| self.before_first.clone())
            .unwrap_or_default();
        let total = self.total.clone().unwrap_or_else(|| baseline.clone());
        self.outcome = Some(Outcome {
            status,
            error,
            usage: minus(&total, &baseline),
            duration_ms: turn.get("durationMs").and_then(Value::as_u64),
            ended_by_agent: true,
            usage_total: Some(total),
        });
        Step {
            finished: true,
            ..Step::default()
        }
    }

    /// A request from Codex: every one gets an answer, now or once a person has answered.
    fn server_request(&mut self, rpc_id: Value, method: &str, params: &Value) -> Step {
        let request_id = format!("codex-{rpc_id}");
        let reason = params
            .get("reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty());
        let reply = |line: String| Step {
            replies: vec![line],
            ..Step::default()
        };
        match method {
            "item/commandExecution/requestApproval" => {
                let mut question = reason.unwrap_or("Allow this command?").to_string();
                let command = str_of(params, "command");
                if !command.is_empty() {
                    question.push_str(&format!("\n\n`{command}`"));
                }
                self.pending
                    .insert(request_id.clone(), Pending::Decision { rpc_id });
                Step::event(AgentEvent::PermissionRequest {
                    request_id,
                    tool: "shell".into(),
                    input: json!({"command": command}),
                    question,
                    session_option: true,
                })
            }
            "item/fileChange/requestApproval" => {
                let mut question = reason.unwrap_or("Allow this file change?").to_string();
                let paths = self
                    .file_changes
                    .get(&str_of(params, "itemId"))
                    .cloned()
                    .unwrap_or_default();
                if !paths.is_empty() {
                    question.push_str(&format!("\n\n`{}`", paths.join(", ")));
                }
                let input = json!({"paths": paths});
                self.pending
                    .insert(request_id.clone(), Pending::Decision { rpc_id });
                Step::event(AgentEvent::PermissionRequest {
                    request_id,
                    tool: "apply_patch".into(),
                    input,
                    question,
                    session_option: true,
                })
            }
            "item/permissions/requestApproval" => {
                let permissions = params.get("permissions").cloned().unwrap_or(json!({}));
                let question = format!(
                    "{}\n\n`{permissions}`",
                    reason.unwrap_or("Grant codex these additional permissions?")
                );
                let input = json!({"permissions": permissions.clone()});
                self.pending.insert(
                    request_id.clone(),
                    Pending::Permissions {
                        rpc_id,
                        permissions,
                    },
                );
                Step::event(AgentEvent::PermissionRequest {
                    request_id,
                    tool: "permissions".into(),
                    input,
                    question,
                    session_option: true,
                })
            }
            "item/tool/requestUserInput" => {
                let asked: Vec<Value> = params
                    .get("questions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let ids = asked.iter().map(|q| str_of(q, "id")).collect();
                let questions = asked
                    .iter()
                    .map(|q| {
                        json!({"question": str_of(q, "question"), "header": str_of(q, "header"),
                               "options": q.get("options").cloned().unwrap_or(json!([])),
                               "multiSelect": false})
                    })
                    .collect();
                self.pending
                    .insert(request_id.clone(), Pending::Questions { rpc_id, ids });
                Step::event(AgentEvent::Question {
                    request_id,
                    questions,
                })
            }
            // A form from an MCP server: the thread has no way to show one.
            "mcpServer/elicitation/request" => reply(result(
                &rpc_id,
                json!({"action": "decline", "content": null}),
            )),
            // The worker registers no dynamic tools.
            "item/tool/call" => reply(result(
                &rpc_id,
                json!({"success": false, "contentItems": [{"type": "inputText",
                    "text": "blobhub-worker provides no dynamic tools"}]}),
            )),
            // The legacy approval requests (not sent to clients of the v2 protocol).
            "applyPatchApproval" | "execCommandApproval" => {
                reply(result(&rpc_id, json!({"decision": "denied"})))
            }
            // ChatGPT token refresh, attestation, anything newer: refused, never left hanging.
            other => reply(error(
                &rpc_id,
                -32601,
                &format!("{other} is not supported by blobhub-worker"),
            )),
        }
    }
}

impl Driver for Codex {
    fn set_native(&mut self, native: &crate::attachments::NativeInput) {
        self.native = Some(native_input(native));
    }

    fn launch(&mut self, start: &Start<'_>) -> Launch {
        let s = start.settings;
        let (approval, sandbox, sandbox_policy) = policy(&s.permissions);
        self.thread_id = start.resume.to_string();
        self.resumed = !start.resume.is_empty();
        self.baseline = start.usage_total.cloned();
        let mut thread =
            json!({"cwd": s.work_folder, "approvalPolicy": approval, "sandbox": sandbox});
        let mut turn_start = json!({
            "threadId": start.resume,
            "input": [],
            "cwd": s.work_folder,
            "approvalPolicy": approval,
            "sandboxPolicy": {"type": sandbox_policy},
        });
        if !s.model.is_empty() {
            thread["model"] = json!(s.model);
            turn_start["model"] = json!(s.model);
        }
        if !s.effort.is_empty() {
            turn_start["effort"] = json!(s.effort);
        }
        self.turn_start = turn_start;
        self.thread_request = if self.resumed {
            thread["threadId"] = json!(start.resume);
            request(THREAD, "thread/resume", thread)
        } else {
            request(THREAD, "thread/start", thread)
        };
        let initialize = request(
            INITIALIZE,
            "initialize",
            json!({"clientInfo": {"name": CLIENT_NAME, "title": "BlobHub Worker",
                                  "version": env!("CARGO_PKG_VERSION")}}),
        );
        Launch {
            args: vec!["app-server".into()],
            env: Vec::new(),
            stdin: vec![initialize, line(&json!({"method": "initialized"}))],
        }
    }

    fn turn(&mut self, text: &str) -> Vec<String> {
        // The thread is opened only now: one opened ahead would be a Codex thread (and rollout
        // file) for nothing whenever the process is not used.
        self.turn_start["input"] = self
            .native
            .take()
            .unwrap_or_else(|| json!([{"type": "text", "text": text}]));
        vec![std::mem::take(&mut self.thread_request)]
    }

    fn on_stdout(&mut self, raw: &str) -> Step {
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            return Step {
                log: Some(raw.to_string()),
                ..Step::default()
            };
        };
        let method = v.get("method").and_then(Value::as_str);
        match (v.get("id").filter(|i| !i.is_null()), method) {
            (Some(id), Some(m)) => {
                let params = v.get("params").cloned().unwrap_or(Value::Null);
                self.server_request(id.clone(), m, &params)
            }
            (Some(_), None) => self.response(&v),
            (None, Some(m)) => {
                let params = v.get("params").cloned().unwrap_or(Value::Null);
                self.notification(m, &params)
            }
            (None, None) => Step::default(),
        }
    }

    fn answer(&mut self, request_id: &str, answer: Answer<'_>) -> Vec<String> {
        let Some(pending) = self.pending.remove(request_id) else {
            return Vec::new();
        };
        let answer = match answer {
            Answer::Answers(a) if !matches!(pending, Pending::Questions { .. }) => {
                match (crate::prompt::approved(a), crate::prompt::for_session(a)) {
                    (true, true) => Answer::ApproveForSession,
                    (true, false) => Answer::Approve,
                    (false, _) => Answer::Deny(""),
                }
            }
            other => other,
        };
        let line = match (pending, answer) {
            (Pending::Decision { rpc_id }, a) => {
                let decision = match a {
                    Answer::Approve => "accept",
                    Answer::ApproveForSession => "acceptForSession",
                    _ => "decline",
                };
                result(&rpc_id, json!({"decision": decision}))
            }
            (
                Pending::Permissions {
                    rpc_id,
                    permissions,
                },
                a,
            ) => match a {
                Answer::Approve => result(
                    &rpc_id,
                    json!({"permissions": permissions, "scope": "turn"}),
                ),
                Answer::ApproveForSession => result(
                    &rpc_id,
                    json!({"permissions": permissions, "scope": "session"}),
                ),
                _ => result(&rpc_id, json!({"permissions": {}, "scope": "turn"})),
            },
            (Pending::Questions { rpc_id, ids }, Answer::Answers(a)) => {
                let answers: serde_json::Map<String, Value> = ids
                    .iter()
                    .zip(a)
                    .map(|(id, given)| {
                        let labels = given.get("answer").cloned().unwrap_or(json!([]));
                        (id.clone(), json!({"answers": labels}))
                    })
                    .collect();
                result(&rpc_id, json!({"answers": answers}))
            }
            // Nobody answered: every question left empty.
            (Pending::Questions { rpc_id, .. }, _) => result(&rpc_id, json!({"answers": {}})),
        };
        vec![line]
    }

    fn interrupt(&mut self) -> Vec<String> {
        self.interrupts += 1;
        if self.turn_id.is_empty() || self.thread_id.is_empty() {
            // No turn to interrupt yet: the caller terminates the process.
            return Vec::new();
        }
        vec![request(
            INTERRUPT_IDS + self.interrupts,
            "turn/interrupt",
            json!({"threadId": self.thread_id, "turnId": self.turn_id}),
        )]
    }

    fn on_exit(&mut self, exit: Exit) -> Outcome {
        let base = match self.outcome.take() {
            Some(outcome) => return outcome,
            None => Outcome::without_end(exit),
        };
        let usage_total = self.total.clone().or_else(|| self.baseline.clone());
        if self.interrupts > 0 {
            Outcome {
                status: Status::Interrupted,
                usage_total,
                ..base
            }
        } else {
            Outcome {
                usage_total,
                ..base
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_turn_with_an_image_sends_a_local_image() {
        use crate::attachments::{Local, NativeInput, Part};
        let native = NativeInput {
            parts: vec![
                Part::Text("look".into()),
                Part::File(Local {
                    name: "a.png".into(),
                    rel: "in/i1/a.png".into(),
                    path: "/w/in/i1/a.png".into(),
                    content_type: "image/png".into(),
                    size: 3,
                }),
            ],
            images: Vec::new(),
        };
        let input = super::native_input(&native);
        assert_eq!(
            input[0],
            serde_json::json!({"type": "text", "text": "look"})
        );
        assert_eq!(
            input[1],
            serde_json::json!({"type": "localImage", "path": "/w/in/i1/a.png"})
        );
        assert_eq!(input.as_array().unwrap().len(), 3);
    }

    use super::*;
    use crate::settings::Settings;
    use blobhub_agent_types::DriverKind;

    fn settings() -> Settings {
        Settings {
            driver: DriverKind::Codex,
            executable: "codex".into(),
            ..Settings::for_tests("codex")
        }
    }

    /// Everything the driver made of a recorded stdout, answering every request it raised with
    /// `answer`.
    struct Run {
        events: Vec<AgentEvent>,
        replies: Vec<Value>,
        finished: bool,
        outcome: Outcome,
    }

    fn replay<'a>(
        fixture: &str,
        resume: &str,
        baseline: Option<&Usage>,
        answer: impl Fn(&AgentEvent) -> Option<Answer<'a>>,
    ) -> Run {
        let s = settings();
        let mut d = Codex::default();
        d.launch(&Start {
            resume,
            settings: &s,
            usage_total: baseline,
        });
        d.turn("x");
        let mut run = Run {
            events: Vec::new(),
            replies: Vec::new(),
            finished: false,
            outcome: Outcome::without_end(Exit::default()),
        };
        let parse = |r: &String| serde_json::from_str::<Value>(r).unwrap();
        for line in fixture.lines() {
            let step = d.on_stdout(line);
            assert_eq!(step.log, None, "every recorded line is protocol: {line}");
            run.replies.extend(step.replies.iter().map(parse));
            run.finished |= step.finished;
            for e in step.events {
                if let (
                    AgentEvent::PermissionRequest { request_id, .. }
                    | AgentEvent::Question { request_id, .. },
                    Some(a),
                ) = (&e, answer(&e))
                {
                    run.replies
                        .extend(d.answer(request_id, a).iter().map(parse));
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

    fn kinds(events: &[AgentEvent]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                AgentEvent::Session(_) => "session",
                AgentEvent::Text(_) => "text",
                AgentEvent::Thinking(_) => "thinking",
                AgentEvent::ToolCall { .. } => "tool_call",
                AgentEvent::ToolResult { .. } => "tool_result",
                AgentEvent::Status { .. } => "status",
                AgentEvent::PermissionRequest { .. } => "permission",
                AgentEvent::Question { .. } => "question",
            })
            .collect()
    }

    fn fake_usage(requests: u64) -> Usage {
        Usage {
            input_tokens: 10 * requests,
            input_tokens_cached: 4 * requests,
            output_tokens: 5 * requests,
        }
    }

    #[test]
    fn launch_initializes_then_starts_or_resumes_the_thread() {
        let s = Settings {
            model: "gpt-5.5".into(),
            effort: "high".into(),
            ..settings()
        };
        let mut d = Codex::default();
        let l = d.launch(&Start {
            resume: "",
            settings: &s,
            usage_total: None,
        });
        assert_eq!(l.args, ["app-server"]);
        // The handshake at once; the thread with the turn.
        assert_eq!(l.stdin.len(), 2);
        let lines: Vec<Value> = l
            .stdin
            .iter()
            .chain(&d.turn("hi"))
            .map(|r| serde_json::from_str(r).unwrap())
            .collect();
        assert_eq!(lines[0]["method"], "initialize");
        assert_eq!(lines[0]["params"]["clientInfo"]["name"], CLIENT_NAME);
        assert_eq!(lines[1], json!({"method": "initialized"}));
        assert_eq!(lines[2]["method"], "thread/start");
        assert_eq!(lines[2]["params"]["cwd"], "/work");
        assert_eq!(lines[2]["params"]["approvalPolicy"], "on-request");
        assert_eq!(lines[2]["params"]["sandbox"], "workspace-write");
        // The thread's id arrives: the turn starts on it, with the turn's settings.
        let step = d.on_stdout(r#"{"id":2,"result":{"thread":{"id":"th-1"}}}"#);
        assert_eq!(step.events, [AgentEvent::Session("th-1".into())]);
        let turn: Value = serde_json::from_str(&step.replies[0]).unwrap();
        assert_eq!(turn["method"], "turn/start");
        assert_eq!(turn["params"]["threadId"], "th-1");
        assert_eq!(turn["params"]["input"][0]["text"], "hi");
        assert_eq!(turn["params"]["model"], "gpt-5.5");
        assert_eq!(turn["params"]["effort"], "high");
        assert_eq!(turn["params"]["sandboxPolicy"]["type"], "workspaceWrite");
        let auto = Settings {
            permissions: "autonomous".into(),
            ..settings()
        };
        let mut d = Codex::default();
        d.launch(&Start {
            resume: "th-1",
            settings: &auto,
            usage_total: None,
        });
        let resume: Value = serde_json::from_str(&d.turn("again")[0]).unwrap();
        assert_eq!(resume["method"], "thread/resume");
        assert_eq!(resume["params"]["threadId"], "th-1");
        assert_eq!(resume["params"]["approvalPolicy"], "never");
        assert_eq!(resume["params"]["sandbox"], "workspace-write");
    }

    #[test]
    fn a_plain_turn() {
        let run = replay(
            include_str!("../../fixtures/codex/plain.jsonl"),
            "",
            None,
            |_| None,
        );
        assert_eq!(kinds(&run.events), ["session", "text"]);
        assert!(
            matches!(&run.events[1], AgentEvent::Text(t) if t == "Hello from fake OpenAI (4 input items).")
        );
        assert!(run.finished);
        assert_eq!(run.outcome.status, Status::Completed);
        assert!(run.outcome.ended_by_agent);
        assert_eq!(run.outcome.usage, fake_usage(1));
        assert_eq!(run.outcome.usage_total, Some(fake_usage(1)));
        // turn/start went back once the thread was there; nothing else needed answering.
        assert_eq!(run.replies.len(), 1);
        assert_eq!(run.replies[0]["method"], "turn/start");
    }

    #[test]
    fn a_resumed_turn_counts_only_its_own_tokens() {
        let fixture = include_str!("../../fixtures/codex/resumed.jsonl");
        // With the previous turn's persisted total.
        let run = replay(fixture, "th", Some(&fake_usage(1)), |_| None);
        assert_eq!(run.outcome.usage, fake_usage(1));
        assert_eq!(run.outcome.usage_total, Some(fake_usage(2)));
        // Without it: Codex's own replay of the earlier total is the baseline.
        let run = replay(fixture, "th", None, |_| None);
        assert_eq!(run.outcome.usage, fake_usage(1));
        assert_eq!(kinds(&run.events), ["session", "text"]);
    }

    #[test]
    fn reasoning_is_thinking() {
        let run = replay(
            include_str!("../../fixtures/codex/thinking.jsonl"),
            "",
            None,
            |_| None,
        );
        assert_eq!(kinds(&run.events), ["session", "thinking", "text"]);
        assert_eq!(run.events[1], AgentEvent::Thinking("about it".into()));
    }

    #[test]
    fn a_sandboxed_command_is_a_call_and_its_output() {
        let run = replay(
            include_str!("../../fixtures/codex/shell.jsonl"),
            "",
            None,
            |_| None,
        );
        assert_eq!(
            kinds(&run.events),
            ["session", "tool_call", "tool_result", "text"]
        );
        let AgentEvent::ToolCall { name, input, .. } = &run.events[1] else {
            unreachable!()
        };
        assert_eq!(name, "shell");
        assert!(
            input["command"]
                .as_str()
                .unwrap()
                .contains("echo hi > out.txt")
        );
        assert!(matches!(
            &run.events[2],
            AgentEvent::ToolResult {
                is_error: false,
                ..
            }
        ));
        assert_eq!(run.outcome.usage, fake_usage(2));
    }

    #[test]
    fn an_escalation_approved_is_accepted() {
        let run = replay(
            include_str!("../../fixtures/codex/escalated_approved.jsonl"),
            "",
            None,
            |_| Some(Answer::Approve),
        );
        assert_eq!(
            kinds(&run.events),
            ["session", "tool_call", "permission", "tool_result", "text"]
        );
        let AgentEvent::PermissionRequest {
            tool,
            question,
            session_option,
            ..
        } = &run.events[2]
        else {
            unreachable!()
        };
        assert_eq!(tool, "shell");
        assert!(question.starts_with("fake model wants to run this outside the sandbox\n\n`"));
        assert!(question.contains("echo esc > esc.txt"));
        assert!(session_option);
        let decision = run
            .replies
            .iter()
            .find(|r| r.get("result").is_some())
            .unwrap();
        assert_eq!(
            decision,
            &json!({"id": 0, "result": {"decision": "accept"}})
        );
        assert!(matches!(
            &run.events[3],
            AgentEvent::ToolResult {
                is_error: false,
                ..
            }
        ));
        assert_eq!(run.outcome.status, Status::Completed);
    }

    #[test]
    fn an_escalation_declined_is_an_error_result_and_the_model_is_told() {
        let run = replay(
            include_str!("../../fixtures/codex/escalated_declined.jsonl"),
            "",
            None,
            |_| Some(Answer::Deny("no")),
        );
        assert!(
            run.replies
                .iter()
                .any(|r| r == &json!({"id": 0, "result": {"decision": "decline"}}))
        );
        assert!(run.events.iter().any(|e| matches!(e,
            AgentEvent::ToolResult { is_error: true, output, .. } if output.as_str().unwrap().starts_with("declined"))));
        assert!(run.events.iter().any(|e| matches!(e,
            AgentEvent::Text(t) if t.contains("rejected by user"))));
    }

    #[test]
    fn approve_for_session_and_permissions_answers() {
        let mut d = Codex::default();
        d.on_stdout(
            r#"{"method":"item/fileChange/requestApproval","id":"r1","params":{"itemId":"i1","reason":null}}"#,
        );
        let step = d.on_stdout(
            r#"{"method":"item/commandExecution/requestApproval","id":7,"params":{"command":"ls"}}"#,
        );
        let AgentEvent::PermissionRequest {
            request_id,
            question,
            ..
        } = &step.events[0]
        else {
            unreachable!()
        };
        assert_eq!(question, "Allow this command?\n\n`ls`");
        let yes = [json!({"question": "q", "answer": ["Approve for this session"]})];
        let line: Value =
            serde_json::from_str(&d.answer(request_id, Answer::Answers(&yes))[0]).unwrap();
        assert_eq!(
            line,
            json!({"id": 7, "result": {"decision": "acceptForSession"}})
        );
        let line: Value =
            serde_json::from_str(&d.answer("codex-\"r1\"", Answer::Unanswered("gone"))[0]).unwrap();
        assert_eq!(line, json!({"id": "r1", "result": {"decision": "decline"}}));
        let step = d.on_stdout(
            r#"{"method":"item/permissions/requestApproval","id":8,"params":{"permissions":{"network":{"enabled":true}}}}"#,
        );
        let AgentEvent::PermissionRequest { request_id, .. } = &step.events[0] else {
            unreachable!()
        };
        let line: Value =
            serde_json::from_str(&d.answer(request_id, Answer::ApproveForSession)[0]).unwrap();
        assert_eq!(
            line,
            json!({"id": 8, "result": {"permissions": {"network": {"enabled": true}}, "scope": "session"}})
        );
        d.on_stdout(
            r#"{"method":"item/permissions/requestApproval","id":9,"params":{"permissions":{"network":{"enabled":true}}}}"#,
        );
        let line: Value =
            serde_json::from_str(&d.answer("codex-9", Answer::Deny("no"))[0]).unwrap();
        assert_eq!(
            line,
            json!({"id": 9, "result": {"permissions": {}, "scope": "turn"}})
        );
        assert_eq!(d.answer("codex-9", Answer::Approve), Vec::<String>::new());
    }

    #[test]
    fn user_input_questions_are_answered_by_id() {
        let mut d = Codex::default();
        let step = d.on_stdout(
            r#"{"method":"item/tool/requestUserInput","id":3,"params":{"questions":[{"id":"colour","header":"Colour","question":"Which colour?","options":[{"label":"blue","description":""}]}]}}"#,
        );
        let AgentEvent::Question {
            request_id,
            questions,
        } = &step.events[0]
        else {
            unreachable!()
        };
        assert_eq!(questions[0]["question"], "Which colour?");
        let a = [json!({"question": "Which colour?", "answer": ["blue"]})];
        let line: Value =
            serde_json::from_str(&d.answer(request_id, Answer::Answers(&a))[0]).unwrap();
        assert_eq!(
            line,
            json!({"id": 3, "result": {"answers": {"colour": {"answers": ["blue"]}}}})
        );
    }

    #[test]
    fn every_other_server_request_gets_a_defined_answer() {
        let mut d = Codex::default();
        for (req, want) in [
            (
                r#"{"method":"mcpServer/elicitation/request","id":1,"params":{}}"#,
                json!({"id": 1, "result": {"action": "decline", "content": null}}),
            ),
            (
                r#"{"method":"execCommandApproval","id":2,"params":{}}"#,
                json!({"id": 2, "result": {"decision": "denied"}}),
            ),
            (
                r#"{"method":"account/chatgptAuthTokens/refresh","id":3,"params":{}}"#,
                json!({"id": 3, "error": {"code": -32601,
                    "message": "account/chatgptAuthTokens/refresh is not supported by blobhub-worker"}}),
            ),
        ] {
            let step = d.on_stdout(req);
            assert!(step.events.is_empty());
            let got: Value = serde_json::from_str(&step.replies[0]).unwrap();
            assert_eq!(got, want);
        }
        let step = d.on_stdout(r#"{"method":"item/tool/call","id":4,"params":{}}"#);
        let got: Value = serde_json::from_str(&step.replies[0]).unwrap();
        assert_eq!(got["result"]["success"], false);
    }

    #[test]
    fn a_file_change_is_a_call_and_a_result_naming_its_paths() {
        let run = replay(
            include_str!("../../fixtures/codex/patch.jsonl"),
            "",
            None,
            |_| None,
        );
        assert_eq!(
            kinds(&run.events),
            ["session", "tool_call", "tool_result", "text"]
        );
        let AgentEvent::ToolCall { name, input, .. } = &run.events[1] else {
            unreachable!()
        };
        assert_eq!(name, "apply_patch");
        let command = input["command"].as_str().unwrap();
        assert!(
            command.starts_with("add /") && command.ends_with("/added.txt"),
            "{command}"
        );
        let AgentEvent::ToolResult {
            is_error, output, ..
        } = &run.events[2]
        else {
            unreachable!()
        };
        assert!(!is_error);
        assert!(
            output
                .as_str()
                .unwrap()
                .starts_with("patch completed: add /")
        );
    }

    #[test]
    fn a_completed_turn_that_failed_is_not_a_success() {
        let run = replay(
            include_str!("../../fixtures/codex/fail_500.jsonl"),
            "",
            None,
            |_| None,
        );
        assert!(run.events.iter().any(|e| matches!(e,
            AgentEvent::Status { status, detail } if status == "error" && detail.contains("high demand"))));
        assert!(run.finished);
        assert_eq!(run.outcome.status, Status::TransientError);
        assert!(run.outcome.error.contains("high demand"));
        // Not transient: a bad request.
        let mut d = Codex::default();
        d.on_stdout(r#"{"method":"turn/completed","params":{"turn":{"id":"t","status":"failed","error":{"message":"bad","codexErrorInfo":"badRequest"}}}}"#);
        let o = d.on_exit(Exit::default());
        assert_eq!((o.status, o.error.as_str()), (Status::Failed, "bad"));
    }

    #[test]
    fn an_interrupted_turn() {
        let s = settings();
        let mut d = Codex::default();
        d.launch(&Start {
            resume: "",
            settings: &s,
            usage_total: None,
        });
        d.turn("STALL");
        // Before the turn exists there is nothing to interrupt: the caller terminates.
        assert!(d.interrupt().is_empty());
        let mut d = Codex::default();
        d.launch(&Start {
            resume: "",
            settings: &s,
            usage_total: None,
        });
        d.turn("STALL");
        let mut asked = false;
        for line in include_str!("../../fixtures/codex/interrupted.jsonl").lines() {
            d.on_stdout(line);
            if !asked && line.contains("\"method\":\"turn/started\"") {
                let v: Value = serde_json::from_str(&d.interrupt()[0]).unwrap();
                assert_eq!(v["method"], "turn/interrupt");
                assert!(
                    v["params"]["turnId"]
                        .as_str()
                        .is_some_and(|t| !t.is_empty())
                );
                asked = true;
            }
        }
        assert!(asked);
        assert_eq!(d.on_exit(Exit::default()).status, Status::Interrupted);
    }

    #[test]
    fn startup_failures_and_malformed_lines() {
        let mut d = Codex::default();
        assert_eq!(d.on_stdout("WARNING: x").log.as_deref(), Some("WARNING: x"));
        assert_eq!(d.on_stdout("[1]"), Step::default());
        let step = d.on_stdout(r#"{"id":2,"error":{"code":-32600,"message":"no rollout found"}}"#);
        assert!(step.finished);
        let o = d.on_exit(Exit::default());
        assert_eq!(o.status, Status::Failed);
        assert!(!o.ended_by_agent);
        assert!(o.error.contains("no rollout found"), "{}", o.error);
        let o = Codex::default().on_exit(Exit {
            code: Some(1),
            signal: None,
        });
        assert_eq!(o.status, Status::Failed);
    }
}
