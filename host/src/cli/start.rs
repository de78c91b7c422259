//! `start`: preflight, then hand the worker to the runtime.

use std::process::ExitCode;

use super::{Output, state_tree};
use crate::signals::StopRequests;
use crate::start::preflight;

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
    // already a graceful stop rather than the default action (termination). The one place that
    // handles signals: see `crate::signals`.
    let stop = StopRequests::install()?;
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
    let result = crate::runtime::run(started.context, started.runtime, stop).await;
    // Clean exit, whatever the runtime's outcome: the lock file goes away.
    if let Err(e) = lock.release() {
        tracing::warn!(error = %e, "could not remove instance.yaml");
    }
    result
}
