//! What a spawned process (an agent, a granted program) can see of the worker.
//!
//! Every child runs as the worker's user, so without more it could read the worker's state tree:
//! `credentials.yaml` (the API key), other sections' folders, the compile cache. It could also
//! read the worker's memory through `/proc/<worker>/mem`, and with root's permissions the raw
//! disk. A job type chooses the arguments of the programs it was granted (`date -f
//! credentials.yaml` prints the key), and an agent runs whatever its model asks for, so the
//! child's arguments decide nothing: the child must be unable to reach these, whatever it runs.
//!
//! Each child is therefore started, between fork and exec, in
//! - a user namespace of its own (the worker's uid and gid map to themselves, so files keep their
//!   owners; no capability the child holds counts outside it) and a mount namespace in which
//!   - the state tree is covered by an empty tmpfs, with the section's own folder (which the job
//!     type can read anyway) bound back at its place, so the key is not on any path it can open;
//!   - `/dev` is a tmpfs holding only the harmless devices (`null`, `zero`, `full`, `random`,
//!     `urandom`, `tty`, `ptmx`, `pts/`, `shm/`), so no block device of the machine is there;
//! - then a second user and mount namespace, which makes the mounts above *locked*: the child,
//!   even as root inside, cannot unmount the tmpfs to uncover what lies beneath;
//! - a Landlock domain with signal and abstract-socket scoping (Linux 6.12+), which also keeps it
//!   from tracing, signalling or reading `/proc/<pid>/root` of any process outside its own
//!   domain: the worker and the agents of other sections. Filesystem access is not restricted by
//!   Landlock, so an agent's own sandbox (Codex runs bubblewrap) still works inside.
//!
//! The worker itself is not dumpable (see [`harden_worker`]), so `/proc/<worker>/{mem,environ,
//! root,fd}` need a capability no child holds.
//!
//! Where the kernel refuses user namespaces (some containers), children start without this and
//! the worker says so loudly, once: `CHILD_SANDBOX_UNAVAILABLE` (docs/job-types.md).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Devices a child keeps under its private `/dev`: none of them reads or writes the machine's
/// storage. Directories are bound whole.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty", "ptmx"];
const DEVICE_DIRS: &[&str] = &["pts", "shm"];
const DEVICE_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// What this kernel lets the worker do for its children, probed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Namespaces work; `scoped`: Landlock scoping is available too.
    Full { scoped: bool },
    /// The sandbox cannot be built; children run unconfined.
    Unavailable(String),
}

static SUPPORT: OnceLock<Support> = OnceLock::new();

/// Whether children get the sandbox; probed by starting one sandboxed child the first time.
pub fn support() -> &'static Support {
    SUPPORT.get_or_init(probe)
}

fn probe() -> Support {
    let scoped = landlock_abi() >= 6;
    // Hiding the temporary folder is as good a trial as hiding a state tree.
    let tmp = std::env::temp_dir();
    let Ok(plan) = Plan::new(&tmp, None, Path::new("/")) else {
        return Support::Unavailable("cannot prepare a sandbox plan".into());
    };
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: `apply` makes only async-signal-safe system calls on data prepared before fork.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(move || plan.apply());
    }
    match command.status() {
        Ok(_) => Support::Full { scoped },
        Err(e) => Support::Unavailable(e.to_string()),
    }
}

/// Makes the worker process non-dumpable: `/proc/<worker>/mem`, `environ`, `fd/` and `root`
/// then need `CAP_SYS_PTRACE` in the worker's own user namespace, which no child holds (children
/// live in namespaces of their own). Children are dumpable again after their exec. Core dumps
/// of the worker are off as a consequence: they would hold the API key.
pub fn harden_worker() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// One child's sandbox, prepared before fork: every string and buffer [`Plan::apply`] needs is
/// allocated here, because between fork and exec a multithreaded process may not allocate.
pub struct Plan {
    tree: CString,
    /// The section's folder, bound back inside the hidden tree, with the folders to create on
    /// the way to it (from the tree down).
    keep: Option<(CString, Vec<CString>)>,
    cwd: CString,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    devices: Vec<CString>,
    device_dirs: Vec<CString>,
    device_links: Vec<(CString, CString)>,
    landlock: Option<i32>,
    /// The worker, whose death must kill the child.
    worker: libc::pid_t,
}

