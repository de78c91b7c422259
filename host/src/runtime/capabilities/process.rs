//! `blobhub:worker/process`: child processes the operator granted.
//!
//! Two keys (as in Zed's extension host): a program runs only if the job type declared it in
//! `describe` (capability `agents` or `spawn(p)`) AND config.yaml grants it (the `agents` block's
//! executables, or `job_types.<name>.allow_spawn`). The host resolves the program on PATH itself,
//! starts it in its own process group with the worker's environment minus `BLOBHUB_*` and minus
//! any variable holding a secret, reads stdout/stderr line by line, and kills every group it
//! started when the worker exits.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use crate::runtime::child_env::{self, EnvPolicy};
use crate::runtime::child_sandbox;
use crate::runtime::pending::Inbox;
use crate::runtime::settings::RuntimeSettings;
use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::job::Capability;
use crate::runtime::wit::latest::process::{
    self as wit, ExitStatus, Output, SpawnError, SpawnRequest,
};
use crate::runtime::work_folder;

/// What one job type may start: the programs in the intersection of what it declared and what
/// the operator granted, and the variables it may set in their environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub programs: BTreeSet<String>,
    pub env: EnvPolicy,
}

impl Grants {
    /// `bundled`: the job type is one built into this binary. The `agents` block grants the
    /// agent executables to the bundled harness only; any other job type declaring `agents`
    /// gets those programs only where `job_types.<name>.allow_spawn` names them, so installing a
    /// job type never hands it the operator's `claude` by itself.
    pub fn compute(
        job_type: &str,
        bundled: bool,
        declared: &[Capability],
        settings: &RuntimeSettings,
    ) -> Grants {
        let mut programs = BTreeSet::new();
        let limits = settings.job_type(job_type);
        // No `allow_spawn` in config.yaml grants no program beyond the agents capability.
        let allow_spawn = limits.allow_spawn.unwrap_or_default();
        let mut agents = false;
        for capability in declared {
            match capability {
                Capability::Agents => {
                    agents = true;
                    programs.extend(
                        settings
                            .agent_programs
                            .iter()
                            .filter(|p| bundled || allow_spawn.contains(p))
                            .cloned(),
                    );
                }
                Capability::Spawn(p) if allow_spawn.contains(p) => {
                    programs.insert(p.clone());
                }
                Capability::Spawn(_) | Capability::Session => {}
            }
        }
        let env = EnvPolicy {
            allow_names: limits.allow_env.into_iter().collect(),
            operator_pairs: if agents {
                settings.agent_env_pairs.clone()
            } else {
                BTreeSet::new()
            },
        };
        Grants { programs, env }
    }

    pub fn allows(&self, program: &str) -> bool {
        self.programs.contains(program)
    }
}

/// Every process group this worker started, so that shutdown can kill them all.
#[derive(Debug, Default)]
pub struct ProcessRegistry {
    groups: Mutex<HashSet<i32>>,
}

impl ProcessRegistry {
    fn add(&self, pgid: i32) {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pgid);
    }

    fn remove(&self, pgid: i32) {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pgid);
    }

    /// Signal every live group (SIGTERM or SIGKILL).
    pub fn signal_all(&self, signal: i32) {
        for pgid in self.groups.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            kill_group(*pgid, signal);
        }
    }

    pub fn len(&self) -> usize {
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn kill_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Look `program` up on the worker's PATH (or take it as is when it is a granted path).
pub fn resolve(program: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return (p.is_absolute() && is_exec(&p)).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_exec(p))
}

/// The longest line handed to a job type: an agent's image tool result is a single line of several
/// MiB, but a child must not make the worker hold an unbounded line in memory.
pub const MAX_LINE_BYTES: usize = 32 * 1024 * 1024;

/// Hand every line of `pipe` to `each`, without its line ending. Bytes that are not UTF-8 are
/// replaced rather than ending the stream (an agent's output must not silently stop). A line over
/// [`MAX_LINE_BYTES`] is cut there (the rest up to its newline is dropped), so it reaches the
/// job type as an unparseable line rather than exhausting memory.
async fn read_lines(pipe: impl tokio::io::AsyncRead + Unpin, mut each: impl FnMut(String)) {
    read_lines_capped(pipe, MAX_LINE_BYTES, &mut each).await
}

