//! `blobhub-test-agent`: the scripted agent of docs/testing.md.
//!
//! It lives in the library so that the one `blobhub-worker` executable can be it: invoked under
//! the name `blobhub-test-agent` (a link to it), `main.rs` runs [`main`] here. That is how
//! `demo` works after a plain `cargo run`, which builds only the worker's executable.
//!
//! A real process, spawned by the `session_agent_harness` job type exactly like a real agent CLI,
//! so tests exercise the same path (process capability, line protocol, exit codes) that the
//! `claude_code` and `codex` drivers use. One process runs one turn:
//!
//! ```text
//! blobhub-test-agent [--session-id <id>] [--model <m>] [--effort <e>] [--permissions <p>]
//!   stdin  <- {"type":"turn","text":"..."}
//!   stdout -> {"type":"session","session_id":"td_...","resumed":bool,"turn":n}
//!   stdout -> {"type":"permission_request","request_id":"req_1","tool":"ask","question":"..."}
//!   stdin  <- {"type":"permission_response","request_id":"req_1","approved":bool,"answer":"..."}
//!   stdout -> {"type":"text","text":"..."}
//!   stdout -> {"type":"turn_end","status":"completed","usage":{...},"duration_ms":n}
//! ```
//!
//! Behaviour of a turn, decided by its text: `crash` exits with status 3 before answering;
//! `sleep: <ms>` waits that long, then echoes; `ask: <question>` raises a permission request and
//! replies `answered: <answer>`; `think: <t>` and `tool: <command>` emit a thinking item and a
//! tool call with its result before the echo; `run: <command>` and `write: <path>` ask
//! permission for a `Bash` / `Write` call (with `input` `{command}` / `{file_path}`, as Claude
//! Code does) and reply `ran: <command>` / `wrote: <path>` when approved, else
//! `refused: <the reason it was given>`; `stamp` replies `stamp: read=<µs> sent=<µs>` (wall
//! clock when the turn was read and the reply written); anything else replies `echo: <text>`.
//! Lines `make: <path> <text>` and `link: <path> <target>` anywhere in the text first write a
//! file or make a symbolic link (relative to the working folder); a line `hold: <ms>` holds the
//! reply back that long after the first line's action (a turn left open for a test to act in).
//!
//! The session survives restarts: a fresh session id is minted when `--session-id` is absent, and
//! a small record under `<cwd>/.blobhub-test-agent/` counts its turns, so a resumed session reports
//! `resumed: true` and the next turn number. A `--session-id` those records do not know (while
//! they exist) is a lost session: the agent announces a new session and ends the turn `failed`.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// What a turn's text asks the agent to do.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Echo,
    Crash,
    Sleep(u64),
    Ask(String),
    /// Ask permission for a tool call (`Bash` or `Write`) with this input.
    Call {
        tool: &'static str,
        input: Value,
    },
    Think(String),
    Tool(String),
    /// Reply with the wall-clock times the turn was read and the reply written (for latency
    /// measurements against the platform's `created_at`).
    Stamp,
}

/// Every line `make: <path> <text>` of a turn writes `<text>` and a newline to `<path>` (relative
/// to the working folder, folders made on the way); every line `link: <path> <target>` makes
/// `<path>` a symbolic link to `<target>`. For tests of the agent's outbox.
fn make_files(text: &str) {
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("make: ") {
            let (path, body) = rest.split_once(' ').unwrap_or((rest, ""));
            let path = std::path::Path::new(path);
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Err(e) = std::fs::write(path, format!("{body}\n")) {
                eprintln!("blobhub-test-agent: make {}: {e}", path.display());
            }
        } else if let Some(rest) = line.strip_prefix("link: ")
            && let Some((path, target)) = rest.split_once(' ')
        {
            let path = std::path::Path::new(path);
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Err(e) = std::os::unix::fs::symlink(target, path) {
                eprintln!("blobhub-test-agent: link {}: {e}", path.display());
            }
        }
    }
}

