//! The vocabulary of policy rules (`guarded` permissions), shared by the host, which checks
//! config.yaml's `policy.rules` at start, and the harness, which checks a thread's `policy` block
//! at activation. One checker, so the two can never accept different rules.

/// What a call does: `write` (file edits), `exec` (shell commands), `read`, `network`.
pub const EFFECTS: &[&str] = &["write", "exec", "read", "network"];
/// What a rule (or a policy's `default`) decides.
pub const ACTIONS: &[&str] = &["allow", "deny", "ask"];
/// Values of a rule's `outside`: none, outside the work folder, outside the artifacts outbox.
pub const OUTSIDE: &[&str] = &["", "work_folder", "outbox"];
/// The keys a rule may have.
pub const RULE_KEYS: &[&str] = &["id", "effect", "action", "command", "outside"];
/// The keys of config.yaml's `policy` block.
pub const CONFIG_KEYS: &[&str] = &["allow_autonomous", "rules"];
/// The keys of a thread's `policy` block.
pub const THREAD_KEYS: &[&str] = &["alias", "default", "rules"];

/// Checks one rule's fields (`action` already defaulted to `allow`). The message names the
/// field at fault.
///
/// Beyond the reference: a `command` on a rule that is not `exec` is refused. The reference
/// ignores it there, so `{effect: write, action: allow, command: [...]}` would allow every write
/// while looking narrow.
pub fn check_rule(
    effect: &str,
    action: &str,
    outside: &str,
    has_command: bool,
) -> Result<(), String> {
    if !EFFECTS.contains(&effect) {
        return Err(format!(
            "effect `{effect}` is not one of {}",
            EFFECTS.join(", ")
        ));
    }
    if !ACTIONS.contains(&action) {
        return Err(format!(
            "action `{action}` is not one of {}",
            ACTIONS.join(", ")
        ));
    }
    if !OUTSIDE.contains(&outside) {
        return Err(format!(
            "outside `{outside}` is not one of work_folder, outbox (or empty)"
        ));
    }
    if !outside.is_empty() && effect != "write" && effect != "read" {
        return Err(format!(
            "outside applies only to write and read rules, not {effect}"
        ));
    }
    if outside == "outbox" && action == "allow" {
        return Err("outside: outbox cannot be used on an allow rule".into());
    }
    if has_command && effect != "exec" {
        return Err(format!("command applies only to exec rules, not {effect}"));
    }
    Ok(())
}

/// Checks a policy's `default`.
pub fn check_default(default: &str) -> Result<(), String> {
    if ACTIONS.contains(&default) {
        Ok(())
    } else {
        Err(format!(
            "default `{default}` is not one of {}",
            ACTIONS.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_checks_from_the_spec() {
        assert!(check_rule("exec", "deny", "", true).is_ok());
        assert!(check_rule("write", "deny", "work_folder", false).is_ok());
        assert!(check_rule("read", "ask", "outbox", false).is_ok());
        for (effect, action, outside, command, why) in [
            ("shell", "deny", "", false, "effect"),
            ("exec", "block", "", false, "action"),
            ("write", "deny", "home", false, "outside"),
            (
                "exec",
                "deny",
                "work_folder",
                false,
                "only to write and read",
            ),
            ("write", "allow", "outbox", false, "allow rule"),
            ("write", "allow", "", true, "command applies only"),
        ] {
            let e = check_rule(effect, action, outside, command).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert!(check_default("ask").is_ok());
        assert!(check_default("maybe").is_err());
    }
}
