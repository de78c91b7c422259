//! [`Feed`]: a section's event-feed subscription with its activity flag.

use std::cell::Cell;

use crate::bindings::blobhub::worker::{feed, session};

/// The section's subscription to its event feed (`feed.follow`), which also tells the host
/// whether the section is doing work: while active the host polls every
/// `polling.interval_active_ms`, otherwise every `polling.interval_idle_ms`; a switch to idle
/// takes effect at once. A new feed is idle.
pub struct Feed {
    subscription: feed::Subscription,
    active: Cell<bool>,
}

impl Feed {
    /// Follow the session: after `cursor` (from an earlier batch), or from now without one.
    /// A section holds one feed; following again replaces the previous one.
    pub fn follow(cursor: Option<&str>) -> Feed {
        Feed {
            subscription: feed::follow(cursor),
            active: Cell::new(false),
        }
    }

    /// The next batch, or a failure the host could not retry away.
    pub async fn next(&self) -> Result<feed::Batch, session::ApiError> {
        crate::wait::next_batch(&self.subscription).await
    }

    /// Say whether the section is doing work. Only a change reaches the host.
    pub fn set_active(&self, active: bool) {
        if self.active.replace(active) != active {
            self.subscription.set_active(active);
        }
    }

    /// The last activity set.
    pub fn is_active(&self) -> bool {
        self.active.get()
    }

    /// The raw subscription.
    pub fn subscription(&self) -> &feed::Subscription {
        &self.subscription
    }
}
