//! SIGINT and SIGTERM, handled in one place for the whole process.
//!
//! The handlers are installed before `start` prints its start line, so a signal that arrives at
//! any moment after that is a graceful stop rather than the default action (termination), and
//! nothing downstream installs handlers of its own. The first SIGINT or SIGTERM asks for a
//! graceful stop; a second SIGINT forces one (sections still draining are cancelled).
//!
//! The live dashboard puts the terminal in raw mode, where Ctrl-C is a key rather than a
//! signal: it asks for stops through a [`Stopper`], which flips the very same requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// What the process has been asked to do, as watch channels: `shutdown` flips to true on the
/// first signal, `force` on the second SIGINT. Cheap to clone; every clone sees the same flips.
#[derive(Debug, Clone)]
pub struct StopRequests {
    pub shutdown: watch::Receiver<bool>,
    pub force: watch::Receiver<bool>,
}

/// The senders behind [`StopRequests`], shared by the signal handler and the [`Stopper`]s.
#[derive(Debug)]
struct Senders {
    shutdown: watch::Sender<bool>,
    force: watch::Sender<bool>,
    interrupts: AtomicU32,
}

impl Senders {
    fn terminate(&self) {
        self.shutdown.send_replace(true);
    }

    /// Returns true once the interrupt forced the stop.
    fn interrupt(&self) -> bool {
        let interrupts = self.interrupts.fetch_add(1, Ordering::SeqCst) + 1;
        self.shutdown.send_replace(true);
        if interrupts >= 2 {
            self.force.send_replace(true);
            return true;
        }
        false
    }
}

/// Asks for a stop from inside the process, exactly as a signal would: [`Stopper::terminate`]
/// is SIGTERM (graceful), [`Stopper::interrupt`] is SIGINT (graceful, the second one forces).
#[derive(Debug, Clone)]
pub struct Stopper(Arc<Senders>);

impl Stopper {
    pub fn terminate(&self) {
        self.0.terminate();
    }

    pub fn interrupt(&self) {
        self.0.interrupt();
    }

    /// Whether a stop has been asked for (by a signal or a stopper).
    pub fn requested(&self) -> bool {
        *self.0.shutdown.borrow()
    }
}

impl StopRequests {
    /// Install the handlers. Must run inside the tokio runtime. The [`Stopper`] asks for the
    /// same stops from inside the process (the dashboard's `q` and Ctrl-C).
    pub fn install() -> std::io::Result<(StopRequests, Stopper)> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (requests, senders) = Self::channels();
        let task_senders = Arc::clone(&senders);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = interrupt.recv() => {
                        if task_senders.interrupt() {
                            return;
                        }
                    }
                    Some(()) = terminate.recv() => task_senders.terminate(),
                    else => return,
                }
            }
        });
        Ok((requests, Stopper(senders)))
    }

    /// Requests that never fire, with the senders that fire them: for tests and embedders
    /// (such as `demo`) that stop the runtime themselves.
    pub fn manual() -> (watch::Sender<bool>, watch::Sender<bool>, StopRequests) {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (force_tx, force) = watch::channel(false);
        (shutdown_tx, force_tx, StopRequests { shutdown, force })
    }

    /// Requests fired only by the returned [`Stopper`] (no signal handlers): for tests.
    pub fn with_stopper() -> (StopRequests, Stopper) {
        let (requests, senders) = Self::channels();
        (requests, Stopper(senders))
    }

    fn channels() -> (StopRequests, Arc<Senders>) {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (force_tx, force) = watch::channel(false);
        let senders = Arc::new(Senders {
            shutdown: shutdown_tx,
            force: force_tx,
            interrupts: AtomicU32::new(0),
        });
        (StopRequests { shutdown, force }, senders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopper_flips_the_same_requests_as_the_signals() {
        let (requests, senders) = StopRequests::channels();
        let stopper = Stopper(senders);
        assert!(!stopper.requested());
        stopper.terminate();
        assert!(*requests.shutdown.borrow() && !*requests.force.borrow());
        stopper.interrupt();
        assert!(!*requests.force.borrow(), "one interrupt is graceful");
        stopper.interrupt();
        assert!(*requests.force.borrow(), "the second interrupt forces");
        assert!(stopper.requested());
    }
}
