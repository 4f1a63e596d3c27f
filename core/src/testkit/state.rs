//! StateStore conformance suite: every state driver runs [`run_all`] with a
//! [`Factory<dyn StateStore>`](Factory) that gives a fresh, empty store for each test.
//!
//! ```
//! use std::sync::Arc;
//!
//! use weir_core::state::StateStore;
//! use weir_state_memory::MemoryStateStore;
//!
//! #[tokio::main(flavor = "multi_thread", worker_threads = 4)]
//! async fn main() {
//!     weir_core::testkit::state::run_all(&|| async {
//!         Arc::new(MemoryStateStore::new()) as Arc<dyn StateStore>
//!     })
//!     .await;
//! }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::Factory;
use super::unique;
use crate::event::{Event, now_ms};
use crate::run::{Run, RunFilter, RunStatus, StepState, StepStatus};
use crate::state::{
    AttemptOutcome, CreateRun, JoinRule, StartAttempt, StateStore, StepMessage, Timer, TimerAction,
};

/// Runs every StateStore conformance test.
pub async fn run_all(factory: &dyn Factory<dyn StateStore>) {
    create_run_is_idempotent_by_key(factory).await;
    attempt_lifecycle(factory).await;
    concurrent_finish_has_one_winner(factory).await;
    concurrent_start_has_one_winner(factory).await;
    edges_are_recorded_once(factory).await;
    transitions_are_compare_and_set(factory).await;
    retry_moves_to_waiting_and_schedules_the_timer(factory).await;
    timers_fire_once_in_due_order(factory).await;
    finish_run_once_and_list_runs(factory).await;
    runs_page_by_cursor_and_are_counted_by_status(factory).await;
    last_open_step_finishes_the_run(factory).await;
    blobs_round_trip_and_expire(factory).await;
    blob_claims_have_one_winner_and_lapse(factory).await;
    expired_leases_are_taken_over(factory).await;
    joins_are_decided_once(factory).await;
    start_with_state_returns_the_run_state(factory).await;
    finished_runs_are_deleted_after_the_retention(factory).await;
    ended_runs_are_listed_by_end_time(factory).await;
    super::pauses::run_all(factory).await;
    super::dead::run_all(factory).await;
}

/// A lease long enough never to expire during a test.
const LONG_LEASE_MS: i64 = 600_000;

/// Starts an attempt now with a long lease; true when this call holds it.
async fn started(store: &dyn StateStore, run_id: &str, step: &str, attempt: u32) -> bool {
    let answer = store
        .start_attempt(run_id, step, attempt, now_ms(), LONG_LEASE_MS)
        .await
        .expect("start");
    answer == StartAttempt::Started
}

/// A run with steps `a` (queued) and `b` (pending), for a unique function and event.
pub fn sample_run(function_id: &str, user: &str) -> Run {
    let event = Event::from_json(json!({"name": "test/happened", "user": {"id": user}}), "")
        .expect("valid event");
    let mut steps = BTreeMap::new();
    let mut a = StepState::pending();
    a.status = StepStatus::Queued;
    steps.insert("a".to_string(), a);
    steps.insert("b".to_string(), StepState::pending());
    let key = format!("{function_id}:v1:{}", event.id);
    Run {
        id: Run::id_for_key(&key, &event.id),
        key,
        function_id: function_id.to_string(),
        function_version: "v1".into(),
        fn_version: None,
        event,
        status: RunStatus::Running,
        steps,
        created_at: now_ms(),
        ended_at: None,
        history: Vec::new(),
        pauses: Default::default(),
    }
}

