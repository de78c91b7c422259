//! The sections' state folders, measured together: one walk of every folder each
//! [`STATE_CHECK`](super::quotas::STATE_CHECK), on one blocking thread, for the whole worker.
//!
//! Why together: each section used to measure its own folder on its own schedule, each on a
//! blocking-pool thread. Sections started together measured in the same moment on as many
//! threads (five threads woken for ten sections, measured with `strace` on an idle worker), and
//! every measurement was a wake-up of a thread and a hand-off back to the runtime: on an idle
//! worker, where a wake-up after a long sleep is the dearest thing it does (docs/benchmarks.md,
//! "Scale and idle cost"), that was a visible share of the idle CPU. One round per interval
//! wakes one thread once, and the sections read their figure from it in the same wake-up.
//!
//! A section still measures its own folder once when it starts (so a folder already over its
//! quota ends the section at once), then [`StateChecks::join`]s the rounds. The round stores each
//! folder's size in its section's `quotas.state_used` (as the section's own check did) and then
//! tells every section, which compares it with its quota. The rounds task starts with the first
//! section and ends once the worker-wide state is gone.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use super::capabilities::SectionContext;

/// One per worker (in [`Shared`](super::capabilities::Shared)).
#[derive(Default)]
pub struct StateChecks {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The sections measured each round; gone ones are dropped as rounds find them.
    sections: Mutex<Vec<Weak<SectionContext>>>,
    /// The round counter, bumped after each round; `None` until the first section joins (the
    /// rounds task starts then).
    rounds: Mutex<Option<watch::Sender<u64>>>,
}

impl StateChecks {
    /// Measures `section`'s folder from now on; the receiver changes after each round.
    pub fn join(&self, section: &Arc<SectionContext>) -> watch::Receiver<u64> {
        self.inner
            .sections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(section));
        let mut rounds = self.inner.rounds.lock().unwrap_or_else(|e| e.into_inner());
        match rounds.as_ref() {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                *rounds = Some(tx.clone());
                tokio::spawn(run_rounds(Arc::downgrade(&self.inner), tx));
                rx
            }
        }
    }
}

/// Every `STATE_CHECK`: the live sections' folders, one walk on one blocking thread, their
/// sizes stored, then the round announced. Ends when the worker-wide state is dropped.
async fn run_rounds(inner: Weak<Inner>, tx: watch::Sender<u64>) {
    loop {
        // On the polls' grid (`wake_grid`): one wake-up, shared when it can be.
        let due = tokio::time::Instant::now() + super::quotas::STATE_CHECK;
        tokio::time::sleep_until(super::wake_grid::align(due)).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let live: Vec<Arc<SectionContext>> = {
            let mut sections = inner.sections.lock().unwrap_or_else(|e| e.into_inner());
            sections.retain(|s| s.strong_count() > 0);
            sections.iter().filter_map(Weak::upgrade).collect()
        };
        drop(inner);
        if live.is_empty() {
            continue;
        }
        let dirs: Vec<PathBuf> = live.iter().map(|s| s.state_dir.clone()).collect();
        let sizes = tokio::task::spawn_blocking(move || {
            dirs.iter()
                .map(|d| super::confined::usage_bytes(d))
                .collect::<Vec<u64>>()
        })
        .await
        .unwrap_or_default();
        for (section, used) in live.iter().zip(sizes) {
            section.quotas.state_used.store(used, Ordering::Relaxed);
        }
        drop(live);
        tx.send_modify(|n| *n += 1);
    }
}
