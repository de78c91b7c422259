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
}

/// A process handed to a turn: its driver (past the handshake) and the handshake's events.
pub struct Taken {
    pub child: process::Child,
    pub driver: Box<dyn Driver>,
    pub held: Vec<AgentEvent>,
    /// How long it had been running when the turn took it.
    pub warm_for: Duration,
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
        log(
            Level::Info,
            "agent_prestarted",
            Some(&t.alias),
            json!({"pid": child.pid(), "resume": resume}),
        );
        Some(Warm {
            child,
            driver,
            spec,
            held: Vec::new(),
            lines: 0,
            started: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// One output of the process before its turn: the handshake is answered and its events
    /// kept; anything else makes it unusable.
    fn serve(&mut self, t: &Thread, output: process::Output) -> Result<(), Gone> {
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
            child: self.child,
            driver: self.driver,
            held: self.held,
        })
    }
}

/// The next output of the held process, if any (never completes without one).
pub async fn next(warm: &Option<Warm>) -> process::Output {
    match warm {
        Some(w) => sdk::next_output(&w.child).await,
        None => std::future::pending().await,
    }
}

/// Serve one output of the held process (from [`next`]); a process that is gone or unusable is
/// dropped (logged, and stopped if it still runs), and the next turn starts its own.
pub fn serve(t: &Thread, warm: &mut Option<Warm>, output: process::Output) {
    let Some(w) = warm.as_mut() else {
        return;
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
    log(
        Level::Info,
        "agent_prestart_stopped",
        Some(&t.alias),
        json!({"pid": w.pid(), "reason": reason}),
    );
    reap(w.child, store::stderr_log(&t.alias));
}

fn dropped(t: &Thread, w: Warm, gone: Gone) {
    log(
        Level::Warning,
        "agent_prestart_lost",
        Some(&t.alias),
        json!({"pid": w.pid(), "why": gone.why}),
    );
    if !gone.exited {
        reap(w.child, store::stderr_log(&t.alias));
    }
}

/// End a process that was never given a turn, in a task of its own: stdin closed (the CLIs exit
/// when their input ends), SIGTERM after [`STOP_GRACE`], SIGKILL after that. Its last lines go
/// to the agent log. If the section ends first, dropping the handle kills the process group.
fn reap(child: process::Child, agent_log: String) {
    drop(sdk::spawn(async move {
        child.close_stdin();
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
