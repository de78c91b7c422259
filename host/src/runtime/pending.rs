//! The two shapes of a guest handle that waits, each a `wasi:io/poll` pollable: [`Pending`], one
//! value a tokio task is producing (a session reply), and [`Inbox`], a stream of values a task
//! sends (feed batches, a child's output lines). The capabilities wrap them in their handles so
//! that `subscribe` and `take`/`next` are written once.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// `Waiting` until the task finishes, then `Ready` once, then `Taken`. Dropping it detaches the
/// task: a request in flight still completes ("dropping it does not cancel the request").
pub struct Pending<T> {
    state: State<T>,
    /// Builds a value when the task died (a bug or a runtime shutdown), so the guest always
    /// gets an answer instead of waiting forever.
    on_failure: fn(String) -> T,
}

enum State<T> {
    Waiting(JoinHandle<T>),
    Ready(T),
    Taken,
}

impl<T: Send + 'static> Pending<T> {
    /// Starts `future` on the current tokio runtime right away: the work progresses whether or
    /// not the guest ever waits on it.
    pub fn spawn(
        future: impl Future<Output = T> + Send + 'static,
        on_failure: fn(String) -> T,
    ) -> Self {
        Pending {
            state: State::Waiting(tokio::spawn(future)),
            on_failure,
        }
    }

    /// A value that is already known.
    pub fn ready(value: T, on_failure: fn(String) -> T) -> Self {
        Pending {
            state: State::Ready(value),
            on_failure,
        }
    }

    /// The value, once, if the task has finished; never blocks.
    pub fn take(&mut self) -> Option<T> {
        if let State::Waiting(handle) = &mut self.state {
            if !handle.is_finished() {
                return None;
            }
            let mut cx = Context::from_waker(Waker::noop());
            match std::pin::Pin::new(handle).poll(&mut cx) {
                Poll::Ready(Ok(value)) => self.state = State::Ready(value),
                Poll::Ready(Err(e)) => self.state = State::Ready((self.on_failure)(e.to_string())),
                Poll::Pending => return None,
            }
        }
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Ready(value) => Some(value),
            other => {
                self.state = other;
                None
            }
        }
    }
}

#[wasmtime_wasi::async_trait]
impl<T: Send + 'static> wasmtime_wasi::p2::Pollable for Pending<T> {
    async fn ready(&mut self) {
        if let State::Waiting(handle) = &mut self.state {
            let value = match handle.await {
                Ok(value) => value,
                Err(e) => (self.on_failure)(e.to_string()),
            };
            self.state = State::Ready(value);
        }
    }
}

/// Values a task sends, in order, one at a time: `ready` waits for the next (and keeps it),
/// `take` hands it out without blocking.
pub struct Inbox<T> {
    rx: mpsc::UnboundedReceiver<T>,
    buffered: Option<T>,
}

impl<T: Send> Inbox<T> {
    pub fn new(rx: mpsc::UnboundedReceiver<T>) -> Self {
        Inbox { rx, buffered: None }
    }

    /// The next value, if one has arrived; never blocks.
    pub fn take(&mut self) -> Option<T> {
        self.buffered.take().or_else(|| self.rx.try_recv().ok())
    }

    /// Resolves once [`Inbox::take`] will return a value. When the sender is gone and nothing is
    /// left, never: nothing will ever arrive (the guest's other pollables still wake it).
    pub async fn ready(&mut self) {
        if self.buffered.is_none() {
            match self.rx.recv().await {
                Some(value) => self.buffered = Some(value),
                None => std::future::pending::<()>().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_inbox_keeps_order_and_what_ready_saw() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inbox = Inbox::new(rx);
        assert_eq!(inbox.take(), None);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        inbox.ready().await;
        assert_eq!(inbox.take(), Some(1));
        assert_eq!(inbox.take(), Some(2));
        assert_eq!(inbox.take(), None);
    }

    #[tokio::test]
    async fn a_pending_value_is_taken_once() {
        let mut pending = Pending::spawn(async { 7 }, |_| 0);
        wasmtime_wasi::p2::Pollable::ready(&mut pending).await;
        assert_eq!(pending.take(), Some(7));
        assert_eq!(pending.take(), None);
    }
}
