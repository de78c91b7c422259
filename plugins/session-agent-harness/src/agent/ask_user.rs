//! The `ask_user` tool: a tiny MCP server the harness answers in-process, so a model can put
//! questions to the person on the thread.
//!
//! Claude Code talks to an `sdk`-type MCP server through its control protocol: every JSON-RPC
//! message for the server arrives as an `mcp_message` control request, and the reply goes back in
//! the control response. This module is the server's side of that JSON-RPC exchange; it knows
//! nothing of the control protocol around it.

use serde_json::{Value, json};

/// The server's name in `--mcp-config`; the model sees the tool as `mcp__blobhub__ask_user`.
pub const SERVER: &str = "blobhub";
pub const TOOL: &str = "ask_user";
/// The tool's full name, as `--allowedTools` and the model spell it.
pub const QUALIFIED_TOOL: &str = "mcp__blobhub__ask_user";
/// The MCP protocol version the server speaks when the client does not ask for one.
const PROTOCOL_VERSION: &str = "2025-06-18";

/// What the server does with one JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Answer at once with this JSON-RPC message.
    Reply(Value),
    /// A `tools/call` of `ask_user` with valid questions: answer once the person has.
    Ask {
        rpc_id: Value,
        questions: Vec<Value>,
    },
}

/// Handle one JSON-RPC message from the client.
pub fn handle(message: &Value) -> Handled {
    let id = message.get("id").cloned();
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    let Some(id) = id else {
        // A notification (or a stray response): nothing to answer, but the control request that
        // carried it still expects an acknowledgement.
        return Handled::Reply(json!({"jsonrpc": "2.0", "result": {}}));
    };
    let result = match method {
        "initialize" => {
            let version = message
                .pointer("/params/protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or(PROTOCOL_VERSION);
            json!({
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": SERVER, "version": env!("CARGO_PKG_VERSION")},
            })
        }
        "ping" => json!({}),
        "tools/list" => json!({"tools": [tool_definition()]}),
        "tools/call" => {
            let name = message
                .pointer("/params/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name != TOOL {
                return Handled::Reply(error(id, -32602, &format!("unknown tool {name:?}")));
            }
            let args = message
                .pointer("/params/arguments")
                .cloned()
                .unwrap_or(Value::Null);
            match questions(&args) {
                Ok(questions) => {
                    return Handled::Ask {
                        rpc_id: id,
                        questions,
                    };
                }
                Err(why) => tool_result(&why, true),
            }
        }
        other => return Handled::Reply(error(id, -32601, &format!("method {other:?} not found"))),
    };
    Handled::Reply(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// The reply to a pending `tools/call` once the person answered: the answer set as JSON text.
pub fn answered(rpc_id: &Value, answers: &[Value]) -> Value {
    let text = serde_json::to_string(answers).unwrap_or_default();
    json!({"jsonrpc": "2.0", "id": rpc_id, "result": tool_result(&text, false)})
}

/// The reply to a pending `tools/call` nobody answered.
pub fn unanswered(rpc_id: &Value, why: &str) -> Value {
    let text = format!("The person did not answer: {why}");
    json!({"jsonrpc": "2.0", "id": rpc_id, "result": tool_result(&text, true)})
}

fn tool_result(text: &str, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// The questions of a call: `questions` (1 to 4 AskUserQuestion-shaped objects), or a single
/// `question` string with optional `options` (a list of labels or `{label, description}`), which
/// models reach for when they ignore the schema.
fn questions(args: &Value) -> Result<Vec<Value>, String> {
    if let Some(list) = args.get("questions") {
        let Some(list) = list.as_array().filter(|l| !l.is_empty() && l.len() <= 4) else {
            return Err("questions must be a list of 1 to 4 questions".into());
        };
        return list.iter().map(question).collect();
    }
    if args.get("question").is_some() {
        return Ok(vec![question(args)?]);
    }
    Err("ask_user needs `questions` (or a single `question`)".into())
}

fn question(q: &Value) -> Result<Value, String> {
    let text = q
        .get("question")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("every question needs a non-empty `question` string")?;
    let options: Vec<Value> = q
        .get("options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| match o {
            Value::String(label) => Some(json!({"label": label, "description": ""})),
            Value::Object(_) => {
                let label = o.get("label").and_then(Value::as_str)?;
                let description = o.get("description").and_then(Value::as_str).unwrap_or("");
                Some(json!({"label": label, "description": description}))
            }
            _ => None,
        })
        .collect();
    Ok(json!({
        "question": text,
        "header": q.get("header").and_then(Value::as_str).unwrap_or("question"),
        "options": options,
        "multiSelect": q.get("multiSelect").and_then(Value::as_bool).unwrap_or(false),
    }))
}

fn tool_definition() -> Value {
    json!({
        "name": TOOL,
        "description": "Ask the person who handed you this task one or more questions and wait \
            for their answer. Use it whenever you need a decision or information only they have. \
            The answer comes back as JSON: one {question, answer: [labels or free text]} per \
            question.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "questions": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 4,
                    "items": {
                        "type": "object",
                        "properties": {
                            "question": {"type": "string", "description": "The question, ending with a question mark."},
                            "header": {"type": "string", "description": "A short label (a word or two)."},
                            "options": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "label": {"type": "string"},
                                        "description": {"type": "string"}
                                    },
                                    "required": ["label"]
                                }
                            },
                            "multiSelect": {"type": "boolean"}
                        },
                        "required": ["question"]
                    }
                }
            },
            "required": ["questions"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_and_listing() {
        let init = handle(
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}),
        );
        let Handled::Reply(r) = init else {
            panic!("initialize is answered at once")
        };
        assert_eq!(r["result"]["protocolVersion"], "2025-03-26");
        assert_eq!(r["id"], 0);
        assert_eq!(
            handle(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Handled::Reply(json!({"jsonrpc": "2.0", "result": {}}))
        );
        let Handled::Reply(list) = handle(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        else {
            panic!()
        };
        assert_eq!(list["result"]["tools"][0]["name"], TOOL);
        let Handled::Reply(unknown) =
            handle(&json!({"jsonrpc":"2.0","id":2,"method":"resources/list"}))
        else {
            panic!()
        };
        assert_eq!(unknown["error"]["code"], -32601);
    }

    #[test]
    fn a_call_becomes_questions() {
        let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"ask_user",
            "arguments":{"questions":[{"question":"Which?","options":[{"label":"A"},"B"]}]}}});
        let Handled::Ask { rpc_id, questions } = handle(&call) else {
            panic!("asks")
        };
        assert_eq!(rpc_id, 7);
        assert_eq!(questions[0]["options"][1]["label"], "B");
        assert_eq!(questions[0]["multiSelect"], false);
        let single = json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"ask_user",
            "arguments":{"question":"Go on?"}}});
        assert!(
            matches!(handle(&single), Handled::Ask { questions, .. } if questions[0]["question"] == "Go on?")
        );
        let reply = answered(&json!(7), &[json!({"question":"Which?","answer":["A"]})]);
        assert_eq!(reply["result"]["isError"], false);
        assert!(
            reply["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("\"A\"")
        );
    }

    #[test]
    fn bad_calls_are_tool_errors_not_questions() {
        for args in [
            json!({}),
            json!({"questions": []}),
            json!({"questions": [{"header": "x"}]}),
            json!({"questions": "Which?"}),
        ] {
            let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ask_user","arguments":args}});
            let Handled::Reply(r) = handle(&call) else {
                panic!("{args} must not reach a person")
            };
            assert_eq!(r["result"]["isError"], true, "{args}");
        }
        let other = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}});
        let Handled::Reply(r) = handle(&other) else {
            panic!()
        };
        assert_eq!(r["error"]["code"], -32602);
    }
}
