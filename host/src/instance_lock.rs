//! The instance lock, `<tree>/instance.yaml`: at most one worker runs on a state tree.
//!
//! Taking it:
//! 1. `open(O_CREAT|O_EXCL, 0600)`: of two racing starts exactly one creates the file. The
//!    winner takes `flock(LOCK_EX)` on it for its whole life, writes its record in place, and then
//!    checks that the path still names the file it created (see the reclaim race below).
//! 2. When the file exists, its record is read. A record whose pid is alive on this host is held
//!    (`WORKER_ALREADY_RUNNING`). A record whose pid is dead, or that cannot be parsed, is stale.
//! 3. A stale file is reclaimed under `flock(LOCK_EX|LOCK_NB)` on that very file: the reclaimer
//!    re-checks that the path still names the locked file and that it is still stale, unlinks it
//!    and goes back to step 1. Two reclaimers serialise on the flock; the second finds the path
//!    now names a different file and starts over, where it meets the first one's live lock. A
//!    live worker holds the flock, so a lock whose pid was recycled by another program is still
//!    never taken from a running worker.
//!
//! The file is removed on clean exit ([`InstanceLock::release`], or on drop).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record in `instance.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance: InstanceInfo,
}

/// Who holds the lock. Also handed to the runtime as part of the start context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// `ins_<ULID>`, new for every start.
    pub instance_id: String,
    pub pid: u32,
    pub host: String,
    pub version: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub started_at: String,
}

impl InstanceInfo {
    /// A record for this process, started now.
    pub fn for_this_process(version: &str) -> Self {
        Self {
            instance_id: format!("ins_{}", ulid::Ulid::new()),
            pid: std::process::id(),
            host: hostname(),
            version: version.to_owned(),
            started_at: crate::state_tree::utc_now_seconds(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another worker holds {path} (instance {}, pid {} on {})",
        holder.instance_id, holder.pid, holder.host
    )]
    Held {
        path: PathBuf,
        holder: Box<InstanceInfo>,
    },
    /// Someone else is creating or reclaiming the lock right now: they win, we refuse.
    #[error("another worker is taking the lock {path} right now")]
    Contended { path: PathBuf },
    #[error("cannot take the lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A held instance lock. Dropping it removes `instance.yaml`.
#[derive(Debug)]
pub struct InstanceLock {
    path: PathBuf,
    info: InstanceInfo,
    /// Kept open: the flock lives as long as this handle.
    file: Option<File>,
}

impl InstanceLock {
    /// Takes the lock at `path` for `info`, replacing a stale lock of a dead process.
    pub fn acquire(path: &Path, info: InstanceInfo) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        // Each turn either wins, refuses, or removed a stale file; a bound guards against a
        // pathological loop (another process creating garbage files as fast as we remove them).
        for _ in 0..8 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(file) => return Self::finish_create(path, file, info),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(e)),
            }
            match reclaim_if_stale(path) {
                Ok(Reclaim::Removed | Reclaim::Vanished) => continue,
                Ok(Reclaim::Held(holder)) => {
                    return Err(LockError::Held {
                        path: path.to_owned(),
                        holder: Box::new(holder),
                    });
                }
                Ok(Reclaim::Busy) => {
                    return Err(LockError::Contended {
                        path: path.to_owned(),
                    });
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        Err(LockError::Contended {
            path: path.to_owned(),
        })
    }

    fn finish_create(path: &Path, mut file: File, info: InstanceInfo) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        // A reclaimer that read our still-empty file as "unparseable" would block on this
        // flock or, if it got in first, unlink our file; the inode check below catches that.
        if !try_flock(&file).map_err(io_err)? {
            return Err(LockError::Contended {
                path: path.to_owned(),
            });
        }
        let text = serde_yaml::to_string(&InstanceRecord {
            instance: info.clone(),
        })
        .map_err(|e| io_err(io::Error::other(e)))?;
        file.write_all(text.as_bytes()).map_err(io_err)?;
        if !same_file(&file, path).map_err(io_err)? {
            return Err(LockError::Contended {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            info,
            file: Some(file),
        })
    }

    pub fn info(&self) -> &InstanceInfo {
        &self.info
    }

    /// Removes `instance.yaml` (only if it is still ours) and drops the flock.
    pub fn release(mut self) -> io::Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> io::Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let result = if same_file(&file, &self.path)? {
            fs::remove_file(&self.path)
        } else {
            Ok(())
        };
        drop(file);
        result
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// The state of an existing lock file as seen by a would-be holder.
enum Reclaim {
    Held(InstanceInfo),
    /// Stale and unlinked by us.
    Removed,
    /// The file disappeared before we could look at it.
    Vanished,
    /// Someone holds the flock on a file whose record is not (yet) readable or is stale: a
    /// worker that is starting or a reclaim in progress.
    Busy,
}

fn reclaim_if_stale(path: &Path) -> io::Result<Reclaim> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Reclaim::Vanished),
        Err(e) => return Err(e),
    };
    let record = read_record(&mut file)?;
    if let Some(info) = &record
        && is_alive(info)
    {
        return Ok(Reclaim::Held(info.clone()));
    }
    if !try_flock(&file)? {
        // A starting worker (record not written yet) or another reclaimer holds the flock.
        return Ok(Reclaim::Busy);
    }
    // Under the flock: is the path still this file, and is it still stale?
    if !same_file(&file, path)? {
        return Ok(Reclaim::Vanished);
    }
    let mut again = File::open(path)?;
    let record = read_record(&mut again)?;
    if let Some(info) = &record
        && is_alive(info)
    {
        return Ok(Reclaim::Held(info.clone()));
    }
    tracing::info!(path = %path.display(), stale = ?record, "replacing a stale instance lock");
    match fs::remove_file(path) {
        Ok(()) => Ok(Reclaim::Removed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Reclaim::Vanished),
        Err(e) => Err(e),
    }
}

