//! A thread's waits served by one tokio timer: the event feed's thread's polls and requests.
//!
//! Why: tokio's timer driver learns when it must next wake only when it parks, and a timer
//! registered earlier than that promise (or while no timer was pending) unparks the driver: a
//! write to its eventfd and one more turn of its event loop, wasted when, as on the feed thread,
//! the driver's own thread is the one registering. In a round of idle polls every request's
//! timeout and then every poll's next wait registered a timer of its own, so 10 sections' polls
//! cost 20 such writes (strace), a tenth of the feed thread's system calls. Here the feed's waits
//! (the polls' idle waits, `runtime/capabilities/feed.rs`, and the lean exchange's request
//! deadlines, `api/lean.rs`)
//! go into one list ordered by deadline, and one task holds the only tokio timer, armed at the
//! earliest: a round of polls re-arms it once.
//!
//! The clock serves the thread it was [`install`]ed on (the feed thread does,
//! `runtime/feed_thread.rs`);
//! a wait made on any other thread (a runtime that has no clock: the main runtime, tests) is
//! tokio's own [`tokio::time::sleep_until`], so nothing depends on the clock being there.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

/// The waits of one thread.
#[derive(Default)]
struct Clock {
    waits: Mutex<Waits>,
    /// Wakes the timer task when a wait earlier than its timer is added.
    earlier: Notify,
}

#[derive(Default)]
struct Waits {
    /// The pending waits by (deadline, id).
    by_deadline: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// The deadline the timer task's tokio timer is armed at (`None`: it waits for a wait).
    armed: Option<Instant>,
}

thread_local! {
    static CLOCK: RefCell<Option<Arc<Clock>>> = const { RefCell::new(None) };
}

/// Serves this thread's [`sleep_until`] waits from now on: call inside the thread's
/// current-thread runtime (its timer task is spawned on it). A second call does nothing.
pub fn install() {
    CLOCK.with(|clock| {
        let mut clock = clock.borrow_mut();
        if clock.is_none() {
            let installed = Arc::new(Clock::default());
            tokio::spawn(run(Arc::clone(&installed)));
            *clock = Some(installed);
        }
    });
}

/// A wait until `deadline`: on a thread with an installed clock, one of its waits; elsewhere
/// tokio's own timer.
pub fn sleep_until(deadline: Instant) -> Sleep {
    match CLOCK.with(|clock| clock.borrow().clone()) {
        Some(clock) => Sleep(Inner::Clock {
            clock,
            deadline,
            id: None,
        }),
        None => Sleep(Inner::Tokio(Box::pin(tokio::time::sleep_until(deadline)))),
    }
}

/// Runs `future` until `deadline`: `Err(Elapsed)` when the deadline came first.
pub async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    tokio::select! {
        biased;
        out = future => Ok(out),
        () = sleep_until(deadline) => Err(Elapsed),
    }
}

/// The deadline passed first ([`timeout_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// The future of [`sleep_until`].
pub struct Sleep(Inner);

enum Inner {
    Clock {
        clock: Arc<Clock>,
        deadline: Instant,
        /// Its entry in the list, once it waited.
        id: Option<u64>,
    },
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (clock, deadline, id) = match &mut self.0 {
            Inner::Tokio(sleep) => return sleep.as_mut().poll(cx),
            Inner::Clock {
                clock,
                deadline,
                id,
            } => (clock, *deadline, id),
        };
        if let Some(existing) = *id {
            let mut waits = clock.waits.lock().unwrap_or_else(|e| e.into_inner());
            return match waits.by_deadline.get_mut(&(deadline, existing)) {
                // Fired: the timer task took it out of the list.
                None => {
                    *id = None;
                    Poll::Ready(())
                }
                Some(waker) => {
                    if !waker.will_wake(cx.waker()) {
                        waker.clone_from(cx.waker());
                    }
                    Poll::Pending
                }
            };
        }
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        let mut waits = clock.waits.lock().unwrap_or_else(|e| e.into_inner());
        let new = waits.next_id;
        waits.next_id += 1;
        *id = Some(new);
        waits
            .by_deadline
            .insert((deadline, new), cx.waker().clone());
        // The timer task re-arms only for a wait earlier than its timer (or when it has none).
        let earlier = waits.armed.is_none_or(|armed| deadline < armed);
        drop(waits);
        if earlier {
            clock.earlier.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Inner::Clock {
            clock,
            deadline,
            id: Some(id),
        } = &self.0
        {
            clock.remove(*deadline, *id);
        }
    }
}

