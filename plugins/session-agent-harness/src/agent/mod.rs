//! Agent drivers: how the harness talks to an agent CLI.
//!
//! Every driver is the same shape — a child process per turn, speaking lines — and differs only in
//! its command line and in how lines map to [`AgentEvent`]s. The turn loop (guest side) spawns the
//! process through the host's process capability, feeds stdout lines to [`Driver::parse_line`] and
//! writes whatever the driver encodes to stdin. That keeps the drivers pure and unit-testable; the
//! `claude_code` and `codex` drivers will implement the same trait.

pub mod test_agent;

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
    /// A status word (`init`, `api_retry`, …) with optional detail; `error` for agent errors.
    Status {
        status: String,
        detail: String,
    },
    /// The agent asks permission to do something and waits for the answer on stdin.
    PermissionRequest {
        request_id: String,
        tool: String,
        question: String,
    },
    /// The turn is over.
    TurnEnd {
        status: String,
        usage: Usage,
        duration_ms: Option<u64>,
        error: String,
    },
}

/// Token counts of a turn, as the `turn_end` item reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub input_tokens_cached: u64,
    pub output_tokens: u64,
}

/// An agent CLI driven one process per turn.
pub trait Driver {
    /// Arguments for the process of one turn, resuming `session_id` when not empty.
    fn args(&self, settings: &Settings, session_id: &str) -> Vec<String>;
    /// What to write on stdin to start the turn.
    fn encode_turn(&self, text: &str) -> String;
    /// What to write on stdin to answer a permission request.
    fn encode_permission(&self, request_id: &str, approved: bool, answer: &str) -> String;
    /// One stdout line; `None` for lines that carry nothing for the thread.
    fn parse_line(&self, line: &str) -> Option<AgentEvent>;
}

/// The driver for an agent type, if this build has one.
pub fn driver_for(agent_type: &str) -> Option<Box<dyn Driver>> {
    match agent_type {
        "test_double" => Some(Box::new(test_agent::TestAgent)),
        _ => None,
    }
}
