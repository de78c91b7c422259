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
use std::time::Duration;

use tokio::sync::watch;

use super::capabilities::SectionContext;

/// One per worker (in [`Shared`](super::capabilities::Shared)).
pub struct StateChecks {
    inner: Arc<Inner>,
}

impl Default for StateChecks {
    fn default() -> StateChecks {
        StateChecks::every(super::quotas::STATE_CHECK)
    }
}

struct Inner {
    /// Between rounds.
    interval: Duration,
    /// The sections measured each round; gone ones are dropped as rounds find them.
    sections: Mutex<Vec<Weak<SectionContext>>>,
    /// The round counter, bumped after each round; `None` until the first section joins (the
    /// rounds task starts then).
    rounds: Mutex<Option<watch::Sender<u64>>>,
}

impl StateChecks {
    /// Rounds every `interval` (the worker: [`STATE_CHECK`](super::quotas::STATE_CHECK)).
    pub fn every(interval: Duration) -> StateChecks {
        StateChecks {
            inner: Arc::new(Inner {
                interval,
                sections: Mutex::default(),
                rounds: Mutex::default(),
            }),
        }
    }

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
                let interval = self.inner.interval;
                tokio::spawn(run_rounds(Arc::downgrade(&self.inner), interval, tx));
                rx
            }
        }
    }
}

/// Every `STATE_CHECK`: the live sections' folders, one walk on one blocking thread, their
/// sizes stored, then the round announced. Ends when the worker-wide state is dropped.
async fn run_rounds(inner: Weak<Inner>, interval: Duration, tx: watch::Sender<u64>) {
    loop {
        // On the polls' grid (`wake_grid`): one wake-up, shared when it can be.
        let due = tokio::time::Instant::now() + interval;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::capabilities::session::SessionBinding;
    use crate::runtime::quotas::Quotas;

    fn section(dir: &std::path::Path) -> Arc<SectionContext> {
        Arc::new(SectionContext {
            index: 0,
            name: String::new(),
            job_type: String::new(),
            state_dir: dir.to_path_buf(),
            session: SessionBinding::unbound(),
            grants: Default::default(),
            quotas: Quotas::new(&Default::default()),
            shared: crate::runtime::store::detached_shared(),
        })
    }

    /// Waits for the next round (bounded, so a broken rounds task fails instead of hanging).
    async fn next_round(rounds: &mut watch::Receiver<u64>) {
        tokio::time::timeout(Duration::from_secs(30), rounds.changed())
            .await
            .expect("a round within 30 s")
            .expect("the rounds go on");
    }

    #[tokio::test]
    async fn a_round_measures_every_live_section_and_forgets_gone_ones() {
        let checks = StateChecks::every(Duration::from_millis(20));
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (sa, sb) = (section(a.path()), section(b.path()));
        let mut rounds = checks.join(&sa);
        let _ = checks.join(&sb);
        std::fs::write(a.path().join("f"), [0u8; 300]).unwrap();
        std::fs::write(b.path().join("g"), [0u8; 7]).unwrap();
        next_round(&mut rounds).await;
        next_round(&mut rounds).await;
        assert_eq!(sa.quotas.state_used.load(Ordering::Relaxed), 300);
        assert_eq!(sb.quotas.state_used.load(Ordering::Relaxed), 7);
        // A section that ended is no longer measured, and the rounds go on for the others.
        drop(sb);
        std::fs::write(a.path().join("h"), [0u8; 5]).unwrap();
        next_round(&mut rounds).await;
        next_round(&mut rounds).await;
        assert_eq!(sa.quotas.state_used.load(Ordering::Relaxed), 305);
        let left = checks.inner.sections.lock().unwrap().len();
        assert_eq!(left, 1);
    }

    #[tokio::test]
    async fn the_rounds_end_with_the_worker_state() {
        let checks = StateChecks::every(Duration::from_millis(20));
        let dir = tempfile::tempdir().unwrap();
        let s = section(dir.path());
        let mut rounds = checks.join(&s);
        next_round(&mut rounds).await;
        drop(checks);
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            while rounds.changed().await.is_ok() {}
        })
        .await;
        assert!(
            ended.is_ok(),
            "the rounds task ends once StateChecks is dropped"
        );
    }
}