impl Clock {
    fn remove(&self, deadline: Instant, id: u64) {
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        waits.by_deadline.remove(&(deadline, id));
    }

    /// Wakes every wait due by `now`; the earliest deadline left.
    fn fire(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = waits.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        let next = waits.by_deadline.first_key_value().map(|(k, _)| k.0);
        waits.armed = next;
        drop(waits);
        // Woken outside the lock: a woken wait may be polled at once and take it.
        for waker in due {
            waker.wake();
        }
        next
    }
}

/// The timer task: sleeps until the earliest wait is due, wakes what is due, and so on. A wait
/// earlier than its timer interrupts it to re-arm. Runs for the life of its runtime.
async fn run(clock: Arc<Clock>) {
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    let mut now = Instant::now();
    loop {
        // Registered before the earliest is read: a wait added after the read notifies it.
        let earlier = clock.earlier.notified();
        tokio::pin!(earlier);
        earlier.as_mut().enable();
        match clock.fire(now) {
            None => {
                earlier.await;
                now = Instant::now();
            }
            Some(at) => {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                tokio::select! {
                    // The timer's deadline has passed by its own clock, whatever `now` reads.
                    () = timer.as_mut() => now = Instant::now().max(at),
                    () = earlier => now = Instant::now(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn clock_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn waits_end_at_their_deadlines_in_order() {
        clock_runtime().block_on(async {
            install();
            let start = Instant::now();
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            // Added latest first, so each re-arms the timer earlier.
            for ms in [120u64, 80, 40, 40] {
                let order = Arc::clone(&order);
                tasks.push(tokio::spawn(async move {
                    sleep_until(start + Duration::from_millis(ms)).await;
                    let late = Instant::now() - start;
                    assert!(late >= Duration::from_millis(ms), "{late:?} < {ms} ms");
                    order.lock().unwrap().push(ms);
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), [40, 40, 80, 120]);
            // Nothing is left in the list.
            let clock = CLOCK.with(|c| c.borrow().clone()).unwrap();
            assert!(clock.waits.lock().unwrap().by_deadline.is_empty());
        });
    }

    #[test]
    fn a_dropped_wait_leaves_the_list_and_timeouts_end_what_runs_too_long() {
        clock_runtime().block_on(async {
            install();
            let clock = CLOCK.with(|c| c.borrow().clone()).unwrap();
            let far = Instant::now() + Duration::from_secs(3600);
            // Polled once (so registered), then dropped.
            let mut waiting = Box::pin(sleep_until(far));
            assert!(futures_poll_once(waiting.as_mut()).await.is_pending());
            assert_eq!(clock.waits.lock().unwrap().by_deadline.len(), 1);
            drop(waiting);
            assert!(clock.waits.lock().unwrap().by_deadline.is_empty());
            let soon = Instant::now() + Duration::from_millis(30);
            assert_eq!(
                timeout_at(soon, std::future::pending::<()>()).await,
                Err(Elapsed)
            );
            assert_eq!(timeout_at(far, async { 7 }).await, Ok(7));
            assert!(clock.waits.lock().unwrap().by_deadline.is_empty());
        });
    }

    #[tokio::test]
    async fn without_a_clock_a_wait_is_tokios_own() {
        // This test's thread has none installed.
        let sleep = sleep_until(Instant::now() + Duration::from_millis(5));
        assert!(matches!(sleep.0, Inner::Tokio(_)));
        sleep.await;
    }

    /// Polls `future` once.
    async fn futures_poll_once<F: Future + Unpin>(future: F) -> Poll<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut future).poll(cx))).await
    }
}
