//! The in-memory event store.
//!
//! The indexes are B-trees: unlike a hash map, a B-tree grows a node at a time, so a store of
//! millions of events never stalls ingest while it rehashes under the lock. Events are kept
//! for the retention (default 7 days, as the Redis store), counted from when they were
//! accepted; older ones are dropped as new ones arrive.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;
use weir_core::events::{EventFilter, EventStore};
use weir_core::{Event, Result};

/// How long events are kept by default: 7 days.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// Accepted events kept in memory, indexed by id and by time; events are shared, not copied.
#[derive(Debug)]
pub struct MemoryEventStore {
    inner: RwLock<Inner>,
    retention_ms: i64,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::with_retention(DEFAULT_EVENT_RETENTION)
    }
}

/// Event ids by `ts`.
type ByTime = BTreeMap<(i64, Arc<str>), ()>;

/// Event ids by `ts`, grouped (by name, by user key).
type Groups = BTreeMap<Arc<str>, ByTime>;

#[derive(Debug, Default)]
struct Inner {
    /// Events by id.
    by_id: BTreeMap<Arc<str>, Stored>,
    by_time: ByTime,
    /// The same by name: a scan for one name (a pause's lookback) reads only that name's events.
    by_name: Groups,
    /// The same by user key: a user's timeline reads only that user's events.
    by_user: Groups,
    /// Ids by the time they were accepted (epoch ms), oldest first: what the retention drops.
    accepted: VecDeque<(i64, Arc<str>)>,
    /// Requests taken back (`undo_append`): an append of one of them stores nothing. The
    /// newest [`MAX_UNDONE`] are kept (an append arrives within its request's deadline).
    undone: std::collections::HashSet<Arc<str>>,
    /// The same, oldest first.
    undone_order: VecDeque<Arc<str>>,
}

/// How many requests taken back the store remembers.
const MAX_UNDONE: usize = 100_000;

/// A stored event.
#[derive(Debug)]
struct Stored {
    /// When it was accepted (epoch ms): what the retention counts from.
    accepted_ms: i64,
    event: Arc<Event>,
    /// The ingest request that stored it (`""`: a plain `append`).
    batch: Arc<str>,
    /// Other requests that found it stored (`""`: a plain `append`): they were told it is
    /// accepted, so an undo of the request that stored it leaves it.
    found_by: Vec<Arc<str>>,
}

/// Files `key` under `group` (a name, a user key) in `index`.
fn file_under(index: &mut Groups, group: &str, key: (i64, Arc<str>)) {
    match index.get_mut(group) {
        Some(grouped) => {
            grouped.insert(key, ());
        }
        None => {
            index.insert(Arc::from(group), BTreeMap::from([(key, ())]));
        }
    }
}

/// Takes `key` out of `group` in `index`, and the group once it is empty.
fn unfile(index: &mut Groups, group: &str, key: &(i64, Arc<str>)) {
    if let Some(grouped) = index.get_mut(group) {
        grouped.remove(key);
        if grouped.is_empty() {
            index.remove(group);
        }
    }
}

impl Inner {
    /// Removes the event `id` from every index.
    fn remove(&mut self, id: &Arc<str>) -> Option<Stored> {
        let stored = self.by_id.remove(id)?;
        let e = &stored.event;
        let key = (e.ts, id.clone());
        self.by_time.remove(&key);
        unfile(&mut self.by_name, &e.name, &key);
        if let Some(user) = e.user_key() {
            unfile(&mut self.by_user, &user, &key);
        }
        Some(stored)
    }
}

impl MemoryEventStore {
    /// An empty store keeping events 7 days.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store keeping events for `retention` after they were accepted.
    pub fn with_retention(retention: Duration) -> Self {
        MemoryEventStore {
            inner: RwLock::default(),
            retention_ms: retention.as_millis().min(i64::MAX as u128) as i64,
        }
    }

