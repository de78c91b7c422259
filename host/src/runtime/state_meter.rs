//! One meter for the state folders of every section: each folder measured every
//! [`STATE_CHECK`](super::quotas::STATE_CHECK), all of them in one round.
//!
//! A job type also writes its state folder through WASI, which no host call sees, so the folder's
//! size is measured (`confined::usage_bytes`) and a folder over `state_quota_mib` ends its
//! section. Each section used to measure its own folder on its own timer: with ten idle sections
//! that was ten timers and ten blocking tasks every 15 s, each a wake-up of a sleeping thread,
//! and about a tenth of an idle worker's CPU (docs/benchmarks.md, "Scale and idle cost"). Here one
//! timer wakes one blocking task that walks every folder, so a round costs one wake-up of each
//! whatever the number of sections.
//!
//! A section's folder is measured once when it starts watching (so `state_used` is known before
//! its first write and a folder already over its quota ends the section at once), then in every
//! round until its [`Watch`] is dropped.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use super::capabilities::SectionContext;

/// The meter of one start; sections watch their folder through it.
pub struct StateMeter {
    inner: Arc<Inner>,
}

struct Inner {
    every: Duration,
    state: Mutex<MeterState>,
    /// Rounds completed, for tests to await one.
    #[cfg(test)]
    rounds: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct MeterState {
    next_id: u64,
    entries: Vec<Entry>,
    /// Whether the round task runs (it ends when no folder is watched).
    running: bool,
}

struct Entry {
    id: u64,
    /// Its folder is `state_dir`.
    section: Weak<SectionContext>,
    over: oneshot::Sender<String>,
}

/// One section's folder under watch; dropping it ends the watch.
pub struct Watch {
    id: u64,
    inner: Weak<Inner>,
    over: oneshot::Receiver<String>,
}

impl Watch {
    /// Resolves once the folder was measured over its quota, with the message the section ends
    /// with; never otherwise.
    pub async fn over_quota(&mut self) -> String {
        match (&mut self.over).await {
            Ok(message) => message,
            // The meter is gone (the start is ending): nothing will be measured any more.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.lock().entries.retain(|e| e.id != self.id);
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, MeterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateMeter {
    /// A meter whose rounds come `every` apart.
    pub fn new(every: Duration) -> StateMeter {
        StateMeter {
            inner: Arc::new(Inner {
                every,
                state: Mutex::default(),
                #[cfg(test)]
                rounds: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// Measure `section`'s state folder now, then in every round. Call inside a tokio runtime:
    /// the rounds run there.
    pub async fn watch(&self, section: &Arc<SectionContext>) -> Watch {
        let (tx, rx) = oneshot::channel();
        let used = measure(vec![section.state_dir.clone()])
            .await
            .pop()
            .unwrap_or(0);
        let mut state = self.inner.lock();
        state.next_id += 1;
        let id = state.next_id;
        match over_quota(section, used) {
            Some(message) => {
                let _ = tx.send(message);
            }
            None => {
                state.entries.push(Entry {
                    id,
                    section: Arc::downgrade(section),
                    over: tx,
                });
                if !state.running {
                    state.running = true;
                    tokio::spawn(rounds(Arc::downgrade(&self.inner)));
                }
            }
        }
        Watch {
            id,
            inner: Arc::downgrade(&self.inner),
            over: rx,
        }
    }
}

/// Store `used` as the section's measured use; the message to end it with when over its quota.
fn over_quota(section: &SectionContext, used: u64) -> Option<String> {
    section.quotas.state_used.store(used, Ordering::Relaxed);
    (used > section.quotas.state_bytes).then(|| {
        format!(
            "its state folder holds {used} bytes, over its quota of {} bytes (job_types.<name>.state_quota_mib)",
            section.quotas.state_bytes
        )
    })
}

/// The bytes under each of `dirs`, walked in one blocking task.
async fn measure(dirs: Vec<PathBuf>) -> Vec<u64> {
    tokio::task::spawn_blocking(move || {
        dirs.iter()
            .map(|dir| super::confined::usage_bytes(dir))
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Every `every`, measure every watched folder; ends when the meter is gone or nothing is
/// watched (the next watch starts it again).
async fn rounds(meter: Weak<Inner>) {
    loop {
        let Some(every) = meter.upgrade().map(|m| m.every) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(inner) = meter.upgrade() else {
            return;
        };
        let watched: Vec<(u64, PathBuf)> = {
            let mut state = inner.lock();
            state
                .entries
                .retain(|e| e.section.strong_count() > 0 && !e.over.is_closed());
            if state.entries.is_empty() {
                state.running = false;
                #[cfg(test)]
                inner.rounds.send_modify(|n| *n += 1);
                return;
            }
            state
                .entries
                .iter()
                .filter_map(|e| Some((e.id, e.section.upgrade()?.state_dir.clone())))
                .collect()
        };
        // Not kept across the walk: a meter dropped meanwhile ends the rounds.
        drop(inner);
        let (ids, dirs): (Vec<u64>, Vec<PathBuf>) = watched.into_iter().unzip();
        let used = measure(dirs).await;
        let Some(inner) = meter.upgrade() else {
            return;
        };
        let mut state = inner.lock();
        for (id, used) in ids.into_iter().zip(used) {
            let Some(at) = state.entries.iter().position(|e| e.id == id) else {
                continue;
            };
            let Some(section) = state.entries[at].section.upgrade() else {
                continue;
            };
            if let Some(message) = over_quota(&section, used) {
                let entry = state.entries.swap_remove(at);
                let _ = entry.over.send(message);
            }
        }
        #[cfg(test)]
        inner.rounds.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::capabilities::session::SessionBinding;
    use crate::runtime::quotas::Quotas;

    /// A section whose folder is `dir`, with a quota of `quota` bytes.
    fn section(dir: &std::path::Path, quota: u64) -> Arc<SectionContext> {
        let mut quotas = Quotas::new(&crate::config::JobTypeSettings::default());
        quotas.state_bytes = quota;
        Arc::new(SectionContext {
            index: 0,
            name: String::new(),
            job_type: String::new(),
            state_dir: dir.to_path_buf(),
            session: SessionBinding::unbound(),
            grants: Default::default(),
            quotas,
            shared: crate::runtime::store::detached_shared(),
        })
    }

    /// Wait until `n` rounds have completed.
    async fn rounds(meter: &StateMeter, n: u64) {
        let mut done = meter.inner.rounds.subscribe();
        tokio::time::timeout(Duration::from_secs(10), done.wait_for(|r| *r >= n))
            .await
            .expect("the rounds go on")
            .unwrap();
    }

    const EVERY: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn a_folder_written_past_its_quota_ends_its_watch_in_the_next_round() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("small"), [0u8; 10]).unwrap();
        let meter = StateMeter::new(EVERY);
        let (sa, sb) = (section(&a, 100), section(&b, 100));
        let mut wa = meter.watch(&sa).await;
        let mut wb = meter.watch(&sb).await;
        assert_eq!(sa.quotas.state_used.load(Ordering::Relaxed), 10);
        // Writes the host never saw (as through WASI), then rounds.
        std::fs::write(a.join("more"), [0u8; 20]).unwrap();
        std::fs::write(b.join("big"), [0u8; 150]).unwrap();
        let message = tokio::time::timeout(Duration::from_secs(10), wb.over_quota())
            .await
            .expect("measured in a round");
        assert!(message.contains("holds 150 bytes"), "{message}");
        assert_eq!(sb.quotas.state_used.load(Ordering::Relaxed), 150);
        // The other section is measured in the same rounds and stays under its quota.
        let done = *meter.inner.rounds.borrow();
        rounds(&meter, done + 2).await;
        assert_eq!(sa.quotas.state_used.load(Ordering::Relaxed), 30);
        assert_eq!(meter.inner.lock().entries.len(), 1, "b's watch has ended");
        tokio::select! {
            m = wa.over_quota() => panic!("under its quota, yet: {m}"),
            () = rounds(&meter, done + 3) => {}
        }
    }

    #[tokio::test]
    async fn a_folder_already_over_its_quota_ends_the_watch_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("big"), [0u8; 200]).unwrap();
        // No round comes within the test.
        let meter = StateMeter::new(Duration::from_secs(3600));
        let mut watch = meter.watch(&section(tmp.path(), 100)).await;
        let message = tokio::time::timeout(Duration::from_secs(10), watch.over_quota())
            .await
            .expect("no round needed");
        assert!(message.contains("over its quota of 100 bytes"), "{message}");
        assert!(meter.inner.lock().entries.is_empty());
    }

    #[tokio::test]
    async fn the_rounds_end_with_the_last_watch_and_start_again_with_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let meter = StateMeter::new(EVERY);
        let s = section(tmp.path(), 100);
        let watch = meter.watch(&s).await;
        assert!(meter.inner.lock().running);
        drop(watch);
        assert!(meter.inner.lock().entries.is_empty());
        // The task finds nothing watched at its next round and ends.
        let done = *meter.inner.rounds.borrow();
        rounds(&meter, done + 1).await;
        assert!(
            !meter.inner.lock().running,
            "no folder left: the task ended"
        );
        let mut again = meter.watch(&s).await;
        assert!(meter.inner.lock().running);
        std::fs::write(tmp.path().join("big"), [0u8; 200]).unwrap();
        let message = tokio::time::timeout(Duration::from_secs(10), again.over_quota())
            .await
            .expect("measured by the restarted rounds");
        assert!(message.contains("holds 200 bytes"), "{message}");
    }
}
