//! Agent processes started ahead of their turn (guest/warm.rs runs them): the pure decisions.
//!
//! When a turn ends, or a thread becomes active, the harness starts the next turn's process at
//! once, exactly as the turn would ([`Driver::launch`](super::Driver::launch) needs no message),
//! writes its handshake and answers the handshake's requests, then holds it. The person's message
//! then goes to a process whose start-up (for Claude Code, node loading its bundle: most of the
//! time from the message to the first model request) is already over.
//!
//! Two rules keep that invisible to the person:
//! - a held process serves a turn only if the turn would start it identically ([`StartSpec`]:
//!   program, folder, environment, arguments, handshake); otherwise it is stopped and a fresh one
//!   started ([`mismatch`] says why, for the log);
//! - before its turn it may only shake hands: a line that would reach the thread (anything but the
//!   session's id), raise a request or end a turn makes it unusable, and it is stopped rather
//!   than given a turn ([`held_line`]). Nothing it said is posted before the turn is given to it.

use super::{AgentEvent, Launch, Step};
use crate::settings::Settings;

/// Everything a process is started with: equal specs start indistinguishable processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartSpec {
    pub program: String,
    pub cwd: String,
    /// The operator's `agents.<type>.env`, the driver's variables on top.
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// The handshake written at start.
    pub stdin: Vec<String>,
}

impl StartSpec {
    pub fn new(settings: &Settings, launch: Launch) -> StartSpec {
        // The operator's variables first, the driver's on top: the driver's are what make the
        // protocol work.
        let mut env = settings.env.clone();
        for (k, v) in launch.env {
            env.retain(|(name, _)| *name != k);
            env.push((k, v));
        }
        StartSpec {
            program: settings.executable.clone(),
            cwd: settings.work_folder.clone(),
            env,
            args: launch.args,
            stdin: launch.stdin,
        }
    }
}

/// Why a process started with `held` cannot serve a turn that would start one with `wanted`;
/// `None` when it can.
pub fn mismatch(held: &StartSpec, wanted: &StartSpec) -> Option<&'static str> {
    if held.program != wanted.program {
        Some("the executable changed")
    } else if held.cwd != wanted.cwd {
        Some("the work folder changed")
    } else if held.env != wanted.env {
        Some("the environment changed")
    } else if held.args != wanted.args {
        // The arguments carry the session to resume, the model, the effort and the permissions.
        Some("the arguments changed (session, model, effort or permissions)")
    } else if held.stdin != wanted.stdin {
        Some("the handshake changed")
    } else {
        None
    }
}

/// The most lines a held process may print before its turn; a handshake is a handful.
pub const MAX_HELD_LINES: usize = 64;

/// What to do with a line a held process printed before its turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// Part of the handshake: write its replies now, and keep its events (the session's id) for
    /// the turn, which reports them first.
    Keep,
    /// The process says something only a turn may say: it is stopped, never given a turn.
    Unusable(String),
}

/// Judge one line's [`Step`] of a held process; `seen` lines were kept before it.
pub fn held_line(step: &Step, seen: usize) -> Held {
    if seen >= MAX_HELD_LINES {
        return Held::Unusable(format!(
            "it printed more than {MAX_HELD_LINES} lines before its turn"
        ));
    }
    if step.finished {
        return Held::Unusable("it ended a turn before it was given one".into());
    }
    for event in &step.events {
        if !matches!(event, AgentEvent::Session(_)) {
            return Held::Unusable(format!(
                "it said something before its turn ({})",
                event_name(event)
            ));
        }
    }
    Held::Keep
}

