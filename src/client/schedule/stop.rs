//! Stopping: what must end before [`Event::Stopped`](crate::client::Event::Stopped) is
//! reported.

use std::collections::BTreeSet;

use crate::client::RequestId;

/// After [`super::Schedule::stop`]: the requests `Stopped` waits for.
///
/// Invariant: `Stopped` is reported at most once, and only once stopped with nothing pending.
#[derive(Debug, Default)]
pub(super) struct Stop {
    stopped: bool,
    /// REGISTERs that may still succeed (then they are undone) and UNREGISTERs not yet written.
    pending: BTreeSet<RequestId>,
    reported: bool,
}

impl Stop {
    pub(super) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Stops; returns false if stopped already.
    pub(super) fn begin(&mut self) -> bool {
        !std::mem::replace(&mut self.stopped, true)
    }

    /// `Stopped` waits for request `id` too.
    pub(super) fn wait_for(&mut self, id: RequestId) {
        self.pending.insert(id);
    }

    /// Request `id` ended; returns whether `Stopped` waited for it.
    pub(super) fn ended(&mut self, id: RequestId) -> bool {
        self.pending.remove(&id)
    }

    /// Whether to report `Stopped` now (true once).
    pub(super) fn poll_stopped(&mut self) -> bool {
        if self.stopped && !self.reported && self.pending.is_empty() {
            self.reported = true;
            return true;
        }
        false
    }
}
