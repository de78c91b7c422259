//! Every request the fake received, kept in order, with a count that tasks can wait on.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::script::{self, Prompt};

/// One request as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string (`beta=true`), if any.
    pub query: Option<String>,
    /// Header names lower-cased; a repeated header's values joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, or `Null` when it is empty or not JSON.
    pub body: Value,
    /// When its body had arrived, in µs since 1970 (the fake answers at once, so this is also
    /// about when the answer went out): for latency benchmarks.
    pub received_at_us: u64,
}

impl RecordedRequest {
    /// The last text of the last `user` message, trimmed: the prompt the script saw. `None` when
    /// the input ends with a tool's output.
    pub fn last_user_text(&self) -> Option<String> {
        match script::prompt_of(&self.body) {
            Prompt::Text(text) => Some(text),
            Prompt::ToolOutput(_) => None,
        }
    }

    /// The request's `input` items.
    pub fn input(&self) -> &[Value] {
        script::input(&self.body)
    }

    /// The prompt as the script saw it, tool outputs included.
    pub fn prompt(&self) -> Prompt {
        script::prompt_of(&self.body)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Whether this is a Responses API call (`POST /v1/responses`).
    pub fn is_responses_call(&self) -> bool {
        self.method == "POST" && self.path == "/v1/responses"
    }

    /// The request as one JSON object (what `--record` writes, one per line).
    pub fn to_json(&self) -> Value {
        json!({
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "received_at_us": self.received_at_us,
        })
    }
}

/// The shared log: the requests, the prompts already answered (for `FAIL_ONCE`), and the count
/// watchers wait on.
pub struct Recorder {
    inner: Mutex<Inner>,
    count: watch::Sender<usize>,
}

struct Inner {
    requests: Vec<RecordedRequest>,
    seen_prompts: HashSet<String>,
    file: Option<File>,
}

impl Recorder {
    pub fn new(file: Option<File>) -> Recorder {
        Recorder {
            inner: Mutex::new(Inner {
                requests: Vec::new(),
                seen_prompts: HashSet::new(),
                file,
            }),
            count: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the log consistent (every update is one push),
        // so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a request and wakes the waiters. A failing `--record` file is reported on stderr
    /// once and then left alone: recording is a convenience, serving must go on.
    pub fn record(&self, request: RecordedRequest) {
        let n = {
            let mut inner = self.lock();
            if let Some(file) = &mut inner.file {
                let line = format!("{}\n", request.to_json());
                if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                    eprintln!(
                        "blobhub-fake-openai: writing the record file: {e}; no longer recording"
                    );
                    inner.file = None;
                }
            }
            inner.requests.push(request);
            inner.requests.len()
        };
        self.count.send_replace(n);
    }

    /// Marks `prompt` as answered; true when it had been answered before.
    pub fn seen_before(&self, prompt: &str) -> bool {
        !self.lock().seen_prompts.insert(prompt.to_owned())
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }
}
