//! Agent drivers: how the harness talks to an agent CLI.
//!
//! A driver is a small state machine over **one** child process (one attempt of a turn). It says
//! how to start the process ([`Driver::launch`]: arguments, environment, the handshake lines to
//! write first — nothing that depends on the person's message), hands it the turn
//! ([`Driver::turn`]: the message lines, written right after the handshake, or later when the
//! process was started ahead of the message: guest/warm.rs), turns every stdout line into events
//! for the thread *and* the lines to write back ([`Driver::on_stdout`]: control responses,
//! JSON-RPC replies), encodes a person's answer to a request it raised ([`Driver::answer`]), asks
//! the agent to stop ([`Driver::interrupt`]) and decides the attempt's outcome when the process
//! has exited ([`Driver::on_exit`]).
//!
//! Drivers are pure: no capability calls, no clock, no I/O. The turn loop (guest/turn.rs) owns the
//! process, the posting and the waiting, so every driver is unit-tested on recorded lines.

pub mod ask_user;
pub mod claude_code;
pub mod codex;
pub mod prestart;
pub mod test_agent;

use blobhub_agent_types::DriverKind;
use serde_json::Value;

use crate::settings::Settings;

/// Something an agent said during a turn, normalised across agents.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The agent's resumable session id.
    Session(String),
    Text(String),
    Thinking(String),
    ToolCall {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        id: String,
        is_error: bool,
        output: Value,
    },
    /// A status word (`api_retry`, …) with optional detail; `error` for agent errors.
    Status {
        status: String,
        detail: String,
    },
    /// The agent asks permission to use a tool and waits for [`Answer::Approve`] or
    /// [`Answer::Deny`].
    PermissionRequest {
        request_id: String,
        /// The tool's name (the prompt's subject).
        tool: String,
        /// The call's input as the policy of a `guarded` thread reads it (claude: the tool's
        /// input; codex: `{command}` or `{paths}`).
        input: Value,
        /// The question for the person.
        question: String,
        /// The agent can also take an approval for the rest of its session
        /// ([`Answer::ApproveForSession`]).
        session_option: bool,
    },
    /// The agent asks the person questions (AskUserQuestion-shaped objects: `question`,
    /// `header`, `options`, `multiSelect`) and waits for [`Answer::Answers`].
    Question {
        request_id: String,
        questions: Vec<Value>,
    },
}

/// Token counts of a turn, as the `turn_end` item reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub input_tokens_cached: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// As persisted (thread.yaml's `agent.usage_total`, a `turn_end`'s `agent_usage_total`).
    pub fn to_json(&self) -> Value {
        serde_json::json!({"input_tokens": self.input_tokens,
            "cached_input_tokens": self.input_tokens_cached, "output_tokens": self.output_tokens})
    }

    /// The persisted form back; `None` unless it is an object with counts.
    pub fn from_json(v: &Value) -> Option<Usage> {
        v.get("input_tokens")?.as_u64()?;
        Some(Usage {
            input_tokens: u64_of(v, "input_tokens"),
            input_tokens_cached: u64_of(v, "cached_input_tokens"),
            output_tokens: u64_of(v, "output_tokens"),
        })
    }

    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.input_tokens_cached += other.input_tokens_cached;
        self.output_tokens += other.output_tokens;
    }
}

/// What the process of an attempt is started with: everything but the person's message, so a
/// process can be started before the message arrives.
#[derive(Debug, Clone, Copy)]
pub struct Start<'a> {
    /// The agent session to resume; empty for a new one.
    pub resume: &'a str,
    pub settings: &'a Settings,
    /// The agent session's cumulative token counts after the previous attempt or turn, for
    /// agents that report only running totals (codex); `None` when unknown.
    pub usage_total: Option<&'a Usage>,
}

/// How to start the process of an attempt. Never depends on the turn's message: a process
/// started ahead with one `Launch` is used for a turn only if the turn's own `Launch` is equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launch {
    pub args: Vec<String>,
    /// Set in the child's environment on top of the operator's `agents.<type>.env`.
    pub env: Vec<(String, String)>,
    /// Written to stdin at once, in order (each a whole line with its newline): the handshake.
    pub stdin: Vec<String>,
}

