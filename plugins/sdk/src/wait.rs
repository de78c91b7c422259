//! Futures over the host's waiting handles.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::bindings::blobhub::worker::{feed, process, session, slots, worker};
use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::io::poll::Pollable;
use crate::executor;

/// Completes once `pollable` is ready.
pub fn wait_for(pollable: Pollable) -> WaitFor {
    WaitFor {
        pollable: Some(pollable),
        key: None,
    }
}

/// See [`wait_for`].
pub struct WaitFor {
    pollable: Option<Pollable>,
    key: Option<u64>,
}

impl Future for WaitFor {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(key) = self.key {
            if executor::check(key, cx.waker()) {
                self.key = None;
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        let Some(pollable) = self.pollable.take() else {
            return Poll::Ready(());
        };
        if pollable.ready() {
            return Poll::Ready(());
        }
        self.key = Some(executor::register(pollable, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for WaitFor {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            executor::deregister(key);
        }
    }
}

/// Sleep for `duration` (a `wasi:clocks/monotonic-clock` timer).
pub async fn sleep(duration: Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    wait_for(monotonic_clock::subscribe_duration(nanos)).await;
}

/// Completes when the worker starts shutting down.
pub async fn shutdown() {
    wait_for(worker::shutdown_signal()).await;
}

/// The outcome of a session request.
pub async fn reply(reply: session::Reply) -> Result<String, session::ApiError> {
    loop {
        if let Some(value) = reply.take() {
            return value;
        }
        wait_for(reply.subscribe()).await;
    }
}

/// The next batch (or failure) of a feed subscription.
pub async fn next_batch(
    subscription: &feed::Subscription,
) -> Result<feed::Batch, session::ApiError> {
    loop {
        if let Some(value) = subscription.next() {
            return value;
        }
        wait_for(subscription.subscribe()).await;
    }
}

/// The next line or the exit of a child; `None` once the exit has been returned.
pub async fn next_output(child: &process::Child) -> process::Output {
    loop {
        if let Some(value) = child.next_output() {
            return value;
        }
        wait_for(child.subscribe()).await;
    }
}

/// The process id of a child, once the host has started it (0 when it could not be started).
/// Waiting here instead of calling `pid` at once lets the host start several children side by
/// side: `pid` would hold the whole instance until this one's start is done.
pub async fn started(child: &process::Child) -> u32 {
    wait_for(child.started()).await;
    child.pid()
}

/// The process id of a child if the host has started it by now (0 when it could not be
/// started); `None` while it is being started. Never waits.
pub fn pid_if_started(child: &process::Child) -> Option<u32> {
    child.started().ready().then(|| child.pid())
}

/// An agent slot from the worker-wide FIFO pool.
pub async fn acquire_slot() -> slots::Slot {
    if let Some(slot) = slots::try_acquire() {
        return slot;
    }
    let waiter = slots::acquire();
    loop {
        if let Some(slot) = waiter.take() {
            return slot;
        }
        wait_for(waiter.subscribe()).await;
    }
}

/// Which of two futures finished first.
#[derive(Debug)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Run two futures together and return the first to finish (the other is dropped).
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}