fn read_record(file: &mut File) -> io::Result<Option<InstanceInfo>> {
    let mut text = String::new();
    if file.read_to_string(&mut text).is_err() {
        return Ok(None);
    }
    Ok(serde_yaml::from_str::<InstanceRecord>(&text)
        .ok()
        .map(|r| r.instance))
}

/// Reads the current holder, if any, without touching the lock (for `whoami`).
pub fn current_holder(path: &Path) -> Option<InstanceInfo> {
    let mut file = File::open(path).ok()?;
    let info = read_record(&mut file).ok()??;
    is_alive(&info).then_some(info)
}

/// Whether the process named by a lock record may still be running. A record from another
/// host cannot be checked, so it counts as alive (a shared home directory over NFS).
fn is_alive(info: &InstanceInfo) -> bool {
    if info.host != hostname() {
        return true;
    }
    pid_alive(info.pid)
}

/// `kill(pid, 0)`: success or `EPERM` means a process with that pid exists, unless `/proc` says
/// it is a zombie (killed, not yet reaped by its parent) or dead. Without `/proc` the signal
/// check alone decides.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    let exists = rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !proc_says_dead(pid)
}

/// Whether `/proc/<pid>/stat` shows a zombie or dead process; false when it cannot be read.
fn proc_says_dead(pid: libc::pid_t) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_state(&stat))
        .is_some_and(|state| matches!(state, 'Z' | 'X'))
}

/// The state field of a `/proc/<pid>/stat` line: the first field after the last `)` (the
/// command name before it may itself contain `)` and spaces).
fn stat_state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

fn try_flock(file: &File) -> io::Result<bool> {
    // SAFETY: the fd is valid for the lifetime of `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Whether `path` still names the open `file` (same device and inode).
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match fs::metadata(path) {
        Ok(on_disk) => Ok(open.dev() == on_disk.dev() && open.ino() == on_disk.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// This machine's host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: u32) -> InstanceInfo {
        InstanceInfo {
            pid,
            ..InstanceInfo::for_this_process("test")
        }
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn second_acquire_is_refused_and_release_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.yaml");
        let lock = InstanceLock::acquire(&path, info(std::process::id())).unwrap();
        let err = InstanceLock::acquire(&path, info(std::process::id())).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        assert_eq!(current_holder(&path).unwrap(), *lock.info());
        lock.release().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn stale_lock_of_a_dead_pid_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.yaml");
        let stale = InstanceRecord {
            instance: info(dead_pid()),
        };
        fs::write(&path, serde_yaml::to_string(&stale).unwrap()).unwrap();
        let lock = InstanceLock::acquire(&path, info(std::process::id())).unwrap();
        let on_disk: InstanceRecord =
            serde_yaml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(on_disk.instance, *lock.info());
    }

    #[test]
    fn unparseable_lock_without_holder_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.yaml");
        fs::write(&path, "garbage: [").unwrap();
        InstanceLock::acquire(&path, info(std::process::id())).unwrap();
    }

    #[test]
    fn live_pid_of_another_process_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.yaml");
        // pid 1 always exists.
        let record = InstanceRecord { instance: info(1) };
        fs::write(&path, serde_yaml::to_string(&record).unwrap()).unwrap();
        let err = InstanceLock::acquire(&path, info(std::process::id())).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }));
    }

    #[test]
    fn racing_threads_have_exactly_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.yaml");
        // Start from a stale lock so that the reclaim path races too.
        let stale = InstanceRecord {
            instance: info(dead_pid()),
        };
        fs::write(&path, serde_yaml::to_string(&stale).unwrap()).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    InstanceLock::acquire(&path, info(std::process::id()))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "{results:?}");
    }

    #[test]
    fn stat_state_is_read_after_the_last_paren() {
        assert_eq!(stat_state("42 (sh) S 1 42 42 0"), Some('S'));
        assert_eq!(stat_state("42 (a) b) Z 1 42"), Some('Z'));
        assert_eq!(stat_state("42 (x y) X 0"), Some('X'));
        assert_eq!(stat_state("garbage"), None);
        assert_eq!(stat_state("42 (sh)"), None);
    }

    #[test]
    fn unreaped_zombie_is_dead_and_its_lock_is_stale() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let stat = format!("/proc/{pid}/stat");
        if !Path::new("/proc/self/stat").exists() {
            // No /proc: the signal check alone decides (a zombie reads as alive there).
            child.wait().unwrap();
            return;
        }
        // Wait (bounded) until the child has exited and, unreaped, shows as a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let state = fs::read_to_string(&stat).ok().and_then(|s| stat_state(&s));
            if state == Some('Z') {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} never became a zombie (state {state:?})"
            );
            std::thread::yield_now();
        }
        // SAFETY: signal 0 performs only the existence check.
        assert_eq!(
            unsafe { libc::kill(pid as libc::pid_t, 0) },
            0,
            "kill(0) sees it"
        );
        assert!(!pid_alive(pid), "a zombie is dead");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.yaml");
        fs::write(
            &path,
            serde_yaml::to_string(&InstanceRecord {
                instance: info(pid),
            })
            .unwrap(),
        )
        .unwrap();
        assert!(current_holder(&path).is_none(), "the zombie holds nothing");
        let lock = InstanceLock::acquire(&path, info(std::process::id())).unwrap();
        lock.release().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn dead_pid_is_not_alive() {
        assert!(!pid_alive(dead_pid()));
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }
}
