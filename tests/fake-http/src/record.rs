//! Every request a fake received, kept in order, with a count that tasks can wait on.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::watch;

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
    /// When the request's head arrived: wall-clock microseconds since 1970. Wall clock, not a
    /// monotonic one, because it is compared with times taken in other processes and with the
    /// BlobHub emulator's `created_at` and `received_at_us`, which are on this clock too (a
    /// benchmark subtracts them: `host/benches/harness.rs`).
    pub received_at_us: u64,
    /// When the whole response had been handed to the connection (same clock): the body's last
    /// frame (the stream's final event, the error or the message). `None` while it is still
    /// being sent, and for good when the client went away first.
    pub response_end_us: Option<u64>,
}

/// Wall-clock microseconds since 1970 (the clock of [`RecordedRequest::received_at_us`]).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl RecordedRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The request as one JSON object (what `--record` writes, one per line, as the request
    /// arrives: so without `response_end_us`).
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
    name: &'static str,
    inner: Mutex<Inner>,
    count: watch::Sender<usize>,
}

struct Inner {
    requests: Vec<RecordedRequest>,
    seen_prompts: HashSet<String>,
    file: Option<File>,
}

impl Recorder {
    /// `name`: the fake's, for the one message about a failing record file.
    pub fn new(name: &'static str, file: Option<File>) -> Recorder {
        Recorder {
            name,
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

    /// Adds a request, wakes the waiters and returns its index (for [`Recorder::response_ended`]).
    /// A failing `--record` file is reported on stderr once and then left alone: recording is a
    /// convenience, serving must go on.
    pub fn record(&self, request: RecordedRequest) -> usize {
        let n = {
            let mut inner = self.lock();
            if let Some(file) = &mut inner.file {
                let line = format!("{}\n", request.to_json());
                if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                    eprintln!(
                        "{}: writing the record file: {e}; no longer recording",
                        self.name
                    );
                    inner.file = None;
                }
            }
            inner.requests.push(request);
            inner.requests.len()
        };
        self.count.send_replace(n);
        n - 1
    }

    /// Stamps the response to request `index` as sent (the first stamp stays).
    pub fn response_ended(&self, index: usize, at_us: u64) {
        if let Some(r) = self.lock().requests.get_mut(index) {
            r.response_end_us.get_or_insert(at_us);
        }
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
