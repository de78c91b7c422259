//! What the fake answers: the prompt of a request (the last `user` message) and the reply the
//! script grammar gives it. Pure functions, so the grammar is tested without a server.

use serde_json::{Value, json};

/// The last `user` message of a request, as the script sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// The message's last text block, trimmed (empty when there is none).
    Text(String),
    /// The message holds tool results only: the CLI answering the previous tool call.
    ToolResult { is_error: bool, content: String },
}

/// What to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Text(String),
    /// A thinking block, then a text block.
    Think {
        thinking: String,
        text: String,
    },
    /// One tool call.
    Tool {
        name: String,
        input: Value,
    },
    /// An HTTP error status with an Anthropic error body.
    Fail(u16),
    /// Start the stream and never finish it.
    Stall,
}

/// The prompt of a Messages request body.
///
/// Claude Code also sends `role: "system"` messages and puts `<system-reminder>` text blocks before
/// the prompt, so the prompt is the last text block of the last `user` message, not the last
/// message's first block.
pub fn prompt_of(body: &Value) -> Prompt {
    let last_user = messages(body)
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    let Some(message) = last_user else {
        return Prompt::Text(String::new());
    };
    let blocks = match message.get("content") {
        Some(Value::String(s)) => return Prompt::Text(s.trim().to_owned()),
        Some(Value::Array(blocks)) => blocks,
        _ => return Prompt::Text(String::new()),
    };
    let last_result = blocks.iter().rev().find(|b| kind(b) == Some("tool_result"));
    let mut texts = blocks
        .iter()
        .rev()
        .filter(|b| kind(b) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str));
    // A reminder the CLI adds beside tool results is not a prompt; a reminder alone still is.
    let last_text = texts
        .clone()
        .find(|t| !t.trim_start().starts_with("<system-reminder>"))
        .or_else(|| last_result.is_none().then(|| texts.next()).flatten());
    match (last_text, last_result) {
        (None, Some(result)) => Prompt::ToolResult {
            is_error: result
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            content: flatten(result.get("content").unwrap_or(&Value::Null)),
        },
        (Some(text), _) => Prompt::Text(text.trim().to_owned()),
        (None, None) => Prompt::Text(String::new()),
    }
}

