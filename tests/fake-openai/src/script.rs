//! What the fake answers: the prompt of a Responses request (its last input item) and the reply
//! the script grammar gives it. Pure functions, so the grammar is tested without a server.

use serde_json::{Value, json};

/// The last input item of a request, as the script sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// The last text part, trimmed, of the last `user` message (empty when there is none).
    Text(String),
    /// The input ends with a tool's output: the CLI answering the previous tool call.
    ToolOutput(String),
}

/// What to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Text(String),
    /// A reasoning item (its summary), then a message.
    Think {
        summary: String,
        text: String,
    },
    /// An `exec_command` function call; `escalated` asks to run outside the sandbox, so an
    /// `on-request` approval policy makes the CLI ask for approval.
    Shell {
        command: String,
        escalated: bool,
    },
    /// An `apply_patch` custom tool call adding `path` (one line of content).
    Patch {
        path: String,
    },
    /// An HTTP error status with an OpenAI error body.
    Fail(u16),
    /// `response.created`, then the stream stays open.
    Stall,
}

/// The justification an escalated shell call gives (the CLI shows it as the approval's reason).
pub const ESCALATION_REASON: &str = "fake model wants to run this outside the sandbox";

/// The request's `input` items, or none.
pub fn input(body: &Value) -> &[Value] {
    body.get("input")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn kind(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The prompt of a Responses request body. The CLI sends developer messages and an
/// environment-context user message before the person's, so only the last item counts.
pub fn prompt_of(body: &Value) -> Prompt {
    let items = input(body);
    if let Some(last) = items.last()
        && matches!(
            kind(last),
            "function_call_output" | "custom_tool_call_output"
        )
    {
        return Prompt::ToolOutput(output_text(last.get("output").unwrap_or(&Value::Null)));
    }
    let last_user = items
        .iter()
        .rev()
        .find(|i| kind(i) == "message" && i.get("role").and_then(Value::as_str) == Some("user"));
    let text = last_user
        .and_then(|m| m.get("content"))
        .and_then(|c| match c {
            Value::String(s) => Some(s.clone()),
            Value::Array(parts) => parts
                .iter()
                .rev()
                .filter(|p| kind(p) == "input_text")
                .find_map(|p| p.get("text").and_then(Value::as_str).map(str::to_owned)),
            _ => None,
        })
        .unwrap_or_default();
    Prompt::Text(text.trim().to_owned())
}

/// A tool output as text: a string as is, content parts' texts joined.
fn output_text(output: &Value) -> String {
    match output {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Object(o) => o
            .get("content")
            .map(output_text)
            .unwrap_or_else(|| output.to_string()),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The reply to `prompt`. `input_count` is the request's input item count; `seen_before` is
/// whether this exact prompt was answered already (only `FAIL_ONCE` cares).
pub fn reply(prompt: &Prompt, input_count: usize, seen_before: bool) -> Reply {
    match prompt {
        Prompt::ToolOutput(content) => Reply::Text(format!(
            "Tool output seen: {}",
            content.chars().take(200).collect::<String>()
        )),
        Prompt::Text(text) => script(text, input_count, seen_before),
    }
}

fn script(text: &str, input_count: usize, seen_before: bool) -> Reply {
    if let Some(rest) = text.strip_prefix("FAIL_ONCE:") {
        let (status, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if let Ok(status) = status.parse::<u16>()
            && !seen_before
        {
            return Reply::Fail(status);
        }
        return script(rest.trim(), input_count, seen_before);
    }
    if let Some(status) = text.strip_prefix("FAIL:")
        && let Ok(status) = status.trim().parse::<u16>()
    {
        return Reply::Fail(status);
    }
    if text == "STALL" {
        return Reply::Stall;
    }
    if let Some(t) = keyword(text, "THINK") {
        return Reply::Think {
            summary: t.to_owned(),
            text: format!("Thought about: {t}"),
        };
    }
    if let Some(c) = keyword(text, "TOOL:shell!") {
        return Reply::Shell {
            command: c.to_owned(),
            escalated: true,
        };
    }
    if let Some(c) = keyword(text, "TOOL:shell") {
        return Reply::Shell {
            command: c.to_owned(),
            escalated: false,
        };
    }
    if let Some(p) = keyword(text, "TOOL:patch") {
        return Reply::Patch { path: p.to_owned() };
    }
    Reply::Text(format!(
        "Hello from fake OpenAI ({input_count} input items)."
    ))
}

/// The rest of `text` after `word` and a space (a keyword needs its separator).
fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(word)?;
    let rest = rest.strip_prefix(' ')?;
    Some(rest.trim())
}

/// The arguments of an `exec_command` call.
pub fn shell_arguments(command: &str, escalated: bool) -> Value {
    if escalated {
        json!({"cmd": command, "sandbox_permissions": "require_escalated",
               "justification": ESCALATION_REASON})
    } else {
        json!({"cmd": command})
    }
}

/// The `apply_patch` input that adds `path` with one line.
pub fn patch_input(path: &str) -> String {
    format!("*** Begin Patch\n*** Add File: {path}\n+added by the fake\n*** End Patch\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Value {
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    }

    fn text(t: &str) -> Reply {
        reply(&Prompt::Text(t.into()), 3, false)
    }

    #[test]
    fn the_prompt_is_the_last_user_text() {
        let body = json!({"input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
            user("<environment_context>x</environment_context>"),
            user("  hello "),
        ]});
        assert_eq!(prompt_of(&body), Prompt::Text("hello".into()));
        assert_eq!(prompt_of(&json!({})), Prompt::Text(String::new()));
    }

    #[test]
    fn a_trailing_tool_output_is_the_prompt() {
        let body = json!({"input": [user("TOOL:shell ls"),
            {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"}]});
        assert_eq!(prompt_of(&body), Prompt::ToolOutput("done".into()));
        let body = json!({"input": [{"type": "custom_tool_call_output", "call_id": "c2",
            "output": [{"type": "input_text", "text": "Success"}]}]});
        assert_eq!(prompt_of(&body), Prompt::ToolOutput("Success".into()));
        assert_eq!(
            reply(&prompt_of(&body), 1, false),
            Reply::Text("Tool output seen: Success".into())
        );
    }

    #[test]
    fn keywords() {
        assert_eq!(
            text("hi"),
            Reply::Text("Hello from fake OpenAI (3 input items).".into())
        );
        assert_eq!(
            text("THINK deep"),
            Reply::Think {
                summary: "deep".into(),
                text: "Thought about: deep".into()
            }
        );
        assert_eq!(
            text("TOOL:shell echo hi > a"),
            Reply::Shell {
                command: "echo hi > a".into(),
                escalated: false
            }
        );
        assert_eq!(
            text("TOOL:shell! touch b"),
            Reply::Shell {
                command: "touch b".into(),
                escalated: true
            }
        );
        assert_eq!(
            text("TOOL:patch added.txt"),
            Reply::Patch {
                path: "added.txt".into()
            }
        );
        assert_eq!(text("FAIL:500"), Reply::Fail(500));
        assert_eq!(text("STALL"), Reply::Stall);
        assert!(matches!(text("THINKING"), Reply::Text(_)));
        assert!(matches!(text("FAIL:x"), Reply::Text(_)));
    }

    #[test]
    fn fail_once_fails_the_first_time_then_runs_the_rest() {
        assert_eq!(text("FAIL_ONCE:503 THINK x"), Reply::Fail(503));
        assert!(matches!(
            reply(&Prompt::Text("FAIL_ONCE:503 THINK x".into()), 3, true),
            Reply::Think { .. }
        ));
    }

    #[test]
    fn escalated_arguments_ask_for_escalation() {
        let a = shell_arguments("ls", true);
        assert_eq!(a["sandbox_permissions"], "require_escalated");
        assert_eq!(shell_arguments("ls", false), json!({"cmd": "ls"}));
    }
}
