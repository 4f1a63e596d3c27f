//! Redis specifics of the state and event stores beyond the conformance suites, against a real
//! redis-server (`WEIR_TEST_REDIS_URL`, set by scripts/test.sh): the keys a deleted run leaves,
//! the trimming of event indexes. Each test uses its own key prefix.

use std::sync::Arc;

use weir_core::Event;
use weir_core::events::EventStore;
use weir_core::state::StateStore;
use weir_core::testkit::{service_url, url_with};

/// `base` with a key prefix of its own.
fn url_with_fresh_prefix(base: &str) -> String {
    url_with(base, &format!("prefix=weirtest-{}", ulid::Ulid::new()))
}

/// Deleting a finished run leaves none of its keys behind: the run's hash, outputs and
/// timeline, and its entries in every listing index (Redis drops a sorted set it empties). A
/// running run filed as ended by mistake (a stray entry) keeps every key; only the stray
/// entry goes.
#[tokio::test]
async fn deleted_runs_leave_no_keys() {
    use weir_core::run::{RunStatus, StepStatus};
    use weir_core::state::AttemptOutcome;

    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let url = url_with_fresh_prefix(&base);
    let prefix = url.rsplit_once("prefix=").expect("prefix").1.to_string();
    let store = weir_state_redis::RedisStateStore::connect(&url)
        .await
        .expect("connect");
    let mut con = redis::Client::open(base.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys = |con: &redis::aio::MultiplexedConnection| {
        let mut con = con.clone();
        let pattern = format!("{prefix}:*");
        async move {
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut con)
                .await
                .expect("KEYS");
            keys.sort();
            keys
        }
    };

    let running = weir_core::testkit::state::sample_run("fn-running", "bob");
    store.create_run(&running).await.expect("create");
    let running_keys = keys(&con).await;

    let run = weir_core::testkit::state::sample_run("fn-keys", "alice");
    store.create_run(&run).await.expect("create");
    let now = weir_core::event::now_ms();
    store
        .start_attempt(&run.id, "a", 1, now, 60_000)
        .await
        .expect("start");
    let output = AttemptOutcome::Completed {
        output: serde_json::json!({"ok": true}),
        log: Some("log".into()),
    };
    store
        .finish_attempt(&run.id, "a", 1, &output)
        .await
        .expect("finish a");
    let t = store
        .transition_step(&run.id, "b", StepStatus::Pending, StepStatus::Skipped, None)
        .await
        .expect("skip b");
    assert_eq!(t.finished, Some(RunStatus::Completed));
    let out_key = format!("{prefix}:{{r:{}}}:out", run.id);
    assert!(
        keys(&con).await.contains(&out_key),
        "the outputs hash exists: {:?}",
        keys(&con).await
    );

    // A stray `ended` entry for the running run.
    let _: () = redis::cmd("ZADD")
        .arg(format!("{prefix}:runs:ended"))
        .arg(1)
        .arg(&running.id)
        .query_async(&mut con)
        .await
        .expect("ZADD");
    let later = weir_core::event::now_ms() + 1_000;
    assert_eq!(
        store.delete_finished_runs(later, 10).await.expect("delete"),
        2
    );
    assert_eq!(
        keys(&con).await,
        running_keys,
        "only the running run's keys are left"
    );
    let kept = store
        .get_run(&running.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(kept.status, RunStatus::Running);
}

/// An event store with a short `retention` under a fresh prefix, and a connection to count
/// its index entries.
struct ShortRetention {
    store: weir_state_redis::RedisEventStore,
    con: redis::aio::MultiplexedConnection,
    prefix: String,
}

impl ShortRetention {
    async fn new(retention: &str) -> Option<Self> {
        let base = service_url("WEIR_TEST_REDIS_URL")?;
        let url = url_with_fresh_prefix(&base);
        let prefix = url.rsplit_once("prefix=").expect("prefix").1.to_string();
        let store =
            weir_state_redis::RedisEventStore::connect(&format!("{url}&retention={retention}"))
                .await
                .expect("connect");
        let con = redis::Client::open(base.as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        Some(ShortRetention { store, con, prefix })
    }

    /// How many entries the index `P:{index}` holds.
    async fn entries(&self, index: &str) -> usize {
        redis::cmd("ZCARD")
            .arg(format!("{}:{index}", self.prefix))
            .query_async(&mut self.con.clone())
            .await
            .expect("ZCARD")
    }
}

/// Event indexes follow the retention by acceptance time: an event sent with an old `ts` (a
/// backfill) is listed while it is stored, and once the retention has passed, the next append
/// drops every index entry of the expired events — by `ts`, by name and by acceptance — so no
/// index grows for good.
#[tokio::test]
async fn event_indexes_are_trimmed_by_acceptance_time() {
    use weir_core::events::EventFilter;

    let Some(t) = ShortRetention::new("400ms").await else {
        return;
    };
    let event = |name: &str, ts: i64| {
        Arc::new(Event::from_json(serde_json::json!({"name": name, "ts": ts}), "").expect("event"))
    };
    let backfilled = event("t/old", 1_000);
    let recent = event("t/new", weir_core::event::now_ms());
    t.store
        .append(&[backfilled.clone(), recent.clone()])
        .await
        .expect("append");
    let all = t.store.scan(&EventFilter::default()).await.expect("scan");
    assert_eq!(
        all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec![backfilled.id.as_str(), recent.id.as_str()],
        "an event with an old ts is listed while stored"
    );

    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let later = event("t/new", weir_core::event::now_ms());
    // The backfilled id sent again, under another name, once its first copy expired: a new
    // event, which the trim of its first copy's entries must leave listed.
    let mut again = Event::clone(&backfilled);
    again.name = "t/again".into();
    let again = Arc::new(again);
    assert_eq!(
        t.store
            .append(&[later.clone(), again.clone()])
            .await
            .expect("append"),
        vec![true, true]
    );
    assert_eq!(t.entries("events").await, 2);
    assert_eq!(t.entries("events:name:t/new").await, 1);
    assert_eq!(t.entries("events:name:t/again").await, 1);
    // The first copy's name entry is kept too (its id is stored again); listings by that
    // name skip it, as the stored event has another name.
    assert_eq!(t.entries("events:name:t/old").await, 1);
    assert_eq!(t.entries("events:accepted").await, 2);
    let all = t.store.scan(&EventFilter::default()).await.expect("scan");
    assert_eq!(all, vec![Event::clone(&again), Event::clone(&later)]);
    let old_name = t
        .store
        .scan(&EventFilter {
            name: Some("t/old".into()),
            ..Default::default()
        })
        .await
        .expect("scan");
    assert!(old_name.is_empty(), "{old_name:?}");
}

/// A big batch's expired entries are dropped by the next big batch in one go: an append trims
/// up to twice the events it adds (at most 5,000), so the indexes keep up with big batches.
#[tokio::test]
async fn a_big_batch_of_expired_events_is_trimmed_in_one_append() {
    let Some(t) = ShortRetention::new("500ms").await else {
        return;
    };
    let batch = |name: &str| -> Vec<Arc<Event>> {
        (0..3000)
            .map(|_| {
                Arc::new(Event::from_json(serde_json::json!({"name": name}), "").expect("event"))
            })
            .collect()
    };
    t.store.append(&batch("t/first")).await.expect("append");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    t.store.append(&batch("t/second")).await.expect("append");
    assert_eq!(t.entries("events:name:t/first").await, 0);
    assert_eq!(t.entries("events:accepted").await, 3000);
    assert_eq!(t.entries("events").await, 3000);
}
