//! Where a job type may start a program: the rule behind `workspace.allowed_roots`.
//!
//! A session's thread names its agent's work folder, so whoever can write a thread envelope
//! chooses where an agent runs as the worker's user. The host, which starts every program,
//! confines that folder (a job type cannot get around it): inside an allowed root, never inside
//! the worker's state tree (its credentials live there), never a system folder.

use std::path::{Component, Path, PathBuf};

/// Folders no agent is started in, whatever the roots say: the file system's root, and the
/// system's programs, libraries, configuration, kernel interfaces and service state.
const SYSTEM_FOLDERS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/var/lib", "/var/log", "/var/run",
];

/// `path` with `.` and `..` resolved lexically (no file system access): `/a/b/../c` → `/a/c`.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether an absolute, normalised `path` may be a work folder; `Err` says why not.
pub fn allowed(path: &Path, roots: &[PathBuf], tree: Option<&Path>) -> Result<(), &'static str> {
    if path == Path::new("/") || SYSTEM_FOLDERS.iter().any(|s| path.starts_with(s)) {
        return Err("it is a system folder");
    }
    if tree.is_some_and(|t| path.starts_with(t)) {
        return Err("it is inside the worker's state tree");
    }
    let inside = roots.iter().any(|root| {
        path.starts_with(root)
            || root
                .canonicalize()
                .is_ok_and(|real_root| path.starts_with(real_root))
    });
    if !inside {
        return Err("it is outside the allowed roots");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(
            normalize(Path::new("/../../proc/self")),
            PathBuf::from("/proc/self")
        );
        assert_eq!(normalize(Path::new("/")), PathBuf::from("/"));
    }

    #[test]
    fn roots_state_tree_and_system_folders() {
        let roots = [PathBuf::from("/home/u")];
        let tree = Some(Path::new("/home/u/.blobhub-worker"));
        assert_eq!(allowed(Path::new("/home/u/p"), &roots, tree), Ok(()));
        assert_eq!(allowed(Path::new("/home/u"), &roots, tree), Ok(()));
        for (p, why) in [
            ("/", "system"),
            ("/etc", "system"),
            ("/proc/self", "system"),
            ("/usr/lib", "system"),
            ("/home/u/.blobhub-worker", "state tree"),
            ("/home/u/.blobhub-worker/jobs/x", "state tree"),
            ("/home/other", "outside"),
            ("/home/u2", "outside"),
            ("/root", "outside"),
        ] {
            let e = allowed(Path::new(p), &roots, tree).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
        // A root that is a system folder does not make its folders allowed.
        assert!(allowed(Path::new("/etc/x"), &[PathBuf::from("/")], None).is_err());
        assert_eq!(
            allowed(Path::new("/srv/x"), &[PathBuf::from("/")], None),
            Ok(())
        );
    }
}
