//! `status`, `stop` and `top`: the commands that reach a worker running on this state tree from
//! another shell, through its status socket (`crate::status_socket`), falling back to the
//! instance lock's pid when the socket does not answer.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Output, state_tree};
use crate::coded::CodedError;
use crate::dashboard::model::{Snapshot, clock_time, error_place, one_line};
use crate::instance_lock::{InstanceInfo, current_holder, hostname, pid_alive};
use crate::status_socket::{self, ClientError, Request, Response};

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// How long to wait for the worker to drain and exit, e.g. `30s`, `2m`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// When the timeout passes: cancel whatever still drains, then kill the worker (SIGKILL).
    #[arg(long)]
    pub force: bool,
}

/// How often `stop` looks whether the worker has exited.
const POLL: Duration = Duration::from_millis(100);
/// How long a forced stop waits for the worker to cancel its sections before SIGKILL, and
/// then for the kill.
const FORCE_GRACE: Duration = Duration::from_secs(5);

fn not_running(tree: &std::path::Path) -> CodedError {
    CodedError::new(
        "WORKER_NOT_RUNNING",
        format!("no worker is running on the state tree {}", tree.display()),
    )
    .with_hint("start one with `blobhub-worker start`")
}

fn socket_error(e: &ClientError) -> CodedError {
    CodedError::new("STATUS_SOCKET_ERROR", e.to_string()).with_hint(
        "the socket is the worker user's own: run this as that user, on the same state tree",
    )
}

/// One request to the worker of this tree, off the async runtime (the client blocks).
async fn ask(path: PathBuf, request: Request) -> Result<Response, ClientError> {
    tokio::task::spawn_blocking(move || status_socket::request(&path, &request))
        .await
        .unwrap_or_else(|e| Err(ClientError::Refused(e.to_string())))
}

/// The lock's holder when it is a live process of this machine (one we could signal).
fn local_holder(tree: &crate::state_tree::StateTree) -> Option<InstanceInfo> {
    current_holder(&tree.instance_path()).filter(|h| h.host == hostname())
}

/// `status`: the running worker's sections, threads, slots and recent errors. Exit 0 when a
/// worker runs, 1 (`WORKER_NOT_RUNNING`) when none does.
pub async fn status(output: &Output) -> anyhow::Result<ExitCode> {
    let tree = state_tree()?;
    match ask(status_socket::path(tree.root()), Request::Status).await {
        Ok(Response {
            status: Some(snapshot),
            ..
        }) => {
            let mut document = serde_json::to_value(&snapshot)?;
            if let Some(map) = document.as_object_mut() {
                map.insert("running".into(), true.into());
            }
            output.result(&describe(&snapshot), document);
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::NotRunning(_)) | Ok(_) => match local_holder(&tree) {
            // Running, but its socket does not answer (an older worker, or a removed file).
            Some(holder) => {
                output.result(
                    &format!(
                        "worker running: instance {} (pid {}), version {}, since {}\n(its status socket does not answer: no sections or threads to show)",
                        holder.instance_id, holder.pid, holder.version, holder.started_at
                    ),
                    json!({"running": true, "identity": {"instance_id": holder.instance_id, "pid": holder.pid, "version": holder.version, "started_at": holder.started_at}}),
                );
                Ok(ExitCode::SUCCESS)
            }
            None => Err(not_running(tree.root()).into()),
        },
        Err(e) => Err(socket_error(&e).into()),
    }
}

/// The human text of `status`.
fn describe(s: &Snapshot) -> String {
    let id = &s.identity;
    let mut out = format!(
        "worker running: instance {} (pid {}), version {}, as {}, since {}{}\nagents: {}/{} slots busy, {}/{} held waiting for a person\n",
        id.instance_id,
        id.pid,
        id.version,
        id.user,
        id.started_at,
        if s.stopping { " (stopping)" } else { "" },
        s.slots.busy,
        s.slots.total,
        s.slots.held,
        s.slots.held_max
    );
    for section in &s.sections {
        out.push_str(&format!(
            "\nsection {} ({}): {}{}\n",
            section.name,
            section.job_type,
            section.state,
            if section.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", one_line(&section.detail, 200))
            }
        ));
        for t in section.threads.values() {
            out.push_str(&format!(
                "  {}  {}  {}  {}  {}\n",
                t.thread,
                t.state,
                t.agent,
                if t.session_id.is_empty() {
                    "—"
                } else {
                    &t.session_id
                },
                one_line(&t.last_event, 60)
            ));
            if let Some(prompt) = &t.prompt {
                out.push_str(&format!("    ? {}\n", one_line(prompt, 200)));
            }
            if let Some(error) = t.error.as_deref().filter(|e| !e.is_empty()) {
                out.push_str(&format!("    ✗ {}\n", one_line(error, 200)));
            }
        }
    }
    if !s.errors.is_empty() {
        out.push_str("\nrecent errors:\n");
        for e in s.errors.iter().rev().take(10) {
            out.push_str(&format!(
                "  {}  {}  {} · {}\n",
                clock_time(&e.at),
                e.code,
                error_place(s, e),
                one_line(&e.details, 200)
            ));
        }
    }
    out.trim_end().to_owned()
}

