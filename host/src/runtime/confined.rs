//! File operations confined to one folder: what the `state` capability writes for a job type.
//!
//! A job type controls the contents of its own state folder through WASI, so every name in it is
//! hostile: a guest could plant a symbolic link (`threads -> ../../..`) and then ask the host to
//! write through it. The checks here therefore never look at a path string and then open it;
//! they walk the path one component at a time, each opened relative to the directory handle of
//! the previous one with `O_NOFOLLOW`. A link anywhere on the way is refused (`ELOOP`/`ENOTDIR`),
//! whoever swapped it in and whenever, because there is no moment at which the host resolves a
//! name that it has not already pinned by handle. `..`, absolute paths and empty components are
//! refused before any system call.
//!
//! Folders made here are 0700, files 0600, whatever the umask.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{
    AtFlags, Mode, OFlags, ResolveFlags, mkdirat, openat, openat2, renameat, unlinkat,
};
use rustix::io::Errno;

/// Why a confined operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfinedError {
    /// The path is not a plain relative path (absolute, `..`, empty).
    #[error("`{0}` is not a path inside the state folder")]
    NotInside(String),
    /// A component on the way is a symbolic link (or not a folder where one is needed).
    #[error(
        "`{0}` passes through a symbolic link or a non-folder; the state capability does not follow links"
    )]
    Link(String),
    /// The file is larger than the limit (at least this many bytes).
    #[error("`{path}` is larger than {limit} bytes")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("`{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The plain components of `path`, relative to the confined folder. A leading `/` is allowed (the
/// guest sees its state folder as `/`).
fn components(path: &str) -> Result<Vec<&str>, ConfinedError> {
    let not_inside = || ConfinedError::NotInside(path.to_string());
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Err(not_inside());
    }
    let mut parts = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(name) => parts.push(name.to_str().ok_or_else(not_inside)?),
            Component::CurDir => {}
            _ => return Err(not_inside()),
        }
    }
    if parts.is_empty() {
        return Err(not_inside());
    }
    Ok(parts)
}

