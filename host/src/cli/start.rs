//! `start`: preflight, then hand the worker to the runtime.

use std::process::ExitCode;

use super::{Output, state_tree};
use crate::start::{StartContext, preflight};

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Show the live dashboard instead of log lines.
    #[arg(long)]
    tui: bool,
}

/// The line printed (on stderr) once preflight has passed and the lock is held. Tests wait for
/// it to know that a worker is running.
pub const STARTED_MARKER: &str = "worker started:";

pub async fn run(args: StartArgs, output: &Output) -> anyhow::Result<ExitCode> {
    let tree = state_tree()?;
    let started = preflight(tree, args.tui).await?;
    for warning in &started.warnings {
        output.note(&format!("warning: {}: {warning}", warning.code));
    }
    // Installed before the start line, so that a SIGTERM sent as soon as the line appears is
    // already a graceful stop rather than the default action (termination).
    let stop = StopSignals::install()?;
    let ctx = &started.context;
    if !args.tui {
        // Printed even with --json/--quiet: it is the one signal that the worker runs.
        eprintln!(
            "{STARTED_MARKER} instance {} (pid {}) as {} ({}), {} section(s), state tree {}",
            ctx.instance.instance_id,
            ctx.instance.pid,
            started.user.name,
            started.user.id,
            ctx.config.sections.len(),
            ctx.tree.root().display()
        );
    }
    let lock = started.lock;
    let result = hand_off(started.context, stop).await;
    // Clean exit, whatever the runtime's outcome: the lock file goes away.
    if let Err(e) = lock.release() {
        tracing::warn!(error = %e, "could not remove instance.yaml");
    }
    result
}

/// Runs the worker until it stops. The runtime handles SIGINT/SIGTERM itself; `stop` was
/// installed before the start line so that an early signal is not the default action.
///
/// tokio does not replay a signal to a listener registered after it arrived, so a signal that
/// came before the runtime was listening would be lost and the worker would run on. When `stop`
/// sees one, it is passed on as SIGTERM (a graceful stop; never counted as a second SIGINT)
/// until the runtime returns.
async fn hand_off(ctx: StartContext, stop: StopSignals) -> anyhow::Result<ExitCode> {
    let run = crate::runtime::run(ctx);
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result,
        () = stop.wait() => {}
    }
    let mut resend = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            result = &mut run => return result,
            _ = resend.tick() => {
                let pid = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
                // SAFETY: kill(2) on our own pid with a signal we handle.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
}

/// SIGINT and SIGTERM, merged: either one asks for a graceful stop.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
