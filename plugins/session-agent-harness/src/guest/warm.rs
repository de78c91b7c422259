//! A thread's next agent process, started ahead of the person's message (the decisions are in
//! crate::agent::prestart; docs/session-agent-harness.md, "Agent processes started ahead").
//!
//! The thread's task (turn.rs) owns it, beside the thread's slot: it exists only while the thread
//! holds its slot, and counts against it as a running agent does. The task starts it when a turn
//! has ended and when the thread becomes active, answers its handshake while the thread waits
//! ([`serve`]), and hands it to the next turn's first attempt (attempt.rs, [`Warm::take`]).
//! Whoever must free the slot, or finds the process unusable, calls [`stop`]. If the task is
//! dropped (a stop, a teardown, a shutdown), dropping the process kills its process group: it has
//! not been given a turn, so nothing of the person's can be lost.
//!
//! The host starts a process in the background and `pid` would wait for that start, holding up
//! every thread of the section (a burst of threads would start their agents one after another).
//! So `agent_prestarted` and its pid are logged once the start is done ([`Woke::Started`], or the
//! turn that takes the process waits for it in its own task), never at the spawn.

use std::time::{Duration, Instant};

use blobhub_worker_sdk::serde_json::json;
use blobhub_worker_sdk::{self as sdk, Either, log::Level, process};

use super::ctx::log;
use super::store;
use super::thread::Thread;
use crate::agent::prestart::{self, Held, StartSpec};
use crate::agent::{AgentEvent, Driver, Start, Usage, driver_for};
use crate::settings::Settings;

/// How long a stopped process has to exit after its stdin closed, before SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Between SIGTERM and SIGKILL for a stopped process.
const STOP_KILL_GRACE_MS: u32 = 2_000;

/// An agent process started ahead of its turn.
pub struct Warm {
    child: process::Child,
    driver: Box<dyn Driver>,
    spec: StartSpec,
    /// Events of its handshake (the session's id), reported when its turn begins.
    held: Vec<AgentEvent>,
    /// Lines it printed so far.
    lines: usize,
    started: Instant,
    /// The session it resumes, as `agent_prestarted` reports it.
    resume: String,
    /// `agent_prestarted` was logged (it waits for the host to have started the process).
    announced: bool,
}

/// A process handed to a turn: its driver (past the handshake) and the handshake's events.
pub struct Taken {
    pub child: process::Child,
    pub driver: Box<dyn Driver>,
    pub held: Vec<AgentEvent>,
    /// How long it had been running when the turn took it.
    pub warm_for: Duration,
    /// The session of an `agent_prestarted` not logged yet (the process was still being
    /// started): the turn logs it once the start is done, before its `turn_started`.
    pub unannounced: Option<String>,
}

/// What woke a thread about its held process (from [`next`], for [`serve`]).
pub enum Woke {
    /// The host has started it: its pid is known without waiting.
    Started,
    Output(process::Output),
}

/// Why a held process went away before its turn.
struct Gone {
    why: String,
    /// It exited by itself (nothing left to stop).
    exited: bool,
}

impl Warm {
    /// Start the process the next turn would start — resuming `resume` with `settings` — when
    /// the settings allow it. `None` when they do not or the start failed (logged; the turn
    /// then starts its own process and reports a failure properly).
    pub fn start(
        t: &Thread,
        settings: &Settings,
        resume: &str,
        usage_total: Option<&Usage>,
    ) -> Option<Warm> {
        if !settings.prestart {
            return None;
        }
        let mut driver = driver_for(settings.driver);
        let launch = driver.launch(&Start {
            resume,
            settings,
            usage_total,
        });
        let spec = StartSpec::new(settings, launch);
        let child = match process::spawn(&process::SpawnRequest {
            program: spec.program.clone(),
            args: spec.args.clone(),
            cwd: spec.cwd.clone(),
            env: spec.env.clone(),
        }) {
            Ok(c) => c,
            Err(e) => {
                log(
                    Level::Warning,
                    "agent_prestart_failed",
                    Some(&t.alias),
                    json!({"error": format!("{e:?}")}),
                );
                return None;
            }
        };
        for line in &spec.stdin {
            if child.write_stdin(line).is_err() {
                // It is already gone; the turn starts its own.
                return None;
            }
        }
        Some(Warm {
            child,
            driver,
            spec,
            held: Vec::new(),
            lines: 0,
            started: Instant::now(),
            resume: resume.to_string(),
            announced: false,
        })
    }

