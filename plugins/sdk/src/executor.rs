//! A single-threaded executor over `wasi:io/poll`.
//!
//! Tasks are plain Rust futures. A future that waits on the host hands a `pollable` to the
//! reactor ([`crate::wait::wait_for`]); when no task can make progress, the executor calls
//! `wasi:io/poll.poll` once with every registered pollable, which suspends the whole instance in
//! the host until at least one is ready, then wakes the tasks whose pollables fired. So one
//! instance waits on any number of replies, feeds, children, slots and timers at once.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::bindings::wasi::io::poll::{self, Pollable};

type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

/// The id of the `block_on` root future in the run queue.
const ROOT: u64 = 0;

#[derive(Default)]
struct Executor {
    next_task: u64,
    tasks: HashMap<u64, LocalTask>,
    next_wait: u64,
    /// Pollables some task waits on, with the waker to call when they fire.
    waiting: HashMap<u64, (Pollable, Waker)>,
    /// Waits whose pollable has fired (their futures complete on the next poll).
    fired: std::collections::HashSet<u64>,
}

thread_local! {
    static EXECUTOR: RefCell<Executor> = RefCell::new(Executor { next_task: ROOT + 1, ..Default::default() });
}

/// Wakers must be `Send + Sync`; the queue is shared through an `Arc<Mutex<..>>` even though
/// wasm32-wasip2 guests are single-threaded.
struct TaskWaker {
    id: u64,
    queue: Arc<Mutex<VecDeque<u64>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if !queue.contains(&self.id) {
            queue.push_back(self.id);
        }
    }
}

thread_local! {
    static RUN_QUEUE: Arc<Mutex<VecDeque<u64>>> = Arc::new(Mutex::new(VecDeque::new()));
}

fn run_queue() -> Arc<Mutex<VecDeque<u64>>> {
    RUN_QUEUE.with(Arc::clone)
}

fn waker_for(id: u64) -> Waker {
    Waker::from(Arc::new(TaskWaker {
        id,
        queue: run_queue(),
    }))
}

/// Start a task that runs alongside the others until it finishes or [`block_on`] returns (tasks
/// still pending then are dropped). Must be called inside [`block_on`].
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let slot: Rc<RefCell<JoinState<F::Output>>> = Rc::new(RefCell::new(JoinState::Pending(None)));
    let writer = Rc::clone(&slot);
    let task: LocalTask = Box::pin(async move {
        let value = future.await;
        let previous = std::mem::replace(&mut *writer.borrow_mut(), JoinState::Done(value));
        if let JoinState::Pending(Some(waker)) = previous {
            waker.wake();
        }
    });
    let id = EXECUTOR.with(|e| {
        let mut e = e.borrow_mut();
        let id = e.next_task;
        e.next_task += 1;
        e.tasks.insert(id, task);
        id
    });
    run_queue()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(id);
    JoinHandle { slot }
}

enum JoinState<T> {
    Pending(Option<Waker>),
    Done(T),
    Taken,
}

/// Awaits a spawned task's output. Dropping it detaches the task (it keeps running).
pub struct JoinHandle<T> {
    slot: Rc<RefCell<JoinState<T>>>,
}

impl<T> JoinHandle<T> {
    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        !matches!(*self.slot.borrow(), JoinState::Pending(_))
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.slot.borrow_mut();
        match std::mem::replace(&mut *slot, JoinState::Taken) {
            JoinState::Done(value) => Poll::Ready(value),
            JoinState::Pending(_) => {
                *slot = JoinState::Pending(Some(cx.waker().clone()));
                Poll::Pending
            }
            JoinState::Taken => panic!("JoinHandle polled after completion"),
        }
    }
}

/// Register `pollable` for the current task; returns the wait's key.
pub(crate) fn register(pollable: Pollable, waker: Waker) -> u64 {
    EXECUTOR.with(|e| {
        let mut e = e.borrow_mut();
        let key = e.next_wait;
        e.next_wait += 1;
        e.waiting.insert(key, (pollable, waker));
        key
    })
}

/// Whether the wait `key` has fired; otherwise refresh its waker.
pub(crate) fn check(key: u64, waker: &Waker) -> bool {
    EXECUTOR.with(|e| {
        let mut e = e.borrow_mut();
        if e.fired.remove(&key) {
            return true;
        }
        if let Some((_, w)) = e.waiting.get_mut(&key)
            && !w.will_wake(waker)
        {
            *w = waker.clone();
        }
        false
    })
}

/// Forget the wait `key` (its future was dropped or completed).
pub(crate) fn deregister(key: u64) {
    EXECUTOR.with(|e| {
        let mut e = e.borrow_mut();
        e.waiting.remove(&key);
        e.fired.remove(&key);
    });
}

/// Run `future` and every task it spawns until `future` completes; the instance sleeps in
/// `wasi:io/poll.poll` whenever all tasks are waiting. Panics if nothing can ever wake a task
/// (every task pending, no pollable registered): that is a deadlock in the job type.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut root = std::pin::pin!(future);
    let queue = run_queue();
    queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(ROOT);
    let result = loop {
        // Run everything that is ready.
        let mut finished = None;
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let Some(id) = next else { break };
            let waker = waker_for(id);
            let mut cx = Context::from_waker(&waker);
            if id == ROOT {
                if let Poll::Ready(value) = root.as_mut().poll(&mut cx) {
                    finished = Some(value);
                    break;
                }
                continue;
            }
            // Take the task out while polling it so that it may spawn others.
            let task = EXECUTOR.with(|e| e.borrow_mut().tasks.remove(&id));
            if let Some(mut task) = task
                && task.as_mut().poll(&mut cx).is_pending()
            {
                EXECUTOR.with(|e| e.borrow_mut().tasks.insert(id, task));
            }
        }
        if let Some(value) = finished {
            break value;
        }
        // Nothing runnable: wait in the host for any registered pollable.
        let ready = EXECUTOR.with(|e| {
            let e = e.borrow();
            let keys: Vec<u64> = e.waiting.keys().copied().collect();
            if keys.is_empty() {
                return None;
            }
            let list: Vec<&Pollable> = keys.iter().map(|k| &e.waiting[k].0).collect();
            let fired = poll::poll(&list);
            Some(
                fired
                    .into_iter()
                    .map(|i| keys[i as usize])
                    .collect::<Vec<_>>(),
            )
        });
        let Some(ready) = ready else {
            panic!("blobhub-worker-sdk: every task is waiting and nothing can wake one (deadlock)");
        };
        EXECUTOR.with(|e| {
            let mut e = e.borrow_mut();
            for key in ready {
                if let Some((_pollable, waker)) = e.waiting.remove(&key) {
                    e.fired.insert(key);
                    waker.wake();
                }
            }
        });
    };
    // Tasks still pending are dropped with the run (their handles close on drop).
    let leftover = EXECUTOR.with(|e| {
        let mut e = e.borrow_mut();
        e.waiting.clear();
        e.fired.clear();
        std::mem::take(&mut e.tasks)
    });
    drop(leftover);
    queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
    result
}
