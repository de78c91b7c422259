//! The Responses endpoint: routing, and turning a request into the script's reply as a stream.

use blobhub_fake_http::{Api, Body, RecordedRequest, Server, json_response, sse_response};
use hyper::Response;
use serde_json::Value;

use crate::record::ResponsesRequest;
use crate::script::{self, Prompt, Reply};
use crate::stream::{self, Ids};

/// The fake OpenAI API (served by [`crate::FakeOpenai`]).
#[derive(Debug, Default)]
pub struct Openai;

impl Api for Openai {
    const NAME: &'static str = "blobhub-fake-openai";

    fn is_model_call(request: &RecordedRequest) -> bool {
        request.is_responses_call()
    }

    fn respond(&self, server: &Server, request: &RecordedRequest) -> Response<Body> {
        match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/v1/responses") => responses(server, &request.body),
            (_, path) => json_response(
                404,
                &stream::error_body(
                    404,
                    &format!("the fake serves POST /v1/responses, not {path}"),
                ),
                &[],
            ),
        }
    }
}

fn responses(server: &Server, body: &Value) -> Response<Body> {
    let n = server.next_id();
    let ids = Ids {
        n,
        model: body["model"].as_str().unwrap_or("gpt-fake").to_owned(),
    };
    let prompt = script::prompt_of(body);
    let seen_before = match &prompt {
        Prompt::Text(text) => server.seen_before(text),
        Prompt::ToolOutput(_) => false,
    };
    let reply = script::reply(&prompt, script::input(body).len(), seen_before);
    if let Reply::Fail(status) = reply {
        return json_response(
            status,
            &stream::error_body(status, &format!("fake failure {status}")),
            &[],
        );
    }
    let chunks = stream::events(&reply, &ids)
        .iter()
        .map(|e| e.to_sse())
        .collect();
    let request_id = format!("req_fake_{n:06}");
    sse_response(
        server,
        chunks,
        reply == Reply::Stall,
        "text/event-stream",
        &[("x-request-id", request_id.as_str())],
    )
}
