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
/// for the store's retention and found by id and by scan. Ingest answers a producer only after
/// `append` returned `Ok`: an `Err` (retryable [`ErrorKind::Unavailable`] when the store is
/// unreachable) makes the producer send again.
///
/// [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events; an id stored before keeps its first version. Returns, per event,
    /// whether it was new. Events are shared (`Arc`): accepted events never change.
    async fn append(&self, events: &[Arc<Event>]) -> Result<Vec<bool>>;

    /// Gets one event by id.
    async fn get(&self, id: &str) -> Result<Option<Event>>;

    /// Scans events matching `filter`, ordered by `ts` then id (both descending with
    /// `newest_first`). An empty or reversed `from`..`to` range gives no events.
    async fn scan(&self, filter: &EventFilter) -> Result<Vec<Event>>;
}
