//! Which agent session the next turn resumes after a turn that failed.
//!
//! A failed attempt that was asked to resume session X but advertised another session (the CLI
//! could not find X and started afresh), or advertised none at all, leaves a pointer that would
//! fail every later turn the same way. The pointer is then cleared, so the next activation starts
//! a new agent session instead of stranding the thread.

/// The session to keep after the last attempt of a turn: `requested` is the id it was asked to
/// resume, `emitted` the id it advertised (if any).
pub fn resolve_session_id(requested: &str, emitted: Option<&str>, failed: bool) -> String {
    match emitted.filter(|e| !e.is_empty()) {
        None => String::new(),
        Some(e) if failed && !requested.is_empty() && e != requested => String::new(),
        Some(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_session_id as r;

    #[test]
    fn the_resolution_rule() {
        assert_eq!(r("", None, true), "");
        assert_eq!(r("s1", None, true), "");
        assert_eq!(r("s1", Some(""), false), "");
        assert_eq!(r("s1", Some("s2"), true), "");
        assert_eq!(r("s1", Some("s1"), true), "s1");
        assert_eq!(r("", Some("s2"), true), "s2");
        assert_eq!(r("s1", Some("s2"), false), "s2");
    }
}
