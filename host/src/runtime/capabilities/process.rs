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
use std::sync::{Arc, Condvar, Mutex, OnceLock};

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
    pub(crate) fn add(&self, pgid: i32) {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pgid);
    }

    pub(crate) fn remove(&self, pgid: i32) {
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

/// SIGTERM to the group now, SIGKILL after `grace_ms` (on the current tokio runtime).
fn terminate_group(pgid: i32, grace_ms: u32) {
    kill_group(pgid, libc::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(grace_ms.into())).await;
        kill_group(pgid, libc::SIGKILL);
    });
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
    /// Filled in by the spawner thread.
    start: Arc<Start>,
    stdin: Option<mpsc::UnboundedSender<String>>,
    output: Inbox<Output>,
    exited: bool,
    registry: Arc<ProcessRegistry>,
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        // "Dropping the handle kills the process group."
        // If the child is still being started, the spawner thread kills it once it runs.
        if let Some(pid) = self.start.abandon() {
            if !self.exited {
                kill_group(pid as i32, libc::SIGKILL);
            }
            self.registry.remove(pid as i32);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for ChildHandle {
    async fn ready(&mut self) {
        self.output.ready().await
    }
}

/// The guest's `started` pollable: ready once the spawner thread has finished with the child.
pub struct StartWatch(Arc<Start>);

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for StartWatch {
    async fn ready(&mut self) {
        self.0.started().await
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
        // The fork, the sandbox and the exec happen on a spawner thread ([`Spawner`]): they take
        // milliseconds (several on a loaded machine), and the guest waits for this call, so
        // done here they would start one section's agents strictly one after another. What can be
        // refused with a precise error was checked above; a failure past this point (the exec
        // itself, the sandbox) reaches the job type as a line on stderr and an exit.
        let (out_tx, rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel::<String>();
        let start = Arc::new(Start::default());
        let job = StartJob {
            command,
            label: self.section.label(),
            program: request.program,
            path,
            start: Arc::clone(&start),
            registry: Arc::clone(&shared.processes),
            runtime: tokio::runtime::Handle::current(),
            out_tx,
            in_rx,
            queued: started,
        };
        Spawner::global().submit(job);
        Ok(ChildHandle {
            start,
            stdin: Some(in_tx),
            output: Inbox::new(rx),
            exited: false,
            registry: Arc::clone(&shared.processes),
        })
    }
}

/// A child being started: its process id once the spawner thread forked it (`None` when the
/// spawn failed), and what the guest asked for meanwhile (its handle dropped, a terminate).
#[derive(Default)]
struct Start {
    state: Mutex<StartState>,
    /// Wakes a blocking `pid` (a guest that did not wait for `started`).
    done: Condvar,
    /// Wakes the guest's `started` pollables.
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct StartState {
    finished: bool,
    pid: Option<u32>,
    abandoned: bool,
    /// The grace of a `terminate` that came while the child was being started.
    terminate: Option<u32>,
}

/// What the spawner thread does with a child it has just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStart {
    Run,
    /// The guest dropped the handle meanwhile.
    Kill,
    /// The guest asked to terminate it meanwhile (the grace before SIGKILL, ms).
    Terminate(u32),
}

impl Start {
    /// The process id, waiting for the spawner thread if it has not finished yet. The harness
    /// waits for [`Start::started`] first, so that it never blocks here; a guest that does not
    /// (a `0.1.0` component) waits as long as the fork and exec take.
    fn wait_pid(&self) -> Option<u32> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.finished {
            s = self.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.pid
    }

    fn is_finished(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finished
    }

    fn is_abandoned(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abandoned
    }

    /// Completes once the spawner thread has finished (started the child or failed to).
    async fn started(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a finish in between is not missed.
            notified.as_mut().enable();
            if self.is_finished() {
                return;
            }
            notified.await;
        }
    }

    /// Records the outcome and says what to do with a child that did start.
    fn finish(&self, pid: Option<u32>) -> AfterStart {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.finished = true;
        s.pid = pid;
        self.done.notify_all();
        self.notify.notify_waiters();
        match (s.abandoned, s.terminate) {
            (true, _) => AfterStart::Kill,
            (false, Some(grace_ms)) => AfterStart::Terminate(grace_ms),
            (false, None) => AfterStart::Run,
        }
    }

    /// A terminate, without waiting for the start: the process id when the child runs (the
    /// caller signals it), else `None` (recorded for the spawner thread, or nothing runs).
    fn terminate(&self, grace_ms: u32) -> Option<u32> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !s.finished {
            s.terminate.get_or_insert(grace_ms);
        }
        s.pid
    }

    /// The handle is gone: the process id if the child runs already, else the spawner thread
    /// kills it once started.
    fn abandon(&self) -> Option<u32> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.abandoned = true;
        s.pid
    }
}