/// Creating a run twice with the same key (and so the same id, see [`Run::id_for_key`]) keeps
/// the first and returns it, even when the second copy differs (a later routing of the event).
pub async fn create_run_is_idempotent_by_key(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    assert_eq!(
        store.create_run(&run).await.expect("create"),
        CreateRun::Created
    );
    let mut again = run.clone();
    again.created_at += 60_000;
    again.function_version = "v2".into();
    match store.create_run(&again).await.expect("create again") {
        CreateRun::Exists(existing) => {
            assert_eq!(existing.id, run.id, "the first run must be kept");
            assert_eq!(
                existing.created_at, run.created_at,
                "the first copy is kept"
            );
            assert_eq!(existing.function_version, "v1", "the first copy is kept");
        }
        CreateRun::Created => panic!("a second run with the same key was created"),
    }
    let listed = store
        .list_runs(&RunFilter {
            function_id: Some(run.function_id.clone()),
            ..RunFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "the run is listed once: {listed:?}");
    // Listed and counted at its first copy's time, not the later copy's.
    let at_first = RunFilter {
        function_id: Some(run.function_id.clone()),
        from_ms: Some(run.created_at),
        to_ms: Some(run.created_at + 1),
        ..RunFilter::default()
    };
    assert_eq!(store.list_runs(&at_first).await.expect("list").len(), 1);
    assert_eq!(store.count_runs(&at_first).await.expect("count").running, 1);
    let at_second = RunFilter {
        from_ms: Some(again.created_at),
        ..at_first.clone()
    };
    assert_eq!(
        store.count_runs(&at_second).await.expect("count").total(),
        0,
        "nothing was filed at the later copy's time"
    );
    let got = store
        .get_run(&run.id)
        .await
        .expect("get")
        .expect("run exists");
    assert_eq!(got.steps["a"].status, StepStatus::Queued);
    assert!(
        got.history.iter().any(|h| h.kind == "run.created"),
        "timeline records the creation"
    );
}

/// A blob comes back byte for byte (1 MiB, every byte value), is replaced by a second put
/// under its id, and is gone once its TTL passed; an unknown id is `None`.
pub async fn blobs_round_trip_and_expire(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let id = unique("blob");
    let data: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    store
        .put_blob(
            &id,
            bytes::Bytes::from(data.clone()),
            Duration::from_secs(60),
        )
        .await
        .expect("put");
    let got = store
        .get_blob(&id)
        .await
        .expect("get")
        .expect("blob exists");
    assert_eq!(got.len(), data.len());
    assert!(got[..] == data[..], "the blob changed");
    store
        .put_blob(
            &id,
            bytes::Bytes::from_static(b"second"),
            Duration::from_secs(60),
        )
        .await
        .expect("put again");
    assert_eq!(
        store.get_blob(&id).await.expect("get").as_deref(),
        Some(&b"second"[..])
    );
    let short = unique("blob");
    store
        .put_blob(
            &short,
            bytes::Bytes::from_static(b"x"),
            Duration::from_millis(100),
        )
        .await
        .expect("put short");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.get_blob(&short).await.expect("get"), None, "expired");
    assert_eq!(store.get_blob(&unique("nope")).await.expect("get"), None);
}

/// Of 16 claims of one blob id at once, exactly one wins and its data is kept; a claim of a
/// live blob (also one stored by `put_blob`) fails; once the winner's TTL passed, the id can
/// be claimed again.
pub async fn blob_claims_have_one_winner_and_lapse(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let id = unique("claim");
    let claims = (0..16u8).map(|i| {
        let (store, id) = (store.clone(), id.clone());
        async move {
            let won = store
                .claim_blob(
                    &id,
                    bytes::Bytes::from(vec![i]),
                    Duration::from_millis(1500),
                )
                .await
                .expect("claim");
            (i, won)
        }
    });
    let outcomes = futures::future::join_all(claims).await;
    let winners: Vec<u8> = outcomes
        .iter()
        .filter(|(_, won)| *won)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "one claim wins: {outcomes:?}");
    assert_eq!(
        store.get_blob(&id).await.expect("get").as_deref(),
        Some(&[winners[0]][..]),
        "the winner's data is kept"
    );
    let stored = unique("claim");
    store
        .put_blob(
            &stored,
            bytes::Bytes::from_static(b"put"),
            Duration::from_secs(60),
        )
        .await
        .expect("put");
    assert!(
        !store
            .claim_blob(
                &stored,
                bytes::Bytes::from_static(b"claim"),
                Duration::from_secs(60)
            )
            .await
            .expect("claim a stored blob"),
        "a blob stored by put_blob is not claimed"
    );
    // The winner's claim lapses 1.5 s after it was made.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(
        store
            .claim_blob(
                &id,
                bytes::Bytes::from_static(b"again"),
                Duration::from_secs(60)
            )
            .await
            .expect("claim again"),
        "a lapsed claim can be taken again"
    );
    assert_eq!(
        store.get_blob(&id).await.expect("get").as_deref(),
        Some(&b"again"[..])
    );
}