async fn read_lines_capped(
    pipe: impl tokio::io::AsyncRead + Unpin,
    cap: usize,
    each: &mut impl FnMut(String),
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    let mut overflowed = false;
    loop {
        let (used, ended) = match reader.fill_buf().await {
            Ok([]) | Err(_) => {
                if !buf.is_empty() {
                    each(finish_line(&mut buf));
                }
                return;
            }
            Ok(chunk) => match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    if !overflowed {
                        let room = cap.saturating_sub(buf.len());
                        buf.extend_from_slice(&chunk[..i.min(room)]);
                    }
                    (i + 1, true)
                }
                None => {
                    if !overflowed {
                        let room = cap.saturating_sub(buf.len());
                        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        overflowed = buf.len() >= cap;
                    }
                    (chunk.len(), false)
                }
            },
        };
        reader.consume(used);
        if ended {
            each(finish_line(&mut buf));
            overflowed = false;
        }
    }
}

fn finish_line(buf: &mut Vec<u8>) -> String {
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    let line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    line
}

/// The guest's handle on a child.
pub struct ChildHandle {
    pid: u32,
    stdin: Option<mpsc::UnboundedSender<String>>,
    output: Inbox<Output>,
    exited: bool,
    registry: Arc<ProcessRegistry>,
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        // "Dropping the handle kills the process group."
        if !self.exited {
            kill_group(self.pid as i32, libc::SIGKILL);
        }
        self.registry.remove(self.pid as i32);
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for ChildHandle {
    async fn ready(&mut self) {
        self.output.ready().await
    }
}

impl SectionHost {
    fn check_spawn(&self, program: &str) -> Result<PathBuf, SpawnError> {
        if !self.section.grants.allows(program) {
            return Err(SpawnError::NotGranted(format!(
                "`{program}` is not granted to job type `{}` (declare it in describe and grant it in config.yaml)",
                self.section.job_type
            )));
        }
        resolve(program).ok_or_else(|| {
            SpawnError::NotFound(format!("`{program}` is not on PATH or not executable"))
        })
    }

    /// The folder a child starts in: an existing absolute folder inside this section's own
    /// state folder, or inside one of the work roots (`workspace.allowed_roots`, default the
    /// user's home), checked on the path as given and again after symlinks are resolved, and never
    /// inside the rest of the state tree or a system folder (see [`work_folder::allowed`]).
    /// A folder that does not exist inside the roots and a folder outside them read differently
    /// (the job type reports `WORK_FOLDER_NOT_FOUND` or `WORK_FOLDER_NOT_ALLOWED`); every refusal
    /// of the second kind reads the same whatever the reason (logged at debug level), and the
    /// lexical check comes first, so only folders inside the roots can be probed for existence.
    pub(crate) fn check_cwd(&self, cwd: &str) -> Result<PathBuf, SpawnError> {
        let refused = || {
            SpawnError::BadDirectory(format!(
                "`{cwd}` is not a folder this job type may start a program in"
            ))
        };
        let not_allowed = |why: &str| {
            tracing::debug!(section = %self.section.label(), cwd, why, "start folder refused");
            SpawnError::BadDirectory(format!(
                "`{cwd}` is not allowed as a work folder (it must be inside workspace.allowed_roots of config.yaml, outside the worker's state tree and system folders)"
            ))
        };
        let path = Path::new(cwd);
        if !path.is_absolute() {
            return Err(not_allowed("a relative path"));
        }
        let tree = self
            .section
            .shared
            .tree_root()
            .map(|t| t.canonicalize().unwrap_or_else(|_| t.to_path_buf()));
        let own = self
            .section
            .state_dir
            .canonicalize()
            .unwrap_or_else(|_| self.section.state_dir.clone());
        let roots = &self.section.shared.settings.work_roots;
        let lexical = work_folder::normalize(path);
        if !lexical.starts_with(&own) {
            work_folder::allowed(&lexical, roots, tree.as_deref()).map_err(not_allowed)?;
        }
        let real = path.canonicalize().map_err(|_| refused())?;
        if !real.is_dir() {
            return Err(refused());
        }
        if real.starts_with(&own) {
            return Ok(real);
        }
        work_folder::allowed(&real, roots, tree.as_deref()).map_err(not_allowed)?;
        Ok(real)
    }

