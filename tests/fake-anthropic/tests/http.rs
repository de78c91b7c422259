//! The fake over plain HTTP/1.1, without the CLI: the cases the CLI can't show cheaply
//! (a stall, a failure that happens once, non-streaming, other paths).

use std::time::Duration;

use blobhub_fake_anthropic::{FakeAnthropic, MessagesRequest};
use blobhub_fake_http::raw_client::{self, WAIT, data_lines};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

fn body(prompt: &str, stream: bool) -> Value {
    json!({"model": "claude-test", "stream": stream, "max_tokens": 100, "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nctx\n</system-reminder>"},
            {"type": "text", "text": prompt}]},
        {"role": "system", "content": "env"},
    ]})
}

/// The fake's authentication header, as the CLI sends it.
const AUTH: &str = "x-api-key: dummy";

/// Sends one request on a new connection (closed after the response) and returns the stream.
async fn send(fake: &FakeAnthropic, method: &str, path: &str, body: &Value) -> TcpStream {
    raw_client::send(fake.addr(), AUTH, method, path, body).await
}

/// The whole response, for requests that finish.
async fn call(fake: &FakeAnthropic, method: &str, path: &str, body: &Value) -> (u16, String) {
    raw_client::call(fake.addr(), AUTH, method, path, body).await
}

#[tokio::test]
async fn a_stream_is_the_messages_event_sequence() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (status, out) = call(&fake, "POST", "/v1/messages?beta=true", &body("hi", true)).await;
    assert_eq!(status, 200);
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
    let events = data_lines(&out);
    assert_eq!(events.first().unwrap()["type"], "message_start");
    assert_eq!(events.last().unwrap()["type"], "message_stop");
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello from fake Anthropic (2 msgs).");
    let requests = fake.wait_for_requests(1, WAIT).await.unwrap();
    assert_eq!(requests[0].path, "/v1/messages");
    assert_eq!(requests[0].query.as_deref(), Some("beta=true"));
    assert_eq!(requests[0].header("X-Api-Key"), Some("dummy"));
    assert_eq!(requests[0].last_user_text().as_deref(), Some("hi"));
}

#[tokio::test]
async fn without_stream_the_reply_is_one_message() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (status, out) = call(&fake, "POST", "/v1/messages", &body("TOOL:Bash ls", false)).await;
    assert_eq!(status, 200);
    let message: Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][0]["input"]["command"], "ls");
}

#[tokio::test]
async fn fail_once_fails_then_answers() {
    let fake = FakeAnthropic::start().await.unwrap();
    let prompt = body("FAIL_ONCE:529 THINK again", true);
    let (status, out) = call(&fake, "POST", "/v1/messages", &prompt).await;
    assert_eq!(status, 529);
    let error: Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert_eq!(error["error"]["message"], "fake failure 529");
    let (status, out) = call(&fake, "POST", "/v1/messages", &prompt).await;
    assert_eq!(status, 200);
    assert!(
        data_lines(&out)
            .iter()
            .any(|e| e["delta"]["type"] == "signature_delta")
    );
}

#[tokio::test]
async fn a_stall_holds_the_stream_without_blocking_others_until_released() {
    let fake = FakeAnthropic::start().await.unwrap();
    let conn = send(&fake, "POST", "/v1/messages", &body("STALL", true)).await;
    let mut stalled = BufReader::new(conn);
    let mut line = String::new();
    let saw_start = async {
        loop {
            line.clear();
            stalled.read_line(&mut line).await.unwrap();
            if let Some(data) = line.strip_prefix("data: ") {
                return serde_json::from_str::<Value>(data).unwrap();
            }
        }
    };
    let first = tokio::time::timeout(WAIT, saw_start).await.unwrap();
    assert_eq!(first["type"], "message_start");

    // Another request is answered while the stall holds.
    let (status, _) = call(&fake, "POST", "/v1/messages", &body("hi", true)).await;
    assert_eq!(status, 200);

    fake.release_stalls();
    let mut rest = String::new();
    tokio::time::timeout(WAIT, stalled.read_to_string(&mut rest))
        .await
        .expect("a released stall ends its stream")
        .unwrap();
    assert!(!rest.contains("message_stop"), "{rest}");
}