impl Plan {
    /// `tree`: the worker's state tree (hidden); `keep`: the section's folder inside it (shown);
    /// `cwd`: where the child starts (entered again after the mounts).
    pub fn new(tree: &Path, keep: Option<&Path>, cwd: &Path) -> io::Result<Plan> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in a path"))
        };
        let keep = match keep {
            Some(keep) => {
                let rel = keep.strip_prefix(tree).map_err(|_| {
                    io::Error::other("the section's folder is not inside the state tree")
                })?;
                let mut on_the_way = Vec::new();
                let mut at = PathBuf::from(tree);
                for part in rel.components() {
                    at.push(part);
                    on_the_way.push(c(&at)?);
                }
                Some((c(keep)?, on_the_way))
            }
            None => None,
        };
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let dev = Path::new("/dev");
        // The machine's devices that exist here (each is bound back at its own path).
        let present = |names: &[&str], dirs: bool| -> io::Result<Vec<CString>> {
            names
                .iter()
                .map(|d| dev.join(d))
                .filter(|p| if dirs { p.is_dir() } else { p.exists() })
                .map(|p| c(&p))
                .collect()
        };
        let devices = present(DEVICES, false)?;
        let device_dirs = present(DEVICE_DIRS, true)?;
        let device_links = DEVICE_LINKS
            .iter()
            .map(|(name, target)| Ok((c(&dev.join(name))?, c(Path::new(target))?)))
            .collect::<io::Result<_>>()?;
        Ok(Plan {
            tree: c(tree)?,
            keep,
            cwd: c(cwd)?,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            devices,
            device_dirs,
            device_links,
            landlock: scoped_ruleset(),
            // SAFETY: getpid cannot fail.
            worker: unsafe { libc::getpid() },
        })
    }

    /// Build the sandbox in the current process. Runs in the forked child before exec: system
    /// calls only, on data prepared by [`Plan::new`].
    pub fn apply(&self) -> io::Result<()> {
        enter_namespaces(&self.uid_map, &self.gid_map)?;
        // SAFETY: NUL-terminated strings.
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        // Handles on what is shown again, opened in the new mount namespace (a bind mount's
        // source must be in the caller's namespace) while it is still reachable.
        let keep_fd = match &self.keep {
            Some((keep, _)) => Some(open_path(keep)?),
            None => None,
        };
        let mut dev_fds = [-1i32; 16];
        for (i, source) in self.devices.iter().chain(&self.device_dirs).enumerate() {
            if i < dev_fds.len() {
                dev_fds[i] = open_path(source)?;
            }
        }
        // The state tree: an empty, private tmpfs, with the section's folder bound back.
        mount_tmpfs(&self.tree)?;
        if let (Some((keep, on_the_way)), Some(fd)) = (&self.keep, keep_fd) {
            for folder in on_the_way {
                // SAFETY: a NUL-terminated path.
                let r = unsafe { libc::mkdir(folder.as_ptr(), 0o700) };
                if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                    return Err(io::Error::last_os_error());
                }
            }
            bind_fd(fd, keep)?;
        }
        // /dev: only the harmless devices.
        mount_tmpfs(c"/dev")?;
        for (i, target) in self.devices.iter().enumerate() {
            // SAFETY: NUL-terminated path; creates an empty file to bind the device over.
            let f = unsafe {
                libc::open(
                    target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o600,
                )
            };
            if f >= 0 {
                unsafe { libc::close(f) };
                bind_fd(dev_fds[i], target)?;
            }
        }
        for (j, target) in self.device_dirs.iter().enumerate() {
            let fd = dev_fds[self.devices.len() + j];
            // SAFETY: NUL-terminated path.
            if unsafe { libc::mkdir(target.as_ptr(), 0o755) } == 0 {
                bind_fd(fd, target)?;
            }
        }
        for (link, target) in &self.device_links {
            // SAFETY: NUL-terminated paths.
            unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
        }
        for fd in dev_fds.iter().copied().chain(keep_fd).filter(|fd| *fd >= 0) {
            // SAFETY: closing descriptors this function opened.
            unsafe { libc::close(fd) };
        }
        // A second user namespace locks every mount above: they came from a more privileged
        // namespace, so the child cannot take them apart to see beneath.
        enter_namespaces(&self.uid_map, &self.gid_map)?;
        if let Some(ruleset) = self.landlock {
            // SAFETY: prctl and the landlock system call with integer arguments.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        // Entering a user namespace can clear the parent-death signal (the credentials changed):
        // ask for it again, and make sure the worker did not die in between.
        // SAFETY: prctl and getppid with integer arguments.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != self.worker {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        // The working folder was entered before the mounts; enter it again so that `..` from
        // it walks the new view, not the hidden one.
        // SAFETY: NUL-terminated path.
        check(unsafe { libc::chdir(self.cwd.as_ptr()) })
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_path(path: &CString) -> io::Result<i32> {
    // SAFETY: NUL-terminated path.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

fn enter_namespaces(uid_map: &[u8], gid_map: &[u8]) -> io::Result<()> {
    // SAFETY: unshare with flags; the process is single-threaded after fork, as it requires.
    check(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) })?;
    write_file(c"/proc/self/setgroups", b"deny")?;
    write_file(c"/proc/self/uid_map", uid_map)?;
    write_file(c"/proc/self/gid_map", gid_map)
}

