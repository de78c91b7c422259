//! The Responses API's server-sent-event stream for a reply.
//!
//! The sequence is the real API's: `response.created`, `response.in_progress`, then per output
//! item `response.output_item.added`, its deltas and `response.output_item.done` (carrying the
//! **whole** item: the Codex CLI builds its items from that event), and `response.completed`
//! with `usage` (the CLI requires it). Text is split over two deltas.

use serde_json::{Value, json};

use crate::script::{self, Reply};

/// Token counts every response reports (the fake does not count).
pub const INPUT_TOKENS: u64 = 10;
pub const CACHED_TOKENS: u64 = 4;
pub const OUTPUT_TOKENS: u64 = 5;

/// The identifiers one response carries, chosen by the server.
#[derive(Debug, Clone)]
pub struct Ids {
    /// `resp_fake_000001`; items and calls derive theirs from its number.
    pub n: u64,
    pub model: String,
}

impl Ids {
    fn response(&self) -> String {
        format!("resp_fake_{:06}", self.n)
    }
    fn item(&self, i: usize) -> String {
        format!("item_fake_{:06}_{i}", self.n)
    }
    fn call(&self) -> String {
        format!("call_fake_{:06}", self.n)
    }
}

/// One server-sent event; its `event:` name is the data's `type`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub data: Value,
}

impl Event {
    /// The event as it goes on the wire, blank line included.
    pub fn to_sse(&self) -> String {
        let name = self.data["type"].as_str().unwrap_or("message");
        format!("event: {name}\ndata: {}\n\n", self.data)
    }
}

/// The output items of a reply, complete.
pub fn items(reply: &Reply, ids: &Ids) -> Vec<Value> {
    let message = |i: usize, text: &str| {
        json!({"type": "message", "id": ids.item(i), "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": text, "annotations": []}]})
    };
    match reply {
        Reply::Text(t) => vec![message(0, t)],
        Reply::Think { summary, text } => vec![
            json!({"type": "reasoning", "id": ids.item(0),
                   "summary": [{"type": "summary_text", "text": summary}]}),
            message(1, text),
        ],
        Reply::Shell { command, escalated } => vec![json!({
            "type": "function_call", "id": ids.item(0), "call_id": ids.call(),
            "name": "exec_command", "status": "completed",
            "arguments": script::shell_arguments(command, *escalated).to_string()})],
        Reply::Patch { path } => vec![json!({
            "type": "custom_tool_call", "id": ids.item(0), "call_id": ids.call(),
            "name": "apply_patch", "status": "completed", "input": script::patch_input(path)})],
        Reply::Fail(_) | Reply::Stall => vec![],
    }
}

fn response(ids: &Ids, status: &str, output: Vec<Value>, usage: Option<Value>) -> Value {
    json!({"id": ids.response(), "object": "response", "status": status, "model": ids.model,
           "output": output, "usage": usage})
}

