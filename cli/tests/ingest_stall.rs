//! Ingest answers truthfully while Redis stalls: batches are posted continuously while a proxy
//! in front of Redis holds its replies (the commands reach Redis; their answers come late, so
//! the client's calls time out without knowing whether they were applied). Every answered
//! batch must then be exactly all or nothing in the store: a `2xx` batch stored whole, a batch
//! answered "stored none" stored not at all, and no batch ever stored in part.
#![cfg(feature = "state-redis")]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use weir::api::EventKeys;
use weir::core::events::EventStore;
use weir::core::run::RunFilter;
use weir::core::testkit::stall::StallProxy;

/// How a batch was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Answer {
    /// `2xx`: every event stored.
    Accepted,
    /// An error saying the request stored none of its events.
    StoredNone,
    /// An error saying the outcome is unknown (the store could not take the request back).
    Unknown,
}

const BATCH: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_answered_while_redis_stalls_is_all_or_nothing() {
    let Some(state) = common::redis_state_url() else {
        return;
    };
    let (proxy, proxied) = StallProxy::in_front_of(&state).await;
    // Calls time out after 500 ms, so that stalls shorter than the ingest deadline are ridden
    // out by retries.
    let proxied = weir::core::testkit::url_with(&proxied, "timeout=500ms");
    let def = json!({"id": "stall", "triggers": [{"event": "stall/test"}],
                     "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"}}}});
    let f = common::function_dir(&def, &[("s", "cat > /dev/null\necho '{}'")]);
    let config = weir::core::engine::EngineConfig {
        ingest_deadline: Duration::from_secs(2),
        ..common::fast_config()
    };
    let (engine, _handle) = common::engine_configured(&f.dir, &proxied, "memory://", config).await;
    let base = common::serve_api(engine.clone(), EventKeys::Any, EventKeys::Any).await;

    // Posters send batches of events with ids of their own (b<poster>-<n>-<i>) until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let mut posters = Vec::new();
    for poster in 0..4 {
        let (base, stop) = (base.clone(), stop.clone());
        posters.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..BATCH).map(|i| format!("b{poster}-{n}-{i}")).collect();
                let batch: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"name": "stall/test", "id": id}))
                    .collect();
                n += 1;
                let response = client
                    .post(format!("{base}/e/key"))
                    .json(&batch)
                    .send()
                    .await
                    .expect("post");
                let status = response.status();
                let body = response.text().await.expect("body");
                let answer = if status.is_success() {
                    Answer::Accepted
                } else if body.contains("stored none of its") {
                    Answer::StoredNone
                } else if body.contains("is unknown") {
                    Answer::Unknown
                } else {
                    panic!("unexpected answer {status}: {body}");
                };
                answered.push((ids, answer, body));
            }
            answered
        }));
    }

    // Stalls: shorter than the deadline (ridden out), longer than it but within its grace (the
    // request is taken back), and longer than both (the outcome is unknown).
    for stall in [1_200, 3_000, 5_000, 1_200, 3_000] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        proxy.stall(Duration::from_millis(stall)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = Vec::new();
    for p in posters {
        answered.extend(p.await.expect("poster"));
    }

    // What the store holds, read past the proxy.
    let store = weir_state_redis::RedisEventStore::connect(&state)
        .await
        .expect("connect");
    let mut counts = std::collections::HashMap::new();
    let mut accepted_ids = Vec::new();
    let mut refused_ids = HashSet::new();
    for (ids, answer, body) in &answered {
        *counts.entry(*answer).or_insert(0) += 1;
        let mut stored = 0;
        for id in ids {
            stored += usize::from(store.get(id).await.expect("get").is_some());
        }
        match answer {
            Answer::Accepted => {
                assert_eq!(stored, BATCH, "an accepted batch is stored whole: {body}");
                accepted_ids.extend(ids.iter().cloned());
            }
            Answer::StoredNone => {
                assert_eq!(
                    stored, 0,
                    "a batch answered \"stored none\" is not stored: {body}"
                );
                refused_ids.extend(ids.iter().cloned());
            }
            Answer::Unknown => assert!(
                stored == 0 || stored == BATCH,
                "a batch is never stored in part ({stored}/{BATCH}): {body}"
            ),
        }
    }
    println!("answers: {counts:?}");
    assert!(
        counts.get(&Answer::Accepted).copied().unwrap_or(0) > 0,
        "some batches were accepted"
    );
    assert!(
        counts.get(&Answer::StoredNone).copied().unwrap_or(0) > 0,
        "a stall longer than the deadline made some request be taken back: {counts:?}"
    );

    // Every accepted event starts its run; no refused one does.
    let filter = RunFilter {
        function_id: Some("stall".into()),
        limit: Some(100_000),
        ..RunFilter::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let runs = engine.state().list_runs(&filter).await.expect("list");
        let started: HashSet<&str> = runs.iter().map(|r| r.event_id.as_str()).collect();
        assert!(
            !started.iter().any(|id| refused_ids.contains(*id)),
            "an event of a batch answered \"stored none\" started a run"
        );
        let missing = accepted_ids
            .iter()
            .filter(|id| !started.contains(id.as_str()))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} accepted event(s) started no run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A graceful shutdown waits for an ingest in progress (one cut off half-way would leave its
/// events stored and not routed): while Redis stalls, an ingest hangs on storing; the shutdown
/// started meanwhile returns only after the ingest finished, once Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_waits_for_an_ingest_in_progress() {
    let Some(state) = common::redis_state_url() else {
        return;
    };
    let (proxy, proxied) = StallProxy::in_front_of(&state).await;
    let proxied = weir::core::testkit::url_with(&proxied, "timeout=500ms");
    let def = json!({"id": "drain", "triggers": [{"event": "drain/test"}],
                     "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"}}}});
    let f = common::function_dir(&def, &[("s", "cat > /dev/null\necho '{}'")]);
    let (engine, handle) =
        common::engine_configured(&f.dir, &proxied, "memory://", common::fast_config()).await;

    proxy.hold();
    let event = weir::core::Event::from_json(json!({"name": "drain/test", "id": "drain-1"}), "$")
        .expect("event");
    let ingest = tokio::spawn({
        let engine = engine.clone();
        async move { engine.ingest(vec![event]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !ingest.is_finished(),
        "the ingest was expected to wait for Redis"
    );
    let shutdown = tokio::spawn(handle.shutdown_gracefully(Duration::from_secs(20)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !shutdown.is_finished(),
        "the shutdown returned while an ingest was still in progress"
    );
    proxy.release();
    let drained = shutdown.await.expect("shutdown");
    assert!(drained, "everything finished within the grace");
    // The ingest's count drops as it returns: its task completes at once after.
    let ids = tokio::time::timeout(Duration::from_secs(1), ingest)
        .await
        .expect("the shutdown returned before the ingest finished")
        .expect("join")
        .expect("the ingest succeeds once Redis answers");
    assert_eq!(ids, ["drain-1"]);
}