/// A line `hold: <ms>` anywhere in the text: wait that long before the reply, after whatever the
/// first line did (an answered `ask:` included), so a test can act while the turn is still open.
fn hold_ms(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("hold: "))
        .and_then(|ms| ms.trim().parse().ok())
}

/// Reads the first line of the turn text; the rest of the text only matters to `echo`.
fn parse_action(text: &str) -> Action {
    let first = text.trim_start();
    if first == "crash" || first.starts_with("crash\n") {
        return Action::Crash;
    }
    if let Some(rest) = first.strip_prefix("sleep:") {
        let ms = rest.split_whitespace().next().unwrap_or("");
        if let Ok(ms) = ms.parse::<u64>() {
            return Action::Sleep(ms);
        }
    }
    if let Some(rest) = first.strip_prefix("ask:") {
        let question = rest.lines().next().unwrap_or("").trim();
        return Action::Ask(question.to_string());
    }
    if let Some(rest) = first.strip_prefix("run:") {
        let command = rest.lines().next().unwrap_or("").trim();
        return Action::Call {
            tool: "Bash",
            input: json!({"command": command}),
        };
    }
    if let Some(rest) = first.strip_prefix("write:") {
        let path = rest.lines().next().unwrap_or("").trim();
        return Action::Call {
            tool: "Write",
            input: json!({"file_path": path}),
        };
    }
    if let Some(rest) = first.strip_prefix("think:") {
        return Action::Think(rest.lines().next().unwrap_or("").trim().to_string());
    }
    if first == "stamp" || first.starts_with("stamp\n") {
        return Action::Stamp;
    }
    if let Some(rest) = first.strip_prefix("tool:") {
        return Action::Tool(rest.lines().next().unwrap_or("").trim().to_string());
    }
    Action::Echo
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    session_id: Option<String>,
    model: String,
    effort: String,
    permissions: String,
    help: bool,
}

/// What `--help` prints.
const USAGE: &str =
    "blobhub-test-agent: the scripted stand-in for a coding-agent CLI that the BlobHub worker's
tests and demo drive (docs/testing.md). One process runs one turn, JSON lines on stdin and stdout.

usage: blobhub-test-agent [--session-id <id>] [--model <m>] [--effort <e>] [--permissions <p>]

A turn's text decides what it does: `crash`, `sleep: <ms>`, `ask: <question>`, `think: <t>`,
`tool: <command>`, `run: <command>`, `write: <path>`, `stamp`; anything else is echoed.
";

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--session-id" => out.session_id = Some(value("--session-id")?),
            "--model" => out.model = value("--model")?,
            "--effort" => out.effort = value("--effort")?,
            "--permissions" => out.permissions = value("--permissions")?,
            "-h" | "--help" => out.help = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(out)
}

/// A message from the worker on stdin.
#[derive(Debug, PartialEq)]
enum Input {
    Turn(String),
    PermissionResponse {
        request_id: String,
        approved: bool,
        answer: String,
    },
}

fn parse_input(line: &str) -> Result<Input, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    match v.get("type").and_then(Value::as_str) {
        Some("turn") => Ok(Input::Turn(text("text"))),
        Some("permission_response") => Ok(Input::PermissionResponse {
            request_id: text("request_id"),
            approved: v.get("approved").and_then(Value::as_bool).unwrap_or(false),
            answer: text("answer"),
        }),
        other => Err(format!("unexpected input type {other:?}")),
    }
}

fn epoch_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn new_session_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("td_{:x}{:05x}", nanos, std::process::id() & 0xfffff)
}

/// Session ids become file names; anything else is refused rather than sanitised.
fn safe_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A session asked for by `--session-id` that this work folder's records do not know, although
/// the records exist (they are missing altogether in a folder the agent cannot write): its
/// transcript is gone, as when a CLI's stored conversation was deleted.
fn session_lost(id: &str) -> bool {
    let dir = std::path::Path::new(".blobhub-test-agent");
    dir.is_dir() && !dir.join(id).exists()
}

