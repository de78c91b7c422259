//! The Messages endpoint and its neighbours: routing, and turning a request into the script's
//! reply as a stream or one message.

use blobhub_fake_http::{
    Api, Body, RecordedRequest, Server, json_response, response, sse_response,
};
use http_body_util::{BodyExt, Empty};
use hyper::Response;
use serde_json::{Value, json};

use crate::record::MessagesRequest;
use crate::script::{self, Prompt, Reply};
use crate::stream::{self, Ids};

/// The fake Anthropic API (served by [`crate::FakeAnthropic`]).
#[derive(Debug, Default)]
pub struct Anthropic;

impl Api for Anthropic {
    const NAME: &'static str = "blobhub-fake-anthropic";

    fn is_model_call(request: &RecordedRequest) -> bool {
        request.is_messages_call()
    }

    fn respond(&self, server: &Server, request: &RecordedRequest) -> Response<Body> {
        match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/v1/messages") => messages(server, &request.body),
            ("POST", "/v1/messages/count_tokens") => {
                json_response(200, &json!({"input_tokens": 10}), &[])
            }
            // Reachability probes (the CLI's `HEAD /api/hello` when nonessential traffic is on).
            ("HEAD", _) => response(200).body(Empty::new().boxed()).expect("valid"),
            ("GET", "/" | "/api/hello") => json_response(200, &json!({}), &[]),
            (_, path) => json_response(
                404,
                &stream::error_body(
                    404,
                    &format!("the fake serves POST /v1/messages, not {path}"),
                    "",
                ),
                &[],
            ),
        }
    }
}

fn messages(server: &Server, body: &Value) -> Response<Body> {
    let n = server.next_id();
    let request_id = format!("req_fake_{n:06}");
    let id_header = [("request-id", request_id.as_str())];
    let ids = Ids {
        message: format!("msg_fake_{n:06}"),
        tool_use: format!("toolu_fake_{n:06}"),
        model: body["model"].as_str().unwrap_or("claude-fake").to_owned(),
    };
    let prompt = script::prompt_of(body);
    let seen_before = match &prompt {
        Prompt::Text(text) => server.seen_before(text),
        Prompt::ToolResult { .. } => false,
    };
    let reply = script::reply(&prompt, script::messages(body).len(), seen_before);
    if let Reply::Fail(status) = reply {
        let error = stream::error_body(status, &format!("fake failure {status}"), &request_id);
        return json_response(status, &error, &id_header);
    }
    if body["stream"] != json!(true) {
        if reply == Reply::Stall {
            // A stall only makes sense on a stream; a plain request gets an overload instead.
            let error = stream::error_body(529, "fake stall (not streaming)", &request_id);
            return json_response(529, &error, &id_header);
        }
        return json_response(200, &stream::message(&reply, &ids), &id_header);
    }
    let chunks = stream::events(&reply, &ids)
        .iter()
        .map(|e| e.to_sse())
        .collect();
    sse_response(
        server,
        chunks,
        reply == Reply::Stall,
        "text/event-stream; charset=utf-8",
        &id_header,
    )
}