/// What one stdout line produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// For the thread, in order.
    pub events: Vec<AgentEvent>,
    /// Written back to stdin at once (each a whole line with its newline).
    pub replies: Vec<String>,
    /// The agent ended its turn: stdin is closed so the process exits.
    pub finished: bool,
    /// A line that is not the agent's protocol, for the thread's agent log (never fatal).
    pub log: Option<String>,
}

impl Step {
    pub fn event(event: AgentEvent) -> Step {
        Step {
            events: vec![event],
            ..Step::default()
        }
    }
}

/// A person's answer to a request the driver raised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer<'a> {
    Approve,
    /// Approved, and the agent may make the same kind of call again without asking (drivers
    /// whose agent has no such grant treat it as [`Answer::Approve`]).
    ApproveForSession,
    /// Denied, with the reason the agent is told.
    Deny(&'a str),
    /// One `{question, answer: [labels]}` per question.
    Answers(&'a [Value]),
    /// The question could not be put to a person (or was withdrawn); the agent is told why.
    Unanswered(&'a str),
}

/// How an attempt's process ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Completed,
    /// The agent ended the turn because it was asked to.
    Interrupted,
    /// The model API failed in a way worth resuming later (overloaded, rate limited, 5xx).
    TransientError,
    Failed,
}

impl Status {
    /// The word of the `turn_end` item.
    pub fn word(&self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Interrupted => "interrupted",
            Status::TransientError | Status::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// Why, for people, when not completed.
    pub error: String,
    pub usage: Usage,
    /// As the agent measured it.
    pub duration_ms: Option<u64>,
    /// The agent's own end-of-turn line was seen (false: it exited without one).
    pub ended_by_agent: bool,
    /// The agent session's cumulative token counts at the end of the attempt, when the agent
    /// reports them (codex): the next attempt's baseline.
    pub usage_total: Option<Usage>,
}

impl Outcome {
    /// An attempt whose process ended without the agent's end-of-turn line.
    pub fn without_end(exit: Exit) -> Outcome {
        let error = match (exit.code, exit.signal) {
            (Some(c), _) => format!("agent exited with status {c} before ending its turn"),
            (None, Some(s)) => format!("agent was killed by signal {s} before ending its turn"),
            _ => "agent ended without finishing its turn".to_string(),
        };
        Outcome {
            status: Status::Failed,
            error,
            usage: Usage::default(),
            duration_ms: None,
            ended_by_agent: false,
            usage_total: None,
        }
    }
}

/// An agent CLI driven one process per attempt.
pub trait Driver {
    /// How to start the process; called once, before anything else.
    fn launch(&mut self, start: &Start<'_>) -> Launch;
    /// The lines that hand the process its turn: the person's messages, joined (or the
    /// continuation after a transient error). Called once, after [`Driver::launch`], at once or
    /// after any number of [`Driver::on_stdout`] calls (the handshake's lines of a process
    /// started ahead); the driver holds back whatever must wait for a handshake reply.
    fn turn(&mut self, text: &str) -> Vec<String>;
    /// One stdout line (without its line ending). Lines that are not the agent's protocol are
    /// reported as a `log` status by the driver's caller, never fatal.
    fn on_stdout(&mut self, line: &str) -> Step;
    /// The lines that carry `answer` to the request `request_id`.
    fn answer(&mut self, request_id: &str, answer: Answer<'_>) -> Vec<String>;
    /// The lines that ask the agent to end the turn now; empty when it has no such request (the
    /// caller then terminates the process).
    fn interrupt(&mut self) -> Vec<String>;
    /// The attempt's outcome once the process has exited.
    fn on_exit(&mut self, exit: Exit) -> Outcome;
    /// The turn carries images: a driver whose agent reads them natively sends `native` instead
    /// of the turn's text (called before [`Driver::turn`]). Others keep the text, which names
    /// every file with its path.
    fn set_native(&mut self, native: &crate::attachments::NativeInput) {
        let _ = native;
    }
}

/// A fresh driver for an agent type's driver kind.
pub fn driver_for(kind: DriverKind) -> Box<dyn Driver> {
    match kind {
        DriverKind::TestAgent => Box::new(test_agent::TestAgent::default()),
        DriverKind::ClaudeCode => Box::new(claude_code::ClaudeCode::default()),
        DriverKind::Codex => Box::new(codex::Codex::default()),
    }
}

pub(crate) fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

pub(crate) fn u64_of(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}
