//! `blobhub:worker/slots`: the worker-wide `concurrency.max_agents` pool, FIFO, with idle slots
//! asked back under contention.
//!
//! The pool is one owner of its state (a mutex over [`Pool`]): who holds a slot, who is queued,
//! which holders are idle and which of those were asked to give their slot back. A released
//! slot goes straight to the oldest waiter, so a thread that queues is served in order and a
//! `try-acquire` never jumps the queue.
//!
//! Asking back: a thread keeps its slot between turns (its agent session resumes at once), but
//! only while nobody waits. For every queued waiter without a slot on its way, the host asks the
//! longest-idle slot back through its `wanted` pollable (docs/session-agent-harness.md,
//! "Agent slots").

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, watch};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::slots as wit;

/// A place in the queue, shared between the pool and the waiter's handle.
#[derive(Debug, Default)]
struct Ticket {
    /// A slot was handed to this waiter (it counts as in use from then on).
    granted: AtomicBool,
    /// The handle gave up its place (dropped before it was granted).
    cancelled: AtomicBool,
    notify: Notify,
}

/// A held slot, as the pool sees it.
#[derive(Debug)]
struct Held {
    /// When it went idle (a pool-wide sequence number), if it is idle.
    idle_since: Option<u64>,
    /// Asked back: ready through `wanted`.
    wanted: watch::Sender<bool>,
}

#[derive(Debug)]
struct Pool {
    capacity: u32,
    in_use: u32,
    queue: VecDeque<Arc<Ticket>>,
    held: BTreeMap<u64, Held>,
    /// Idle slots by when they went idle: the first is the longest idle.
    idle: BTreeMap<u64, u64>,
    /// Slots asked back and not yet returned.
    asked: u32,
    next: u64,
}

impl Pool {
    fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn new_slot(&mut self) -> u64 {
        let id = self.seq();
        let (wanted, _) = watch::channel(false);
        self.held.insert(
            id,
            Held {
                idle_since: None,
                wanted,
            },
        );
        id
    }

    /// Ask idle slots back while queued waiters outnumber the slots already asked for.
    fn rebalance(&mut self) {
        while self.queue.len() > self.asked as usize {
            let Some((_, id)) = self.idle.pop_first() else {
                return;
            };
            if let Some(h) = self.held.get_mut(&id) {
                h.idle_since = None;
                h.wanted.send_replace(true);
                self.asked += 1;
                tracing::debug!(slot = id, "slot_asked_back");
            }
        }
    }

    /// A slot came back: to the oldest waiter still waiting, else to the free count.
    fn release_permit(&mut self) {
        while let Some(ticket) = self.queue.pop_front() {
            if ticket.cancelled.load(Ordering::SeqCst) {
                continue;
            }
            ticket.granted.store(true, Ordering::SeqCst);
            ticket.notify.notify_one();
            return;
        }
        self.in_use = self.in_use.saturating_sub(1);
    }

    fn release(&mut self, id: u64) {
        if let Some(h) = self.held.remove(&id) {
            if let Some(since) = h.idle_since {
                self.idle.remove(&since);
            }
            if *h.wanted.borrow() {
                self.asked = self.asked.saturating_sub(1);
            }
        }
        self.release_permit();
        self.rebalance();
    }

    fn set_idle(&mut self, id: u64, idle: bool) {
        let seq = self.seq();
        let Some(h) = self.held.get_mut(&id) else {
            return;
        };
        match (idle, h.idle_since) {
            (true, None) if !*h.wanted.borrow() => {
                h.idle_since = Some(seq);
                self.idle.insert(seq, id);
            }
            (false, Some(since)) => {
                h.idle_since = None;
                self.idle.remove(&since);
            }
            (false, None) if *h.wanted.borrow() => {
                // Busy again before it gave the slot back: the request goes to another idle slot.
                h.wanted.send_replace(false);
                self.asked = self.asked.saturating_sub(1);
            }
            _ => {}
        }
        self.rebalance();
    }
}