/// `stop`: ask the worker of this tree to stop (its socket; else SIGTERM to the lock's pid),
/// and wait until it has exited.
pub async fn stop(args: StopArgs, output: &Output) -> anyhow::Result<ExitCode> {
    let tree = state_tree()?;
    let path = status_socket::path(tree.root());
    let holder = local_holder(&tree);
    let (pid, mut action) = match ask(path.clone(), Request::Stop { force: false }).await {
        Ok(Response { pid: Some(pid), .. }) => (pid, "socket"),
        Err(ClientError::NotRunning(_)) | Ok(_) => match &holder {
            Some(h) => {
                signal(h.pid, libc::SIGTERM)?;
                (h.pid, "sigterm")
            }
            None => return Err(not_running(tree.root()).into()),
        },
        Err(e) => return Err(socket_error(&e).into()),
    };
    let started = Instant::now();
    let mut stopped = wait_exit(pid, args.timeout).await;
    if !stopped && args.force {
        // First the worker's own forced stop (its agents are killed with it), then SIGKILL.
        action = "forced";
        let _ = ask(path, Request::Stop { force: true }).await;
        stopped = wait_exit(pid, FORCE_GRACE).await;
        if !stopped {
            action = "sigkill";
            signal(pid, libc::SIGKILL)?;
            stopped = wait_exit(pid, FORCE_GRACE).await;
        }
    }
    if !stopped {
        return Err(CodedError::new(
            "WORKER_STOP_TIMEOUT",
            format!(
                "the worker (pid {pid}) is still running {} after it was asked to stop",
                humantime::format_duration(args.timeout)
            ),
        )
        .with_hint("wait longer (`--timeout 2m`), or force it with `--force`")
        .into());
    }
    let waited = started.elapsed().as_secs_f64();
    let instance = holder.map(|h| h.instance_id).unwrap_or_default();
    output.result(
        &format!("worker stopped: pid {pid} after {waited:.1} s ({action})"),
        json!({"instance_id": instance, "pid": pid, "action": action, "stopped": true, "waited_seconds": waited}),
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `pid` exited within `timeout`.
async fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn signal(pid: u32, signal: libc::c_int) -> Result<(), CodedError> {
    let failed = |e: std::io::Error| {
        CodedError::new(
            "WORKER_SIGNAL_FAILED",
            format!("cannot signal the worker (pid {pid}): {e}"),
        )
        .with_hint("run this as the worker's user")
    };
    let pid = libc::pid_t::try_from(pid).map_err(|e| failed(std::io::Error::other(e)))?;
    // SAFETY: kill has no memory preconditions; the pid is the lock holder's, checked alive.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `top`: the live dashboard of the worker running on this tree. `q` leaves it running.
pub async fn top(_output: &Output) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        return Err(CodedError::new(
            "TUI_NEEDS_TERMINAL",
            "top needs standard output to be a terminal",
        )
        .with_hint("run it in a terminal, or use `blobhub-worker status` for text")
        .into());
    }
    let tree = state_tree()?;
    let path = status_socket::path(tree.root());
    // A worker must answer before the screen is taken over: no dashboard of nothing.
    match ask(path.clone(), Request::Status).await {
        Ok(_) => {}
        Err(ClientError::NotRunning(_)) => return Err(not_running(tree.root()).into()),
        Err(e) => return Err(socket_error(&e).into()),
    }
    let fetch_path = path.clone();
    tokio::task::spawn_blocking(move || {
        crate::dashboard::terminal::attach(
            move || {
                status_socket::request(&fetch_path, &Request::Status)
                    .map(|r| r.status.unwrap_or_default())
                    .map_err(|e| e.to_string())
            },
            Box::new(move |force| {
                status_socket::request(&path, &Request::Stop { force })
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        )
    })
    .await??;
    Ok(ExitCode::SUCCESS)
}
