//! A tiny notification primitive for the single-threaded executor: tasks wait for a counter to
//! move. Used to nudge a thread's task when its items change and to cancel it on teardown.

use std::cell::RefCell;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Default)]
struct Inner {
    generation: u64,
    wakers: Vec<Waker>,
}

#[derive(Clone, Default)]
pub struct Notify(Rc<RefCell<Inner>>);

impl Notify {
    pub fn notify(&self) {
        let wakers = {
            let mut inner = self.0.borrow_mut();
            inner.generation += 1;
            std::mem::take(&mut inner.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    pub fn generation(&self) -> u64 {
        self.0.borrow().generation
    }

    /// Completes once `notify` has been called after the generation `seen` was read.
    pub async fn changed_since(&self, seen: u64) {
        std::future::poll_fn(|cx| {
            let mut inner = self.0.borrow_mut();
            if inner.generation != seen {
                return Poll::Ready(());
            }
            if !inner.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                inner.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
