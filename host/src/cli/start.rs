//! `start`: preflight, then hand the worker to the runtime (with `--tui`, under the dashboard).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use super::{Output, state_tree};
use crate::coded::CodedError;
use crate::dashboard::model::{Identity, Slots, Snapshot};
use crate::dashboard::terminal::Dashboard;
use crate::runtime::supervisor::RunView;
use crate::signals::StopRequests;
use crate::start::{Started, preflight};

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Show the live dashboard instead of log lines (logs go to <tree>/logs/<instance>/worker.jsonl).
    #[arg(long)]
    pub tui: bool,
    /// Serve /healthz and /metrics (Prometheus) on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Allow a --metrics-addr that other machines can reach (not loopback).
    #[arg(long, requires = "metrics_addr")]
    pub metrics_public: bool,
}

/// The line printed (on stderr) once preflight has passed and the lock is held. Tests wait for
/// it to know that a worker is running.
pub const STARTED_MARKER: &str = "worker started:";

pub async fn run(args: StartArgs, output: &Output) -> anyhow::Result<ExitCode> {
    // Before preflight touches anything: the dashboard needs a terminal to draw on.
    if args.tui && !std::io::stdout().is_terminal() {
        return Err(CodedError::new(
            "TUI_NEEDS_TERMINAL",
            "start --tui needs standard output to be a terminal",
        )
        .with_hint("run it in a terminal, or drop --tui to get log lines")
        .into());
    }
    if let Some(addr) = args.metrics_addr {
        crate::metrics::check_addr(addr, args.metrics_public)?;
    }
    let tree = state_tree()?;
    let started = preflight(tree, args.tui).await?;
    for warning in &started.warnings {
        output.note(&format!("warning: {}: {warning}", warning.code));
    }
    // Installed before the start line, so that a SIGTERM sent as soon as the line appears is
    // already a graceful stop rather than the default action (termination). The one place that
    // handles signals: see `crate::signals`.
    let (stop, stopper) = StopRequests::install()?;
    let ctx = &started.context;
    let view: Arc<OnceLock<RunView>> = Arc::default();
    let source: crate::status_socket::Source = Arc::new(snapshots(
        identity(&started),
        Arc::clone(&view),
        stop.clone(),
    ));
    // `top`, `status` and `stop` reach this worker through the socket; a worker that cannot
    // serve it still runs (they fall back to the lock's pid).
    let socket_path = crate::status_socket::path(ctx.tree.root());
    let socket = crate::status_socket::serve(&socket_path, Arc::clone(&source), stopper.clone())
        .inspect_err(|e| {
            tracing::warn!(path = %socket_path.display(), error = %e, "status_socket_unavailable");
        })
        .ok();
    let metrics = match args.metrics_addr {
        Some(addr) => Some(
            crate::metrics::serve(addr, Arc::clone(&source))
                .await
                .map_err(|e| {
                    CodedError::new(
                        "METRICS_ADDR_UNAVAILABLE",
                        format!("cannot listen on --metrics-addr {addr}: {e}"),
                    )
                    .with_hint("pick a free port")
                })?,
        ),
        None => None,
    };
    let dashboard = if args.tui {
        let log = ctx
            .tree
            .root()
            .join("logs")
            .join(&ctx.instance.instance_id)
            .join("worker.jsonl");
        super::log_to_file(&log)?;
        let source = Arc::clone(&source);
        Some(Dashboard::start(move || source(), stopper)?)
    } else {
        // Printed even with --quiet: it is the one signal that the worker runs. With --json it
        // is a JSON line on stdout instead, so stderr holds JSON log records only.
        if output.json {
            output.result(
                "",
                serde_json::json!({
                    "event": "started",
                    "instance_id": ctx.instance.instance_id,
                    "pid": ctx.instance.pid,
                    "user": started.user,
                    "sections": ctx.config.sections.len(),
                    "state_tree": ctx.tree.root(),
                    "warnings": started.warnings,
                    "metrics": metrics.as_ref().map(|m| format!("http://{}", m.addr)),
                }),
            );
        } else {
            eprintln!(
                "{STARTED_MARKER} instance {} (pid {}) as {} ({}), {} section(s), state tree {}{}",
                ctx.instance.instance_id,
                ctx.instance.pid,
                started.user.name,
                started.user.id,
                ctx.config.sections.len(),
                ctx.tree.root().display(),
                metrics
                    .as_ref()
                    .map(|m| format!(", metrics on http://{}", m.addr))
                    .unwrap_or_default()
            );
        }
        None
    };
    // Startup touched far more memory than the running worker needs: give it back once settled.
    super::memory::schedule_release();
    let lock = started.lock;
    crate::start::run(
        started.context,
        started.runtime,
        started.verdicts,
        stop,
        move |v| {
            let _ = view.set(v);
        },
    )
    .await;
    if let Some(dashboard) = dashboard
        && let Err(e) = dashboard.close()
    {
        tracing::warn!(error = %e, "dashboard_failed");
    }
    drop(metrics);
    // The socket goes before the lock: a `stop` waiting for this process sees it gone first.
    drop(socket);
    // Clean exit, whatever the runtime's outcome: the lock file goes away.
    if let Err(e) = lock.release() {
        tracing::warn!(error = %e, "could not remove instance.yaml");
    }
    Ok(ExitCode::SUCCESS)
}

fn identity(started: &Started) -> Identity {
    let ctx = &started.context;
    Identity {
        version: env!("CARGO_PKG_VERSION").into(),
        user: if started.user.name.is_empty() {
            started.user.id.clone()
        } else {
            started.user.name.clone()
        },
        instance_id: ctx.instance.instance_id.clone(),
        sections: ctx.config.sections.len(),
        pid: ctx.instance.pid,
        started_at: ctx.instance.started_at.clone(),
    }
}

/// The snapshot source of the dashboard and the status socket: the runtime's board and slot
/// pool once they exist.
fn snapshots(
    identity: Identity,
    view: Arc<OnceLock<RunView>>,
    stop: StopRequests,
) -> impl Fn() -> Snapshot + Send + Sync + 'static {
    move || {
        let (sections, errors, slots) = match view.get() {
            Some(v) => {
                let (busy, total) = v.slots.usage();
                let (held, held_max) = v.held_waits.usage();
                let slots = Slots {
                    busy,
                    total,
                    held,
                    held_max,
                };
                (v.status.snapshot(), v.status.recent_errors(), slots)
            }
            None => Default::default(),
        };
        Snapshot {
            identity: identity.clone(),
            clock: crate::state_tree::utc_now_seconds(),
            slots,
            sections,
            errors,
            stopping: *stop.shutdown.borrow(),
        }
    }
}