fn io(path: &str, errno: Errno) -> ConfinedError {
    match errno {
        // O_NOFOLLOW on a link gives ELOOP; O_DIRECTORY on a file or a link, ENOTDIR.
        Errno::LOOP | Errno::NOTDIR | Errno::MLINK => ConfinedError::Link(path.to_string()),
        e => ConfinedError::Io {
            path: path.to_string(),
            source: e.into(),
        },
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Open the confined folder itself. The root may be reached through links (the operator chose
/// it); only what lies below it is confined.
fn open_root(root: &Path) -> Result<OwnedFd, ConfinedError> {
    let shown = root.display().to_string();
    openat(
        rustix::fs::CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(&shown, e))
}

/// The handle of the folder `parts` inside `root`, creating missing folders (0700) on the way.
fn walk(root: &Path, path: &str, parts: &[&str]) -> Result<OwnedFd, ConfinedError> {
    let mut dir = open_root(root)?;
    if parts.is_empty() {
        return Ok(dir);
    }
    // One system call when the folders exist (every append to a thread's log): the kernel walks
    // the path with the same guarantees as the loop below, no link anywhere (`NO_SYMLINKS`,
    // `NO_MAGICLINKS`) and nothing outside `dir` (`BENEATH`). A missing folder, or a kernel or
    // sandbox without `openat2`, takes the loop, which also creates folders.
    match openat2(
        &dir,
        parts.join("/"),
        DIR_FLAGS,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => return Ok(fd),
        Err(Errno::LOOP | Errno::NOTDIR | Errno::XDEV) => {
            return Err(ConfinedError::Link(path.to_string()));
        }
        Err(_) => {}
    }
    for name in parts {
        let next = match openat(&dir, *name, DIR_FLAGS, Mode::empty()) {
            Err(Errno::NOENT) => {
                match mkdirat(&dir, *name, Mode::RWXU) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io(path, e)),
                }
                openat(&dir, *name, DIR_FLAGS, Mode::empty())
            }
            other => other,
        }
        .map_err(|e| io(path, e))?;
        dir = next;
    }
    Ok(dir)
}

/// Replace `path` (inside `root`) with `contents`: written to a 0600 temporary sibling, synced,
/// then renamed over the target. A rename replaces the directory entry itself, so a link planted
/// at the target is replaced, never written through.
pub fn write_atomic(root: &Path, path: &str, contents: &[u8]) -> Result<(), ConfinedError> {
    let parts = components(path)?;
    let (name, folders) = parts.split_last().expect("components are never empty");
    let dir = walk(root, path, folders)?;
    let tmp = format!(".{name}.tmp-{}", ulid::Ulid::new());
    let file = openat(
        &dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(|e| io(path, e))?;
    let result = (|| {
        let mut file = std::fs::File::from(file);
        file.write_all(contents)?;
        file.sync_all()?;
        renameat(&dir, tmp.as_str(), &dir, *name).map_err(std::io::Error::from)
    })();
    result.map_err(|source| {
        let _ = unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        match source.raw_os_error().map(Errno::from_raw_os_error) {
            Some(errno) => io(path, errno),
            None => ConfinedError::Io {
                path: path.to_string(),
                source,
            },
        }
    })
}

/// Append `line` and a newline to `path` (inside `root`), creating it 0600. The last component is
/// opened with `O_NOFOLLOW` (a link there is refused) and `O_NONBLOCK` (a FIFO cannot stall the
/// host), and must be a regular file.
pub fn append_line(root: &Path, path: &str, line: &str) -> Result<(), ConfinedError> {
    let parts = components(path)?;
    let (name, folders) = parts.split_last().expect("components are never empty");
    let dir = walk(root, path, folders)?;
    let fd = openat(
        &dir,
        *name,
        OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(|e| io(path, e))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io(path, e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(ConfinedError::Link(path.to_string()));
    }
    let mut file = std::fs::File::from(fd);
    let mut data = Vec::with_capacity(line.len() + 1);
    data.extend_from_slice(line.as_bytes());
    data.push(b'\n');
    file.write_all(&data).map_err(|source| ConfinedError::Io {
        path: path.to_string(),
        source,
    })
}

/// The contents of the regular file `path` inside `root`, at most `limit` bytes (more is an
/// error); `Ok(None)` when it does not exist.
pub fn read(root: &Path, path: &str, limit: u64) -> Result<Option<Vec<u8>>, ConfinedError> {
    use std::io::Read;
    let parts = components(path)?;
    let (name, folders) = parts.split_last().expect("components are never empty");
    let mut dir = open_root(root)?;
    for folder in folders {
        dir = match openat(&dir, *folder, DIR_FLAGS, Mode::empty()) {
            Err(Errno::NOENT) => return Ok(None),
            other => other.map_err(|e| io(path, e))?,
        };
    }
    let fd = match openat(
        &dir,
        *name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Err(Errno::NOENT) => return Ok(None),
        other => other.map_err(|e| io(path, e))?,
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| io(path, e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(ConfinedError::Link(path.to_string()));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ConfinedError::Io {
            path: path.to_string(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(ConfinedError::TooLarge {
            path: path.to_string(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(Some(bytes))
}

/// Make the folder `path` inside `root` (and the folders on the way, 0700). With `ignore_all`,
/// also create `<path>/.gitignore` holding `*` unless an entry of that name exists (an existing
/// one, whatever it is, is left alone and never written through).
pub fn ensure_folder(root: &Path, path: &str, ignore_all: bool) -> Result<(), ConfinedError> {
    let parts = components(path)?;
    let dir = walk(root, path, &parts)?;
    if !ignore_all {
        return Ok(());
    }
    match openat(
        &dir,
        ".gitignore",
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    ) {
        Ok(fd) => std::fs::File::from(fd)
            .write_all(b"*\n")
            .map_err(|source| ConfinedError::Io {
                path: format!("{path}/.gitignore"),
                source,
            }),
        Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(io(path, e)),
    }
}

/// What [`list_tree`] found at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Folder,
    Link,
    Other,
}

/// One entry below a listed folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the listed folder, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    /// Bytes of a regular file; 0 otherwise.
    pub size: u64,
}

/// How deep [`list_tree`] goes below the listed folder.
const LIST_DEPTH: usize = 64;

/// Every entry below the folder `path` inside `root`, sorted by path, without following links:
/// a link is listed and never entered, folders are opened by handle with `O_NOFOLLOW`. At most
/// `max_entries` entries and [`LIST_DEPTH`] levels. A folder that does not exist lists as empty.
pub fn list_tree(root: &Path, path: &str, max_entries: usize) -> Result<Vec<Entry>, ConfinedError> {
    let parts = components(path)?;
    let mut dir = open_root(root)?;
    for folder in &parts {
        dir = match openat(&dir, *folder, DIR_FLAGS, Mode::empty()) {
            Err(Errno::NOENT) => return Ok(Vec::new()),
            other => other.map_err(|e| io(path, e))?,
        };
    }
    let mut out = Vec::new();
    list_into(&dir, "", path, &mut out, max_entries, 0)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn list_into(
    dir: &OwnedFd,
    prefix: &str,
    shown: &str,
    out: &mut Vec<Entry>,
    max_entries: usize,
    depth: usize,
) -> Result<(), ConfinedError> {
    use rustix::fs::{Dir, FileType, statat};
    let mut names = Vec::new();
    let listing = Dir::read_from(dir).map_err(|e| io(shown, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| io(shown, e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        // A name that is not UTF-8 cannot be named back through this interface: skipped.
        if let Ok(name) = std::str::from_utf8(name) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    for name in names {
        if out.len() >= max_entries {
            return Ok(());
        }
        let Ok(stat) = statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Folder,
            FileType::Symlink => EntryKind::Link,
            _ => EntryKind::Other,
        };
        out.push(Entry {
            path: rel.clone(),
            kind,
            size: if kind == EntryKind::File {
                stat.st_size as u64
            } else {
                0
            },
        });
        if kind == EntryKind::Folder && depth < LIST_DEPTH {
            // Swapped for a link since the stat: O_NOFOLLOW refuses it, and it is not entered.
            if let Ok(sub) = openat(dir, name.as_str(), DIR_FLAGS, Mode::empty()) {
                list_into(&sub, &rel, shown, out, max_entries, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Bytes used by regular files under `root`, counted without following links (a link counts as
/// nothing: what it points to is not the guest's). Hard links are counted once per name.
pub fn usage_bytes(root: &Path) -> u64 {
    fn walk(dir: &Path, total: &mut u64, depth: usize) {
        // A guest can nest folders deeply; past this the remainder is not worth a stack.
        if depth > 64 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            // `file_type` of a DirEntry does not follow links.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                walk(&entry.path(), total, depth + 1);
            } else if kind.is_file()
                && let Ok(meta) = entry.metadata()
            {
                *total = total.saturating_add(meta.len());
            }
        }
    }
    let mut total = 0;
    walk(root, &mut total, 0);
    total
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        std::fs::create_dir(&root).unwrap();
        (dir, root)
    }

    #[test]
    fn plain_paths_are_written_with_private_modes() {
        let (_t, root) = tree();
        write_atomic(&root, "a/b/c.json", b"{}").unwrap();
        append_line(&root, "/a/log", "one").unwrap();
        append_line(&root, "./a/log", "two").unwrap();
        assert_eq!(std::fs::read(root.join("a/b/c.json")).unwrap(), b"{}");
        assert_eq!(
            std::fs::read_to_string(root.join("a/log")).unwrap(),
            "one\ntwo\n"
        );
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("a"), 0o700);
        assert_eq!(mode("a/b"), 0o700);
        assert_eq!(mode("a/b/c.json"), 0o600);
        assert_eq!(mode("a/log"), 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(root.join("a/b")).unwrap().count(), 1);
    }

    #[test]
    fn paths_that_are_not_plain_are_refused_before_any_call() {
        let (_t, root) = tree();
        for bad in ["", "/", ".", "..", "../x", "a/../../x", "a/..", "./../x"] {
            assert!(
                matches!(
                    write_atomic(&root, bad, b"x"),
                    Err(ConfinedError::NotInside(_))
                ),
                "{bad:?}"
            );
            assert!(
                matches!(
                    append_line(&root, bad, "x"),
                    Err(ConfinedError::NotInside(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_link_anywhere_on_the_path_is_refused() {
        let (t, root) = tree();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        // A folder link (relative and absolute), a link chain, a link to a file.
        symlink("../outside", root.join("up")).unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("up", root.join("chain")).unwrap();
        std::fs::write(outside.join("victim"), "safe\n").unwrap();
        symlink(outside.join("victim"), root.join("file-link")).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        symlink("..", root.join("real/parent")).unwrap();

        for path in [
            "up/x",
            "abs/x",
            "chain/x",
            "real/parent/up/x",
            "file-link/x",
        ] {
            assert!(
                matches!(write_atomic(&root, path, b"x"), Err(ConfinedError::Link(_))),
                "{path}"
            );
            assert!(
                matches!(append_line(&root, path, "x"), Err(ConfinedError::Link(_))),
                "{path}"
            );
        }
        // Appending to a link to a file outside is refused; the file is untouched.
        assert!(matches!(
            append_line(&root, "file-link", "pwned"),
            Err(ConfinedError::Link(_))
        ));
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "safe\n"
        );
        // Replacing a link to a file replaces the link, not the file it names.
        write_atomic(&root, "file-link", b"mine").unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "safe\n"
        );
        assert!(
            !std::fs::symlink_metadata(root.join("file-link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    }

    #[test]
    fn reads_do_not_follow_links_either() {
        let (t, root) = tree();
        std::fs::write(t.path().join("secret"), "key").unwrap();
        symlink(t.path().join("secret"), root.join("section.yaml")).unwrap();
        assert!(matches!(
            read(&root, "section.yaml", 100),
            Err(ConfinedError::Link(_))
        ));
        assert!(read(&root, "missing/x", 100).unwrap().is_none());
        write_atomic(&root, "s.yaml", b"abc").unwrap();
        assert_eq!(read(&root, "s.yaml", 3).unwrap().unwrap(), b"abc");
        assert!(read(&root, "s.yaml", 2).is_err());
    }

    #[test]
    fn a_fifo_cannot_stall_an_append() {
        let (_t, root) = tree();
        let fifo = root.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // With no reader, a blocking open would hang forever; O_NONBLOCK fails at once (ENXIO).
        assert!(append_line(&root, "pipe", "x").is_err());
    }

    #[test]
    fn a_link_swapped_in_while_writing_never_redirects_a_write() {
        // One thread flips `d` between a real folder and a link to `outside` as fast as it can;
        // the other keeps writing through `d`. Every write either lands inside or is refused.
        let (t, root) = tree();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (root, outside, stop) = (root.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || {
                let d = root.join("d");
                let mut flips = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::remove_dir_all(&d);
                    let _ = std::fs::remove_file(&d);
                    if flips.is_multiple_of(2) {
                        let _ = symlink(&outside, &d);
                    } else {
                        let _ = std::fs::create_dir(&d);
                    }
                    flips += 1;
                }
            })
        };
        let mut landed = 0;
        for i in 0..3000 {
            if write_atomic(&root, "d/f", format!("{i}").as_bytes()).is_ok() {
                landed += 1;
            }
            let _ = append_line(&root, "d/log", "x");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().unwrap();
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing may land outside ({landed} writes landed inside)"
        );
    }

    #[test]
    fn listing_never_enters_or_reads_through_a_link() {
        let (t, root) = tree();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "key").unwrap();
        write_atomic(&root, "out/a.md", b"hello").unwrap();
        write_atomic(&root, "out/sub/b.txt", b"x").unwrap();
        symlink(&outside, root.join("out/dir-link")).unwrap();
        symlink(outside.join("secret"), root.join("out/file-link")).unwrap();
        let listed = list_tree(&root, "out", 100).unwrap();
        let brief: Vec<(&str, EntryKind, u64)> = listed
            .iter()
            .map(|e| (e.path.as_str(), e.kind, e.size))
            .collect();
        assert_eq!(
            brief,
            [
                ("a.md", EntryKind::File, 5),
                ("dir-link", EntryKind::Link, 0),
                ("file-link", EntryKind::Link, 0),
                ("sub", EntryKind::Folder, 0),
                ("sub/b.txt", EntryKind::File, 1),
            ]
        );
        // Reading the link is refused; so is listing through it.
        assert!(matches!(
            read(&root, "out/file-link", 100),
            Err(ConfinedError::Link(_))
        ));
        assert!(matches!(
            list_tree(&root, "out/dir-link", 100),
            Err(ConfinedError::Link(_))
        ));
        assert!(list_tree(&root, "missing", 100).unwrap().is_empty());
        assert_eq!(list_tree(&root, "out", 2).unwrap().len(), 2);
        assert!(matches!(
            list_tree(&root, "../x", 100),
            Err(ConfinedError::NotInside(_))
        ));
    }

    #[test]
    fn folders_are_made_with_an_ignore_file_and_never_through_a_link() {
        let (t, root) = tree();
        ensure_folder(&root, ".blobhub/inbox", true).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(".blobhub/inbox/.gitignore")).unwrap(),
            "*\n"
        );
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(".blobhub"), 0o700);
        assert_eq!(mode(".blobhub/inbox/.gitignore"), 0o600);
        // An existing ignore file (even a link) is left alone, never written through.
        let outside = t.path().join("victim");
        std::fs::write(&outside, "safe").unwrap();
        std::fs::create_dir(root.join("out")).unwrap();
        symlink(&outside, root.join("out/.gitignore")).unwrap();
        ensure_folder(&root, "out", true).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "safe");
        // A link on the way is refused.
        symlink(t.path(), root.join("up")).unwrap();
        assert!(matches!(
            ensure_folder(&root, "up/inbox", true),
            Err(ConfinedError::Link(_))
        ));
        assert!(!t.path().join("inbox").exists());
        assert!(matches!(
            ensure_folder(&root, "../inbox", false),
            Err(ConfinedError::NotInside(_))
        ));
    }

    #[test]
    fn usage_counts_files_and_not_what_links_point_to() {
        let (t, root) = tree();
        std::fs::write(t.path().join("big"), vec![0u8; 10_000]).unwrap();
        symlink(t.path().join("big"), root.join("link")).unwrap();
        write_atomic(&root, "a/f", &[1u8; 100]).unwrap();
        append_line(&root, "g", "abc").unwrap();
        assert_eq!(usage_bytes(&root), 104);
    }
}
