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

/// Runs the worker until it stops. The runtime handles SIGINT/SIGTERM itself; `stop` only had
/// to be installed early so that a signal before this point is not the default action.
async fn hand_off(ctx: StartContext, stop: StopSignals) -> anyhow::Result<ExitCode> {
    let result = crate::runtime::run(ctx).await;
    drop(stop);
    result
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

    #[expect(
        dead_code,
        reason = "the runtime now handles the signals; kept for callers without a runtime"
    )]
    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
