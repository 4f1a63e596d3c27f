//! The `EventStore` trait: accepted events, kept for lookups and replay.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::Event;

/// Which stored events to scan; every set field must match. Oldest first, unless
/// `newest_first`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only events with this exact name.
    pub name: Option<String>,
    /// Only events with `ts >= from_ms`.
    pub from_ms: Option<i64>,
    /// Only events with `ts < to_ms`.
    pub to_ms: Option<i64>,
    /// Only events whose user key is this.
    pub user: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
    /// Newest first (by `ts`): the limit then keeps the latest events of the range.
    #[serde(default)]
    pub newest_first: bool,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.name.as_ref().is_none_or(|n| *n == event.name)
            && self.from_ms.is_none_or(|f| event.ts >= f)
            && self.to_ms.is_none_or(|t| event.ts < t)
            && self
                .user
                .as_ref()
                .is_none_or(|u| event.user_key().as_ref() == Some(u))
    }

    /// The effective limit.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(100)
    }
}

/// Durable storage of accepted events.
///
/// Contract (checked by the conformance suite, `testkit::events`): `append` is idempotent by
/// event id (the first version wins, so a producer's retry changes nothing); events are kept
/// for the store's retention and found by id and by scan; a batch is stored all or nothing,
/// and `undo_append` takes back exactly what one request stored. Ingest answers a producer
/// only after `append_batch` returned `Ok`; when it gives up on a request it undoes it first,
/// so that its error answer means that nothing of the request is stored. Errors are retryable
/// ([`ErrorKind::Unavailable`]) when the store is unreachable or did not answer in time (the
/// append may then have happened: ingest tries again, or undoes).
///
/// [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events; an id stored before keeps its first version. Returns, per event,
    /// whether it was new. Events are shared (`Arc`): accepted events never change.
    async fn append(&self, events: &[Arc<Event>]) -> Result<Vec<bool>>;

    /// Appends `events` as one request named `batch` (an id no other request uses): all of
    /// them or none, like [`append`](EventStore::append), and such that
    /// [`undo_append`](EventStore::undo_append) can take it back. Ingest uses it, so that a
    /// request it answers with an error leaves nothing stored. The default appends without
    /// the means to undo (`undo_append` then answers `Unsupported`, and ingest tells the
    /// producer that the outcome is unknown).
    async fn append_batch(&self, batch: &str, events: &[Arc<Event>]) -> Result<Vec<bool>> {
        let _ = batch;
        self.append(events).await
    }

    /// Takes back what `append_batch(batch, events)` stored: each of `events` that this
    /// request stored is removed, unless another append has found it stored since (a retry
    /// of the same id, already told that its event is accepted). Events stored by earlier
    /// requests under the same ids stay. It also fences the request: an `append_batch` of
    /// `batch` that reaches the store later (a reply that was lost, a command still in
    /// flight) stores nothing: such an append fails. Returns how many events were removed.
    /// Idempotent.
    async fn undo_append(&self, batch: &str, events: &[Arc<Event>]) -> Result<usize> {
        let _ = (batch, events);
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            "this event store cannot take back an append",
        ))
    }

    /// Gets one event by id.
    async fn get(&self, id: &str) -> Result<Option<Event>>;

    /// Scans events matching `filter`, ordered by `ts` then id (both descending with
    /// `newest_first`). An empty or reversed `from`..`to` range gives no events.
    async fn scan(&self, filter: &EventFilter) -> Result<Vec<Event>>;
}
