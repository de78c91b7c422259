//! The Messages API's answer to a reply, in its two wire forms: the server-sent-event stream
//! (`"stream": true`, what Claude Code always asks for) and the single JSON message.
//!
//! The event sequence is the real API's: `message_start`, then per content block
//! `content_block_start`, one or more deltas and `content_block_stop`, then `message_delta`
//! (stop reason and output usage) and `message_stop`. Text and arguments are split over several
//! deltas so a client that only handles the first delta of a block is caught.

use serde_json::{Value, json};

use crate::script::Reply;

/// The identifiers one response carries, chosen by the server.
#[derive(Debug, Clone)]
pub struct Ids {
    pub message: String,
    pub tool_use: String,
    pub model: String,
}

/// One server-sent event: its `event:` name and its `data:` JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub data: Value,
}

impl Event {
    fn new(data: Value) -> Event {
        let name = match data["type"].as_str() {
            Some("message_start") => "message_start",
            Some("content_block_start") => "content_block_start",
            Some("content_block_delta") => "content_block_delta",
            Some("content_block_stop") => "content_block_stop",
            Some("message_delta") => "message_delta",
            Some("message_stop") => "message_stop",
            _ => "ping",
        };
        Event { name, data }
    }

    /// The event as it goes on the wire, blank line included.
    pub fn to_sse(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.name, self.data)
    }
}

/// A content block of a reply, before it is cut into deltas.
enum Block<'a> {
    Thinking(&'a str),
    Text(&'a str),
    ToolUse { name: &'a str, input: &'a Value },
}

fn blocks(reply: &Reply) -> Vec<Block<'_>> {
    match reply {
        Reply::Text(text) => vec![Block::Text(text)],
        Reply::Think { thinking, text } => vec![Block::Thinking(thinking), Block::Text(text)],
        Reply::Tool { name, input } => vec![Block::ToolUse { name, input }],
        Reply::Fail(_) | Reply::Stall => vec![],
    }
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply {
        Reply::Tool { .. } => "tool_use",
        _ => "end_turn",
    }
}

/// The signature the fake puts on its thinking blocks; the CLI sends it back unchanged.
const SIGNATURE: &str = "ZmFrZS1zaWduYXR1cmU=";

fn usage(output_tokens: usize) -> Value {
    json!({
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    })
}

fn output_tokens(reply: &Reply) -> usize {
    blocks(reply)
        .iter()
        .map(|b| match b {
            Block::Thinking(t) | Block::Text(t) => t.split_whitespace().count().max(1),
            Block::ToolUse { input, .. } => input.to_string().len() / 4 + 1,
        })
        .sum()
}

/// The `message_start` event: the message with no content yet.
pub fn message_start(ids: &Ids) -> Event {
    Event::new(json!({
        "type": "message_start",
        "message": {
            "id": ids.message,
            "type": "message",
            "role": "assistant",
            "model": ids.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage(1),
        },
    }))
}

/// Every event of a streamed reply, `message_start` to `message_stop`. A `Stall` or `Fail` reply
/// has no stream; for them this is `message_start` alone.
pub fn events(reply: &Reply, ids: &Ids) -> Vec<Event> {
    let mut events = vec![message_start(ids)];
    if matches!(reply, Reply::Fail(_) | Reply::Stall) {
        return events;
    }
    for (index, block) in blocks(reply).iter().enumerate() {
        let (start, deltas) = match block {
            Block::Thinking(thinking) => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                pieces(thinking)
                    .map(|p| json!({"type": "thinking_delta", "thinking": p}))
                    .chain([json!({"type": "signature_delta", "signature": SIGNATURE})])
                    .collect::<Vec<_>>(),
            ),
            Block::Text(text) => (
                json!({"type": "text", "text": ""}),
                pieces(text)
                    .map(|p| json!({"type": "text_delta", "text": p}))
                    .collect(),
            ),
            Block::ToolUse { name, input } => (
                json!({"type": "tool_use", "id": ids.tool_use, "name": name, "input": {}}),
                pieces(&input.to_string())
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect(),
            ),
        };
        events.push(Event::new(json!({
            "type": "content_block_start", "index": index, "content_block": start,
        })));
        for delta in deltas {
            events.push(Event::new(json!({
                "type": "content_block_delta", "index": index, "delta": delta,
            })));
        }
        events.push(Event::new(
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(Event::new(json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(reply), "stop_sequence": null},
        "usage": {"output_tokens": output_tokens(reply)},
    })));
    events.push(Event::new(json!({"type": "message_stop"})));
    events
}