/// The request's `messages`, or none.
pub fn messages(body: &Value) -> &[Value] {
    body.get("messages")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn kind(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

/// A tool result's content is a string or a list of blocks; the text blocks, joined.
fn flatten(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The reply to `prompt` in a request of `message_count` messages. `seen_before` says whether
/// this exact prompt was answered already (only `FAIL_ONCE` cares).
pub fn reply(prompt: &Prompt, message_count: usize, seen_before: bool) -> Reply {
    match prompt {
        Prompt::ToolResult { is_error, content } => {
            let head: String = content.chars().take(200).collect();
            let seen = if *is_error {
                "Tool error seen"
            } else {
                "Tool result seen"
            };
            Reply::Text(format!("{seen}: {head}"))
        }
        Prompt::Text(text) => script(text, message_count, seen_before),
    }
}

fn script(text: &str, message_count: usize, seen_before: bool) -> Reply {
    if let Some(rest) = text.strip_prefix("FAIL_ONCE:") {
        let (status, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if let Ok(status) = status.parse() {
            if !seen_before {
                return Reply::Fail(status);
            }
            return script(rest.trim(), message_count, seen_before);
        }
    }
    if let Some(status) = text.strip_prefix("FAIL:")
        && let Ok(status) = status.trim().parse()
    {
        return Reply::Fail(status);
    }
    if text == "STALL" {
        return Reply::Stall;
    }
    if let Some(thinking) = keyword(text, "THINK") {
        return Reply::Think {
            thinking: thinking.to_owned(),
            text: format!("Thought about: {thinking}"),
        };
    }
    if let Some(command) = keyword(text, "TOOL:Bash") {
        return Reply::Tool {
            name: "Bash".into(),
            input: json!({"command": command, "description": "Run a command for the fake model"}),
        };
    }
    if let Some(rest) = keyword(text, "TOOL:Write") {
        let (path, content) = rest.split_once(' ').unwrap_or((rest, ""));
        return Reply::Tool {
            name: "Write".into(),
            input: json!({"file_path": path, "content": content}),
        };
    }
    if let Some(question) = keyword(text, "ASK") {
        return Reply::Tool {
            name: ASK_USER_TOOL.into(),
            input: json!({"question": question}),
        };
    }
    Reply::Text(format!("Hello from fake Anthropic ({message_count} msgs)."))
}

/// The tool `ASK` calls: the worker's in-process MCP server `blobhub`, tool `ask_user`.
pub const ASK_USER_TOOL: &str = "mcp__blobhub__ask_user";

/// The argument after `word` and a space (or a newline), when `text` starts with it.
fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(word)?;
    let mut chars = rest.chars();
    chars
        .next()
        .filter(|c| c.is_whitespace())
        .map(|_| chars.as_str().trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Reply {
        reply(&Prompt::Text(t.into()), 3, false)
    }

    #[test]
    fn the_prompt_is_the_last_text_block_of_the_last_user_message() {
        let body = json!({"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nctx\n</system-reminder>"},
                {"type": "text", "text": "  THINK hard  \n"}]},
            {"role": "system", "content": "the environment"},
        ]});
        assert_eq!(prompt_of(&body), Prompt::Text("THINK hard".into()));
    }

    #[test]
    fn a_plain_string_content_is_the_prompt() {
        let body = json!({"messages": [{"role": "user", "content": " hi "}]});
        assert_eq!(prompt_of(&body), Prompt::Text("hi".into()));
    }

    #[test]
    fn a_user_message_of_tool_results_only_is_a_tool_result() {
        let body = json!({"messages": [
            {"role": "user", "content": "TOOL:Bash false"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": true,
                "content": [{"type": "text", "text": "exit 1"}, {"type": "text", "text": "boom"}]}]},
            {"role": "system", "content": "env"},
        ]});
        assert_eq!(
            prompt_of(&body),
            Prompt::ToolResult {
                is_error: true,
                content: "exit 1\nboom".into()
            }
        );
    }

    #[test]
    fn a_reminder_beside_tool_results_is_not_a_prompt() {
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": "ok"},
            {"type": "text", "text": "<system-reminder>\nnote\n</system-reminder>"}]}]});
        assert_eq!(
            prompt_of(&body),
            Prompt::ToolResult {
                is_error: false,
                content: "ok".into()
            }
        );
    }

    #[test]
    fn no_user_message_is_an_empty_prompt() {
        assert_eq!(prompt_of(&json!({})), Prompt::Text(String::new()));
        assert_eq!(
            text(""),
            Reply::Text("Hello from fake Anthropic (3 msgs).".into())
        );
    }

    #[test]
    fn plain_text_gets_the_greeting_with_the_message_count() {
        assert_eq!(
            reply(&Prompt::Text("hello".into()), 2, false),
            Reply::Text("Hello from fake Anthropic (2 msgs).".into())
        );
    }

    #[test]
    fn keywords() {
        assert_eq!(
            text("THINK why not"),
            Reply::Think {
                thinking: "why not".into(),
                text: "Thought about: why not".into()
            }
        );
        assert_eq!(
            text("TOOL:Bash echo hi > out.txt"),
            Reply::Tool {
                name: "Bash".into(),
                input: json!({"command": "echo hi > out.txt", "description": "Run a command for the fake model"})
            }
        );
        assert_eq!(
            text("TOOL:Write /w/a.txt hello there"),
            Reply::Tool {
                name: "Write".into(),
                input: json!({"file_path": "/w/a.txt", "content": "hello there"})
            }
        );
        assert_eq!(
            text("ASK Which colour?"),
            Reply::Tool {
                name: "mcp__blobhub__ask_user".into(),
                input: json!({"question": "Which colour?"})
            }
        );
        assert_eq!(text("STALL"), Reply::Stall);
        assert_eq!(text("FAIL:529"), Reply::Fail(529));
    }

    #[test]
    fn a_keyword_needs_its_separator() {
        let greeting = Reply::Text("Hello from fake Anthropic (3 msgs).".into());
        assert_eq!(text("THINKING about it"), greeting);
        assert_eq!(text("ASKED"), greeting);
        assert_eq!(text("FAIL:soon"), greeting);
        assert_eq!(text("STALL now"), greeting);
    }

    #[test]
    fn fail_once_fails_the_first_time_then_runs_the_rest() {
        assert_eq!(text("FAIL_ONCE:529 THINK x"), Reply::Fail(529));
        assert_eq!(
            reply(&Prompt::Text("FAIL_ONCE:529 TOOL:Bash ls".into()), 3, true),
            Reply::Tool {
                name: "Bash".into(),
                input: json!({"command": "ls", "description": "Run a command for the fake model"})
            }
        );
        assert_eq!(
            reply(&Prompt::Text("FAIL_ONCE:500".into()), 3, true),
            Reply::Text("Hello from fake Anthropic (3 msgs).".into())
        );
    }

    #[test]
    fn tool_results_are_echoed_cut_to_200_characters() {
        let long = "é".repeat(300);
        let Reply::Text(t) = reply(
            &Prompt::ToolResult {
                is_error: false,
                content: long,
            },
            5,
            false,
        ) else {
            panic!("a tool result gets text")
        };
        assert_eq!(t, format!("Tool result seen: {}", "é".repeat(200)));
        assert_eq!(
            reply(
                &Prompt::ToolResult {
                    is_error: true,
                    content: "denied".into()
                },
                5,
                false
            ),
            Reply::Text("Tool error seen: denied".into())
        );
    }
}
