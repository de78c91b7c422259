//! A value that a tokio task is producing, exposed to the guest as a pollable resource.

use std::future::Future;
use std::task::{Context, Poll, Waker};

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