/// The whole reply as one message, for a request without `"stream": true`.
pub fn message(reply: &Reply, ids: &Ids) -> Value {
    let content: Vec<Value> = blocks(reply)
        .iter()
        .map(|b| match b {
            Block::Thinking(t) => {
                json!({"type": "thinking", "thinking": t, "signature": SIGNATURE})
            }
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse { name, input } => {
                json!({"type": "tool_use", "id": ids.tool_use, "name": name, "input": input})
            }
        })
        .collect();
    json!({
        "id": ids.message,
        "type": "message",
        "role": "assistant",
        "model": ids.model,
        "content": content,
        "stop_reason": stop_reason(reply),
        "stop_sequence": null,
        "usage": usage(output_tokens(reply)),
    })
}

/// The Anthropic error body for `status`, with the error type the real API uses for it.
pub fn error_body(status: u16, message: &str, request_id: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        500 => "api_error",
        _ => "overloaded_error",
    };
    json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id,
    })
}

/// `text` in up to three pieces, cut at character boundaries; no piece is empty unless the text is.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let n = starts.len();
    let mut cuts: Vec<usize> = [0, n / 3, 2 * n / 3]
        .iter()
        .map(|&k| starts.get(k).copied().unwrap_or(0))
        .chain([text.len()])
        .collect();
    cuts.dedup();
    if cuts.len() == 1 {
        cuts.push(text.len());
    }
    let bounds: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
    bounds.into_iter().map(move |(a, b)| &text[a..b])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Ids {
        Ids {
            message: "msg_fake_1".into(),
            tool_use: "toolu_fake_1".into(),
            model: "claude-test".into(),
        }
    }

    fn names(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e.data["type"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn pieces_rejoin_to_the_text() {
        for text in ["", "a", "ab", "héllo wörld", "{\"command\":\"ls\"}"] {
            let parts: Vec<&str> = pieces(text).collect();
            assert_eq!(parts.concat(), text);
            assert!(parts.len() <= 3);
            assert!(text.is_empty() || parts.iter().all(|p| !p.is_empty()));
        }
    }

    #[test]
    fn a_text_reply_streams_one_text_block() {
        let events = events(&Reply::Text("Hello there you".into()), &ids());
        assert_eq!(
            names(&events),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let text: String = events
            .iter()
            .filter_map(|e| e.data["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "Hello there you");
        assert_eq!(events[6].data["delta"]["stop_reason"], "end_turn");
        assert_eq!(events[0].name, "message_start");
        assert!(
            events[0]
                .to_sse()
                .starts_with("event: message_start\ndata: {")
        );
    }

    #[test]
    fn thinking_comes_first_and_ends_with_a_signature() {
        let reply = Reply::Think {
            thinking: "hmm".into(),
            text: "ok".into(),
        };
        let events = events(&reply, &ids());
        assert_eq!(events[1].data["content_block"]["type"], "thinking");
        let signature = events
            .iter()
            .find(|e| e.data["delta"]["type"] == "signature_delta")
            .expect("a signature delta");
        assert_eq!(signature.data["index"], 0);
        assert!(
            events
                .iter()
                .any(|e| e.data["content_block"]["type"] == "text" && e.data["index"] == 1)
        );
    }

    #[test]
    fn a_tool_call_streams_its_arguments_and_stops_for_tool_use() {
        let input = json!({"command": "touch t.txt", "description": "d"});
        let reply = Reply::Tool {
            name: "Bash".into(),
            input: input.clone(),
        };
        let events = events(&reply, &ids());
        assert_eq!(events[1].data["content_block"]["id"], "toolu_fake_1");
        let json: String = events
            .iter()
            .filter_map(|e| e.data["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), input);
        let delta = events.iter().find(|e| e.name == "message_delta").unwrap();
        assert_eq!(delta.data["delta"]["stop_reason"], "tool_use");
        assert_eq!(message(&reply, &ids())["content"][0]["input"], input);
    }

    #[test]
    fn error_bodies_name_the_anthropic_error_type() {
        let body = error_body(529, "fake failure 529", "req_1");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "overloaded_error");
        assert_eq!(
            error_body(429, "x", "r")["error"]["type"],
            "rate_limit_error"
        );
    }
}