#[derive(Debug, Clone)]
pub struct SlotPool {
    pool: Arc<Mutex<Pool>>,
}

impl SlotPool {
    pub fn new(capacity: u32) -> Self {
        SlotPool {
            pool: Arc::new(Mutex::new(Pool {
                capacity,
                in_use: 0,
                queue: VecDeque::new(),
                held: BTreeMap::new(),
                idle: BTreeMap::new(),
                asked: 0,
                next: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        // Every critical section leaves the pool consistent, so a panic elsewhere cannot have
        // left it half-changed.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (in use, capacity).
    pub fn usage(&self) -> (u32, u32) {
        let p = self.lock();
        (p.in_use, p.capacity)
    }

    /// A slot now, unless none is free or someone is queued.
    pub fn try_acquire(&self) -> Option<SlotHandle> {
        let mut p = self.lock();
        if p.in_use >= p.capacity || !p.queue.is_empty() {
            return None;
        }
        p.in_use += 1;
        let id = p.new_slot();
        Some(self.handle(&p, id))
    }

    /// A place in the queue (granted at once when a slot is free and nobody is queued).
    pub fn acquire(&self) -> WaiterHandle {
        let ticket = Arc::new(Ticket::default());
        let mut p = self.lock();
        if p.in_use < p.capacity && p.queue.is_empty() {
            p.in_use += 1;
            ticket.granted.store(true, Ordering::SeqCst);
        } else {
            p.queue.push_back(Arc::clone(&ticket));
            p.rebalance();
        }
        WaiterHandle {
            pool: self.clone(),
            ticket,
            taken: false,
        }
    }

    fn handle(&self, p: &Pool, id: u64) -> SlotHandle {
        let wanted = p.held.get(&id).map(|h| h.wanted.subscribe());
        SlotHandle {
            pool: self.clone(),
            id,
            wanted: wanted.unwrap_or_else(|| watch::channel(false).1),
        }
    }
}

/// A held slot; dropping it gives it back.
pub struct SlotHandle {
    pool: SlotPool,
    id: u64,
    wanted: watch::Receiver<bool>,
}

impl SlotHandle {
    pub fn set_idle(&self, idle: bool) {
        self.pool.lock().set_idle(self.id, idle);
    }

    pub fn is_wanted(&self) -> bool {
        *self.wanted.borrow()
    }
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        self.pool.lock().release(self.id);
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for SlotHandle {
    async fn ready(&mut self) {
        if self.wanted.wait_for(|w| *w).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A place in the queue.
pub struct WaiterHandle {
    pool: SlotPool,
    ticket: Arc<Ticket>,
    taken: bool,
}

impl WaiterHandle {
    /// The slot, once granted; `None` before (and after it was taken).
    pub fn take(&mut self) -> Option<SlotHandle> {
        if self.taken || !self.ticket.granted.load(Ordering::SeqCst) {
            return None;
        }
        self.taken = true;
        let mut p = self.pool.lock();
        let id = p.new_slot();
        Some(self.pool.handle(&p, id))
    }
}

impl Drop for WaiterHandle {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut p = self.pool.lock();
        // Under the lock: a grant cannot race this check.
        if self.ticket.granted.load(Ordering::SeqCst) {
            // Granted but never taken: it goes to the next waiter.
            p.release_permit();
            p.rebalance();
        } else {
            self.ticket.cancelled.store(true, Ordering::SeqCst);
            p.queue.retain(|t| !Arc::ptr_eq(t, &self.ticket));
        }
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for WaiterHandle {
    async fn ready(&mut self) {
        while !self.taken && !self.ticket.granted.load(Ordering::SeqCst) {
            self.ticket.notify.notified().await;
        }
        if self.taken {
            std::future::pending::<()>().await;
        }
    }
}

impl wit::Host for SectionHost {
    fn try_acquire(&mut self) -> wasmtime::Result<Option<Resource<SlotHandle>>> {
        match self.section.shared.slots.try_acquire() {
            Some(slot) => Ok(Some(self.table.push(slot)?)),
            None => Ok(None),
        }
    }

    fn acquire(&mut self) -> wasmtime::Result<Resource<WaiterHandle>> {
        Ok(self.table.push(self.section.shared.slots.acquire())?)
    }

    fn usage(&mut self) -> wasmtime::Result<(u32, u32)> {
        Ok(self.section.shared.slots.usage())
    }
}

impl wit::HostWaiter for SectionHost {
    fn subscribe(
        &mut self,
        waiter: Resource<WaiterHandle>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(&mut self.table, waiter)
    }

    fn take(
        &mut self,
        waiter: Resource<WaiterHandle>,
    ) -> wasmtime::Result<Option<Resource<SlotHandle>>> {
        match self.table.get_mut(&waiter)?.take() {
            Some(slot) => Ok(Some(self.table.push(slot)?)),
            None => Ok(None),
        }
    }

    fn drop(&mut self, waiter: Resource<WaiterHandle>) -> wasmtime::Result<()> {
        self.table.delete(waiter)?;
        Ok(())
    }
}

impl wit::HostSlot for SectionHost {
    fn set_idle(&mut self, slot: Resource<SlotHandle>, idle: bool) -> wasmtime::Result<()> {
        self.table.get(&slot)?.set_idle(idle);
        Ok(())
    }

    fn wanted(&mut self, slot: Resource<SlotHandle>) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(&mut self.table, slot)
    }

    fn drop(&mut self, slot: Resource<SlotHandle>) -> wasmtime::Result<()> {
        self.table.delete(slot)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_acquire_never_jumps_the_queue() {
        let pool = SlotPool::new(1);
        let a = pool.try_acquire().expect("free");
        assert!(pool.try_acquire().is_none());
        let mut w = pool.acquire();
        assert!(w.take().is_none());
        drop(a);
        // The released slot went to the waiter, not to the free count.
        assert!(pool.try_acquire().is_none());
        let _slot = w.take().expect("granted");
        assert_eq!(pool.usage(), (1, 1));
    }

    #[test]
    fn a_queued_waiter_asks_the_longest_idle_slot_back() {
        let pool = SlotPool::new(2);
        let a = pool.try_acquire().unwrap();
        let b = pool.try_acquire().unwrap();
        b.set_idle(true);
        a.set_idle(true);
        assert!(!a.is_wanted() && !b.is_wanted(), "nobody waits");
        let mut w = pool.acquire();
        assert!(b.is_wanted(), "b has been idle longest");
        assert!(!a.is_wanted(), "one slot per waiter");
        drop(b);
        assert!(w.take().is_some());
        assert!(!a.is_wanted());
    }

    #[test]
    fn a_slot_that_goes_busy_hands_the_request_on() {
        let pool = SlotPool::new(2);
        let a = pool.try_acquire().unwrap();
        let b = pool.try_acquire().unwrap();
        a.set_idle(true);
        let _w = pool.acquire();
        assert!(a.is_wanted());
        a.set_idle(false);
        assert!(!a.is_wanted());
        assert!(!b.is_wanted(), "b is busy");
        b.set_idle(true);
        assert!(b.is_wanted(), "the next slot to go idle is asked");
    }

    #[test]
    fn a_dropped_waiter_leaves_the_queue_and_passes_on_a_grant() {
        let pool = SlotPool::new(1);
        let a = pool.try_acquire().unwrap();
        let w1 = pool.acquire();
        let mut w2 = pool.acquire();
        drop(a);
        // w1 was granted but never took it: the slot moves on to w2.
        drop(w1);
        let _slot = w2.take().expect("granted");
        let w3 = pool.acquire();
        drop(w3);
        assert_eq!(pool.usage(), (1, 1));
    }
}