    fn spawn_child(&mut self, request: SpawnRequest) -> Result<ChildHandle, SpawnError> {
        let started = std::time::Instant::now();
        let path = self.check_spawn(&request.program)?;
        let cwd = self.check_cwd(&request.cwd)?;
        let shared = &self.section.shared;
        let env = child_env::build(
            std::env::vars(),
            &shared.secrets,
            &request.env,
            &self.section.grants.env,
        )
        .map_err(|e| SpawnError::BadEnvironment(e.to_string()))?;
        let mut command = tokio::process::Command::new(&path);
        command
            .args(&request.args)
            .current_dir(&cwd)
            .env_clear()
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        die_with_the_worker(&mut command);
        self.confine(&mut command, &cwd)?;
        let mut child = command
            .spawn()
            .map_err(|e| SpawnError::Failed(format!("{}: {e}", path.display())))?;
        let pid = child.id().unwrap_or_default();
        shared.processes.add(pid as i32);
        // The fork, the sandbox and the exec are synchronous here; their cost is part of every
        // agent's start (docs/benchmarks.md reads it from this line).
        tracing::debug!(
            section = %self.section.label(),
            program = %request.program,
            pid,
            spawn_us = started.elapsed().as_micros() as u64,
            "child_spawned"
        );

        let (out_tx, rx) = mpsc::unbounded_channel();
        let (in_tx, mut in_rx) = mpsc::unbounded_channel::<String>();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut stdin = child.stdin.take();
        tokio::spawn(async move {
            while let Some(data) = in_rx.recv().await {
                let Some(pipe) = stdin.as_mut() else { break };
                if pipe.write_all(data.as_bytes()).await.is_err() || pipe.flush().await.is_err() {
                    break;
                }
            }
            // The sender closed (close-stdin or handle dropped): close the pipe.
            drop(stdin);
        });
        let (err_tx, out_tx2) = (out_tx.clone(), out_tx.clone());
        let out_task = tokio::spawn(async move {
            if let Some(pipe) = stdout {
                read_lines(pipe, |line| {
                    let _ = out_tx.send(Output::Stdout(line));
                })
                .await;
            }
        });
        let err_task = tokio::spawn(async move {
            if let Some(pipe) = stderr {
                read_lines(pipe, |line| {
                    let _ = err_tx.send(Output::Stderr(line));
                })
                .await;
            }
        });
        tokio::spawn(async move {
            let status = child.wait().await;
            // Deliver every line before the exit, as the WIT promises.
            let _ = out_task.await;
            let _ = err_task.await;
            let exit = match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    ExitStatus {
                        code: s.code(),
                        signal: s.signal(),
                    }
                }
                Err(_) => ExitStatus {
                    code: None,
                    signal: None,
                },
            };
            let _ = out_tx2.send(Output::Exited(exit));
        });
        Ok(ChildHandle {
            pid,
            stdin: Some(in_tx),
            output: Inbox::new(rx),
            exited: false,
            registry: Arc::clone(&shared.processes),
        })
    }
}

impl SectionHost {
    /// Start the child in the sandbox of [`child_sandbox`]: the state tree hidden but for this
    /// section's folder. Where the kernel cannot build it the child starts unconfined and the
    /// worker has said so (`CHILD_SANDBOX_UNAVAILABLE`).
    fn confine(&self, command: &mut tokio::process::Command, cwd: &Path) -> Result<(), SpawnError> {
        if let child_sandbox::Support::Unavailable(_) = child_sandbox::support() {
            return Ok(());
        }
        let Some(tree) = self.section.shared.tree_root() else {
            return Err(SpawnError::Failed(
                "no program may be started outside a running section".into(),
            ));
        };
        let _ = crate::state_tree::create_private_dir(&self.section.state_dir);
        let plan = child_sandbox::Plan::new(tree, Some(&self.section.state_dir), cwd)
            .map_err(|e| SpawnError::Failed(format!("cannot prepare the child's sandbox: {e}")))?;
        // SAFETY: `apply` makes only async-signal-safe system calls on data prepared before the
        // fork (no allocation, no locks).
        unsafe {
            command.pre_exec(move || plan.apply());
        }
        Ok(())
    }
}

impl wit::Host for SectionHost {
    fn spawn(
        &mut self,
        request: SpawnRequest,
    ) -> wasmtime::Result<Result<Resource<ChildHandle>, SpawnError>> {
        match self.spawn_child(request) {
            Ok(child) => Ok(Ok(self.table.push(child)?)),
            Err(e) => {
                tracing::warn!(section = %self.section.label(), error = ?e, "spawn_refused");
                Ok(Err(e))
            }
        }
    }

    fn resolve(&mut self, program: String) -> wasmtime::Result<Result<String, SpawnError>> {
        Ok(self
            .check_spawn(&program)
            .map(|p| p.to_string_lossy().into_owned()))
    }
}

