//! The in-memory event store.
//!
//! Both indexes are B-trees: unlike a hash map, a B-tree grows a node at a time, so a store of
//! millions of events never stalls ingest while it rehashes under the lock.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use weir_core::events::{EventFilter, EventStore};
use weir_core::{Event, Result};

/// Accepted events kept in memory, indexed by id and by time; events are shared, not copied.
#[derive(Debug, Default)]
pub struct MemoryEventStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: BTreeMap<Arc<str>, Arc<Event>>,
    by_time: BTreeMap<(i64, Arc<str>), ()>,
}

impl MemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many events are stored.
    pub fn len(&self) -> usize {
        self.inner.read().by_id.len()
    }

    /// Whether no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn append(&self, events: &[Arc<Event>]) -> Result<Vec<bool>> {
        let mut inner = self.inner.write();
        let mut fresh = Vec::with_capacity(events.len());
        for e in events {
            if inner.by_id.contains_key(e.id.as_str()) {
                fresh.push(false);
                continue;
            }
            let id: Arc<str> = Arc::from(e.id.as_str());
            inner.by_time.insert((e.ts, id.clone()), ());
            inner.by_id.insert(id, e.clone());
            fresh.push(true);
        }
        Ok(fresh)
    }

    async fn get(&self, id: &str) -> Result<Option<Event>> {
        Ok(self.inner.read().by_id.get(id).map(|e| Event::clone(e)))
    }

    async fn scan(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let inner = self.inner.read();
        let from = (filter.from_ms.unwrap_or(i64::MIN), Arc::<str>::from(""));
        let limit = filter.limit();
        Ok(inner
            .by_time
            .range(from..)
            .take_while(|((ts, _), _)| filter.to_ms.is_none_or(|t| *ts < t))
            .filter_map(|((_, id), _)| inner.by_id.get(id))
            .filter(|e| filter.matches(e))
            .take(limit)
            .map(|e| Event::clone(e))
            .collect())
    }
}
