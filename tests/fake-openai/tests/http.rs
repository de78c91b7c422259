//! The fake over plain HTTP/1.1, without the CLI: the stream's shape, failures, other paths, a
//! stall (the e2e tests drive it through the real Codex CLI).

use blobhub_fake_http::raw_client::{self, WAIT, data_lines};
use blobhub_fake_openai::{FakeOpenai, ResponsesRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

fn body(prompt: &str) -> Value {
    json!({"model": "gpt-5.5", "stream": true, "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
    ]})
}

/// The fake's authentication header, as the CLI sends it.
const AUTH: &str = "authorization: Bearer dummy";

/// Sends one request on a new connection (closed after the response) and returns the stream.
async fn send(fake: &FakeOpenai, method: &str, path: &str, body: &Value) -> TcpStream {
    raw_client::send(fake.addr(), AUTH, method, path, body).await
}

/// The whole response, for requests that finish.
async fn call(fake: &FakeOpenai, method: &str, path: &str, body: &Value) -> (u16, String) {
    raw_client::call(fake.addr(), AUTH, method, path, body).await
}

#[tokio::test]
async fn a_reply_is_the_responses_event_stream_and_the_request_is_recorded() {
    let fake = FakeOpenai::start().await.unwrap();
    let (status, out) = call(&fake, "POST", "/v1/responses", &body("hi")).await;
    assert_eq!(status, 200);
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
    let events = data_lines(&out);
    assert_eq!(events.first().unwrap()["type"], "response.created");
    let done = events
        .iter()
        .find(|e| e["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(
        done["item"]["content"][0]["text"],
        "Hello from fake OpenAI (2 input items)."
    );
    let completed = events.last().unwrap();
    assert_eq!(completed["type"], "response.completed");
    assert_eq!(completed["response"]["usage"]["output_tokens"], 5);
    let requests = fake.wait_for_requests(1, WAIT).await.unwrap();
    assert!(requests[0].is_responses_call());
    assert_eq!(requests[0].header("Authorization"), Some("Bearer dummy"));
    assert_eq!(requests[0].last_user_text().as_deref(), Some("hi"));
    assert!(requests[0].received_at_us > 0);
}

#[tokio::test]
async fn failures_and_other_paths() {
    let fake = FakeOpenai::start().await.unwrap();
    let prompt = body("FAIL_ONCE:503 THINK again");
    let (status, out) = call(&fake, "POST", "/v1/responses", &prompt).await;
    assert_eq!(status, 503);
    let error: Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    let (status, out) = call(&fake, "POST", "/v1/responses", &prompt).await;
    assert_eq!(status, 200);
    assert!(
        data_lines(&out)
            .iter()
            .any(|e| e["item"]["type"] == "reasoning")
    );
    let (status, _) = call(&fake, "GET", "/v1/models", &Value::Null).await;
    assert_eq!(status, 404);
    assert_eq!(fake.model_calls().len(), 2);
}

#[tokio::test]
async fn a_stall_holds_the_stream_until_released() {
    let fake = FakeOpenai::start().await.unwrap();
    let mut stalled = BufReader::new(send(&fake, "POST", "/v1/responses", &body("STALL")).await);
    let mut line = String::new();
    let first = tokio::time::timeout(WAIT, async {
        loop {
            line.clear();
            stalled.read_line(&mut line).await.unwrap();
            if let Some(data) = line.strip_prefix("data: ") {
                return serde_json::from_str::<Value>(data).unwrap();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(first["type"], "response.created");
    // Another request is answered while the stall holds.
    let (status, _) = call(&fake, "POST", "/v1/responses", &body("hi")).await;
    assert_eq!(status, 200);
    fake.release_stalls();
    let mut rest = String::new();
    tokio::time::timeout(WAIT, stalled.read_to_string(&mut rest))
        .await
        .expect("a released stall ends its stream")
        .unwrap();
    assert!(!rest.contains("response.completed"), "{rest}");
}