#[tokio::test]
async fn other_paths_are_harmless() {
    let fake = FakeAnthropic::start().await.unwrap();
    assert_eq!(call(&fake, "HEAD", "/api/hello", &json!(null)).await.0, 200);
    assert_eq!(call(&fake, "GET", "/api/hello", &json!(null)).await.0, 200);
    assert_eq!(call(&fake, "GET", "/v1/models", &json!(null)).await.0, 404);
    let requests = fake.wait_for_requests(3, WAIT).await.unwrap();
    assert!(requests.iter().all(|r| !r.is_messages_call()));
    assert!(fake.model_calls().is_empty());
    let err = fake
        .wait_for_requests(4, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("got 3"), "{err}");
}

#[tokio::test]
async fn dropping_the_fake_ends_a_stalled_stream() {
    let fake = FakeAnthropic::start().await.unwrap();
    let mut conn = send(&fake, "POST", "/v1/messages", &body("STALL", true)).await;
    fake.wait_for_requests(1, WAIT).await.unwrap();
    drop(fake);
    let mut rest = Vec::new();
    // Ends (or resets) instead of hanging: either way the read returns.
    let _ = tokio::time::timeout(WAIT, conn.read_to_end(&mut rest))
        .await
        .expect("the connection ends with the fake");
}

#[tokio::test]
async fn record_appends_each_request_as_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.jsonl");
    let fake = FakeAnthropic::start_with(blobhub_fake_anthropic::Options {
        port: 0,
        record: Some(file.clone()),
    })
    .await
    .unwrap();
    call(&fake, "POST", "/v1/messages?beta=true", &body("hi", true)).await;
    call(&fake, "HEAD", "/api/hello", &json!(null)).await;
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["path"], "/v1/messages");
    assert_eq!(lines[0]["query"], "beta=true");
    assert_eq!(lines[0]["headers"]["x-api-key"], "dummy");
    assert_eq!(lines[0]["body"]["messages"][0]["role"], "user");
    assert_eq!(lines[1]["method"], "HEAD");
    assert!(
        lines[0]["received_at_us"].as_u64().unwrap()
            <= lines[1]["received_at_us"].as_u64().unwrap()
    );
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[tokio::test]
async fn each_request_is_stamped_on_arrival_and_when_its_response_ended() {
    let fake = FakeAnthropic::start().await.unwrap();
    let before = now_us();
    call(&fake, "POST", "/v1/messages", &body("hi", true)).await;
    call(&fake, "POST", "/v1/messages", &body("hi", false)).await;
    call(&fake, "POST", "/v1/messages", &body("FAIL:529", true)).await;
    call(&fake, "HEAD", "/api/hello", &json!(null)).await;
    let after = now_us();
    let done = fake.requests();
    assert_eq!(done.len(), 4);
    for r in &done {
        let end = r.response_end_us.expect("a finished response is stamped");
        assert!(before <= r.received_at_us, "{r:?}");
        assert!(r.received_at_us <= end && end <= after, "{r:?}");
    }
    // In arrival order, each response ended before the next request (one connection each).
    for pair in done.windows(2) {
        assert!(pair[0].response_end_us.unwrap() <= pair[1].received_at_us);
    }

    // A stream still open has no end yet; released, it has.
    let mut stalled = send(&fake, "POST", "/v1/messages", &body("STALL", true)).await;
    let stall = fake.wait_for_requests(5, WAIT).await.unwrap()[4].clone();
    assert!(stall.received_at_us >= after);
    assert_eq!(stall.response_end_us, None);
    fake.release_stalls();
    let mut rest = String::new();
    tokio::time::timeout(WAIT, stalled.read_to_string(&mut rest))
        .await
        .expect("a released stall ends")
        .unwrap();
    assert!(fake.requests()[4].response_end_us.unwrap() >= stall.received_at_us);
}
