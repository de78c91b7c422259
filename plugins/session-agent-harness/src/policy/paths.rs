//! Where a call's path lands, for `outside` rules.
//!
//! The harness runs sandboxed and cannot look at the work folder, so paths are resolved
//! lexically: a relative path is joined to the work folder, then `.` and `..` are folded. An
//! empty path or one holding a NUL counts as outside (as in the reference, a path that cannot be
//! resolved is never trusted). Symbolic links are not followed: see docs/session-agent-harness.md.

/// The absolute, folded form of `path` (relative ones are taken from `work_folder`); `None`
/// when it cannot be resolved.
pub fn resolve(work_folder: &str, path: &str) -> Option<String> {
    if path.is_empty() || path.contains('\0') || work_folder.is_empty() {
        return None;
    }
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{work_folder}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Whether `path` resolves to `root` or below it (`root` already absolute).
pub fn inside(root: &str, work_folder: &str, path: &str) -> bool {
    let (Some(root), Some(p)) = (resolve("/", root), resolve(work_folder, path)) else {
        return false;
    };
    root == "/" || p == root || p.starts_with(&format!("{root}/"))
}

/// The outbox as a policy root: usable only when relative, non-empty and strictly inside the
/// work folder.
pub fn outbox_root(work_folder: &str, outbox: &str) -> Option<String> {
    if outbox.is_empty() || outbox.starts_with('/') {
        return None;
    }
    let wf = resolve("/", work_folder)?;
    let root = resolve(&wf, outbox)?;
    root.starts_with(&format!("{wf}/")).then_some(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_resolution() {
        for (path, want) in [
            ("src/a.rs", Some("/w/src/a.rs")),
            ("./src/../b", Some("/w/b")),
            ("../etc/passwd", Some("/etc/passwd")),
            ("/w/x/../../etc", Some("/etc")),
            ("/tmp//x/", Some("/tmp/x")),
            ("", None),
            ("a\0b", None),
        ] {
            assert_eq!(resolve("/w", path).as_deref(), want, "{path:?}");
        }
    }

    #[test]
    fn containment() {
        assert!(inside("/w", "/w", "src/a.rs"));
        assert!(inside("/w", "/w", "/w"));
        assert!(!inside("/w", "/w", "/wx/a"));
        assert!(!inside("/w", "/w", "../w2/a"));
        assert!(!inside("/w", "/w", ""));
        assert!(inside("/w/", "/w", "/w/a"));
        assert_eq!(outbox_root("/w", "out").as_deref(), Some("/w/out"));
        assert_eq!(outbox_root("/w", "/w/out"), None);
        assert_eq!(outbox_root("/w", "."), None);
        assert_eq!(outbox_root("/w", "../out"), None);
        assert_eq!(outbox_root("/w", ""), None);
    }
}
