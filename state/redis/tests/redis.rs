//! Redis specifics of the state, event and job stores beyond the conformance suites, against a
//! real redis-server (`WEIR_TEST_REDIS_URL`, set by scripts/test.sh): the keys a deleted run
//! leaves, the trimming of event indexes, the keys a job flush deletes. Each test uses its own
//! key prefix.

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

/// Events with a user key are indexed by it, and the retention trims that index too. A store
/// written by a weir that did not index users (events stored before the first indexing
/// append) is scanned in full for a user until those events have expired.
#[tokio::test]
async fn user_indexes_are_trimmed_and_a_store_from_before_them_is_scanned() {
    use weir_core::events::EventFilter;

    let Some(t) = ShortRetention::new("400ms").await else {
        return;
    };
    let event = |user: &str| {
        Arc::new(
            Event::from_json(serde_json::json!({"name": "t/u", "user": {"id": user}}), "")
                .expect("event"),
        )
    };
    let first = event("u1");
    t.store
        .append(std::slice::from_ref(&first))
        .await
        .expect("append");
    assert_eq!(t.entries("events:user:u1").await, 1);
    assert_eq!(t.entries("events:accepted:user").await, 1);
    let mut con = t.con.clone();
    let since: String = redis::cmd("GET")
        .arg(format!("{}:events:user-indexed-since", t.prefix))
        .query_async(&mut con)
        .await
        .expect("GET");
    assert_eq!(
        since, "0",
        "a store empty at its first append is indexed from the start"
    );
    // The index is what a scan by user reads: an entry taken out of it is not found.
    let _: () = redis::cmd("ZREM")
        .arg(format!("{}:events:user:u1", t.prefix))
        .arg(&first.id)
        .query_async(&mut con)
        .await
        .expect("ZREM");
    let by_index = t
        .store
        .scan(&EventFilter {
            user: Some("u1".into()),
            ..Default::default()
        })
        .await
        .expect("scan");
    assert!(by_index.is_empty(), "{by_index:?}");
    let _: () = redis::cmd("ZADD")
        .arg(format!("{}:events:user:u1", t.prefix))
        .arg(first.ts)
        .arg(&first.id)
        .query_async(&mut con)
        .await
        .expect("ZADD");
    // An undo takes the event out of its user's index.
    let undone = event("u9");
    t.store
        .append_batch("req-u9", std::slice::from_ref(&undone))
        .await
        .expect("append");
    assert_eq!(t.entries("events:user:u9").await, 1);
    t.store
        .undo_append("req-u9", std::slice::from_ref(&undone))
        .await
        .expect("undo");
    assert_eq!(t.entries("events:user:u9").await, 0);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    t.store.append(&[event("u2")]).await.expect("append");
    assert_eq!(
        t.entries("events:user:u1").await,
        0,
        "trimmed with the event"
    );
    assert_eq!(t.entries("events:user:u2").await, 1);
    assert_eq!(t.entries("events:accepted:user").await, 1);

    // As an earlier weir left it: an event not in the by-user index, and a store that only
    // began indexing now.
    let Some(t) = ShortRetention::new("1h").await else {
        return;
    };
    let unindexed = event("u3");
    t.store
        .append(std::slice::from_ref(&unindexed))
        .await
        .expect("append");
    let mut con = t.con.clone();
    let _: () = redis::cmd("DEL")
        .arg(format!("{}:events:user:u3", t.prefix))
        .query_async(&mut con)
        .await
        .expect("DEL");
    let _: () = redis::cmd("SET")
        .arg(format!("{}:events:user-indexed-since", t.prefix))
        .arg(weir_core::event::now_ms())
        .query_async(&mut con)
        .await
        .expect("SET");
    let found = t
        .store
        .scan(&EventFilter {
            user: Some("u3".into()),
            ..Default::default()
        })
        .await
        .expect("scan");
    assert_eq!(
        found,
        vec![Event::clone(&unindexed)],
        "found by a full scan"
    );
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

/// All keys under `prefix`, sorted.
async fn keys_under(con: &redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut con.clone())
        .await
        .expect("KEYS");
    keys.sort();
    keys
}

