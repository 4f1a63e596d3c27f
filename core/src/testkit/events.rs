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
    undo_takes_back_exactly_one_request(factory).await;
    an_undone_request_arriving_late_stores_nothing(factory).await;
    scan_filters_and_orders(factory).await;
    scan_by_user_finds_exactly_that_users_events(factory).await;
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

/// `undo_append` removes what its request stored: not an event stored before under the same
/// id (even byte for byte the same), not one another request has found stored since; its own
/// retry, or an id repeated in its batch, does not protect it.
pub async fn undo_takes_back_exactly_one_request(factory: &dyn Factory<dyn EventStore>) {
    let store = factory.make().await;
    let earlier = Arc::new(event("t/undo", 1000, "u"));
    let stored = store
        .append_batch("req-0", std::slice::from_ref(&earlier))
        .await
        .expect("append");
    assert_eq!(stored, vec![true]);
    // The same event sent again, identical: another request's.
    let resent = Arc::new(Event::clone(&earlier));
    let (mine, shared) = (
        Arc::new(event("t/undo", 1001, "u")),
        Arc::new(event("t/undo", 1002, "u")),
    );
    let repeated = Arc::new(Event::clone(&mine));
    let batch = vec![resent, mine.clone(), shared.clone(), repeated];
    let fresh = store.append_batch("req-1", &batch).await.expect("append");
    assert_eq!(fresh, vec![false, true, true, false]);
    // The request's own retry (the very same events) finds them stored.
    let again = store.append_batch("req-1", &batch).await.expect("retry");
    assert_eq!(again, vec![false, false, false, false]);
    // Another request sends `shared` again and is told it is accepted.
    let other = Arc::new(Event::clone(&shared));
    let found = store
        .append_batch("req-2", std::slice::from_ref(&other))
        .await
        .expect("append");
    assert_eq!(found, vec![false]);

    let removed = store.undo_append("req-1", &batch).await.expect("undo");
    assert_eq!(removed, 1, "only the event the request alone stored goes");
    assert_eq!(store.get(&mine.id).await.expect("get"), None);
    assert_eq!(
        store.get(&earlier.id).await.expect("get").as_ref(),
        Some(&*earlier),
        "an event an earlier request stored stays, though sent again identical"
    );
    assert!(store.get(&shared.id).await.expect("get").is_some());
    let listed = store
        .scan(&EventFilter {
            name: Some("t/undo".into()),
            ..EventFilter::default()
        })
        .await
        .expect("scan");
    let ids: Vec<&str> = listed.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec![earlier.id.as_str(), shared.id.as_str()]);
    assert_eq!(
        store
            .undo_append("req-1", &batch)
            .await
            .expect("undo again"),
        0,
        "idempotent"
    );
    // The request that found `shared` is taken back too: nobody holds it any more.
    assert_eq!(store.undo_append("req-2", &[other]).await.expect("undo"), 1);
    assert_eq!(store.get(&shared.id).await.expect("get"), None);
}

/// A request taken back before its append arrived (a command still in flight) stores nothing
/// when the append comes; another request then stores the same events.
pub async fn an_undone_request_arriving_late_stores_nothing(factory: &dyn Factory<dyn EventStore>) {
    let store = factory.make().await;
    let late = vec![
        Arc::new(event("t/late", 1000, "u")),
        Arc::new(event("t/late", 1001, "u")),
    ];
    assert_eq!(store.undo_append("req-late", &late).await.expect("undo"), 0);
    store
        .append_batch("req-late", &late)
        .await
        .expect_err("an append of a request taken back fails");
    assert_eq!(store.get(&late[0].id).await.expect("get"), None);
    let fresh = store.append_batch("req-next", &late).await.expect("append");
    assert_eq!(fresh, vec![true, true]);
    assert!(store.get(&late[1].id).await.expect("get").is_some());
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

/// A scan by user key lists that user's events whatever their names, among many of other
/// users: by `user.id` (a number too), else `external_id`, else `email`; with a name, a range,
/// newest first and a limit; an event taken back is no longer listed.
pub async fn scan_by_user_finds_exactly_that_users_events(factory: &dyn Factory<dyn EventStore>) {
    let store = factory.make().await;
    let others: Vec<Arc<Event>> = (0..600)
        .map(|i| Arc::new(event("t/busy", 20_000 + i, &format!("other-{}", i % 7))))
        .collect();
    store.append(&others).await.expect("append");
    let of = |name: &str, ts: i64, user: serde_json::Value| {
        Arc::new(
            Event::from_json(json!({"name": name, "ts": ts, "user": user}), "").expect("valid"),
        )
    };
    let rare = [
        of("t/signed.up", 20_100, json!({"id": "rare"})),
        of("t/busy", 20_200, json!({"id": "rare", "email": "r@x"})),
        of("t/paid", 20_300, json!({"external_id": "rare"})),
        of("t/paid", 20_400, json!({"email": "rare"})),
        of("t/paid", 20_500, json!({"id": 7})),
    ];
    store.append(&rare[..4]).await.expect("append");
    store
        .append_batch("req-rare", &rare[4..])
        .await
        .expect("append");
    let scan = |user: &str, name: Option<&str>, limit: Option<usize>, newest_first: bool| {
        let filter = EventFilter {
            user: Some(user.to_owned()),
            name: name.map(str::to_owned),
            limit,
            newest_first,
            ..EventFilter::default()
        };
        let store = store.clone();
        async move {
            let found = store.scan(&filter).await.expect("scan");
            found.into_iter().map(|e| e.ts).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        scan("rare", None, None, false).await,
        vec![20_100, 20_200, 20_300, 20_400],
        "every event whose user key is `rare`, oldest first"
    );
    assert_eq!(
        scan("rare", None, Some(2), true).await,
        vec![20_400, 20_300]
    );
    assert_eq!(
        scan("rare", Some("t/busy"), None, false).await,
        vec![20_200]
    );
    assert_eq!(
        scan("r@x", None, None, false).await,
        Vec::<i64>::new(),
        "id wins"
    );
    assert_eq!(scan("7", None, None, false).await, vec![20_500]);
    assert_eq!(scan("nobody", None, None, true).await, Vec::<i64>::new());
    assert_eq!(scan("other-3", None, None, false).await.len(), 86);
    assert_eq!(
        store
            .undo_append("req-rare", &rare[4..])
            .await
            .expect("undo"),
        1
    );
    assert_eq!(scan("7", None, None, false).await, Vec::<i64>::new());
}