    /// Log `agent_prestarted` if it was not yet. Only once the host has started the process
    /// (its `started` fired, or it printed or exited), so that `pid` does not wait.
    fn announce(&mut self, t: &Thread) {
        if !self.announced {
            self.announced = true;
            prestarted(&t.alias, self.child.pid(), &self.resume);
        }
    }

    /// One output of the process before its turn: the handshake is answered and its events
    /// kept; anything else makes it unusable.
    fn serve(&mut self, t: &Thread, output: process::Output) -> Result<(), Gone> {
        // Any output means the process was started.
        self.announce(t);
        match output {
            process::Output::Stdout(line) => {
                let step = self.driver.on_stdout(&line);
                if let Held::Unusable(why) = prestart::held_line(&step, self.lines) {
                    let _ = store::append(
                        &store::stderr_log(&t.alias),
                        &format!("stdout (before its turn, discarded): {line}"),
                    );
                    return Err(Gone { why, exited: false });
                }
                self.lines += 1;
                for reply in &step.replies {
                    let _ = self.child.write_stdin(reply);
                }
                if let Some(raw) = step.log {
                    let _ = store::append(&store::stderr_log(&t.alias), &format!("stdout: {raw}"));
                }
                self.held.extend(step.events);
                Ok(())
            }
            process::Output::Stderr(line) => {
                let _ = store::append(&store::stderr_log(&t.alias), &line);
                Ok(())
            }
            process::Output::Exited(status) => Err(Gone {
                why: match (status.code, status.signal) {
                    (Some(c), _) => format!("it exited with status {c} before its turn"),
                    (None, Some(s)) => format!("it was killed by signal {s} before its turn"),
                    _ => "it ended before its turn".into(),
                },
                exited: true,
            }),
        }
    }

    /// Why this process cannot serve a turn that would start one as `wanted` (`None`: it can).
    pub fn mismatch(&self, wanted: &StartSpec) -> Option<&'static str> {
        prestart::mismatch(&self.spec, wanted)
    }

    /// Hand the process to its turn (check [`Warm::mismatch`] first). Whatever it printed that
    /// has not been served yet is served first; `None` when that shows it gone or unusable.
    pub fn take(mut self, t: &Thread) -> Option<Taken> {
        while let Some(output) = self.child.next_output() {
            if let Err(gone) = self.serve(t, output) {
                dropped(t, self, gone);
                return None;
            }
        }
        Some(Taken {
            warm_for: self.started.elapsed(),
            unannounced: (!self.announced).then_some(self.resume),
            child: self.child,
            driver: self.driver,
            held: self.held,
        })
    }
}

/// Log that a process was started ahead of its turn.
pub fn prestarted(alias: &str, pid: u32, resume: &str) {
    log(
        Level::Info,
        "agent_prestarted",
        Some(alias),
        json!({"pid": pid, "resume": resume}),
    );
}

/// The next thing to serve about the held process: its start, then its outputs (never
/// completes without one).
pub async fn next(warm: &Option<Warm>) -> Woke {
    match warm {
        Some(w) if !w.announced => {
            match sdk::race(sdk::wait_for(w.child.started()), sdk::next_output(&w.child)).await {
                Either::Left(()) => Woke::Started,
                Either::Right(output) => Woke::Output(output),
            }
        }
        Some(w) => Woke::Output(sdk::next_output(&w.child).await),
        None => std::future::pending().await,
    }
}