/// `flush` deletes every job key of its store — queues (paused or not, with names that look
/// like key patterns), reservations, the sets, pauses and totals — and nothing else: the
/// store's runs keep their keys, and another prefix's jobs are untouched.
#[tokio::test]
async fn flush_deletes_the_job_keys_and_nothing_else() {
    use weir_core::jobs::{JobSet, Place, QueuedJob};

    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let url = url_with_fresh_prefix(&base);
    let prefix = url.rsplit_once("prefix=").expect("prefix").1.to_string();
    let store = weir_state_redis::RedisStateStore::connect(&url)
        .await
        .expect("connect");
    let other_url = url_with_fresh_prefix(&base);
    let other_prefix = other_url
        .rsplit_once("prefix=")
        .expect("prefix")
        .1
        .to_string();
    let other = weir_state_redis::RedisStateStore::connect(&other_url)
        .await
        .expect("connect");
    let con = redis::Client::open(base.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");

    let run = weir_core::testkit::state::sample_run("fn-flush", "alice");
    store.create_run(&run).await.expect("create");
    let run_keys = keys_under(&con, &prefix).await;
    assert!(!run_keys.is_empty());

    let job = |queue: &str, id: &str| QueuedJob {
        id: id.into(),
        queue: queue.into(),
        reserve_ms: 60_000,
        payload: bytes::Bytes::from_static(b"{\"x\":1}"),
    };
    let jobs = store.jobs().expect("jobs");
    let now = weir_core::event::now_ms();
    for (queue, id) in [("default", "j1"), ("default", "j2"), ("q*[x]{y}", "j3")] {
        jobs.enqueue(&job(queue, id)).await.expect("enqueue");
    }
    jobs.pause("q*[x]{y}", true).await.expect("pause");
    jobs.pause("never-used", true).await.expect("pause");
    let reserved = jobs
        .reserve(&["default".to_string()], now)
        .await
        .expect("reserve")
        .expect("a job");
    for set in JobSet::ALL {
        jobs.add_to_set(
            set,
            &job("default", &format!("s-{}", set.name())),
            now + 60_000,
        )
        .await
        .expect("add");
    }
    jobs.record(3, 1).await.expect("record");
    let other_jobs = other.jobs().expect("jobs");
    other_jobs
        .enqueue(&job("default", "o1"))
        .await
        .expect("enqueue");
    let other_keys = keys_under(&con, &other_prefix).await;
    let with_jobs = keys_under(&con, &prefix).await;
    assert!(
        with_jobs.len() >= run_keys.len() + 11,
        "queues, known queues, paused, reserved, expiring, 3 sets and their data, totals: {with_jobs:?}"
    );

    jobs.flush().await.expect("flush");
    assert_eq!(
        keys_under(&con, &prefix).await,
        run_keys,
        "only the run's keys are left"
    );
    assert_eq!(keys_under(&con, &other_prefix).await, other_keys);
    assert!(store.get_run(&run.id).await.expect("get").is_some());
    let counts = jobs.counts().await.expect("counts");
    assert_eq!(
        counts,
        weir_core::jobs::JobCounts {
            sets: JobSet::ALL.into_iter().map(|s| (s, 0)).collect(),
            ..Default::default()
        }
    );
    assert!(
        !jobs
            .settle(&reserved.id, Place::Gone)
            .await
            .expect("settle"),
        "the reservation went with the flush"
    );
    let left = other_jobs
        .reserve(&["default".to_string()], now)
        .await
        .expect("reserve");
    assert_eq!(
        left.map(|j| j.id),
        Some("o1".into()),
        "another prefix keeps its jobs"
    );
    other_jobs.flush().await.expect("flush");
}

/// What Lua's and the sorted sets' doubles could spoil comes back exactly: a payload of every
/// byte value (also replaced on settle), a reservation length of `u64::MAX` (its expiry
/// saturates and never runs out), set times at the ends of `i64`; a job moved keeps its
/// `reserve_ms`.
#[tokio::test]
async fn jobs_keep_any_bytes_and_extreme_times() {
    use weir_core::jobs::{JobSet, Move, Place, QueuedJob};

    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let store = weir_state_redis::RedisStateStore::connect(&url_with_fresh_prefix(&base))
        .await
        .expect("connect");
    let jobs = store.jobs().expect("jobs");
    let every_byte: bytes::Bytes = (0..=255u8).collect::<Vec<u8>>().into();
    let job = QueuedJob {
        id: "j:1 é".into(),
        queue: "q:{1}\n3:x".into(),
        reserve_ms: u64::MAX,
        payload: every_byte.clone(),
    };
    jobs.enqueue(&job).await.expect("enqueue");
    let queues = [job.queue.clone()];
    let now = weir_core::event::now_ms();
    let got = jobs.reserve(&queues, now).await.expect("reserve");
    assert_eq!(got.as_ref(), Some(&job));
    let reservation = jobs
        .reservation(&job.id)
        .await
        .expect("reservation")
        .expect("reserved");
    assert_eq!(reservation.expires_ms, i64::MAX);
    assert!(
        jobs.expired(i64::MAX - 1, 10)
            .await
            .expect("expired")
            .is_empty()
    );

    let reversed: bytes::Bytes = every_byte.iter().rev().copied().collect::<Vec<u8>>().into();
    let settled = Place::Set(JobSet::Retries, i64::MAX, reversed.clone());
    assert!(jobs.settle(&job.id, settled).await.expect("settle"));
    let retries = jobs.set_jobs(JobSet::Retries, 0, 10).await.expect("jobs");
    let moved = QueuedJob {
        payload: reversed,
        ..job.clone()
    };
    assert_eq!(retries, vec![(moved.clone(), i64::MAX)]);

    let to = Move::ToSet(JobSet::Scheduled, i64::MIN);
    let ids = [job.id.clone()];
    assert_eq!(
        jobs.move_from_set(JobSet::Retries, &ids, to)
            .await
            .expect("move"),
        1
    );
    let scheduled = jobs.set_jobs(JobSet::Scheduled, 0, 10).await.expect("jobs");
    assert_eq!(scheduled, vec![(moved.clone(), i64::MIN)]);
    assert_eq!(
        jobs.promote_due(JobSet::Scheduled, now, 10)
            .await
            .expect("promote"),
        1
    );
    let back = jobs.reserve(&queues, now).await.expect("reserve");
    assert_eq!(back, Some(moved));
    jobs.flush().await.expect("flush");
}

/// The scripts read and delete many entries in chunks (Lua's `unpack` takes a few thousand
/// values at most): 2,500 due jobs are listed, promoted, reserved and found expired whole.
#[tokio::test]
async fn thousands_of_jobs_move_in_one_call() {
    use weir_core::jobs::{JobSet, QueuedJob};

    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let store = weir_state_redis::RedisStateStore::connect(&url_with_fresh_prefix(&base))
        .await
        .expect("connect");
    let jobs = store.jobs().expect("jobs");
    let now = weir_core::event::now_ms();
    // Over the ~8,000 values Lua's `unpack` takes: the scripts must read in chunks.
    let n = 9_000;
    for i in 0..n {
        let job = QueuedJob {
            id: format!("j{i:05}"),
            queue: "bulk".into(),
            reserve_ms: 0,
            payload: bytes::Bytes::from(format!("{i}")),
        };
        jobs.add_to_set(JobSet::Scheduled, &job, now - n + i)
            .await
            .expect("add");
    }
    let listed = jobs
        .set_jobs(JobSet::Scheduled, 0, 20_000)
        .await
        .expect("jobs");
    assert_eq!(listed.len(), n as usize);
    assert_eq!(listed[8_765].0.id, "j08765", "earliest first");
    assert_eq!(
        jobs.promote_due(JobSet::Scheduled, now, 20_000)
            .await
            .expect("promote"),
        n as usize
    );
    let queues = ["bulk".to_string()];
    for i in 0..n {
        let job = jobs
            .reserve(&queues, now)
            .await
            .expect("reserve")
            .expect("a job");
        assert_eq!(job.id, format!("j{i:05}"), "in due order");
    }
    let expired = jobs.expired(now, 20_000).await.expect("expired");
    assert_eq!(expired.len(), n as usize);
    let counts = jobs.counts().await.expect("counts");
    assert_eq!(counts.reserved, n as u64);
    assert_eq!(counts.sets[&JobSet::Scheduled], 0);
    jobs.flush().await.expect("flush");
}

/// Every job operation is one round trip (one script, one `MULTI` or one command).
#[tokio::test]
async fn each_job_operation_is_one_round_trip() {
    use weir_core::jobs::{JobSet, JobStore, Move, Place, QueuedJob};

    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let jobs = weir_state_redis::RedisJobStore::connect(&url_with_fresh_prefix(&base))
        .await
        .expect("connect");
    let job = QueuedJob {
        id: "j1".into(),
        queue: "q".into(),
        reserve_ms: 0,
        payload: bytes::Bytes::from_static(b"{}"),
    };
    let queues = ["other".to_string(), "q".to_string()];
    let ids = ["j1".to_string()];
    let now = weir_core::event::now_ms();
    let mut last = jobs.conn().round_trips();
    let mut one = |what: &str| {
        let now = jobs.conn().round_trips();
        assert_eq!(now - last, 1, "{what}");
        last = now;
    };
    jobs.enqueue(&job).await.expect("enqueue");
    one("enqueue");
    jobs.reserve(&queues, now).await.expect("reserve");
    one("reserve");
    jobs.reservation("j1").await.expect("reservation");
    one("reservation");
    jobs.expired(now, 10).await.expect("expired");
    one("expired");
    let place = Place::Set(JobSet::Retries, now, job.payload.clone());
    jobs.settle("j1", place).await.expect("settle");
    one("settle");
    jobs.set_jobs(JobSet::Retries, 0, 10)
        .await
        .expect("set jobs");
    one("set_jobs");
    let to = Move::ToSet(JobSet::Scheduled, now);
    jobs.move_from_set(JobSet::Retries, &ids, to)
        .await
        .expect("move");
    one("move_from_set");
    jobs.promote_due(JobSet::Scheduled, now, 10)
        .await
        .expect("promote");
    one("promote_due");
    jobs.add_to_set(JobSet::Dead, &job, now).await.expect("add");
    one("add_to_set");
    jobs.clear_set(JobSet::Dead).await.expect("clear");
    one("clear_set");
    jobs.pause("q", true).await.expect("pause");
    one("pause");
    jobs.record(1, 1).await.expect("record");
    one("record");
    jobs.counts().await.expect("counts");
    one("counts");
    jobs.remove_queue("q").await.expect("remove");
    one("remove_queue");
    jobs.flush().await.expect("flush");
    one("flush");
}

/// Every Redis call has a deadline (the URL's `timeout`): while a proxy holds Redis's replies,
/// a call fails with a retryable error naming the call and the deadline instead of hanging,
/// and once the replies flow again the same store works.
#[tokio::test]
async fn a_stalled_redis_fails_calls_after_the_timeout_naming_them() {
    use std::time::{Duration, Instant};
    use weir_core::ErrorKind;
    use weir_core::testkit::stall::StallProxy;

    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let (proxy, proxied) = StallProxy::in_front_of(&base).await;
    let url = url_with_fresh_prefix(&proxied);
    let store = weir_state_redis::RedisStateStore::connect(&url_with(&url, "timeout=300ms"))
        .await
        .expect("connect through the proxy");
    assert!(
        store
            .get_run("no-such-run")
            .await
            .expect("get_run")
            .is_none()
    );

    proxy.hold();
    let started = Instant::now();
    let err = store
        .get_run("no-such-run")
        .await
        .expect_err("a call without an answer fails");
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        err.message().starts_with("redis did not answer ")
            && err.message().contains("within 300ms"),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "the call failed after {waited:?}, not after its 300 ms deadline"
    );

    proxy.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.get_run("no-such-run").await {
            Ok(run) => break assert!(run.is_none()),
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store did not recover once Redis answered again: {e}"),
        }
    }
}