/// Everything the spawner thread needs to start one child and wire its pipes.
struct StartJob {
    command: tokio::process::Command,
    label: String,
    program: String,
    path: PathBuf,
    start: Arc<Start>,
    registry: Arc<ProcessRegistry>,
    runtime: tokio::runtime::Handle,
    out_tx: mpsc::UnboundedSender<Output>,
    in_rx: mpsc::UnboundedReceiver<String>,
    queued: std::time::Instant,
}

impl StartJob {
    fn run(mut self) {
        if self.start.is_abandoned() {
            // The guest dropped the handle before a spawner thread got to it (its section ended,
            // the worker is stopping): nothing would use the process.
            self.start.finish(None);
            return;
        }
        // tokio's child reaping registers with the runtime.
        let _runtime = self.runtime.enter();
        let mut child = match self.command.spawn() {
            Ok(child) => child,
            Err(e) => {
                if self.start.finish(None) == AfterStart::Kill {
                    // Dropped meanwhile: a worker that is stopping refuses new children.
                    tracing::debug!(section = %self.label, program = %self.program, error = %e, "spawn_abandoned");
                    return;
                }
                tracing::warn!(section = %self.label, program = %self.program, error = %e, "spawn_failed");
                let _ = self.out_tx.send(Output::Stderr(format!(
                    "the worker could not start {}: {e}",
                    self.path.display()
                )));
                let _ = self.out_tx.send(Output::Exited(ExitStatus {
                    code: None,
                    signal: None,
                }));
                return;
            }
        };
        let pid = child.id().unwrap_or_default();
        self.registry.add(pid as i32);
        match self.start.finish(Some(pid)) {
            AfterStart::Run => {}
            AfterStart::Kill => {
                kill_group(pid as i32, libc::SIGKILL);
                self.registry.remove(pid as i32);
            }
            AfterStart::Terminate(grace_ms) => terminate_group(pid as i32, grace_ms),
        }
        // The fork, the sandbox and the exec, plus any wait for a spawner thread; their cost is
        // part of every agent's start (docs/benchmarks.md reads it from this line).
        tracing::debug!(
            section = %self.label,
            program = %self.program,
            pid,
            spawn_us = self.queued.elapsed().as_micros() as u64,
            "child_spawned"
        );
        let out_tx = self.out_tx;
        let mut in_rx = self.in_rx;
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
    }
}

/// How many children may be forked at once (the sections' agents beyond that wait their turn).
const SPAWNER_THREADS: usize = 4;

/// A few threads that live as long as the process and start every child. They must not exit:
/// a child's parent-death signal follows the thread that forked it
/// ([`die_with_the_worker`]), which is also why the runtime's blocking pool (whose idle
/// threads end) is not used.
struct Spawner {
    jobs: std::sync::mpsc::Sender<StartJob>,
}