/// Serve what [`next`] returned: the start is logged; a process that is gone or unusable is
/// dropped (logged, and stopped if it still runs), and the next turn starts its own.
pub fn serve(t: &Thread, warm: &mut Option<Warm>, woke: Woke) {
    let Some(w) = warm.as_mut() else {
        return;
    };
    let output = match woke {
        Woke::Started => return w.announce(t),
        Woke::Output(output) => output,
    };
    if let Err(gone) = w.serve(t, output)
        && let Some(w) = warm.take()
    {
        dropped(t, w, gone);
    }
}

/// Stop the thread's held agent process, if it has one: for a thread that gives its slot back,
/// a turn that cannot use it, or any other reason to not keep an idle agent. Returns at once; the
/// process gets its stdin closed, then SIGTERM, then SIGKILL, and whatever it still prints goes
/// to the thread's agent log.
pub fn stop(t: &Thread, warm: &mut Option<Warm>, reason: &str) {
    let Some(w) = warm.take() else {
        return;
    };
    let stopped = Stopped {
        alias: t.alias.clone(),
        unannounced: (!w.announced).then_some(w.resume),
        reason: reason.to_string(),
    };
    let agent_log = store::stderr_log(&t.alias);
    match sdk::pid_if_started(&w.child) {
        Some(pid) => {
            stopped.log(pid);
            reap(w.child, agent_log, None);
        }
        // Still being started: logged by the reaping task once it is, without waiting here.
        None => reap(w.child, agent_log, Some(stopped)),
    }
}

/// The log lines of a held process being stopped.
struct Stopped {
    alias: String,
    /// Its `agent_prestarted` was not logged yet (the session it resumes).
    unannounced: Option<String>,
    reason: String,
}

impl Stopped {
    fn log(self, pid: u32) {
        if let Some(resume) = &self.unannounced {
            prestarted(&self.alias, pid, resume);
        }
        log(
            Level::Info,
            "agent_prestart_stopped",
            Some(&self.alias),
            json!({"pid": pid, "reason": self.reason}),
        );
    }
}

/// `w` printed something unusable or exited: it was started, so its pid does not wait.
fn dropped(t: &Thread, mut w: Warm, gone: Gone) {
    w.announce(t);
    log(
        Level::Warning,
        "agent_prestart_lost",
        Some(&t.alias),
        json!({"pid": w.child.pid(), "why": gone.why}),
    );
    if !gone.exited {
        reap(w.child, store::stderr_log(&t.alias), None);
    }
}

/// End a process that was never given a turn, in a task of its own: stdin closed (the CLIs exit
/// when their input ends), SIGTERM after [`STOP_GRACE`], SIGKILL after that. Its last lines go
/// to the agent log. If the section ends first, dropping the handle kills the process group.
/// `stopped`: its stop is logged once the host has started it.
fn reap(child: process::Child, agent_log: String, stopped: Option<Stopped>) {
    drop(sdk::spawn(async move {
        child.close_stdin();
        if let Some(stopped) = stopped {
            stopped.log(sdk::started(&child).await);
        }
        let mut by = Instant::now() + STOP_GRACE;
        let mut terminated = false;
        loop {
            let left = by.saturating_duration_since(Instant::now());
            match sdk::race(sdk::next_output(&child), sdk::sleep(left)).await {
                Either::Left(process::Output::Exited(_)) => return,
                Either::Left(process::Output::Stdout(line)) => {
                    let _ = store::append(
                        &agent_log,
                        &format!("stdout (before its turn, discarded): {line}"),
                    );
                }
                Either::Left(process::Output::Stderr(line)) => {
                    let _ = store::append(&agent_log, &line);
                }
                Either::Right(()) if terminated => return,
                Either::Right(()) => {
                    child.terminate(STOP_KILL_GRACE_MS);
                    terminated = true;
                    by = Instant::now() + Duration::from_millis(STOP_KILL_GRACE_MS as u64 + 1_000);
                }
            }
        }
    }));
}
