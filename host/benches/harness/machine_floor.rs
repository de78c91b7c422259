//! The machine floor of an idle poll (part `idle`, issue 14): this bench re-executed as the
//! least any client can spend on the idle exchange on the machine where the bench runs.
//!
//! `machine-floor <api-url> <key> <interval-ms> <revision>:<session>...` sends, for each session,
//! the same `list_session_events` query as the HTTP-client floor (`poll-floor`), at the same
//! interval and with the same spread of first polls, over plain blocking `std::net` sockets: one
//! thread per session (each sleeps until its poll, writes the request in one `write`, reads the
//! answer, sleeps again), one keep-alive connection each (a new one whenever the server closes
//! it), the request bytes prepared once. No async runtime, no HTTP library, no JSON parsing, no
//! allocation per poll once the answer buffer has grown. It runs before any tokio runtime is
//! built, so the process holds nothing else.
//!
//! What is left per request is the machine's own price of the exchange: waking a thread after
//! idle, the TCP send and receive, and waking again for the answer. Our worker and the HTTP-client
//! floor are printed beside it.
//!
//! `tokio-floor` (same arguments, [`run_tokio`]) is the same exchange on a single-threaded tokio
//! runtime, as the worker's feed thread runs: the async runtime's own price on top of the machine's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Runs until killed. With `together`, one thread polls every session in the same wake-up
/// (writes all requests, then reads all answers) instead of one thread per session spread over
/// the interval: what the exchange costs when a wake-up is shared by all sessions, the least a
/// client can spend if it gives up spreading its polls.
pub fn run(args: &[String], together: bool) {
    let (interval, authority, requests) = prepare(args, "machine-floor");
    if together {
        poll_together(&authority, &requests, interval);
        return;
    }
    let n = requests.len().max(1);
    let threads: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let authority = authority.to_owned();
            // Spread like the worker's first polls (and `poll-floor`'s).
            let first = interval.mul_f64(i as f64 / n as f64);
            std::thread::spawn(move || poll(&authority, &request, first, interval))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// The arguments' interval, the emulator's `host:port` and each session's request, prepared once.
fn prepare(args: &[String], name: &str) -> (Duration, String, Vec<Vec<u8>>) {
    let [url, key, interval_ms, targets @ ..] = args else {
        panic!("{name} <api-url> <key> <interval-ms> <revision>:<session>...");
    };
    let interval = Duration::from_millis(interval_ms.parse().expect("interval in ms"));
    let rest = url
        .strip_prefix("http://")
        .expect("an http:// API URL (the emulator)");
    let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let requests = targets
        .iter()
        .map(|target| {
            let (revision, session) = target.split_once(':').expect("<revision>:<session>");
            let body = format!(
                r#"{{"command":"list_session_events","session_id":"{session}","ascending":false,"limit":1}}"#
            );
            format!(
                "POST {prefix}/revisions/{revision}/data/query HTTP/1.1\r\nhost: {authority}\r\n\
                 x-api-key: {key}\r\ncontent-type: application/json\r\naccept: */*\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect();
    (interval, authority.to_owned(), requests)
}

/// Every session's poll in one wake-up, forever: all requests written, then all answers read,
/// then `interval`.
fn poll_together(authority: &str, requests: &[Vec<u8>], interval: Duration) {
    let mut conns: Vec<Option<TcpStream>> = requests.iter().map(|_| None).collect();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut sent = Vec::with_capacity(requests.len());
        for (conn, request) in conns.iter_mut().zip(requests) {
            let mut s = conn.take().unwrap_or_else(|| connect(authority));
            sent.push(s.write_all(request).is_ok().then_some(s));
        }
        for (conn, s) in conns.iter_mut().zip(sent) {
            *conn = s.and_then(|s| read_answer(s, &mut buf));
        }
        std::thread::sleep(interval);
    }
}

/// One session's polls, forever: `first`, then the exchange and `interval` after its end.
fn poll(authority: &str, request: &[u8], first: Duration, interval: Duration) {
    std::thread::sleep(first);
    let mut conn: Option<TcpStream> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let stream = conn.take().unwrap_or_else(|| connect(authority));
        // Keep the connection only when the server keeps it and the answer was read whole.
        conn = exchange(stream, request, &mut buf);
        // The interval runs from the end of a poll (the worker counts it from the poll's due
        // time; with the emulator's answers in microseconds the cadence is the same).
        std::thread::sleep(interval);
    }
}

/// A new connection to the emulator, as the worker's HTTP client opens it (no Nagle delay).
fn connect(authority: &str) -> TcpStream {
    let s = TcpStream::connect(authority).expect("connect to the emulator");
    let _ = s.set_nodelay(true);
    s
}

/// Writes `request` and reads one response; the stream back when it may be reused.
fn exchange(mut s: TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Option<TcpStream> {
    if s.write_all(request).is_err() {
        return None;
    }
    read_answer(s, buf)
}

/// Reads one response; the stream back when it may be reused.
fn read_answer(mut s: TcpStream, buf: &mut Vec<u8>) -> Option<TcpStream> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return None,
            Ok(k) => len += k,
        }
        if let Some(keep) = answer_end(&buf[..len]) {
            return keep.then_some(s);
        }
    }
}

/// Whether `read` holds a whole answer: `Some(keep)` once it does, `keep` being whether the
/// server keeps the connection.
fn answer_end(read: &[u8]) -> Option<bool> {
    let head_end = find(read, b"\r\n\r\n")? + 4;
    let head = &read[..head_end];
    let complete = match content_length(head) {
        Some(n) => read.len() >= head_end + n,
        // Chunked: the last chunk ends the body.
        None => read[head_end..].ends_with(b"0\r\n\r\n"),
    };
    complete.then(|| !contains_ignore_case(head, b"connection: close"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// The same exchange as [`run`] (spread, one keep-alive connection per session, the request
/// prepared once) on a single-threaded tokio runtime with tokio's sockets and timers: what the
/// async runtime alone adds to the machine floor, without an HTTP library or JSON. One task per
/// session, all on the one thread.
pub fn run_tokio(args: &[String]) {
    let (interval, authority, requests) = prepare(args, "tokio-floor");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = requests.len().max(1);
        let mut tasks = Vec::new();
        for (i, request) in requests.into_iter().enumerate() {
            let authority = authority.to_owned();
            let first = interval.mul_f64(i as f64 / n as f64);
            tasks.push(tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                tokio::time::sleep(first).await;
                let mut conn: Option<tokio::net::TcpStream> = None;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let mut s = match conn.take() {
                        Some(s) => s,
                        None => {
                            let s = tokio::net::TcpStream::connect(&authority).await.unwrap();
                            let _ = s.set_nodelay(true);
                            s
                        }
                    };
                    let mut ok = s.write_all(&request).await.is_ok();
                    let mut len = 0;
                    while ok {
                        if len == buf.len() {
                            buf.resize(buf.len() * 2, 0);
                        }
                        match s.read(&mut buf[len..]).await {
                            Ok(0) | Err(_) => ok = false,
                            Ok(k) => len += k,
                        }
                        if let Some(keep) = answer_end(&buf[..len]) {
                            ok = keep;
                            break;
                        }
                    }
                    if ok {
                        conn = Some(s);
                    }
                    tokio::time::sleep(interval).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}
