//! The thread the event feeds poll on: a single-threaded tokio runtime of its own.
//!
//! Why: an idle worker does almost nothing but poll, and on a VM each wake-up of a sleeping
//! thread costs more than the request it serves (docs/benchmarks.md, "Scale and idle cost").
//! On the worker's multi-threaded runtime a group of polls woke both of its threads: the timer
//! on one, each answer's connection task on whichever thread took it, and every task woken for
//! the other thread a cross-thread wake-up of its own. Here the timers, the feed's connections
//! (`SessionTransport::for_feed`: a pool of their own) and the poll loops share one thread, so a
//! group's polls cost one wake-up for the timer and those for the answers, and the rest of the
//! worker sleeps through them. Batches still reach the job types on the main runtime through
//! channels, which wake across runtimes.
//!
//! The feed's idle waits end on the wake grid (`wake_grid`), whose origin is this runtime's
//! timer: [`handle`] marks it just before building the runtime.

use std::sync::OnceLock;

use tokio::runtime::Handle;

/// The feed runtime's handle, started on first use. Should the thread or its runtime fail to
/// start (no threads left), the caller's runtime serves the feed, as before it had a thread.
pub fn handle() -> Handle {
    static FEED: OnceLock<Option<Handle>> = OnceLock::new();
    match FEED.get_or_init(start) {
        Some(handle) => handle.clone(),
        None => Handle::current(),
    }
}

fn start() -> Option<Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("blobhub-feed".into())
        .spawn(move || {
            crate::runtime::wake_grid::mark_origin();
            // Timers and sockets only: with the process and signal drivers too, every turn
            // of the loop would also look for exited children.
            let built = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build();
            match built {
                Ok(runtime) => {
                    let _ = tx.send(Some(runtime.handle().clone()));
                    // Spawned tasks run while this is driven: for the life of the process. The
                    // feed's waits share one timer (`shared_timer`).
                    runtime.block_on(async {
                        crate::shared_timer::install();
                        std::future::pending::<()>().await
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "feed_thread_unavailable");
                    let _ = tx.send(None);
                }
            }
        });
    match spawned {
        Ok(_) => rx.recv().ok().flatten(),
        Err(e) => {
            tracing::warn!(error = %e, "feed_thread_unavailable");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn feed_tasks_run_on_the_feed_thread() {
        let name = handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("blobhub-feed"));
        // One thread for every task, and not the caller's.
        let thread = || async { handle().spawn(async { std::thread::current().id() }).await };
        let (first, second) = (thread().await.unwrap(), thread().await.unwrap());
        assert_eq!(first, second);
        assert_ne!(first, std::thread::current().id());
    }
}