impl Spawner {
    fn global() -> &'static Spawner {
        static SPAWNER: OnceLock<Spawner> = OnceLock::new();
        SPAWNER.get_or_init(|| {
            let (jobs, rx) = std::sync::mpsc::channel::<StartJob>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..SPAWNER_THREADS {
                let rx = Arc::clone(&rx);
                let spawned = std::thread::Builder::new()
                    .name(format!("spawner-{i}"))
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        loop {
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match job {
                                Ok(job) => job.run(),
                                Err(_) => return,
                            }
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "spawner thread did not start");
                }
            }
            Spawner { jobs }
        })
    }

    fn submit(&self, job: StartJob) {
        if let Err(std::sync::mpsc::SendError(job)) = self.jobs.send(job) {
            // No spawner thread (it could not be created): start it here instead.
            job.run();
        }
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
        let start = &self.table.get(&child)?.start;
        if !start.is_finished() {
            // The whole instance waits here, and the section's other starts behind it: a job
            // type should wait for `started` first (the harness does; e2e harness_pids).
            tracing::debug!(section = %self.section.label(), "pid_waits_for_start");
        }
        // 0 when the program could not be started (its exit is already queued).
        Ok(start.wait_pid().unwrap_or(0))
    }

    fn started(&mut self, child: Resource<ChildHandle>) -> wasmtime::Result<Resource<DynPollable>> {
        let start = Arc::clone(&self.table.get(&child)?.start);
        // Owned by the pollable: deleting the pollable deletes it.
        let watch = self.table.push(StartWatch(start))?;
        wasmtime_wasi::p2::subscribe(&mut self.table, watch)
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
        // A child still being started is signalled by the spawner thread once it runs.
        if let Some(pid) = handle.start.terminate(grace_ms) {
            terminate_group(pid as i32, grace_ms);
        }
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
/// The signal follows the thread that forked the child; spawns happen on the [`Spawner`]'s
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

    #[test]
    fn a_start_hands_its_pid_to_whoever_waits() {
        let start = Arc::new(Start::default());
        let waiter = {
            let start = Arc::clone(&start);
            std::thread::spawn(move || start.wait_pid())
        };
        assert_eq!(start.finish(Some(42)), AfterStart::Run);
        assert_eq!(waiter.join().unwrap(), Some(42));
        assert_eq!(
            start.abandon(),
            Some(42),
            "a running child is killed by the handle"
        );
    }

    #[test]
    fn a_handle_dropped_while_starting_leaves_the_kill_to_the_spawner() {
        let start = Start::default();
        assert_eq!(start.abandon(), None);
        assert_eq!(
            start.finish(Some(7)),
            AfterStart::Kill,
            "the spawner must kill what it started"
        );
        let failed = Start::default();
        assert_eq!(failed.finish(None), AfterStart::Run);
        assert_eq!(failed.wait_pid(), None);
    }

    #[test]
    fn a_terminate_while_starting_waits_for_nothing_and_is_applied_by_the_spawner() {
        let start = Start::default();
        assert_eq!(start.terminate(2_000), None, "nothing to signal yet");
        assert_eq!(start.terminate(9_000), None);
        assert_eq!(
            start.finish(Some(7)),
            AfterStart::Terminate(2_000),
            "the first terminate's grace"
        );
        assert_eq!(
            start.terminate(1_000),
            Some(7),
            "a running child is signalled at once"
        );
        let dropped = Start::default();
        dropped.terminate(1_000);
        dropped.abandon();
        assert_eq!(dropped.finish(Some(8)), AfterStart::Kill, "a drop wins");
    }

    #[tokio::test]
    async fn a_child_dropped_before_a_spawner_thread_took_it_is_never_started() {
        let marker = tempfile::tempdir().unwrap();
        let made = marker.path().join("ran");
        let mut command = tokio::process::Command::new("/bin/sh");
        command.arg("-c").arg(format!("touch {}", made.display()));
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let (_in_tx, in_rx) = mpsc::unbounded_channel();
        let start = Arc::new(Start::default());
        let job = StartJob {
            command,
            label: "s".into(),
            program: "sh".into(),
            path: "/bin/sh".into(),
            start: Arc::clone(&start),
            registry: Arc::new(ProcessRegistry::default()),
            runtime: tokio::runtime::Handle::current(),
            out_tx,
            in_rx,
            queued: std::time::Instant::now(),
        };
        assert_eq!(start.abandon(), None);
        job.run();
        assert_eq!(start.wait_pid(), None, "no process");
        assert!(
            out_rx.recv().await.is_none(),
            "and no output: nobody reads it"
        );
        assert!(!made.exists());
    }

    #[tokio::test]
    async fn started_completes_once_the_spawner_has_finished() {
        use std::future::Future;
        let start = Arc::new(Start::default());
        let mut watch = StartWatch(Arc::clone(&start));
        {
            let ready = wasmtime_wasi::p2::Pollable::ready(&mut watch);
            let mut ready = std::pin::pin!(ready);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(ready.as_mut().poll(&mut cx).is_pending(), "still starting");
            let finisher = {
                let start = Arc::clone(&start);
                std::thread::spawn(move || start.finish(Some(3)))
            };
            ready.await;
            finisher.join().unwrap();
        }
        assert_eq!(start.wait_pid(), Some(3), "no wait once started");
        // A pollable made after the start is ready at once.
        start.started().await;
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
