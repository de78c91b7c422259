//! `blobhub:worker/held-waits`: the worker-wide registry of agents blocked on a person's answer,
//! bounded by `concurrency.held_waits_max`.
//!
//! One owner (this registry, shared by every section and job type): a held wait costs a live
//! agent process but no agent slot, so without a bound unanswered questions could pile up live
//! processes without limit. Registering past the cap demotes the oldest wait; its job type then
//! parks the question (stops the process, keeps the question open) — docs/session-agent-harness.md,
//! "Held waits".

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::held_waits as wit;

#[derive(Debug)]
struct Entry {
    id: u64,
    key: String,
    demoted: watch::Sender<bool>,
}

#[derive(Debug)]
struct Registry {
    cap: u32,
    /// Registered waits, oldest first.
    entries: VecDeque<Entry>,
    next: u64,
}

#[derive(Debug, Clone)]
pub struct HeldWaits {
    registry: Arc<Mutex<Registry>>,
}

impl HeldWaits {
    pub fn new(cap: u32) -> Self {
        HeldWaits {
            registry: Arc::new(Mutex::new(Registry {
                cap,
                entries: VecDeque::new(),
                next: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every critical section leaves the registry consistent.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a wait; demotes the oldest ones while the count is over the cap.
    pub fn begin(&self, key: &str) -> HeldWaitHandle {
        let (tx, rx) = watch::channel(false);
        let mut r = self.lock();
        r.next += 1;
        let id = r.next;
        r.entries.push_back(Entry {
            id,
            key: key.to_string(),
            demoted: tx,
        });
        while r.entries.len() > r.cap as usize {
            let Some(oldest) = r.entries.pop_front() else {
                break;
            };
            // The job type logs `held_wait_demoted` with the question it parks.
            tracing::debug!(key = %oldest.key, cap = r.cap, "held_wait_over_cap");
            oldest.demoted.send_replace(true);
        }
        HeldWaitHandle {
            waits: self.clone(),
            id,
            demoted: rx,
        }
    }

    /// (registered now, cap).
    pub fn usage(&self) -> (u32, u32) {
        let r = self.lock();
        (u32::try_from(r.entries.len()).unwrap_or(u32::MAX), r.cap)
    }
}

/// One registered wait; dropping it leaves the registry.
pub struct HeldWaitHandle {
    waits: HeldWaits,
    id: u64,
    demoted: watch::Receiver<bool>,
}

impl HeldWaitHandle {
    pub fn is_demoted(&self) -> bool {
        *self.demoted.borrow()
    }
}

impl Drop for HeldWaitHandle {
    fn drop(&mut self) {
        let id = self.id;
        self.waits.lock().entries.retain(|e| e.id != id);
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for HeldWaitHandle {
    async fn ready(&mut self) {
        // The sender is gone only once the wait left the registry undemoted: never ready then.
        if self.demoted.wait_for(|d| *d).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl wit::Host for SectionHost {
    fn begin(&mut self, key: String) -> wasmtime::Result<Resource<HeldWaitHandle>> {
        let key = format!("{}/{key}", self.section.label());
        Ok(self
            .table
            .push(self.section.shared.held_waits.begin(&key))?)
    }

    fn usage(&mut self) -> wasmtime::Result<(u32, u32)> {
        Ok(self.section.shared.held_waits.usage())
    }
}

impl wit::HostHeldWait for SectionHost {
    fn demoted(
        &mut self,
        wait: Resource<HeldWaitHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(&mut self.table, wait)
    }

    fn is_demoted(&mut self, wait: Resource<HeldWaitHandle>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&wait)?.is_demoted())
    }

    fn drop(&mut self, wait: Resource<HeldWaitHandle>) -> wasmtime::Result<()> {
        self.table.delete(wait)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_wait_is_demoted() {
        let waits = HeldWaits::new(1);
        let first = waits.begin("a");
        assert!(!first.is_demoted());
        let second = waits.begin("b");
        assert!(first.is_demoted());
        assert!(!second.is_demoted());
        assert_eq!(waits.usage(), (1, 1));
        drop(first);
        assert_eq!(waits.usage(), (1, 1), "a demoted wait no longer counts");
        drop(second);
        assert_eq!(waits.usage(), (0, 1));
    }

    #[test]
    fn a_wait_that_ends_makes_room() {
        let waits = HeldWaits::new(2);
        let a = waits.begin("a");
        let b = waits.begin("b");
        drop(a);
        let c = waits.begin("c");
        assert!(!b.is_demoted() && !c.is_demoted());
        let d = waits.begin("d");
        assert!(b.is_demoted(), "the oldest left is b");
        assert!(!c.is_demoted() && !d.is_demoted());
    }
}
