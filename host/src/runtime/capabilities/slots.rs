//! `blobhub:worker/slots`: the worker-wide `concurrency.max_agents` pool, FIFO.
//!
//! tokio's semaphore is fair (FIFO), and `try_acquire` fails while anyone is queued because a
//! queued waiter means no permit is free.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use crate::runtime::store::SectionHost;
use crate::runtime::wit::latest::slots as wit;

#[derive(Debug, Clone)]
pub struct SlotPool {
    semaphore: Arc<Semaphore>,
    capacity: u32,
}

impl SlotPool {
    pub fn new(capacity: u32) -> Self {
        SlotPool {
            semaphore: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// (in use, capacity).
    pub fn usage(&self) -> (u32, u32) {
        let free = u32::try_from(self.semaphore.available_permits()).unwrap_or(self.capacity);
        (self.capacity.saturating_sub(free), self.capacity)
    }
}

/// A held slot; dropping it gives it back.
pub struct SlotHandle {
    _permit: OwnedSemaphorePermit,
}

type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// A place in the queue.
pub struct WaiterHandle {
    acquire: Option<Acquire>,
    permit: Option<OwnedSemaphorePermit>,
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for WaiterHandle {
    async fn ready(&mut self) {
        if self.permit.is_none() {
            match self.acquire.as_mut() {
                Some(fut) => {
                    self.permit = fut.await;
                    self.acquire = None;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
}

impl wit::Host for SectionHost {
    fn try_acquire(&mut self) -> wasmtime::Result<Option<Resource<SlotHandle>>> {
        let sem = Arc::clone(&self.section.shared.slots.semaphore);
        match sem.try_acquire_owned() {
            Ok(permit) => Ok(Some(self.table.push(SlotHandle { _permit: permit })?)),
            Err(_) => Ok(None),
        }
    }

    fn acquire(&mut self) -> wasmtime::Result<Resource<WaiterHandle>> {
        let sem = Arc::clone(&self.section.shared.slots.semaphore);
        let mut acquire: Acquire = Box::pin(async move { sem.acquire_owned().await.ok() });
        // Poll once now so the waiter takes its place in the FIFO queue immediately.
        let mut cx = Context::from_waker(Waker::noop());
        let permit = match acquire.as_mut().poll(&mut cx) {
            Poll::Ready(permit) => {
                return Ok(self.table.push(WaiterHandle {
                    acquire: None,
                    permit,
                })?);
            }
            Poll::Pending => None,
        };
        Ok(self.table.push(WaiterHandle {
            acquire: Some(acquire),
            permit,
        })?)
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
        let handle = self.table.get_mut(&waiter)?;
        if handle.permit.is_none()
            && let Some(fut) = handle.acquire.as_mut()
        {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(permit) = fut.as_mut().poll(&mut cx) {
                handle.permit = permit;
                handle.acquire = None;
            }
        }
        match handle.permit.take() {
            Some(permit) => Ok(Some(self.table.push(SlotHandle { _permit: permit })?)),
            None => Ok(None),
        }
    }

    fn drop(&mut self, waiter: Resource<WaiterHandle>) -> wasmtime::Result<()> {
        self.table.delete(waiter)?;
        Ok(())
    }
}

impl wit::HostSlot for SectionHost {
    fn drop(&mut self, slot: Resource<SlotHandle>) -> wasmtime::Result<()> {
        self.table.delete(slot)?;
        Ok(())
    }
}
