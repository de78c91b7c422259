//! `start --metrics-addr ADDR`: `/healthz` and `/metrics` (Prometheus text format) over plain
//! HTTP, for a service manager's health check and a scraper.
//!
//! Both are computed from the dashboard's snapshot at each request, so they say what
//! `status` says. The server answers GET requests only, one per connection, and reads at most
//! a few KiB of each: it is not a general HTTP server. It listens on loopback unless the
//! operator names another address explicitly (see [`check_addr`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::coded::CodedError;
use crate::dashboard::model::{Snapshot, leading_code};
use crate::status_socket::Source;

/// The request head is read up to this many bytes.
const MAX_HEAD: usize = 8192;

/// The counters of the process: (family, labels) → value, counted from the BlobHub client and
/// the job types' log events wherever they happen, read by `/metrics`.
static COUNTERS: std::sync::Mutex<BTreeMap<(&'static str, String), f64>> =
    std::sync::Mutex::new(BTreeMap::new());

/// `blobhub_worker_api_requests_total` by command, then outcome. Kept apart from [`COUNTERS`]
/// because every BlobHub call counts here, each idle poll included: a command already seen is
/// found by its name as given, with no label text built (that was eight allocations a call),
/// and labels are written only when `/metrics` is read.
static API_REQUESTS: std::sync::Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The family [`API_REQUESTS`] counts.
const API_REQUESTS_FAMILY: &str = "blobhub_worker_api_requests_total";

/// The counter families: (name, type, help). Series of one family are written together.
const FAMILIES: [(&str, &str, &str); 7] = [
    (
        API_REQUESTS_FAMILY,
        "counter",
        "BlobHub API calls (after retries) by command and outcome (ok or the error code).",
    ),
    (
        "blobhub_worker_job_events_total",
        "counter",
        "Job type log events by job type, event and level.",
    ),
    (
        "blobhub_worker_turns_total",
        "counter",
        "Agent turns ended, by status.",
    ),
    (
        "blobhub_worker_turn_duration_seconds_sum",
        "counter",
        "Wall clock of the ended turns, summed.",
    ),
    (
        "blobhub_worker_turn_duration_seconds_count",
        "counter",
        "Ended turns with a duration.",
    ),
    (
        "blobhub_worker_prompt_wait_seconds_sum",
        "counter",
        "Time questions to a person were open before they were answered, summed.",
    ),
    (
        "blobhub_worker_prompt_wait_seconds_count",
        "counter",
        "Questions answered.",
    ),
];

fn add(family: &'static str, labels: String, value: f64) {
    let mut counters = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    *counters.entry((family, labels)).or_insert(0.0) += value;
}

/// One BlobHub call ended: `outcome` is `ok` or its error code.
pub fn count_api(command: &str, outcome: &'static str) {
    let mut api = API_REQUESTS.lock().unwrap_or_else(|e| e.into_inner());
    let by_outcome = match api.get_mut(command) {
        Some(by_outcome) => by_outcome,
        None => api.entry(command.to_owned()).or_default(),
    };
    *by_outcome.entry(outcome).or_insert(0) += 1;
}

/// A job type logged `event` (its `fields` a JSON object): counted, and a `turn_ended` with
/// `status` and `duration_ms` feeds the turn series.
pub fn count_event(job_type: &str, level: &str, event: &str, fields: &str) {
    add(
        "blobhub_worker_job_events_total",
        format!(
            "job_type=\"{}\",event=\"{}\",level=\"{}\"",
            label(job_type),
            label(event),
            label(level)
        ),
        1.0,
    );
    if event != "turn_ended" {
        return;
    }
    let Ok(fields) = serde_json::from_str::<serde_json::Value>(fields) else {
        return;
    };
    if let Some(status) = fields["status"].as_str() {
        add(
            "blobhub_worker_turns_total",
            format!("status=\"{}\"", label(status)),
            1.0,
        );
    }
    if let Some(ms) = fields["duration_ms"].as_u64() {
        #[allow(
            clippy::cast_precision_loss,
            reason = "durations are far below 2^52 ms"
        )]
        let seconds = ms as f64 / 1000.0;
        add(
            "blobhub_worker_turn_duration_seconds_sum",
            String::new(),
            seconds,
        );
        add(
            "blobhub_worker_turn_duration_seconds_count",
            String::new(),
            1.0,
        );
    }
}

