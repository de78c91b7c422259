//! `blobhub:worker/state`: atomic writes and appends inside the section's state folder.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::SectionHost;
use crate::runtime::bindings::state as wit;

/// `path` inside `root`, refusing absolute paths, `..` and anything that is not plain.
pub fn inside(root: &Path, path: &str) -> Result<PathBuf, String> {
    let rel = Path::new(path.trim_start_matches('/'));
    if path.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("`{path}` is not a path inside the state folder"));
    }
    Ok(root.join(rel))
}

/// Write `contents` to a 0600 temporary sibling and rename it over `target`.
pub fn write_atomic(target: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let parent = target.parent().unwrap_or(Path::new("."));
    crate::state_tree::create_private_dir(parent)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", ulid::Ulid::new()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl wit::Host for SectionHost {
    fn write_atomic(
        &mut self,
        path: String,
        contents: Vec<u8>,
    ) -> wasmtime::Result<Result<(), String>> {
        self.busy.reset();
        let result = inside(&self.section.state_dir, &path).and_then(|target| {
            write_atomic(&target, &contents).map_err(|e| format!("{path}: {e}"))
        });
        Ok(result)
    }

    fn append_line(&mut self, path: String, line: String) -> wasmtime::Result<Result<(), String>> {
        self.busy.reset();
        let result = inside(&self.section.state_dir, &path).and_then(|target| {
            (|| {
                use std::os::unix::fs::OpenOptionsExt;
                if let Some(parent) = target.parent() {
                    crate::state_tree::create_private_dir(parent)?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&target)?;
                file.write_all(format!("{line}\n").as_bytes())
            })()
            .map_err(|e: std::io::Error| format!("{path}: {e}"))
        });
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        let root = Path::new("/state");
        assert_eq!(inside(root, "a/b.md").unwrap(), Path::new("/state/a/b.md"));
        assert_eq!(inside(root, "/a").unwrap(), Path::new("/state/a"));
        assert!(inside(root, "../x").is_err());
        assert!(inside(root, "a/../../x").is_err());
        assert!(inside(root, "").is_err());
    }
}