    /// Events accepted before this time (epoch ms) are past the retention: not served, and
    /// dropped by the next append.
    fn kept_since(&self) -> i64 {
        weir_core::event::now_ms().saturating_sub(self.retention_ms)
    }

    /// How many events are stored.
    pub fn len(&self) -> usize {
        self.inner.read().by_id.len()
    }

    /// Whether no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `events` under the store's lock as the request `batch` (`""`: none); says which
    /// were new.
    fn append_locked(&self, inner: &mut Inner, batch: &str, events: &[Arc<Event>]) -> Vec<bool> {
        let batch: Arc<str> = Arc::from(batch);
        let now = weir_core::event::now_ms();
        // Expired events go first: an id sent again after its event expired is new again.
        let horizon = now.saturating_sub(self.retention_ms);
        while let Some((at, _)) = inner.accepted.front()
            && *at < horizon
        {
            let Some((at, id)) = inner.accepted.pop_front() else {
                break;
            };
            // Unless the id was stored again since (taken back, then sent again).
            if inner.by_id.get(&id).is_some_and(|s| s.accepted_ms == at) {
                inner.remove(&id);
            }
        }
        let mut fresh = Vec::with_capacity(events.len());
        for e in events {
            if let Some(stored) = inner.by_id.get_mut(e.id.as_str()) {
                // Found by another request (a request's own retry, or an id repeated in its
                // batch, finds its own event).
                let own = !batch.is_empty() && stored.batch == batch;
                if !own && !stored.found_by.contains(&batch) {
                    stored.found_by.push(batch.clone());
                }
                fresh.push(false);
                continue;
            }
            let id: Arc<str> = Arc::from(e.id.as_str());
            inner.by_time.insert((e.ts, id.clone()), ());
            file_under(&mut inner.by_name, &e.name, (e.ts, id.clone()));
            if let Some(user) = e.user_key() {
                file_under(&mut inner.by_user, &user, (e.ts, id.clone()));
            }
            inner.accepted.push_back((now, id.clone()));
            inner.by_id.insert(
                id,
                Stored {
                    accepted_ms: now,
                    event: e.clone(),
                    batch: batch.clone(),
                    found_by: Vec::new(),
                },
            );
            fresh.push(true);
        }
        fresh
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn append(&self, events: &[Arc<Event>]) -> Result<Vec<bool>> {
        Ok(self.append_locked(&mut self.inner.write(), "", events))
    }

    async fn append_batch(&self, batch: &str, events: &[Arc<Event>]) -> Result<Vec<bool>> {
        let mut inner = self.inner.write();
        if inner.undone.contains(batch) {
            return Err(weir_core::Error::internal(format!(
                "ingest request {batch} was taken back: none of its events was stored"
            )));
        }
        Ok(self.append_locked(&mut inner, batch, events))
    }

    async fn undo_append(&self, batch: &str, events: &[Arc<Event>]) -> Result<usize> {
        let mut inner = self.inner.write();
        let batch: Arc<str> = Arc::from(batch);
        if inner.undone.insert(batch.clone()) {
            inner.undone_order.push_back(batch.clone());
            while inner.undone_order.len() > MAX_UNDONE {
                if let Some(old) = inner.undone_order.pop_front() {
                    inner.undone.remove(&old);
                }
            }
        }
        let mut removed = 0;
        for e in events {
            let Some(stored) = inner.by_id.get_mut(e.id.as_str()) else {
                continue;
            };
            stored.found_by.retain(|b| *b != batch);
            // Nobody holds it: stored by this request, or by one taken back before, and found
            // by no other request since.
            let owner = stored.batch.clone();
            let gone = !owner.is_empty()
                && stored.found_by.is_empty()
                && (owner == batch || inner.undone.contains(&owner));
            if gone && inner.remove(&Arc::from(e.id.as_str())).is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn get(&self, id: &str) -> Result<Option<Event>> {
        let kept_since = self.kept_since();
        Ok(self
            .inner
            .read()
            .by_id
            .get(id)
            .filter(|s| s.accepted_ms >= kept_since)
            .map(|s| Event::clone(&s.event)))
    }

    async fn scan(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        if let (Some(from), Some(to)) = (filter.from_ms, filter.to_ms)
            && from >= to
        {
            // An empty range (BTreeMap::range panics on a reversed one).
            return Ok(Vec::new());
        }
        let kept_since = self.kept_since();
        let inner = self.inner.read();
        use std::ops::Bound;
        // Ids sort after "": (from, "") starts at the first event at `from`, and (to, "") ends
        // before the first at `to`.
        let from = Bound::Included((filter.from_ms.unwrap_or(i64::MIN), Arc::<str>::from("")));
        let to = filter.to_ms.map_or(Bound::Unbounded, |t| {
            Bound::Excluded((t, Arc::<str>::from("")))
        });
        // A user's events are few: their index first.
        let index = match (&filter.user, &filter.name) {
            (Some(user), _) => inner.by_user.get(user.as_str()),
            (None, Some(name)) => inner.by_name.get(name.as_str()),
            (None, None) => Some(&inner.by_time),
        };
        let Some(index) = index else {
            return Ok(Vec::new());
        };
        let range = index.range((from, to));
        let in_order: Box<dyn Iterator<Item = _>> = if filter.newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let limit = filter.limit();
        Ok(in_order
            .filter_map(|((_, id), _)| inner.by_id.get(id))
            .filter(|s| s.accepted_ms >= kept_since)
            .map(|s| &s.event)
            .filter(|e| filter.matches(e))
            .take(limit)
            .map(|e| Event::clone(e))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> Arc<Event> {
        Arc::new(Event::from_json(serde_json::json!({"name": name}), "").expect("event"))
    }

    #[tokio::test]
    async fn an_id_sent_again_after_its_event_expired_is_new() {
        let store = MemoryEventStore::with_retention(Duration::from_millis(50));
        let first = event("t/first");
        store
            .append(std::slice::from_ref(&first))
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let mut again = Event::clone(&first);
        again.name = "t/again".into();
        let fresh = store.append(&[Arc::new(again)]).await.expect("append");
        assert_eq!(
            fresh,
            vec![true],
            "the expired copy does not make it a duplicate"
        );
        let stored = store.get(&first.id).await.expect("get").expect("stored");
        assert_eq!(stored.name, "t/again");
    }

    #[tokio::test]
    async fn events_are_dropped_after_the_retention() {
        let store = MemoryEventStore::with_retention(Duration::from_millis(50));
        let old = event("t/old");
        store
            .append(std::slice::from_ref(&old))
            .await
            .expect("append");
        assert!(store.get(&old.id).await.expect("get").is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            store.get(&old.id).await.expect("get").is_none(),
            "past the retention it is not served, even before an append drops it"
        );
        assert!(
            store
                .scan(&EventFilter::default())
                .await
                .expect("scan")
                .is_empty()
        );
        let new = event("t/new");
        store
            .append(std::slice::from_ref(&new))
            .await
            .expect("append");
        assert!(
            store.get(&old.id).await.expect("get").is_none(),
            "dropped once past the retention"
        );
        assert!(store.get(&new.id).await.expect("get").is_some());
        let all = store.scan(&EventFilter::default()).await.expect("scan");
        assert_eq!(
            all.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["t/new"]
        );
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn the_default_keeps_events_a_week() {
        let store = MemoryEventStore::new();
        assert_eq!(store.retention_ms, 7 * 86_400_000);
        let e = event("t/kept");
        store
            .append(std::slice::from_ref(&e))
            .await
            .expect("append");
        store.append(&[event("t/other")]).await.expect("append");
        assert!(store.get(&e.id).await.expect("get").is_some());
    }
}
