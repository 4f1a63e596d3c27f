//! The messages of one queue this process holds or has just acked, by SQS message id.
//!
//! SQS may hand one message of a standard queue to two receivers at once, and (rarely on AWS,
//! readily on moto, whose receive has no lock) hand out again a message that was just deleted.
//! A subscription skips a message another subscription of this process holds, and deletes a
//! received copy of a message this process acked within [`DONE_WINDOW`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an acked message's id is remembered.
pub(crate) const DONE_WINDOW: Duration = Duration::from_secs(60);

/// Prune remembered acks every this many new entries.
const PRUNE_EVERY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Held,
    /// Acked (or being acked) at this instant.
    Done(Instant),
}

/// What a received message is to this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not held here: deliver it.
    New,
    /// Held by a subscription of this process: skip it.
    Held,
    /// Acked here moments ago: a stale copy, delete it.
    Done,
}

/// Message ids held or recently acked on one queue.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    ids: HashMap<String, State>,
    inserts: usize,
}

impl Tracker {
    /// Records a received message as held, unless it is held or acked already.
    pub(crate) fn receive(&mut self, id: &str) -> Seen {
        if id.is_empty() {
            return Seen::New;
        }
        match self.ids.get(id) {
            Some(State::Held) => return Seen::Held,
            Some(State::Done(at)) if at.elapsed() < DONE_WINDOW => return Seen::Done,
            _ => {}
        }
        self.ids.insert(id.to_owned(), State::Held);
        self.inserts += 1;
        if self.inserts.is_multiple_of(PRUNE_EVERY) {
            self.ids
                .retain(|_, s| !matches!(s, State::Done(at) if at.elapsed() >= DONE_WINDOW));
        }
        Seen::New
    }

    /// The message goes back to the queue (nack, drop, hand-back): receivable again.
    pub(crate) fn release(&mut self, id: &str) {
        self.ids.remove(id);
    }

    /// The message is being acked: copies received from now on are stale.
    pub(crate) fn acked(&mut self, id: &str) {
        if !id.is_empty() {
            self.ids.insert(id.to_owned(), State::Done(Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let mut t = Tracker::default();
        assert_eq!(t.receive("a"), Seen::New);
        assert_eq!(t.receive("a"), Seen::Held);
        t.release("a");
        assert_eq!(t.receive("a"), Seen::New);
        t.acked("a");
        assert_eq!(t.receive("a"), Seen::Done);
        t.release("a");
        assert_eq!(t.receive("a"), Seen::New);
        assert_eq!(t.receive(""), Seen::New);
        assert_eq!(t.receive(""), Seen::New);
    }
}
