//! Whether a section is doing work, for the feed's poll cadence (`subscription.set-active`).
//!
//! A section is active while at least one of its threads has an agent turn running that is not
//! waiting for a person's answer. A held prompt counts as idle: the answer must reach the agent
//! quickly, and the idle cadence polls more often.

use std::collections::BTreeSet;

/// The threads that keep the section active.
#[derive(Debug, Default)]
pub struct Activity {
    working: BTreeSet<String>,
}

impl Activity {
    /// Record one thread's state; the section's new activity when it changed, else `None`.
    pub fn update(&mut self, thread: &str, turn_running: bool, prompt_open: bool) -> Option<bool> {
        let before = self.is_active();
        if turn_running && !prompt_open {
            self.working.insert(thread.to_string());
        } else {
            self.working.remove(thread);
        }
        let after = self.is_active();
        (before != after).then_some(after)
    }

    pub fn is_active(&self) -> bool {
        !self.working.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_while_a_turn_runs_unheld() {
        let mut a = Activity::default();
        assert!(!a.is_active(), "idle by default");
        assert_eq!(a.update("t1", true, false), Some(true), "turn starts");
        assert_eq!(a.update("t2", true, false), None, "already active");
        assert_eq!(a.update("t1", true, true), None, "t2 still works");
        assert_eq!(a.update("t2", true, true), Some(false), "both held: idle");
        assert_eq!(a.update("t2", true, false), Some(true), "answer delivered");
        assert_eq!(a.update("t2", false, false), Some(false), "turn ended");
        assert_eq!(a.update("t2", false, false), None, "no change, no call");
        assert_eq!(a.update("t1", false, false), None);
        assert!(!a.is_active());
    }
}