impl wit::HostChild for SectionHost {
    fn pid(&mut self, child: Resource<ChildHandle>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&child)?.pid)
    }

    fn write_stdin(
        &mut self,
        child: Resource<ChildHandle>,
        data: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let handle = self.table.get_mut(&child)?;
        Ok(match &handle.stdin {
            Some(tx) if !handle.exited => tx.send(data).map_err(|_| "stdin is closed".to_owned()),
            _ => Err("stdin is closed".to_owned()),
        })
    }

    fn close_stdin(&mut self, child: Resource<ChildHandle>) -> wasmtime::Result<()> {
        self.table.get_mut(&child)?.stdin = None;
        Ok(())
    }

    fn subscribe(
        &mut self,
        child: Resource<ChildHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(&mut self.table, child)
    }

    fn next_output(&mut self, child: Resource<ChildHandle>) -> wasmtime::Result<Option<Output>> {
        let handle = self.table.get_mut(&child)?;
        let next = handle.output.take();
        if matches!(next, Some(Output::Exited(_))) {
            handle.exited = true;
            handle.stdin = None;
        }
        Ok(next)
    }

    fn terminate(&mut self, child: Resource<ChildHandle>, grace_ms: u32) -> wasmtime::Result<()> {
        let handle = self.table.get(&child)?;
        if handle.exited {
            return Ok(());
        }
        let pgid = handle.pid as i32;
        kill_group(pgid, libc::SIGTERM);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(grace_ms.into())).await;
            kill_group(pgid, libc::SIGKILL);
        });
        Ok(())
    }

    fn drop(&mut self, child: Resource<ChildHandle>) -> wasmtime::Result<()> {
        self.table.delete(child)?;
        Ok(())
    }
}

/// Children live in their own process group (so a signal to the worker's group does not reach
/// them and the worker can stop each agent's whole group), which also means nothing kills them if
/// the worker itself is killed with SIGKILL: `kill_on_drop` and the exit-time cleanup never run.
/// An orphaned agent could go on editing a work folder while the restarted worker runs a new one
/// there. So each child asks the kernel for SIGKILL when the worker dies.
///
/// The signal follows the thread that forked the child; spawns happen on the runtime's worker
/// threads, which live as long as the process.
fn die_with_the_worker(command: &mut tokio::process::Command) {
    // SAFETY: getpid is async-signal-safe and runs before the fork.
    let worker = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker may have died between fork and prctl: then no signal will come.
            if libc::getppid() != worker {
                return Err(std::io::Error::other("the worker exited during spawn"));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_keys_are_needed() {
        let config = crate::config::Config::try_from(json!({
            "job_types": {"jt": {"allow_spawn": ["git", "make"]}},
            "sections": [],
        }))
        .unwrap();
        let settings = RuntimeSettings::from(&config);
        let declared = [
            Capability::Spawn("git".into()),
            Capability::Spawn("curl".into()),
        ];
        let grants = Grants::compute("jt", false, &declared, &settings);
        assert!(grants.allows("git"), "declared and granted");
        assert!(!grants.allows("make"), "granted but not declared");
        assert!(!grants.allows("curl"), "declared but not granted");
        assert!(!grants.allows("claude"), "agents not declared");
        // `agents` alone hands the agent programs to the bundled harness only.
        let agents = Grants::compute("jt", false, &[Capability::Agents], &settings);
        assert!(!agents.allows("claude") && !agents.allows("codex"));
        let bundled = Grants::compute("jt", true, &[Capability::Agents], &settings);
        assert!(bundled.allows("claude") && bundled.allows("codex"));
        assert!(!bundled.allows("git"));
        let config = crate::config::Config::try_from(json!({
            "job_types": {"jt": {"allow_spawn": ["claude"]}},
            "sections": [],
        }))
        .unwrap();
        let named = Grants::compute(
            "jt",
            false,
            &[Capability::Agents],
            &RuntimeSettings::from(&config),
        );
        assert!(named.allows("claude") && !named.allows("codex"));
    }

    #[tokio::test]
    async fn overlong_lines_are_cut_and_the_next_line_survives() {
        let mut lines = Vec::new();
        let input = format!("{}\nok\n{}", "x".repeat(100), "y".repeat(7));
        read_lines_capped(input.as_bytes(), 10, &mut |l| lines.push(l)).await;
        assert_eq!(lines, ["x".repeat(10), "ok".into(), "y".repeat(7)]);
    }

    #[tokio::test]
    async fn lines_survive_invalid_utf8_and_crlf() {
        let mut lines = Vec::new();
        read_lines(&b"a\r\nb\xff\nc"[..], |l| lines.push(l)).await;
        assert_eq!(lines, ["a", "b\u{fffd}", "c"]);
    }
}
