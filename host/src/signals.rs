//! SIGINT and SIGTERM, handled in one place for the whole process.
//!
//! The handlers are installed before `start` prints its start line, so a signal that arrives at
//! any moment after that is a graceful stop rather than the default action (termination), and
//! nothing downstream installs handlers of its own. The first SIGINT or SIGTERM asks for a
//! graceful stop; a second SIGINT forces one (sections still draining are cancelled).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// What the process has been asked to do, as watch channels: `shutdown` flips to true on the
/// first signal, `force` on the second SIGINT. Cheap to clone; every clone sees the same flips.
#[derive(Debug, Clone)]
pub struct StopRequests {
    pub shutdown: watch::Receiver<bool>,
    pub force: watch::Receiver<bool>,
}

impl StopRequests {
    /// Install the handlers. Must run inside the tokio runtime.
    pub fn install() -> std::io::Result<StopRequests> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (force_tx, force) = watch::channel(false);
        tokio::spawn(async move {
            let mut interrupts = 0;
            loop {
                tokio::select! {
                    Some(()) = interrupt.recv() => interrupts += 1,
                    Some(()) = terminate.recv() => {}
                    else => return,
                }
                shutdown_tx.send_replace(true);
                if interrupts >= 2 {
                    force_tx.send_replace(true);
                    return;
                }
            }
        });
        Ok(StopRequests { shutdown, force })
    }

    /// Requests that never fire, with the senders that fire them: for tests and embedders
    /// (such as `demo`) that stop the runtime themselves.
    pub fn manual() -> (watch::Sender<bool>, watch::Sender<bool>, StopRequests) {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (force_tx, force) = watch::channel(false);
        (shutdown_tx, force_tx, StopRequests { shutdown, force })
    }
}