pub fn usage() -> Value {
    json!({"input_tokens": INPUT_TOKENS,
           "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
           "output_tokens": OUTPUT_TOKENS,
           "output_tokens_details": {"reasoning_tokens": 0},
           "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS})
}

/// Every event of the stream for `reply`. A stall stops after `response.created`.
pub fn events(reply: &Reply, ids: &Ids) -> Vec<Event> {
    let mut out = vec![json!({"type": "response.created",
        "response": response(ids, "in_progress", vec![], None)})];
    if *reply == Reply::Stall {
        return out.into_iter().map(|data| Event { data }).collect();
    }
    out.push(json!({"type": "response.in_progress",
        "response": response(ids, "in_progress", vec![], None)}));
    let items = items(reply, ids);
    for (index, item) in items.iter().enumerate() {
        let mut added = item.clone();
        added["status"] = json!("in_progress");
        match script_kind(item) {
            "message" => {
                added["content"] = json!([]);
                out.push(json!({"type": "response.output_item.added", "output_index": index, "item": added}));
                let text = item["content"][0]["text"].as_str().unwrap_or("");
                let part = json!({"type": "output_text", "text": "", "annotations": []});
                out.push(
                    json!({"type": "response.content_part.added", "item_id": item["id"],
                    "output_index": index, "content_index": 0, "part": part}),
                );
                let cut = text
                    .char_indices()
                    .nth(text.chars().count() / 2)
                    .map_or(0, |(i, _)| i);
                for delta in [&text[..cut], &text[cut..]] {
                    out.push(
                        json!({"type": "response.output_text.delta", "item_id": item["id"],
                        "output_index": index, "content_index": 0, "delta": delta}),
                    );
                }
                out.push(
                    json!({"type": "response.output_text.done", "item_id": item["id"],
                    "output_index": index, "content_index": 0, "text": text}),
                );
                out.push(
                    json!({"type": "response.content_part.done", "item_id": item["id"],
                    "output_index": index, "content_index": 0, "part": item["content"][0]}),
                );
            }
            "function_call" => {
                added["arguments"] = json!("");
                out.push(json!({"type": "response.output_item.added", "output_index": index, "item": added}));
                let args = item["arguments"].as_str().unwrap_or("");
                out.push(json!({"type": "response.function_call_arguments.delta",
                    "item_id": item["id"], "output_index": index, "delta": args}));
                out.push(json!({"type": "response.function_call_arguments.done",
                    "item_id": item["id"], "output_index": index, "arguments": args}));
            }
            _ => {
                out.push(json!({"type": "response.output_item.added", "output_index": index, "item": added}));
            }
        }
        out.push(json!({"type": "response.output_item.done", "output_index": index, "item": item}));
    }
    out.push(json!({"type": "response.completed",
        "response": response(ids, "completed", items, Some(usage()))}));
    out.into_iter().map(|data| Event { data }).collect()
}

fn script_kind(item: &Value) -> &str {
    item["type"].as_str().unwrap_or("")
}

/// The JSON error body of a failed request, with the error type that goes with the status.
pub fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("invalid_request_error", "invalid_api_key"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "error"),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids {
        Ids {
            n: 7,
            model: "gpt-5.5".into(),
        }
    }

    fn types(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e.data["type"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_text_reply_streams_its_deltas_and_completes_with_usage() {
        let ev = events(&Reply::Text("hello there".into()), &ids());
        assert_eq!(
            types(&ev),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let deltas: String = ev
            .iter()
            .filter(|e| e.data["type"] == "response.output_text.delta")
            .map(|e| e.data["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, "hello there");
        let done = &ev[8].data["item"];
        assert_eq!(done["content"][0]["text"], "hello there");
        assert_eq!(
            ev[9].data["response"]["usage"]["input_tokens"],
            INPUT_TOKENS
        );
        assert!(
            ev[0]
                .to_sse()
                .starts_with("event: response.created\ndata: {")
        );
    }

    #[test]
    fn tool_calls_carry_their_whole_item_when_done() {
        let ev = events(
            &Reply::Shell {
                command: "ls".into(),
                escalated: true,
            },
            &ids(),
        );
        let done = ev
            .iter()
            .find(|e| e.data["type"] == "response.output_item.done")
            .unwrap();
        assert_eq!(done.data["item"]["name"], "exec_command");
        assert_eq!(done.data["item"]["call_id"], "call_fake_000007");
        let args: Value =
            serde_json::from_str(done.data["item"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args["sandbox_permissions"], "require_escalated");
        let ev = events(
            &Reply::Patch {
                path: "a.txt".into(),
            },
            &ids(),
        );
        assert!(ev.iter().any(|e| {
            e.data["item"]["type"] == "custom_tool_call"
                && e.data["item"]["input"]
                    .as_str()
                    .unwrap()
                    .contains("*** Add File: a.txt")
        }));
    }

    #[test]
    fn a_stall_only_creates_the_response() {
        assert_eq!(types(&events(&Reply::Stall, &ids())), ["response.created"]);
    }
}