/// Counts the turns of a session in `<cwd>/.blobhub-test-agent/<id>`; best effort, since the
/// agent must still answer in a read-only work folder.
fn bump_turn(id: &str) -> (bool, u64) {
    let dir = std::path::Path::new(".blobhub-test-agent");
    let path = dir.join(id);
    let previous = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let turn = previous.unwrap_or(0) + 1;
    let _ = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, turn.to_string()));
    (previous.is_some(), turn)
}

struct Out<W: Write>(W);

impl<W: Write> Out<W> {
    fn send(&mut self, v: Value) {
        // A closed stdout means the worker is gone; nothing useful is left to do.
        if writeln!(self.0, "{v}")
            .and_then(|_| self.0.flush())
            .is_err()
        {
            std::process::exit(1);
        }
    }
}

/// The test agent's whole life: one turn on stdin and stdout, then exit.
pub fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("blobhub-test-agent: {e}");
            std::process::exit(2);
        }
    };
    if args.help {
        print!("{USAGE}");
        return;
    }
    let started = Instant::now();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = Out(std::io::stdout().lock());

    let (text, read_at) = match lines.next() {
        Some(Ok(line)) => match parse_input(&line) {
            Ok(Input::Turn(text)) => (text, epoch_micros()),
            Ok(other) => {
                eprintln!("blobhub-test-agent: expected a turn, got {other:?}");
                std::process::exit(2);
            }
            Err(e) => {
                eprintln!("blobhub-test-agent: {e}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("blobhub-test-agent: no turn on stdin");
            std::process::exit(2);
        }
    };

    let session_id = match args.session_id.as_deref() {
        Some(id) if safe_session_id(id) && session_lost(id) => {
            // What a CLI does whose stored conversation is gone: it silently starts another
            // session, and the turn fails.
            out.send(json!({"type": "session", "session_id": new_session_id(),
                            "resumed": false, "turn": 1}));
            out.send(json!({"type": "turn_end", "status": "failed",
                            "error": format!("no conversation found with session id {id}")}));
            std::process::exit(1);
        }
        Some(id) if safe_session_id(id) => id.to_string(),
        Some(id) => {
            eprintln!("blobhub-test-agent: unusable session id {id:?}");
            std::process::exit(2);
        }
        None => new_session_id(),
    };
    let (resumed, turn) = bump_turn(&session_id);
    out.send(
        json!({"type": "session", "session_id": session_id, "resumed": resumed, "turn": turn}),
    );

    make_files(&text);
    let reply = match parse_action(&text) {
        Action::Crash => {
            eprintln!("blobhub-test-agent: crashing as asked");
            std::process::exit(3);
        }
        Action::Sleep(ms) => {
            std::thread::sleep(Duration::from_millis(ms));
            format!("echo: {text}")
        }
        Action::Think(t) => {
            out.send(json!({"type": "thinking", "text": t}));
            format!("echo: {text}")
        }
        Action::Tool(command) => {
            out.send(json!({"type": "tool_call", "id": "call_1", "name": "Bash",
                            "input": {"command": command}}));
            out.send(
                json!({"type": "tool_result", "id": "call_1", "is_error": false,
                            "output": format!("ran {command}")}),
            );
            format!("echo: {text}")
        }
        Action::Ask(question) => {
            let request = json!({"type": "permission_request", "request_id": "req_1",
                                 "tool": "ask", "question": question});
            let (_, answer) = request_permission(&mut out, &mut lines, request);
            format!("answered: {answer}")
        }
        Action::Call { tool, input } => {
            let what = input
                .get("command")
                .or_else(|| input.get("file_path"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let request = json!({"type": "permission_request", "request_id": "req_1",
                                 "tool": tool, "input": input,
                                 "question": format!("{tool}: {what}")});
            match request_permission(&mut out, &mut lines, request) {
                (true, _) if tool == "Bash" => format!("ran: {what}"),
                (true, _) => format!("wrote: {what}"),
                (false, answer) => format!("refused: {answer}"),
            }
        }
        Action::Echo => format!("echo: {text}"),
        Action::Stamp => format!("stamp: read={read_at} sent={}", epoch_micros()),
    };
    if let Some(ms) = hold_ms(&text) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    out.send(json!({"type": "text", "text": reply}));
    let input_tokens = text.split_whitespace().count() as u64;
    let output_tokens = reply.split_whitespace().count() as u64;
    out.send(json!({
        "type": "turn_end",
        "status": "completed",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_read_tokens": 0, "cache_write_tokens": 0},
        "duration_ms": started.elapsed().as_millis() as u64,
        "model": args.model,
        "effort": args.effort,
        "permissions": args.permissions,
    }));
}

/// Send a permission request and wait for its response: (approved, the answer's text, or
/// `Approve`/`Deny` when it carries none). Exits when stdin closes first (the worker withdrew the
/// request).
fn request_permission<W: Write>(
    out: &mut Out<W>,
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    request: Value,
) -> (bool, String) {
    let request_id = request["request_id"].as_str().unwrap_or("").to_string();
    out.send(request);
    loop {
        match lines.next() {
            Some(Ok(line)) => match parse_input(&line) {
                Ok(Input::PermissionResponse {
                    request_id: id,
                    answer,
                    approved,
                }) if id == request_id => {
                    let answer = if answer.is_empty() {
                        if approved { "Approve" } else { "Deny" }.to_string()
                    } else {
                        answer
                    };
                    return (approved, answer);
                }
                Ok(_) => continue,
                Err(e) => eprintln!("blobhub-test-agent: ignoring input: {e}"),
            },
            _ => {
                out.send(json!({"type": "turn_end", "status": "cancelled",
                                "error": "permission request withdrawn"}));
                std::process::exit(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_from_the_first_line() {
        assert_eq!(parse_action("hello"), Action::Echo);
        assert_eq!(parse_action("crash"), Action::Crash);
        assert_eq!(parse_action("crashing is fun"), Action::Echo);
        assert_eq!(parse_action("sleep: 250"), Action::Sleep(250));
        assert_eq!(parse_action("sleep: soon"), Action::Echo);
        assert_eq!(
            parse_action("ask: may I?\n\nmore"),
            Action::Ask("may I?".into())
        );
        assert_eq!(parse_action("think: hmm"), Action::Think("hmm".into()));
        assert_eq!(parse_action("tool: ls -la"), Action::Tool("ls -la".into()));
        assert_eq!(parse_action("stamp"), Action::Stamp);
        assert_eq!(
            parse_action("run: git push origin"),
            Action::Call {
                tool: "Bash",
                input: json!({"command": "git push origin"})
            }
        );
        assert_eq!(
            parse_action("write: /etc/hosts"),
            Action::Call {
                tool: "Write",
                input: json!({"file_path": "/etc/hosts"})
            }
        );
    }

    #[test]
    fn arguments() {
        let a = parse_args(&[
            "--session-id".into(),
            "td_1".into(),
            "--model".into(),
            "m".into(),
        ])
        .unwrap();
        assert_eq!(a.session_id.as_deref(), Some("td_1"));
        assert_eq!(a.model, "m");
        assert!(parse_args(&["--session-id".into()]).is_err());
        assert!(parse_args(&["--bogus".into()]).is_err());
        assert!(parse_args(&["--help".into()]).unwrap().help);
    }

    #[test]
    fn inputs() {
        assert_eq!(
            parse_input(r#"{"type":"turn","text":"hi"}"#).unwrap(),
            Input::Turn("hi".into())
        );
        assert_eq!(
            parse_input(r#"{"type":"permission_response","request_id":"req_1","approved":true,"answer":"Approve"}"#)
                .unwrap(),
            Input::PermissionResponse {
                request_id: "req_1".into(),
                approved: true,
                answer: "Approve".into()
            }
        );
        assert!(parse_input("nope").is_err());
        assert!(parse_input(r#"{"type":"other"}"#).is_err());
    }

    #[test]
    fn session_ids() {
        assert!(safe_session_id(&new_session_id()));
        assert!(!safe_session_id("../x"));
        assert!(!safe_session_id(""));
    }
}
