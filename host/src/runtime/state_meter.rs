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
//! round until its [`Watch`] is dropped, except in rounds where it cannot have changed: its job
//! type has not run since its last measurement (`Quotas::wasm_entries`; a WASI write, and every
//! host call that writes there, runs inside the job type) and no process the worker started is
//! alive (a child sees its section's folder). An idle worker's sections thus cost no walk
//! between their keep-alives: the walks were a tenth of its main runtime's CPU.

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
    /// The section's `wasm_entries` when its folder was last measured.
    measured_at: u64,
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
        let measured_at = section.quotas.wasm_entries.load(Ordering::Relaxed);
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
                    measured_at,
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
                .iter_mut()
                .filter_map(|e| {
                    let section = e.section.upgrade()?;
                    // Read before the walk: what runs during it is measured next round.
                    let entries = section.quotas.wasm_entries.load(Ordering::Relaxed);
                    let unchanged = entries == e.measured_at && section.shared.processes.is_empty();
                    e.measured_at = entries;
                    (!unchanged).then(|| (e.id, section.state_dir.clone()))
                })
                .collect()
        };
        // Not kept across the walk: a meter dropped meanwhile ends the rounds.
        drop(inner);
        let (ids, dirs): (Vec<u64>, Vec<PathBuf>) = watched.into_iter().unzip();
        let used = if dirs.is_empty() {
            Vec::new()
        } else {
            measure(dirs).await
        };
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

    /// The section's job type ran (as when it writes through WASI).
    fn ran(section: &SectionContext) {
        section.quotas.wasm_entries.fetch_add(1, Ordering::Relaxed);
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
        ran(&sa);
        ran(&sb);
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
        ran(&s);
        let message = tokio::time::timeout(Duration::from_secs(10), again.over_quota())
            .await
            .expect("measured by the restarted rounds");
        assert!(message.contains("holds 200 bytes"), "{message}");
    }

    #[tokio::test]
    async fn a_folder_is_walked_again_only_after_its_job_type_ran_or_while_a_child_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let meter = StateMeter::new(EVERY);
        let s = section(tmp.path(), 100);
        let mut watch = meter.watch(&s).await;
        // Written past the quota behind the job type's back (nothing ran, no child).
        std::fs::write(tmp.path().join("big"), [0u8; 200]).unwrap();
        let done = *meter.inner.rounds.borrow();
        tokio::select! {
            m = watch.over_quota() => panic!("not walked, yet: {m}"),
            () = rounds(&meter, done + 3) => {}
        }
        assert_eq!(s.quotas.state_used.load(Ordering::Relaxed), 0);
        // A live child of the worker could write there: walked while it lives (a group id no
        // process has, should anything signal it).
        s.shared.processes.add(i32::MAX);
        let message = tokio::time::timeout(Duration::from_secs(10), watch.over_quota())
            .await
            .expect("walked while a child lives");
        s.shared.processes.remove(i32::MAX);
        assert!(message.contains("holds 200 bytes"), "{message}");
        // And after the job type ran.
        let tmp = tempfile::tempdir().unwrap();
        let s = section(tmp.path(), 100);
        let mut watch = meter.watch(&s).await;
        std::fs::write(tmp.path().join("big"), [0u8; 300]).unwrap();
        ran(&s);
        let message = tokio::time::timeout(Duration::from_secs(10), watch.over_quota())
            .await
            .expect("walked after the job type ran");
        assert!(message.contains("holds 300 bytes"), "{message}");
    }
}