fn event_name(event: &AgentEvent) -> &'static str {
    match event {
        AgentEvent::Session(_) => "session",
        AgentEvent::Text(_) => "text",
        AgentEvent::Thinking(_) => "thinking",
        AgentEvent::ToolCall { .. } => "tool call",
        AgentEvent::ToolResult { .. } => "tool result",
        AgentEvent::Status { .. } => "status",
        AgentEvent::PermissionRequest { .. } => "permission request",
        AgentEvent::Question { .. } => "question",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Driver, Start, claude_code::ClaudeCode, codex::Codex};
    use serde_json::Value;

    fn settings() -> Settings {
        Settings {
            executable: "claude".into(),
            model: "sonnet".into(),
            env: vec![("ANTHROPIC_BASE_URL".into(), "http://127.0.0.1:9".into())],
            ..Settings::for_tests("claude_code")
        }
    }

    fn spec(s: &Settings, resume: &str) -> StartSpec {
        let launch = ClaudeCode::default().launch(&Start {
            resume,
            settings: s,
            usage_total: None,
        });
        StartSpec::new(s, launch)
    }

    #[test]
    fn the_same_settings_and_session_reuse_the_process() {
        let s = settings();
        assert_eq!(mismatch(&spec(&s, "c1"), &spec(&s, "c1")), None);
        assert_eq!(mismatch(&spec(&s, ""), &spec(&s, "")), None);
    }

    #[test]
    fn anything_the_turn_would_start_differently_refuses_it() {
        let s = settings();
        let held = spec(&s, "c1");
        let args = Some("the arguments changed (session, model, effort or permissions)");
        assert_eq!(mismatch(&held, &spec(&s, "c2")), args, "another session");
        assert_eq!(mismatch(&held, &spec(&s, "")), args, "a new session");
        for changed in [
            Settings {
                model: "opus".into(),
                ..settings()
            },
            Settings {
                effort: "high".into(),
                ..settings()
            },
        ] {
            assert_eq!(mismatch(&held, &spec(&changed, "c1")), args);
        }
        let other = Settings {
            executable: "/opt/claude".into(),
            ..settings()
        };
        assert_eq!(
            mismatch(&held, &spec(&other, "c1")),
            Some("the executable changed")
        );
        let other = Settings {
            work_folder: "/elsewhere".into(),
            ..settings()
        };
        assert_eq!(
            mismatch(&held, &spec(&other, "c1")),
            Some("the work folder changed")
        );
        let other = Settings {
            env: vec![("ANTHROPIC_BASE_URL".into(), "http://127.0.0.1:10".into())],
            ..settings()
        };
        assert_eq!(
            mismatch(&held, &spec(&other, "c1")),
            Some("the environment changed")
        );
    }

    #[test]
    fn the_turn_s_message_is_not_part_of_the_start() {
        // The reuse decision never sees the message: `launch` cannot depend on it.
        let s = settings();
        let mut a = ClaudeCode::default();
        let mut b = ClaudeCode::default();
        let start = Start {
            resume: "c1",
            settings: &s,
            usage_total: None,
        };
        assert_eq!(a.launch(&start), b.launch(&start));
        assert_ne!(a.turn("one"), b.turn("two"));
        let codex = Settings::for_tests("codex");
        let start = Start {
            resume: "th",
            settings: &codex,
            usage_total: None,
        };
        assert_eq!(
            Codex::default().launch(&start),
            Codex::default().launch(&start)
        );
    }

    #[test]
    fn the_driver_s_variables_override_the_operator_s() {
        let s = Settings {
            env: vec![("A".into(), "operator".into()), ("B".into(), "b".into())],
            ..settings()
        };
        let launch = Launch {
            env: vec![("A".into(), "driver".into())],
            ..Launch::default()
        };
        assert_eq!(
            StartSpec::new(&s, launch).env,
            [
                ("B".to_string(), "b".to_string()),
                ("A".to_string(), "driver".to_string())
            ]
        );
    }

    #[test]
    fn a_held_process_may_only_shake_hands() {
        assert_eq!(held_line(&Step::default(), 0), Held::Keep);
        let session = Step::event(AgentEvent::Session("c1".into()));
        assert_eq!(held_line(&session, 3), Held::Keep);
        let reply = Step {
            replies: vec!["{}\n".into()],
            ..Step::default()
        };
        assert_eq!(held_line(&reply, 1), Held::Keep);
        let logged = Step {
            log: Some("not json".into()),
            ..Step::default()
        };
        assert_eq!(held_line(&logged, 1), Held::Keep);
        for (step, why) in [
            (Step::event(AgentEvent::Text("hi".into())), "text"),
            (
                Step::event(AgentEvent::PermissionRequest {
                    request_id: "r".into(),
                    tool: "Bash".into(),
                    input: Value::Null,
                    question: "?".into(),
                    session_option: false,
                }),
                "permission request",
            ),
            (
                Step::event(AgentEvent::Status {
                    status: "error".into(),
                    detail: "refused".into(),
                }),
                "status",
            ),
        ] {
            match held_line(&step, 0) {
                Held::Unusable(m) => assert!(m.contains(why), "{m}"),
                Held::Keep => panic!("{step:?} kept"),
            }
        }
        let ended = Step {
            finished: true,
            ..Step::default()
        };
        assert!(matches!(held_line(&ended, 0), Held::Unusable(_)));
        assert!(matches!(
            held_line(&Step::default(), MAX_HELD_LINES),
            Held::Unusable(_)
        ));
    }

    #[test]
    fn claude_s_handshake_is_kept() {
        // What the real CLI prints before its first message: the answer to `initialize` and the
        // in-process MCP server's handshake, each answered by the driver.
        let mut d = ClaudeCode::default();
        let s = settings();
        d.launch(&Start {
            resume: "",
            settings: &s,
            usage_total: None,
        });
        let lines = [
            r#"{"type":"control_response","response":{"subtype":"success","request_id":"blobhub_init","response":{"commands":[]}}}"#,
            r#"{"type":"control_request","request_id":"m1","request":{"subtype":"mcp_message","server_name":"blobhub","message":{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"claude-code","version":"2"}}}}}"#,
            r#"{"type":"control_request","request_id":"m2","request":{"subtype":"mcp_message","server_name":"blobhub","message":{"jsonrpc":"2.0","method":"notifications/initialized"}}}"#,
            r#"{"type":"control_request","request_id":"m3","request":{"subtype":"mcp_message","server_name":"blobhub","message":{"jsonrpc":"2.0","id":1,"method":"tools/list"}}}"#,
        ];
        for (i, l) in lines.iter().enumerate() {
            let step = d.on_stdout(l);
            assert_eq!(held_line(&step, i), Held::Keep, "{l}");
        }
    }
}