/// A question to a person left its thread's row after `wait` (answered, or otherwise settled
/// while its thread carried on).
pub fn count_prompt_wait(wait: std::time::Duration) {
    add(
        "blobhub_worker_prompt_wait_seconds_sum",
        String::new(),
        wait.as_secs_f64(),
    );
    add(
        "blobhub_worker_prompt_wait_seconds_count",
        String::new(),
        1.0,
    );
}

/// How many prompt waits were counted (tests).
pub fn prompt_waits() -> u64 {
    let counters = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a count"
    )]
    counters
        .get(&("blobhub_worker_prompt_wait_seconds_count", String::new()))
        .map_or(0, |v| *v as u64)
}

/// The counters in the text format.
fn write_counters(out: &mut String) {
    let counters = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    for (name, kind, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        if name == API_REQUESTS_FAMILY {
            let api = API_REQUESTS.lock().unwrap_or_else(|e| e.into_inner());
            for (command, by_outcome) in api.iter() {
                for (outcome, value) in by_outcome {
                    let _ = writeln!(
                        out,
                        "{name}{{command=\"{}\",outcome=\"{}\"}} {value}",
                        label(command),
                        label(outcome)
                    );
                }
            }
        }
        for ((family, labels), value) in counters.iter() {
            if *family != name {
                continue;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    }
}

/// Refuse a non-loopback address unless `public` says the operator meant it.
pub fn check_addr(addr: SocketAddr, public: bool) -> Result<(), CodedError> {
    if addr.ip().is_loopback() || public {
        return Ok(());
    }
    Err(CodedError::new(
        "METRICS_ADDR_NOT_LOOPBACK",
        format!("--metrics-addr {addr} is reachable from other machines"),
    )
    .with_hint("use 127.0.0.1:PORT, or add --metrics-public if every host that can reach it may read the worker's status"))
}

/// A section is healthy when attached, or stopped without a code (a clean, intended stop).
fn healthy(state: &str, detail: &str) -> bool {
    state == "attached" || (state == "stopped" && leading_code(detail).is_none())
}

/// `/healthz`: (HTTP status, JSON body).
pub fn health(snapshot: &Snapshot) -> (u16, String) {
    let sections: Vec<_> = snapshot
        .sections
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "state": s.state,
                "code": leading_code(&s.detail),
                "healthy": healthy(&s.state, &s.detail),
            })
        })
        .collect();
    let ok = snapshot
        .sections
        .iter()
        .all(|s| healthy(&s.state, &s.detail));
    let body = json!({
        "status": if ok { "ok" } else { "unhealthy" },
        "instance_id": snapshot.identity.instance_id,
        "stopping": snapshot.stopping,
        "sections": sections,
    });
    (if ok { 200 } else { 503 }, body.to_string())
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/metrics` in the Prometheus text format (version 0.0.4).
pub fn metrics(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    // Sections by status.
    let mut by_state = std::collections::BTreeMap::<&str, usize>::new();
    for s in &snapshot.sections {
        *by_state.entry(s.state.as_str()).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "# HELP blobhub_worker_sections Configured sections by status.\n# TYPE blobhub_worker_sections gauge"
    );
    for (state, n) in &by_state {
        let _ = writeln!(
            out,
            "blobhub_worker_sections{{status=\"{}\"}} {n}",
            label(state)
        );
    }
    let _ = writeln!(
        out,
        "# HELP blobhub_worker_section_up Whether a section is attached (1) or not (0), with its status and code.\n# TYPE blobhub_worker_section_up gauge"
    );
    for s in &snapshot.sections {
        let _ = writeln!(
            out,
            "blobhub_worker_section_up{{section=\"{}\",job_type=\"{}\",status=\"{}\",code=\"{}\"}} {}",
            label(&s.name),
            label(&s.job_type),
            label(&s.state),
            label(leading_code(&s.detail).unwrap_or("")),
            u8::from(s.state == "attached")
        );
    }
    let _ = writeln!(
        out,
        "# HELP blobhub_worker_threads Threads by state.\n# TYPE blobhub_worker_threads gauge"
    );
    for (state, n) in snapshot.threads_by_state() {
        let _ = writeln!(
            out,
            "blobhub_worker_threads{{state=\"{}\"}} {n}",
            label(&state)
        );
    }
    let _ = writeln!(
        out,
        "# HELP blobhub_worker_agent_slots_busy Agent slots in use.\n# TYPE blobhub_worker_agent_slots_busy gauge\nblobhub_worker_agent_slots_busy {}",
        snapshot.slots.busy
    );
    let _ = writeln!(
        out,
        "# HELP blobhub_worker_agent_slots_total Agent slots (concurrency.max_agents).\n# TYPE blobhub_worker_agent_slots_total gauge\nblobhub_worker_agent_slots_total {}",
        snapshot.slots.total
    );
    let _ = writeln!(
        out,
        "# HELP blobhub_worker_held_waits Agents kept running while they wait for a person's answer (they hold no slot).\n# TYPE blobhub_worker_held_waits gauge\nblobhub_worker_held_waits {}",
        snapshot.slots.held
    );
    let _ = writeln!(
        out,
        "# HELP blobhub_worker_held_waits_max Held waits at most (concurrency.held_waits_max); past it the oldest is parked.\n# TYPE blobhub_worker_held_waits_max gauge\nblobhub_worker_held_waits_max {}",
        snapshot.slots.held_max
    );
    let _ = writeln!(
        out,
        "# HELP blobhub_worker_recent_errors Warnings and failures kept for the dashboard.\n# TYPE blobhub_worker_recent_errors gauge\nblobhub_worker_recent_errors {}",
        snapshot.errors.len()
    );
    let _ = writeln!(
        out,
        "# HELP blobhub_worker_stopping Whether a stop is in progress.\n# TYPE blobhub_worker_stopping gauge\nblobhub_worker_stopping {}",
        u8::from(snapshot.stopping)
    );
    write_counters(&mut out);
    out
}

/// A serving endpoint; dropping it stops serving.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listen on `addr` (inside the tokio runtime) and answer from `source`.
pub async fn serve(addr: SocketAddr, source: Source) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let source = source.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &source).await;
            });
        }
    });
    Ok(Server { addr, task })
}

async fn answer(mut stream: tokio::net::TcpStream, source: &Source) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET", "/healthz") => {
            let (status, body) = health(&source());
            (status, "application/json", body)
        }
        ("GET", "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(&source()),
        ),
        ("GET", _) => (404, "text/plain", "not found: /healthz, /metrics\n".into()),
        _ => (405, "text/plain", "GET only\n".into()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::capabilities::status::{SectionStatus, ThreadStatus};

    fn snapshot() -> Snapshot {
        let mut ok = SectionStatus {
            index: 0,
            name: "backend".into(),
            job_type: "session_agent_harness".into(),
            state: "attached".into(),
            ..Default::default()
        };
        ok.threads.insert(
            "t".into(),
            ThreadStatus {
                thread: "t".into(),
                state: "active (turn)".into(),
                ..Default::default()
            },
        );
        Snapshot {
            sections: vec![ok],
            slots: (1, 4).into(),
            ..Default::default()
        }
    }

    #[test]
    fn health_is_ok_while_every_section_is_attached_or_cleanly_stopped() {
        let mut snap = snapshot();
        assert_eq!(health(&snap).0, 200);
        snap.sections.push(SectionStatus {
            index: 1,
            name: "docs".into(),
            state: "stopped".into(),
            detail: "shutdown".into(),
            ..Default::default()
        });
        assert_eq!(health(&snap).0, 200);
        snap.sections[1].state = "refused".into();
        snap.sections[1].detail = "SESSION_OWNED_BY_DIFFERENT_USER: taken".into();
        let (status, body) = health(&snap);
        assert_eq!(status, 503);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["status"], "unhealthy");
        assert_eq!(
            doc["sections"][1]["code"],
            "SESSION_OWNED_BY_DIFFERENT_USER"
        );
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let text = metrics(&snapshot());
        assert!(
            text.contains("blobhub_worker_sections{status=\"attached\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("blobhub_worker_threads{state=\"active (turn)\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("blobhub_worker_agent_slots_busy 1\n"),
            "{text}"
        );
        assert!(
            text.contains("blobhub_worker_agent_slots_total 4\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE blobhub_worker_threads gauge\n"),
            "{text}"
        );
        assert!(text.contains("blobhub_worker_held_waits 0\n"), "{text}");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut held = snapshot();
        held.slots.held = 3;
        held.slots.held_max = 8;
        let text = metrics(&held);
        assert!(text.contains("blobhub_worker_held_waits 3\n"), "{text}");
        assert!(text.contains("blobhub_worker_held_waits_max 8\n"), "{text}");
    }

    #[test]
    fn turns_and_api_calls_are_counted() {
        count_event(
            "session_agent_harness",
            "info",
            "turn_ended",
            r#"{"turn_id":"x","status":"completed","duration_ms":1500}"#,
        );
        count_api("post_session_thread_item", "ok");
        let text = metrics(&Snapshot::default());
        assert!(
            text.contains("blobhub_worker_turns_total{status=\"completed\"} "),
            "{text}"
        );
        assert!(
            text.contains("blobhub_worker_turn_duration_seconds_count "),
            "{text}"
        );
        assert!(
            text.contains("blobhub_worker_api_requests_total{command=\"post_session_thread_item\",outcome=\"ok\"} "),
            "{text}"
        );
        assert!(text.contains(
            "blobhub_worker_job_events_total{job_type=\"session_agent_harness\",event=\"turn_ended\",level=\"info\"} "
        ));
    }

    #[test]
    fn api_calls_accumulate_by_command_and_outcome_with_escaped_labels() {
        // A name no other test counts, so the totals are this test's own.
        let command = "metrics_test \"odd\"\ncommand";
        count_api(command, "ok");
        count_api(command, "ok");
        count_api(command, "API_TRANSIENT_ERROR");
        let text = metrics(&Snapshot::default());
        let series = |outcome: &str| {
            format!(
                "blobhub_worker_api_requests_total{{command=\"metrics_test \\\"odd\\\"\\ncommand\",outcome=\"{outcome}\"}} "
            )
        };
        assert!(text.contains(&format!("{}2\n", series("ok"))), "{text}");
        assert!(
            text.contains(&format!("{}1\n", series("API_TRANSIENT_ERROR"))),
            "{text}"
        );
        // The family's header comes once, before its series.
        let header = text
            .find("# TYPE blobhub_worker_api_requests_total counter\n")
            .expect("header");
        assert!(header < text.find(&series("ok")).unwrap());
        assert_eq!(
            text.matches("# TYPE blobhub_worker_api_requests_total")
                .count(),
            1
        );
    }

    #[test]
    fn only_loopback_unless_public() {
        assert!(check_addr("127.0.0.1:9100".parse().unwrap(), false).is_ok());
        assert!(check_addr("[::1]:9100".parse().unwrap(), false).is_ok());
        let refused = check_addr("0.0.0.0:9100".parse().unwrap(), false).unwrap_err();
        assert_eq!(refused.code, "METRICS_ADDR_NOT_LOOPBACK");
        assert!(check_addr("0.0.0.0:9100".parse().unwrap(), true).is_ok());
    }
}