/// The transition that closes a run's last open step finishes the run in the same call:
/// completed when no step failed, failed when one did; the run is finished once.
pub async fn last_open_step_finishes_the_run(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    for fail in [false, true] {
        let run = sample_run(&unique("fn"), "u1");
        store.create_run(&run).await.expect("create");
        assert!(started(&*store, &run.id, "a", 1).await);
        let outcome = if fail {
            AttemptOutcome::Failed {
                error: "boom".into(),
                output: None,
                log: None,
            }
        } else {
            AttemptOutcome::Completed {
                output: json!({"ok": true}),
                log: None,
            }
        };
        let t = store
            .finish_attempt(&run.id, "a", 1, &outcome)
            .await
            .expect("finish a");
        assert!(t.applied);
        assert_eq!(t.open_steps, 1, "b is still open");
        assert_eq!(t.finished, None, "a run with an open step keeps running");
        let t = store
            .transition_step(
                &run.id,
                "b",
                StepStatus::Pending,
                StepStatus::Skipped,
                Some("parent failed"),
            )
            .await
            .expect("skip b");
        let expected = if fail {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        assert!(t.applied);
        assert_eq!(t.open_steps, 0);
        assert_eq!(
            t.finished,
            Some(expected),
            "closing the last step finishes the run"
        );
        let got = store.get_run(&run.id).await.expect("get").expect("run");
        assert_eq!(got.status, expected);
        assert!(got.ended_at.is_some(), "ended_at is set");
        let kind = if fail { "run.failed" } else { "run.completed" };
        assert_eq!(
            got.history.iter().filter(|h| h.kind == kind).count(),
            1,
            "one {kind} entry: {:?}",
            got.history
        );
        assert!(
            !store
                .finish_run(&run.id, expected)
                .await
                .expect("finish again"),
            "the run was finished once"
        );
        let listed = store
            .list_runs(&RunFilter {
                status: Some(expected),
                function_id: Some(run.function_id.clone()),
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(listed.len(), 1, "listed under its final status");
    }
}

/// start → finish records the output once; a second finish or a stale attempt changes nothing.
pub async fn attempt_lifecycle(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    assert!(
        !started(&*store, &run.id, "a", 2).await,
        "attempt 2 cannot start first"
    );
    assert!(
        !started(&*store, &run.id, "b", 1).await,
        "a pending step cannot start"
    );
    assert!(started(&*store, &run.id, "a", 1).await);
    assert!(
        !started(&*store, &run.id, "a", 1).await,
        "an attempt starts once"
    );
    let out = AttemptOutcome::Completed {
        output: json!({"n": 1}),
        log: Some("log".into()),
    };
    let t = store
        .finish_attempt(&run.id, "a", 1, &out)
        .await
        .expect("finish");
    assert!(t.applied);
    assert_eq!(t.open_steps, 1, "b is still open");
    let other = AttemptOutcome::Completed {
        output: json!({"n": 2}),
        log: None,
    };
    assert!(
        !store
            .finish_attempt(&run.id, "a", 1, &other)
            .await
            .expect("finish")
            .applied
    );
    let got = store.get_run(&run.id).await.expect("get").expect("run");
    assert_eq!(got.steps["a"].status, StepStatus::Completed);
    assert_eq!(
        got.steps["a"].output,
        Some(json!({"n": 1})),
        "the first output is kept"
    );
    assert_eq!(got.steps["a"].attempts, 1);
    assert_eq!(got.steps["a"].log.as_deref(), Some("log"));
}

/// Eight tasks saving the same step's output at once: exactly one wins, its output is kept.
pub async fn concurrent_finish_has_one_winner(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    assert!(started(&*store, &run.id, "a", 1).await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let run_id = run.id.clone();
        tasks.push(tokio::spawn(async move {
            let out = AttemptOutcome::Completed {
                output: json!({"writer": i}),
                log: None,
            };
            (
                i,
                store
                    .finish_attempt(&run_id, "a", 1, &out)
                    .await
                    .expect("finish")
                    .applied,
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, applied) = t.await.expect("task");
        if applied {
            winners.push(i);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one writer must win, got {winners:?}"
    );
    let got = store.get_run(&run.id).await.expect("get").expect("run");
    assert_eq!(
        got.steps["a"].output,
        Some(json!({"writer": winners[0]})),
        "the winner's output is stored"
    );
}

/// Eight tasks starting the same attempt: exactly one starts it.
pub async fn concurrent_start_has_one_winner(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let run_id = run.id.clone();
        tasks.push(tokio::spawn(async move {
            started(&*store, &run_id, "a", 1).await
        }));
    }
    let mut started = 0;
    for t in tasks {
        started += usize::from(t.await.expect("task"));
    }
    assert_eq!(started, 1, "exactly one start must win");
}

/// An edge is counted once however often it is resolved.
pub async fn edges_are_recorded_once(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    let t1 = store
        .resolve_edge(&run.id, "b", "a", true)
        .await
        .expect("edge");
    assert!(t1.recorded);
    assert_eq!((t1.taken, t1.not_taken), (1, 0));
    let t2 = store
        .resolve_edge(&run.id, "b", "a", false)
        .await
        .expect("edge");
    assert!(
        !t2.recorded,
        "the second resolution of one edge is not recorded"
    );
    assert_eq!(
        (t2.taken, t2.not_taken),
        (1, 0),
        "the first resolution stands"
    );
    let t3 = store
        .resolve_edge(&run.id, "b", "x", false)
        .await
        .expect("edge");
    assert_eq!((t3.recorded, t3.taken, t3.not_taken), (true, 1, 1));
}

/// `transition_step` applies only from the expected state and reports open steps.
pub async fn transitions_are_compare_and_set(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    let t = store
        .transition_step(
            &run.id,
            "b",
            StepStatus::Pending,
            StepStatus::Skipped,
            Some("why"),
        )
        .await
        .expect("transition");
    assert!(t.applied);
    assert_eq!(t.open_steps, 1, "a is still open");
    let again = store
        .transition_step(&run.id, "b", StepStatus::Pending, StepStatus::Queued, None)
        .await
        .expect("transition");
    assert!(!again.applied, "a skipped step cannot be queued");
    let got = store.get_run(&run.id).await.expect("get").expect("run");
    assert_eq!(got.steps["b"].status, StepStatus::Skipped);
    assert!(
        got.history
            .iter()
            .any(|h| h.kind == "step.skipped" && h.detail.as_deref() == Some("why"))
    );
}

/// A retry moves the step to waiting and schedules its timer atomically.
pub async fn retry_moves_to_waiting_and_schedules_the_timer(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    assert!(started(&*store, &run.id, "a", 1).await);
    let timer = Timer {
        id: unique("retry"),
        due_ms: now_ms() - 1,
        action: TimerAction::EnqueueStep(StepMessage {
            run_id: run.id.clone(),
            step_id: "a".into(),
            attempt: 2,
        }),
    };
    assert!(
        store
            .retry_attempt(&run.id, "a", 1, "boom", Some("stderr"), &timer)
            .await
            .expect("retry")
    );
    assert!(
        !store
            .retry_attempt(&run.id, "a", 1, "boom", None, &timer)
            .await
            .expect("retry"),
        "retry applies once"
    );
    let got = store.get_run(&run.id).await.expect("get").expect("run");
    assert_eq!(got.steps["a"].status, StepStatus::Waiting);
    assert_eq!(got.steps["a"].error.as_deref(), Some("boom"));
    let due = store
        .claim_due_timers(now_ms(), 100, 60_000)
        .await
        .expect("claim");
    assert!(due.contains(&timer), "the retry timer is due");
    assert!(
        started(&*store, &run.id, "a", 2).await,
        "attempt 2 starts from waiting"
    );
}

/// Timers are claimed when due, earliest first; a claimed timer is leased (not handed out
/// again) until it is completed or its lease runs out; the same id is scheduled once.
pub async fn timers_fire_once_in_due_order(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let now = now_ms();
    let mk = |id: &str, due_ms: i64| Timer {
        id: id.to_string(),
        due_ms,
        action: TimerAction::EnqueueStep(StepMessage {
            run_id: "r".into(),
            step_id: "s".into(),
            attempt: 1,
        }),
    };
    let (late, early, future) = (unique("late"), unique("early"), unique("future"));
    store
        .schedule_timer(&mk(&late, now - 10))
        .await
        .expect("schedule");
    store
        .schedule_timer(&mk(&early, now - 20))
        .await
        .expect("schedule");
    store
        .schedule_timer(&mk(&early, now - 20))
        .await
        .expect("schedule twice");
    store
        .schedule_timer(&mk(&future, now + 30_000))
        .await
        .expect("schedule");
    let ours = |timers: Vec<Timer>| -> Vec<String> {
        timers
            .into_iter()
            .map(|t| t.id)
            .filter(|id| [&early, &late, &future].contains(&id))
            .collect()
    };
    let due = ours(
        store
            .claim_due_timers(now, 100, 60_000)
            .await
            .expect("claim"),
    );
    assert_eq!(
        due,
        vec![early.clone(), late.clone()],
        "due timers, earliest first, once each"
    );
    let again = ours(
        store
            .claim_due_timers(now + 1_000, 100, 60_000)
            .await
            .expect("claim"),
    );
    assert!(
        again.is_empty(),
        "leased timers are not handed out again: {again:?}"
    );
    store.complete_timer(&early).await.expect("complete");
    // After the lease: the uncompleted timer comes back, the completed one does not.
    let after = ours(
        store
            .claim_due_timers(now + 61_000, 100, 60_000)
            .await
            .expect("claim"),
    );
    assert_eq!(
        after,
        vec![future.clone(), late.clone()],
        "an expired lease makes a timer due again"
    );
    store.complete_timer(&late).await.expect("complete");
    store.complete_timer(&future).await.expect("complete");
    let none = ours(
        store
            .claim_due_timers(now + 200_000, 100, 60_000)
            .await
            .expect("claim"),
    );
    assert!(
        none.is_empty(),
        "completed timers never fire again: {none:?}"
    );

    // Concurrent claimers get disjoint timers, and together all of them.
    let ids: Vec<String> = (0..50).map(|i| unique(&format!("c{i}"))).collect();
    for id in &ids {
        store
            .schedule_timer(&mk(id, now - 5))
            .await
            .expect("schedule");
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim_due_timers(now_ms(), 5, 60_000)
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|t| t.id));
            }
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.expect("task"));
    }
    claimed.retain(|id| ids.contains(id));
    claimed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(claimed, expected, "every timer claimed exactly once");
    for id in &ids {
        store.complete_timer(id).await.expect("complete");
    }
}

/// A run finishes once; listing filters by function, status and user, newest first.
pub async fn finish_run_once_and_list_runs(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let function = unique("fn");
    let r1 = sample_run(&function, "alice");
    let mut r2 = sample_run(&function, "bob");
    r2.created_at = r1.created_at + 1; // newest first: r2
    store.create_run(&r1).await.expect("create");
    store.create_run(&r2).await.expect("create");
    assert!(
        store
            .finish_run(&r1.id, RunStatus::Completed)
            .await
            .expect("finish")
    );
    assert!(
        !store
            .finish_run(&r1.id, RunStatus::Failed)
            .await
            .expect("finish"),
        "a run finishes once"
    );
    let got = store.get_run(&r1.id).await.expect("get").expect("run");
    assert_eq!(got.status, RunStatus::Completed);
    assert!(got.ended_at.is_some());
    let all = store
        .list_runs(&RunFilter {
            function_id: Some(function.clone()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec![r2.id.as_str(), r1.id.as_str()]
    );
    let running = store
        .list_runs(&RunFilter {
            function_id: Some(function.clone()),
            status: Some(RunStatus::Running),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, r2.id);
    let alice = store
        .list_runs(&RunFilter {
            function_id: Some(function),
            user: Some("alice".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].event_id, r1.event.id);
}

/// A running attempt is busy for others while its lease lives (renewals extend it), and is
/// taken over once the lease expired; the first result of the attempt wins.
pub async fn expired_leases_are_taken_over(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    let t0 = now_ms();
    let start = |at: i64| {
        let store = store.clone();
        let id = run.id.clone();
        async move {
            store
                .start_attempt(&id, "a", 1, at, 1_000)
                .await
                .expect("start")
        }
    };
    assert_eq!(start(t0).await, StartAttempt::Started);
    match start(t0 + 400).await {
        StartAttempt::Busy { lease_left_ms } => assert_eq!(lease_left_ms, 600, "lease left"),
        other => panic!("a live lease makes the attempt busy, got {other:?}"),
    }
    assert!(
        store
            .renew_attempt(&run.id, "a", 1, t0 + 5_000)
            .await
            .expect("renew")
    );
    assert!(
        matches!(start(t0 + 2_000).await, StartAttempt::Busy { .. }),
        "a renewed lease is still live"
    );
    assert!(
        !store
            .renew_attempt(&run.id, "a", 2, t0 + 9_000)
            .await
            .expect("renew"),
        "wrong attempt"
    );
    assert_eq!(
        start(t0 + 6_000).await,
        StartAttempt::Started,
        "an expired lease is taken over"
    );
    let got = store.get_run(&run.id).await.expect("get").expect("run");
    assert_eq!(
        got.steps["a"].attempts, 1,
        "a takeover re-runs the same attempt"
    );
    let takeovers = got
        .history
        .iter()
        .filter(|h| h.kind == "step.started")
        .count();
    assert_eq!(takeovers, 2, "the timeline shows both starts");
    let first = AttemptOutcome::Completed {
        output: json!({"by": "second node"}),
        log: None,
    };
    assert!(
        store
            .finish_attempt(&run.id, "a", 1, &first)
            .await
            .expect("finish")
            .applied
    );
    let late = AttemptOutcome::Completed {
        output: json!({"by": "first node"}),
        log: None,
    };
    assert!(
        !store
            .finish_attempt(&run.id, "a", 1, &late)
            .await
            .expect("finish")
            .applied
    );
    assert_eq!(
        start(t0 + 60_000).await,
        StartAttempt::Stale,
        "a finished attempt is stale"
    );
    assert!(
        !store
            .renew_attempt(&run.id, "a", 1, t0 + 90_000)
            .await
            .expect("renew"),
        "finished"
    );
}

/// `resolve_edge_and_join`: a join waits for its edges, queues (or skips) the child exactly
/// once, and a recovering caller re-derives the same decision.
pub async fn joins_are_decided_once(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    let all = JoinRule {
        parents: 2,
        any: false,
        recovering: false,
    };
    let first = store
        .resolve_edge_and_join(&run.id, "b", "p1", true, all, "")
        .await
        .expect("join");
    assert_eq!(
        (first.decision, first.transition),
        (None, None),
        "one of two edges: undecided"
    );
    let second = store
        .resolve_edge_and_join(&run.id, "b", "p2", true, all, "")
        .await
        .expect("join");
    assert_eq!(second.decision, Some(true), "both taken: queue");
    let t = second.transition.expect("transition");
    assert!(t.applied);
    assert_eq!(t.open_steps, 2, "a queued step is still open");
    let again = store
        .resolve_edge_and_join(&run.id, "b", "p2", true, all, "")
        .await
        .expect("join");
    assert!(!again.tally.recorded);
    assert_eq!(again.decision, None, "a repeated edge decides nothing");
    let recovering = JoinRule {
        recovering: true,
        ..all
    };
    let redo = store
        .resolve_edge_and_join(&run.id, "b", "p2", true, recovering, "")
        .await
        .expect("join");
    assert_eq!(
        redo.decision,
        Some(true),
        "recovery re-derives the decision"
    );
    assert!(
        !redo.transition.expect("transition").applied,
        "but the child moves once"
    );
    let got = store.get_run(&run.id).await.expect("get").expect("run");
    assert_eq!(got.steps["b"].status, StepStatus::Queued);

    // join any: skipped only when every edge was not taken, with the reason recorded.
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    let any = JoinRule {
        parents: 2,
        any: true,
        recovering: false,
    };
    let no = store
        .resolve_edge_and_join(&run.id, "b", "p1", false, any, "why")
        .await
        .expect("join");
    assert_eq!(no.decision, None);
    let skip = store
        .resolve_edge_and_join(&run.id, "b", "p2", false, any, "why")
        .await
        .expect("join");
    assert_eq!(skip.decision, Some(false));
    let t = skip.transition.expect("transition");
    assert!(t.applied);
    assert_eq!(t.open_steps, 1, "a skipped step is final");
    let got = store.get_run(&run.id).await.expect("get").expect("run");
    assert_eq!(got.steps["b"].status, StepStatus::Skipped);
    assert_eq!(got.steps["b"].error.as_deref(), Some("why"));
}

/// `start_attempt_with_state` starts the attempt and returns the run's state; a missing run is
/// `(Stale, None)`.
pub async fn start_with_state_returns_the_run_state(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    let now = now_ms();
    let (started, state) = store
        .start_attempt_with_state(&run.id, "a", 1, now, LONG_LEASE_MS)
        .await
        .expect("start");
    assert_eq!(started, StartAttempt::Started);
    let state = state.expect("the run's state");
    assert_eq!(state.id, run.id);
    assert_eq!(state.function_id, run.function_id);
    assert_eq!(state.event, run.event);
    assert!(state.outputs.is_empty());
    let out = AttemptOutcome::Completed {
        output: json!({"x": 1}),
        log: None,
    };
    assert!(
        store
            .finish_attempt(&run.id, "a", 1, &out)
            .await
            .expect("finish")
            .applied
    );
    let queued = JoinRule {
        parents: 1,
        any: false,
        recovering: false,
    };
    store
        .resolve_edge_and_join(&run.id, "b", "a", true, queued, "")
        .await
        .expect("join");
    let (started, state) = store
        .start_attempt_with_state(&run.id, "b", 1, now, LONG_LEASE_MS)
        .await
        .expect("start");
    assert_eq!(started, StartAttempt::Started);
    assert_eq!(
        state.expect("state").outputs.get("a"),
        Some(&json!({"x": 1})),
        "outputs so far"
    );
    let (again, _) = store
        .start_attempt_with_state(&run.id, "b", 1, now, LONG_LEASE_MS)
        .await
        .expect("start");
    assert!(matches!(again, StartAttempt::Busy { .. }), "{again:?}");
    let (missing, none) = store
        .start_attempt_with_state("no-such-run", "a", 1, now, LONG_LEASE_MS)
        .await
        .expect("start");
    assert_eq!((missing, none), (StartAttempt::Stale, None));
}

/// `delete_finished_runs` deletes runs that ended before the horizon — oldest end first, at
/// most `limit` per call — with their listing entries, whichever way they finished (an edge
/// skipping the last open step, an attempt closing it, or `finish_run`); a running run stays,
/// however old, and so does a run that ended after the horizon. A run created again under a
/// deleted id is listed once.
pub async fn finished_runs_are_deleted_after_the_retention(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let function = unique("fn");
    let by_join = sample_run(&function, "alice");
    let by_attempt = sample_run(&function, "alice");
    let by_call = sample_run(&function, "alice");
    let mut running = sample_run(&function, "alice");
    running.created_at -= 86_400_000; // older than the others: age alone deletes nothing
    for run in [&by_join, &by_attempt, &by_call, &running] {
        store.create_run(run).await.expect("create");
    }
    for _ in 0..4 {
        // Other live runs, so deleted ids are a minority of the store (memory: kept in its
        // creation order until they are half of it).
        let other = sample_run(&unique("fn"), "bob");
        store.create_run(&other).await.expect("create");
    }
    let done = AttemptOutcome::Completed {
        output: json!({"ok": true}),
        log: None,
    };
    // by_join: `a` completes, then its edge to `b` is not taken, which skips `b`, the last step.
    assert!(started(&*store, &by_join.id, "a", 1).await);
    store
        .finish_attempt(&by_join.id, "a", 1, &done)
        .await
        .expect("finish a");
    let one_parent = JoinRule {
        parents: 1,
        any: false,
        recovering: false,
    };
    let join = store
        .resolve_edge_and_join(&by_join.id, "b", "a", false, one_parent, "not taken")
        .await
        .expect("join");
    assert_eq!(
        join.transition.and_then(|t| t.finished),
        Some(RunStatus::Completed),
        "{join:?}"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    // by_attempt: `b` is skipped first, then `a`'s attempt closes the run.
    let t = store
        .transition_step(
            &by_attempt.id,
            "b",
            StepStatus::Pending,
            StepStatus::Skipped,
            None,
        )
        .await
        .expect("skip b");
    assert_eq!(t.finished, None);
    assert!(started(&*store, &by_attempt.id, "a", 1).await);
    let t = store
        .finish_attempt(&by_attempt.id, "a", 1, &done)
        .await
        .expect("finish a");
    assert_eq!(t.finished, Some(RunStatus::Completed));
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        store
            .finish_run(&by_call.id, RunStatus::Failed)
            .await
            .expect("finish")
    );
    let ended = |id: &str| {
        let store = store.clone();
        let id = id.to_string();
        async move {
            store
                .get_run(&id)
                .await
                .expect("get")
                .and_then(|r| r.ended_at)
                .expect("ended")
        }
    };
    let first_end = ended(&by_join.id).await;
    assert!(first_end < ended(&by_call.id).await);

    assert_eq!(
        store
            .delete_finished_runs(first_end - 1_000, 10)
            .await
            .expect("delete"),
        0,
        "nothing ended a second before the first end"
    );
    let later = now_ms() + 60_000;
    assert_eq!(
        store.delete_finished_runs(later, 1).await.expect("delete"),
        1,
        "one run per call at limit 1"
    );
    assert!(
        store.get_run(&by_join.id).await.expect("get").is_none(),
        "the run that ended first is deleted first"
    );
    assert!(store.get_run(&by_attempt.id).await.expect("get").is_some());
    assert_eq!(
        store.delete_finished_runs(later, 10).await.expect("delete"),
        2,
        "the other finished runs; fewer than the limit: none left"
    );
    assert_eq!(
        store.delete_finished_runs(later, 10).await.expect("delete"),
        0,
        "deleting again finds nothing"
    );
    for id in [&by_join.id, &by_attempt.id, &by_call.id] {
        assert!(store.get_run(id).await.expect("get").is_none(), "{id}");
        assert!(
            store.get_run_state(id).await.expect("get").is_none(),
            "{id}"
        );
    }
    let got = store
        .get_run(&running.id)
        .await
        .expect("get")
        .expect("the running run stays");
    assert_eq!(got.status, RunStatus::Running);
    let of_function = RunFilter {
        function_id: Some(function.clone()),
        ..RunFilter::default()
    };
    for filter in [
        of_function.clone(),
        RunFilter {
            user: Some("alice".into()),
            ..RunFilter::default()
        },
        RunFilter::default(),
    ] {
        let listed = store.list_runs(&filter).await.expect("list");
        let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
        assert!(ids.contains(&running.id.as_str()), "{filter:?}: {ids:?}");
        for gone in [&by_join.id, &by_attempt.id, &by_call.id] {
            assert!(
                !ids.contains(&gone.as_str()),
                "deleted runs are not listed ({filter:?}): {ids:?}"
            );
        }
    }
    for status in [RunStatus::Completed, RunStatus::Failed] {
        let listed = store
            .list_runs(&RunFilter {
                function_id: Some(function.clone()),
                status: Some(status),
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert!(listed.is_empty(), "{status:?}: {listed:?}");
    }
    // The run can be created again under its key (its event replayed or redelivered after
    // the retention): it is a new run, listed once.
    assert_eq!(
        store.create_run(&by_call).await.expect("create again"),
        CreateRun::Created
    );
    let listed = store.list_runs(&of_function).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![by_call.id.as_str(), running.id.as_str()]);
}

/// `list_ended` lists the runs that ended in a time range, earliest end first, up to a limit;
/// running runs are not listed.
pub async fn ended_runs_are_listed_by_end_time(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let function = unique("fn");
    let runs: Vec<Run> = (0..3).map(|_| sample_run(&function, "alice")).collect();
    let running = sample_run(&function, "alice");
    for run in runs.iter().chain([&running]) {
        store.create_run(run).await.expect("create");
    }
    let before = crate::event::now_ms();
    let mut ended_at = Vec::new();
    // Finished in the reverse order of creation: the listing follows the end.
    for run in runs.iter().rev() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            store
                .finish_run(&run.id, RunStatus::Completed)
                .await
                .expect("finish")
        );
        ended_at.push(run.id.clone());
    }
    let after = crate::event::now_ms() + 1;
    let mine = |listed: Vec<crate::run::RunSummary>| -> Vec<String> {
        listed
            .into_iter()
            .filter(|r| r.function_id == function)
            .map(|r| r.id)
            .collect()
    };
    let all = mine(store.list_ended(before, after, 1000).await.expect("list"));
    assert_eq!(
        all, ended_at,
        "earliest end first; the running run is not listed"
    );
    let listed = store.list_ended(before, after, 1000).await.expect("list");
    assert!(
        listed
            .iter()
            .filter(|r| r.function_id == function)
            .all(|r| r.ended_at.is_some_and(|t| (before..=after).contains(&t))),
        "{listed:?}"
    );
    assert!(
        mine(
            store
                .list_ended(after + 1, after + 10_000, 1000)
                .await
                .expect("list")
        )
        .is_empty(),
        "nothing ended after"
    );
}

/// Runs are listed newest first, by creation time then id, in pages that follow one another
/// by cursor with no run twice and none missed (runs of one millisecond included), within a
/// time range; `count_runs` counts them by status for a function, a user and a range.
pub async fn runs_page_by_cursor_and_are_counted_by_status(factory: &dyn Factory<dyn StateStore>) {
    use crate::run::{RunCounts, RunCursor};

    let store = factory.make().await;
    let (shop, mail) = (unique("shop"), unique("mail"));
    let base = 1_000_000;
    let mut made = Vec::new();
    // 12 runs over 6 milliseconds (two per ms), of two functions and three users.
    for i in 0..12i64 {
        let function = if i % 3 == 0 { &mail } else { &shop };
        let user = ["ann", "ben", "cat"][(i % 3) as usize];
        let mut run = sample_run(function, user);
        run.created_at = base + i / 2;
        store.create_run(&run).await.expect("create");
        made.push(run);
    }
    // Statuses: 0, 4, 8 completed; 1, 5 failed; 2 cancelled; the rest running.
    for (i, status) in [
        (0, RunStatus::Completed),
        (4, RunStatus::Completed),
        (8, RunStatus::Completed),
        (1, RunStatus::Failed),
        (5, RunStatus::Failed),
        (2, RunStatus::Cancelled),
    ] {
        assert!(store.finish_run(&made[i].id, status).await.expect("finish"));
    }
    let mut newest_first: Vec<(i64, String)> =
        made.iter().map(|r| (r.created_at, r.id.clone())).collect();
    newest_first.sort();
    newest_first.reverse();

    // Pages of 5, then 5, then 2, each after the previous page's last run.
    let in_range = RunFilter {
        from_ms: Some(base),
        to_ms: Some(base + 6),
        ..RunFilter::default()
    };
    let mut paged = Vec::new();
    let mut cursor: Option<RunCursor> = None;
    for want in [5, 5, 2, 0] {
        let page = store
            .list_runs(&RunFilter {
                limit: Some(5),
                before: cursor.clone(),
                ..in_range.clone()
            })
            .await
            .expect("list");
        assert_eq!(page.len(), want, "page after {cursor:?}");
        cursor = page.last().map(RunCursor::of).or(cursor);
        paged.extend(page.into_iter().map(|r| (r.created_at, r.id)));
    }
    assert_eq!(
        paged, newest_first,
        "every run once, newest first, ties by id"
    );
    let cursor_text = RunCursor::of(&store.list_runs(&in_range).await.expect("list")[3]);
    assert_eq!(
        RunCursor::parse(&cursor_text.to_string()),
        Some(cursor_text.clone()),
        "a cursor reads back as written"
    );

    // A time range alone, and a cursor with a filter.
    let middle = store
        .list_runs(&RunFilter {
            from_ms: Some(base + 2),
            to_ms: Some(base + 4),
            ..RunFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(
        middle.iter().map(|r| r.created_at).collect::<Vec<_>>(),
        vec![base + 3, base + 3, base + 2, base + 2]
    );
    let shop_pages = store
        .list_runs(&RunFilter {
            function_id: Some(shop.clone()),
            before: Some(RunCursor {
                created_at: base + 3,
                id: newest_first[4].1.clone(),
            }),
            ..RunFilter::default()
        })
        .await
        .expect("list");
    let want: Vec<&str> = newest_first[5..]
        .iter()
        .filter(|(_, id)| made.iter().any(|r| r.id == *id && r.function_id == shop))
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(
        shop_pages.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        want
    );

    // Counts: everything in the range; by function; by user; by function and user.
    let count = |filter: RunFilter| {
        let store = store.clone();
        async move { store.count_runs(&filter).await.expect("count") }
    };
    let counts = |running, completed, failed, cancelled| RunCounts {
        running,
        completed,
        failed,
        cancelled,
        capped: false,
    };
    assert_eq!(count(in_range.clone()).await, counts(6, 3, 2, 1));
    // mail: 0, 3, 6, 9 (0 completed; 3, 6, 9 running).
    assert_eq!(
        count(RunFilter {
            function_id: Some(mail.clone()),
            ..RunFilter::default()
        })
        .await,
        counts(3, 1, 0, 0)
    );
    // ben: 1, 4, 7, 10 (1 failed; 4 completed; 7, 10 running).
    assert_eq!(
        count(RunFilter {
            user: Some("ben".into()),
            ..in_range.clone()
        })
        .await,
        counts(2, 1, 1, 0)
    );
    // cat of shop: 2, 5, 8, 11 (2 cancelled, 5 failed, 8 completed, 11 running), from base + 3 on: 8, 11.
    assert_eq!(
        count(RunFilter {
            user: Some("cat".into()),
            function_id: Some(shop.clone()),
            from_ms: Some(base + 3),
            status: Some(RunStatus::Failed),
            ..RunFilter::default()
        })
        .await,
        counts(1, 1, 0, 0),
        "a status filter is not a count filter"
    );
    assert_eq!(
        count(RunFilter {
            user: Some("nobody".into()),
            ..RunFilter::default()
        })
        .await,
        RunCounts::default()
    );
}