/// A timer this version cannot read (written by a newer weir during a rolling upgrade: an
/// action it does not know) is skipped by a claim, not an error failing the whole claim: the
/// timers claimed with it fire, and it stays leased for a node that can read it.
#[tokio::test]
async fn a_timer_this_version_cannot_read_is_skipped_not_fatal() {
    use weir_core::state::{Timer, TimerAction};

    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let url = url_with_fresh_prefix(&base);
    let prefix = url.rsplit_once("prefix=").expect("prefix").1.to_string();
    let store = weir_state_redis::RedisStateStore::connect(&url)
        .await
        .expect("connect");
    let readable = Timer {
        id: "sweep:1".into(),
        due_ms: 1_000,
        action: TimerAction::Sweep { bucket: 1 },
    };
    store.schedule_timer(&readable).await.expect("schedule");
    let mut con = redis::Client::open(base.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let future = r#"{"id":"from-the-future","due_ms":500,"action":"teleport","to":"mars"}"#;
    let _: () = redis::pipe()
        .hset(
            format!("{prefix}:{{timers}}:data"),
            "from-the-future",
            future,
        )
        .zadd(format!("{prefix}:{{timers}}:due"), "from-the-future", 500)
        .query_async(&mut con)
        .await
        .expect("write a timer of a newer version");

    let claimed = store
        .claim_due_timers(2_000, 10, 10_000)
        .await
        .expect("a claim with an unreadable timer in it succeeds");
    let ids: Vec<&str> = claimed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["sweep:1"]);
    // Not lost: still in the due index, claimed again a minute later (not after every lease).
    let due: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{prefix}:{{timers}}:due"))
        .arg("from-the-future")
        .query_async(&mut con)
        .await
        .expect("zscore");
    assert_eq!(due, Some(62_000.0));
    let again = store
        .claim_due_timers(61_000, 10, 10_000)
        .await
        .expect("claim");
    // (The readable one, never completed, is claimed again after its lease.)
    assert_eq!(
        again.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["sweep:1"],
        "the unreadable timer was claimed again before its minute"
    );
}
