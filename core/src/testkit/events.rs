//! EventStore conformance suite: every event store runs [`run_all`] with a
//! [`Factory<dyn EventStore>`](Factory) that gives a fresh, empty store for each test.
//!
//! ```
//! use std::sync::Arc;
//!
//! use weir_core::events::EventStore;
//! use weir_state_memory::MemoryEventStore;
//!
//! #[tokio::main]
//! async fn main() {
//!     weir_core::testkit::events::run_all(&|| async {
//!         Arc::new(MemoryEventStore::new()) as Arc<dyn EventStore>
//!     })
//!     .await;
//! }
//! ```

use std::sync::Arc;

use serde_json::json;

use super::Factory;
use crate::event::Event;
use crate::events::{EventFilter, EventStore};

/// Runs every EventStore conformance test.
pub async fn run_all(factory: &dyn Factory<dyn EventStore>) {
    append_is_idempotent_by_id(factory).await;
    scan_filters_and_orders(factory).await;
}

fn event(name: &str, ts: i64, user: &str) -> Event {
    Event::from_json(
        json!({"name": name, "ts": ts, "user": {"id": user}, "data": {"ts": ts}}),
        "",
    )
    .expect("valid")
}

/// The first version of an id is kept; `append` says which events were new.
pub async fn append_is_idempotent_by_id(factory: &dyn Factory<dyn EventStore>) {
    let store = factory.make().await;
    let first = event("t/a", 1000, "u");
    let appended = store
        .append(&[Arc::new(first.clone())])
        .await
        .expect("append");
    assert_eq!(appended, vec![true]);
    let mut changed = first.clone();
    changed.data = json!({"changed": true});
    let again = store.append(&[Arc::new(changed)]).await.expect("append");
    assert_eq!(again, vec![false], "a known id is not new");
    assert_eq!(store.get(&first.id).await.expect("get"), Some(first));
    assert_eq!(store.get("no-such-id").await.expect("get"), None);
}

/// Scans by name, time range and user, oldest or newest first, with a limit.
pub async fn scan_filters_and_orders(factory: &dyn Factory<dyn EventStore>) {
    let store = factory.make().await;
    let name = format!("t/{}", ulid::Ulid::new());
    let events: Vec<Event> = (0..10)
        .map(|i| {
            event(
                &name,
                10_000 + i * 10,
                if i % 2 == 0 { "even" } else { "odd" },
            )
        })
        .collect();
    let mut shuffled: Vec<Arc<Event>> = events.iter().cloned().map(Arc::new).collect();
    shuffled.reverse();
    store.append(&shuffled).await.expect("append");
    let other = Arc::new(event("t/other", 10_005, "even"));
    store.append(&[other]).await.expect("append");
    let by_name = store
        .scan(&EventFilter {
            name: Some(name.clone()),
            ..Default::default()
        })
        .await
        .expect("scan");
    assert_eq!(by_name, events, "all events of the name, oldest first");
    let range = store
        .scan(&EventFilter {
            name: Some(name.clone()),
            from_ms: Some(10_020),
            to_ms: Some(10_050),
            ..Default::default()
        })
        .await
        .expect("scan");
    assert_eq!(
        range.iter().map(|e| e.ts).collect::<Vec<_>>(),
        vec![10_020, 10_030, 10_040]
    );
    let odd = store
        .scan(&EventFilter {
            name: Some(name.clone()),
            user: Some("odd".into()),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .expect("scan");
    assert_eq!(
        odd.iter().map(|e| e.ts).collect::<Vec<_>>(),
        vec![10_010, 10_030]
    );
    // Newest first: the limit keeps the latest of the range.
    let latest = store
        .scan(&EventFilter {
            name: Some(name.clone()),
            limit: Some(3),
            newest_first: true,
            ..Default::default()
        })
        .await
        .expect("scan");
    assert_eq!(
        latest.iter().map(|e| e.ts).collect::<Vec<_>>(),
        vec![10_090, 10_080, 10_070]
    );
    let latest_in_range = store
        .scan(&EventFilter {
            name: Some(name.clone()),
            from_ms: Some(10_020),
            to_ms: Some(10_050),
            user: Some("even".into()),
            newest_first: true,
            ..Default::default()
        })
        .await
        .expect("scan");
    assert_eq!(
        latest_in_range.iter().map(|e| e.ts).collect::<Vec<_>>(),
        vec![10_040, 10_020]
    );
    // An empty or reversed range is no events (not an error).
    for (from, to) in [(10_030, 10_030), (10_050, 10_020)] {
        for newest_first in [false, true] {
            let none = store
                .scan(&EventFilter {
                    from_ms: Some(from),
                    to_ms: Some(to),
                    newest_first,
                    ..Default::default()
                })
                .await
                .expect("scan");
            assert!(none.is_empty(), "{from}..{to}: {none:?}");
        }
    }
}
