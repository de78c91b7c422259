//! The policy gate of `guarded` threads inside a turn: the `policy_applied` item that opens
//! every guarded turn, and the decision on each permission request (a `policy_denied` item when
//! a rule refuses). `ask` leaves the request to a person, as in `approval` mode.

use std::rc::Rc;

use blobhub_worker_sdk::log::Level;
use blobhub_worker_sdk::serde_json::{Value, json};

use super::attempt::{TurnState, emit};
use super::ctx::log;
use super::thread::Thread;
use crate::policy;
use crate::settings::Settings;

/// What the gate decided without a person.
pub enum Gated {
    Allow,
    /// Refused by a rule; the agent is told this.
    Deny(String),
}

/// Post `policy_applied` when the thread is guarded (every turn: the proof the policy was
/// enforced for it).
pub async fn applied(t: &Rc<Thread>, settings: &Settings, st: &mut TurnState) {
    if let Some(gate) = &settings.gate {
        emit(t, st, gate.applied_item()).await;
    }
}

/// Decide a permission request of a guarded thread; `None` when a person decides (not guarded,
/// or an `ask`).
pub async fn check(
    t: &Rc<Thread>,
    settings: &Settings,
    st: &mut TurnState,
    tool: &str,
    input: &Value,
) -> Option<Gated> {
    let gate = settings.gate.as_ref()?;
    let call = policy::call_of(settings.driver, tool, input);
    let decision = gate.decide(&call);
    log(
        Level::Info,
        "policy_decision",
        Some(&t.alias),
        json!({"turn_id": st.turn_id, "tool": tool, "effect": call.effect,
               "action": decision.action, "rule": decision.rule}),
    );
    match decision.action.as_str() {
        "allow" => Some(Gated::Allow),
        "deny" => {
            emit(t, st, policy::denied_item(&decision, &call)).await;
            Some(Gated::Deny(policy::denial_for_agent(&decision)))
        }
        _ => None,
    }
}