fn write_file(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: NUL-terminated path; writing a buffer we own.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

fn mount_tmpfs(target: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated strings.
    check(unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755,size=1m".as_ptr().cast(),
        )
    })
}

/// Bind what `fd` (an `O_PATH` handle) names onto `target`.
fn bind_fd(fd: i32, target: &std::ffi::CStr) -> io::Result<()> {
    // "/proc/self/fd/<n>" without allocating.
    let mut buf = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0";
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[14 + i] = digits[len - 1 - i];
    }
    // SAFETY: `buf` is NUL-terminated (it is longer than any fd number needs).
    check(unsafe {
        libc::mount(
            buf.as_ptr().cast(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    })
}

/// The Landlock ABI version of this kernel, 0 when Landlock is off.
fn landlock_abi() -> i64 {
    const VERSION: u32 = 1;
    // SAFETY: the version query takes no attribute.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            VERSION,
        )
    };
    abi.max(0)
}

/// One ruleset for every child (a descriptor kept open for the worker's life): no filesystem or
/// network rule, only the scoping of signals and abstract sockets, which puts each child in a
/// Landlock domain of its own. `None` before ABI 6.
fn scoped_ruleset() -> Option<i32> {
    static RULESET: OnceLock<Option<i32>> = OnceLock::new();
    *RULESET.get_or_init(|| {
        if landlock_abi() < 6 {
            return None;
        }
        #[repr(C)]
        struct Attr {
            handled_access_fs: u64,
            handled_access_net: u64,
            scoped: u64,
        }
        const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
        const SCOPE_SIGNAL: u64 = 2;
        let attr = Attr {
            handled_access_fs: 0,
            handled_access_net: 0,
            scoped: SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL,
        };
        // SAFETY: a valid attribute of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const Attr,
                std::mem::size_of::<Attr>(),
                0u32,
            )
        };
        (fd >= 0).then_some(fd as i32)
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use super::*;

    /// Runs `sh -c script` in the sandbox of `tree`/`keep`; its stdout, or None where the kernel
    /// offers no sandbox (then the worker says so; nothing here to test).
    fn sandboxed(tree: &Path, keep: &Path, cwd: &Path, script: &str) -> Option<String> {
        if let Support::Unavailable(why) = support() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run where the child sandbox works: {why}"
            );
            eprintln!("note: no child sandbox here: {why}");
            return None;
        }
        let plan = Plan::new(tree, Some(keep), cwd).unwrap();
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]).current_dir(cwd);
        // SAFETY: `apply` is async-signal-safe.
        unsafe {
            command.pre_exec(move || plan.apply());
        }
        let out = command.output().unwrap();
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn the_tree_is_hidden_but_the_section_folder_is_not() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        let keep = tree.join("jobs/mine");
        let other = tree.join("jobs/other");
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(tree.join("credentials.yaml"), "key: SECRET\n").unwrap();
        std::fs::write(other.join("f"), "OTHER\n").unwrap();
        std::fs::write(keep.join("f"), "MINE\n").unwrap();
        let Some(out) = sandboxed(
            &tree,
            &keep,
            &keep,
            "cat ../../credentials.yaml ../other/f f; cat $PWD/../../credentials.yaml; \
             echo made > g; umount ../.. 2>/dev/null; umount -l ../.. 2>/dev/null; \
             cat ../../credentials.yaml; ls /dev",
        ) else {
            return;
        };
        assert!(!out.contains("SECRET"), "{out}");
        assert!(!out.contains("OTHER"), "{out}");
        assert!(out.contains("MINE"), "{out}");
        assert_eq!(std::fs::read_to_string(keep.join("g")).unwrap(), "made\n");
        // No disk device in the child's /dev.
        assert!(out.contains("null") && out.contains("urandom"), "{out}");
        assert!(!out.contains("vda") && !out.contains("sda"), "{out}");
    }

    #[test]
    fn the_worker_memory_and_root_are_out_of_reach() {
        harden_worker();
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        let keep = tree.join("jobs/mine");
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::write(tree.join("credentials.yaml"), "key: SECRET\n").unwrap();
        let me = std::process::id();
        let script = format!(
            "cat /proc/{me}/root{tree}/credentials.yaml; head -c 100 /proc/{me}/environ; \
             echo cwd=$(readlink /proc/{me}/cwd); echo fd=$(readlink /proc/{me}/fd/0); \
             head -c 10 /proc/{me}/mem >/dev/null 2>&1 && echo mem-readable",
            tree = tree.display()
        );
        let Some(out) = sandboxed(&tree, &keep, t.path(), &script) else {
            return;
        };
        assert!(!out.contains("SECRET"), "{out}");
        assert!(!out.contains("PATH="), "{out}");
        // The numbers of its descriptors may be listed; what they name may not.
        assert!(out.contains("cwd=\n") && out.contains("fd=\n"), "{out}");
        assert!(!out.contains("mem-readable"), "{out}");
    }

    #[test]
    fn one_child_cannot_reach_into_another_s_section() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        let (a, b) = (tree.join("jobs/a"), tree.join("jobs/b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("f"), "A-ONLY\n").unwrap();
        if let Support::Unavailable(_) = support() {
            assert!(std::env::var_os("CI").is_none());
            return;
        }
        let plan = Plan::new(&tree, Some(&a), &a).unwrap();
        let mut first = Command::new("/bin/sh");
        first
            .args(["-c", "cat f; exec sleep 30"])
            .current_dir(&a)
            .stdout(std::process::Stdio::piped());
        // SAFETY: `apply` is async-signal-safe.
        unsafe {
            first.pre_exec(move || plan.apply());
        }
        let mut first = first.spawn().unwrap();
        // Wait until it runs inside its sandbox: it read its own file.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(first.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "A-ONLY\n");
        let script = format!(
            "cat /proc/{pid}/root{a}/f /proc/{pid}/cwd/f; kill -9 {pid} && echo killed",
            pid = first.id(),
            a = a.display()
        );
        let out = sandboxed(&tree, &b, &b, &script);
        let _ = first.kill();
        let _ = first.wait();
        let Some(out) = out else { return };
        if matches!(support(), Support::Full { scoped: true }) {
            assert!(!out.contains("A-ONLY"), "{out}");
            assert!(!out.contains("killed"), "{out}");
        }
    }
}
