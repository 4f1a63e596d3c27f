//! Pause conformance cases, part of the StateStore suite ([`super::state::run_all`]): a
//! pause is registered with its step's completion, found by event name and match key, resumed
//! once however many routers race on it, timed out once, and its expiry timer fires.

use serde_json::json;

use super::Factory;
use super::state::sample_run;
use super::unique;
use crate::event::{Event, now_ms};
use crate::pause::{Pause, PauseSpec, PauseStatus};
use crate::state::{AttemptOutcome, StateStore, TimerAction};

/// Runs every pause case.
pub async fn run_all(factory: &dyn Factory<dyn StateStore>) {
    pauses_are_registered_with_the_completion(factory).await;
    pauses_are_found_by_name_and_key(factory).await;
    one_event_resumes_a_pause_once_under_racers(factory).await;
    an_all_pause_resumes_when_every_spec_matched(factory).await;
    a_match_and_a_timeout_exclude_each_other(factory).await;
    a_watched_pause_has_an_expiry_timer(factory).await;
    cancelling_a_run_ends_its_steps_and_pauses(factory).await;
}

/// A waiting pause of run `run_id` after step `a`, for an event named `name` filed under
/// `key` (one spec per name).
pub fn sample_pause(run_id: &str, trigger: &Event, names: &[&str], key: &str) -> Pause {
    let now = now_ms();
    Pause {
        run_id: run_id.to_string(),
        function_id: "f".into(),
        function_version: "v1".into(),
        step: "a".into(),
        ordinal: 0,
        specs: names
            .iter()
            .map(|n| PauseSpec {
                event: n.to_string(),
                key: key.to_string(),
            })
            .collect(),
        all: false,
        cancels: false,
        edges: Vec::new(),
        exclude: Vec::new(),
        trigger_id: trigger.id.clone(),
        trigger: None,
        registered_ms: now,
        expires_ms: now + 600_000,
        status: PauseStatus::Waiting,
        matched: Vec::new(),
        resolved_ms: None,
    }
}

fn event(name: &str, user: &str) -> Event {
    Event::from_json(json!({"name": name, "user": {"id": user}}), "").expect("event")
}

/// A run whose step `a` completed with `pauses` registered; the run id.
async fn run_with_pauses(
    store: &dyn StateStore,
    make: impl FnOnce(&str, &Event) -> Vec<Pause>,
) -> (String, Vec<Pause>) {
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    let started = store
        .start_attempt(&run.id, "a", 1, now_ms(), 600_000)
        .await
        .expect("start");
    assert_eq!(started, crate::state::StartAttempt::Started);
    let pauses = make(&run.id, &run.event);
    let done = AttemptOutcome::Completed {
        output: json!({}),
        log: None,
    };
    let t = store
        .finish_attempt_with_pauses(&run.id, "a", 1, &done, &pauses)
        .await
        .expect("finish with pauses");
    assert!(t.applied);
    (run.id, pauses)
}

/// A completion records its pauses (waiting) in the run with a timeline entry; a completion
/// that does not apply, or a failure, records none.
pub async fn pauses_are_registered_with_the_completion(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let name = unique("ev");
    let (run_id, pauses) =
        run_with_pauses(&*store, |id, t| vec![sample_pause(id, t, &[&name], "")]).await;
    let got = store.get_pause(&run_id, "a/0").await.expect("get");
    assert_eq!(got.as_ref(), Some(&pauses[0]), "the pause as registered");
    let run = store.get_run(&run_id).await.expect("get").expect("run");
    assert_eq!(
        run.pauses.get("a/0"),
        Some(&pauses[0]),
        "the run lists its pause"
    );
    let kinds: Vec<&str> = run.history.iter().map(|h| h.kind.as_str()).collect();
    let completed = kinds.iter().position(|k| *k == "step.completed");
    let registered = kinds.iter().position(|k| *k == "pause.registered");
    assert!(
        completed.is_some() && registered > completed,
        "registered after the completion: {kinds:?}"
    );
    // The same completion again (a second writer) changes nothing.
    let mut other = pauses[0].clone();
    other.ordinal = 1;
    let done = AttemptOutcome::Completed {
        output: json!({}),
        log: None,
    };
    let again = store
        .finish_attempt_with_pauses(&run_id, "a", 1, &done, &[other])
        .await
        .expect("finish again");
    assert!(!again.applied);
    assert_eq!(store.get_pause(&run_id, "a/1").await.expect("get"), None);
    // A failed step begins no wait.
    let run = sample_run(&unique("fn"), "u1");
    store.create_run(&run).await.expect("create");
    store
        .start_attempt(&run.id, "a", 1, now_ms(), 600_000)
        .await
        .expect("start");
    let failed = AttemptOutcome::Failed {
        error: "boom".into(),
        output: None,
        log: None,
    };
    let pause = sample_pause(&run.id, &run.event, &[&name], "");
    store
        .finish_attempt_with_pauses(&run.id, "a", 1, &failed, &[pause])
        .await
        .expect("finish");
    assert_eq!(store.get_pause(&run.id, "a/0").await.expect("get"), None);
}

/// A watched pause is found by its event name and key (or the empty key), with the spec that
/// name belongs to; not by other names or keys, and not once unwatched.
pub async fn pauses_are_found_by_name_and_key(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let (first, second) = (unique("ev"), unique("ev"));
    let (run_id, pauses) = run_with_pauses(&*store, |id, t| {
        vec![sample_pause(id, t, &[&first, &second], "user.id=\"u1\"")]
    })
    .await;
    assert!(
        store
            .find_pauses(&first, &["user.id=\"u1\"".into()])
            .await
            .expect("find")
            .is_empty(),
        "not filed before watch_pauses"
    );
    store.watch_pauses(&pauses).await.expect("watch");
    store
        .watch_pauses(&pauses)
        .await
        .expect("watching twice is harmless");
    let key = "user.id=\"u1\"".to_string();
    let hits = store
        .find_pauses(&second, &[key.clone(), String::new()])
        .await
        .expect("find");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].spec, 1);
    assert_eq!(hits[0].pause.run_id, run_id);
    assert_eq!(hits[0].pause.specs, pauses[0].specs);
    let other_key = store
        .find_pauses(&first, &["user.id=\"u2\"".into(), String::new()])
        .await
        .expect("find");
    assert!(other_key.is_empty(), "{other_key:?}");
    assert!(
        store
            .find_pauses(&unique("ev"), std::slice::from_ref(&key))
            .await
            .expect("find")
            .is_empty()
    );
    // Ended, it is still found until unwatched (its follower may have failed).
    store
        .resume_pause(&run_id, "a/0", 0, &event(&first, "u1"), now_ms())
        .await
        .expect("resume");
    let ended = store
        .find_pauses(&first, std::slice::from_ref(&key))
        .await
        .expect("find");
    assert_eq!(ended.len(), 1, "{ended:?}");
    store.unwatch_pause(&pauses[0]).await.expect("unwatch");
    assert!(
        store
            .find_pauses(&first, &[key])
            .await
            .expect("find")
            .is_empty()
    );
}

/// Eight routers resuming one pause with eight events at once: exactly one resolves it and its
/// event is the one kept; later events, and the run's own trigger, change nothing.
pub async fn one_event_resumes_a_pause_once_under_racers(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let name = unique("ev");
    let mut trigger = None;
    let (run_id, _) = run_with_pauses(&*store, |id, t| {
        trigger = Some(t.clone());
        vec![sample_pause(id, t, &[&name], "")]
    })
    .await;
    let trigger = trigger.expect("trigger");
    let own = store
        .resume_pause(&run_id, "a/0", 0, &trigger, now_ms())
        .await
        .expect("resume");
    assert!(!own.applied, "the trigger does not resume its own run");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let run_id = run_id.clone();
        let e = event(&name, &format!("racer-{i}"));
        tasks.push(tokio::spawn(async move {
            let answer = store
                .resume_pause(&run_id, "a/0", 0, &e, now_ms())
                .await
                .expect("resume");
            (e.id, answer)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (id, answer) = t.await.expect("task");
        let pause = answer.pause.expect("the pause");
        assert_eq!(pause.status, PauseStatus::Matched);
        if answer.applied {
            winners.push(id);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one resume wins: {winners:?}");
    let pause = store
        .get_pause(&run_id, "a/0")
        .await
        .expect("get")
        .expect("pause");
    assert_eq!(pause.matched.len(), 1);
    assert_eq!(
        pause.matched[0].as_ref().map(|e| e.id.clone()),
        Some(winners[0].clone())
    );
    assert!(pause.resolved_ms.is_some());
    let run = store.get_run(&run_id).await.expect("get").expect("run");
    let matched: Vec<_> = run
        .history
        .iter()
        .filter(|h| h.kind == "pause.matched")
        .collect();
    assert_eq!(matched.len(), 1, "one timeline entry");
    assert!(
        matched[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains(&winners[0])
    );
    let late = store
        .resume_pause(&run_id, "a/0", 0, &event(&name, "late"), now_ms())
        .await
        .expect("resume");
    assert!(!late.applied);
    assert!(
        store
            .resume_pause("no-such-run", "a/0", 0, &event(&name, "x"), now_ms())
            .await
            .expect("resume")
            .pause
            .is_none()
    );
}

/// With `all`, each spec keeps its first match and the pause resolves with the last.
pub async fn an_all_pause_resumes_when_every_spec_matched(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let (first, second) = (unique("ev"), unique("ev"));
    let (run_id, _) = run_with_pauses(&*store, |id, t| {
        let mut p = sample_pause(id, t, &[&first, &second], "");
        p.all = true;
        vec![p]
    })
    .await;
    let one = event(&first, "u1");
    let answer = store
        .resume_pause(&run_id, "a/0", 0, &one, now_ms())
        .await
        .expect("resume");
    assert!(answer.applied);
    assert_eq!(
        answer.pause.as_ref().map(|p| p.status),
        Some(PauseStatus::Waiting)
    );
    let again = store
        .resume_pause(&run_id, "a/0", 0, &event(&first, "u1"), now_ms())
        .await
        .expect("resume");
    assert!(!again.applied, "a spec keeps its first match");
    let same = store
        .resume_pause(&run_id, "a/0", 1, &one, now_ms())
        .await
        .expect("resume");
    assert!(!same.applied, "one event fills one spec");
    let two = event(&second, "u1");
    let answer = store
        .resume_pause(&run_id, "a/0", 1, &two, now_ms())
        .await
        .expect("resume");
    assert!(answer.applied);
    let pause = answer.pause.expect("pause");
    assert_eq!(pause.status, PauseStatus::Matched);
    let ids: Vec<Option<String>> = pause
        .matched
        .iter()
        .map(|m| m.as_ref().map(|e| e.id.clone()))
        .collect();
    assert_eq!(ids, vec![Some(one.id), Some(two.id)]);
}

/// Four routers resuming and four schedulers expiring one pause at once: exactly one wins,
/// and the pause ends the way the winner said.
pub async fn a_match_and_a_timeout_exclude_each_other(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let name = unique("ev");
    let (run_id, _) =
        run_with_pauses(&*store, |id, t| vec![sample_pause(id, t, &[&name], "")]).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let run_id = run_id.clone();
        let e = event(&name, "u1");
        tasks.push(tokio::spawn(async move {
            let answer = if i % 2 == 0 {
                store.expire_pause(&run_id, "a/0", now_ms()).await
            } else {
                store.resume_pause(&run_id, "a/0", 0, &e, now_ms()).await
            };
            (i % 2 == 0, answer.expect("answer").applied)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (expiring, applied) = t.await.expect("task");
        if applied {
            winners.push(expiring);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one wins");
    let pause = store
        .get_pause(&run_id, "a/0")
        .await
        .expect("get")
        .expect("pause");
    let expected = if winners[0] {
        PauseStatus::TimedOut
    } else {
        PauseStatus::Matched
    };
    assert_eq!(pause.status, expected);
    let run = store.get_run(&run_id).await.expect("get").expect("run");
    let ends = run
        .history
        .iter()
        .filter(|h| h.kind == "pause.timed_out" || h.kind == "pause.matched")
        .count();
    assert_eq!(ends, 1, "one end in the timeline");
}

/// Watching a pause schedules its expiry timer (once, however often watched); unwatching
/// drops it.
pub async fn a_watched_pause_has_an_expiry_timer(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let name = unique("ev");
    let (run_id, mut pauses) = run_with_pauses(&*store, |id, t| {
        let mut p = sample_pause(id, t, &[&name], "");
        p.expires_ms = now_ms() - 1;
        vec![p]
    })
    .await;
    store.watch_pauses(&pauses).await.expect("watch");
    store.watch_pauses(&pauses).await.expect("watch again");
    let timer_id = pauses[0].expiry_timer().id;
    let due = store
        .claim_due_timers(now_ms() + 1_000_000_000, 10_000, 60_000)
        .await
        .expect("claim");
    let ours: Vec<_> = due.iter().filter(|t| t.id == timer_id).collect();
    assert_eq!(ours.len(), 1, "one expiry timer: {due:?}");
    match &ours[0].action {
        TimerAction::PauseExpires(r) => {
            assert_eq!(r.run_id, run_id);
            assert_eq!(r.key, "a/0");
        }
        other => panic!("unexpected action {other:?}"),
    }
    // A pause watched again after a claim keeps its one timer; unwatching drops it.
    pauses[0].expires_ms = now_ms() - 1;
    store.unwatch_pause(&pauses[0]).await.expect("unwatch");
    let due = store
        .claim_due_timers(now_ms() + 2_000_000_000, 10_000, 60_000)
        .await
        .expect("claim");
    assert!(due.iter().all(|t| t.id != timer_id), "dropped: {due:?}");
}

/// Cancelling a running run ends it `cancelled` with its open steps and waiting pauses, once
/// (eight callers at once: one applies); a finished run is not cancelled.
pub async fn cancelling_a_run_ends_its_steps_and_pauses(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let name = unique("ev");
    let (run_id, _) =
        run_with_pauses(&*store, |id, t| vec![sample_pause(id, t, &[&name], "")]).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .cancel_run(&run_id, "cancelled by event E1", now_ms())
                .await
                .expect("cancel")
        }));
    }
    let mut applied = 0;
    for t in tasks {
        let answer = t.await.expect("task");
        assert_eq!(answer.status, Some(crate::run::RunStatus::Cancelled));
        assert_eq!(answer.pauses.len(), 1, "the run's pauses: {answer:?}");
        applied += usize::from(answer.applied);
    }
    assert_eq!(applied, 1, "one cancel applies");
    let run = store.get_run(&run_id).await.expect("get").expect("run");
    assert_eq!(run.status, crate::run::RunStatus::Cancelled);
    assert!(run.ended_at.is_some());
    assert_eq!(
        run.steps["a"].status,
        crate::run::StepStatus::Completed,
        "a final step stays"
    );
    assert_eq!(run.steps["b"].status, crate::run::StepStatus::Cancelled);
    assert_eq!(run.pauses["a/0"].status, PauseStatus::Cancelled);
    let entries: Vec<_> = run
        .history
        .iter()
        .filter(|h| h.kind == "run.cancelled")
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].detail.as_deref(), Some("cancelled by event E1"));
    let listed = store
        .list_runs(&crate::run::RunFilter {
            function_id: Some(run.function_id.clone()),
            status: Some(crate::run::RunStatus::Cancelled),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "listed as cancelled");
    // A pause of a cancelled run is no longer resumed.
    let late = store
        .resume_pause(&run_id, "a/0", 0, &event(&name, "u1"), now_ms())
        .await
        .expect("resume");
    assert!(!late.applied);
    // A finished run is not cancelled; no run, no status.
    let done = sample_run(&unique("fn"), "u1");
    store.create_run(&done).await.expect("create");
    store
        .finish_run(&done.id, crate::run::RunStatus::Completed)
        .await
        .expect("finish");
    let answer = store
        .cancel_run(&done.id, "late", now_ms())
        .await
        .expect("cancel");
    assert!(!answer.applied);
    assert_eq!(answer.status, Some(crate::run::RunStatus::Completed));
    let none = store
        .cancel_run("no-such-run", "x", now_ms())
        .await
        .expect("cancel");
    assert_eq!(none.status, None);
    // A waiting pause of a run that ended otherwise is answered cancelled and left as it is.
    let (ended_run, _) =
        run_with_pauses(&*store, |id, t| vec![sample_pause(id, t, &[&name], "")]).await;
    store
        .finish_run(&ended_run, crate::run::RunStatus::Failed)
        .await
        .expect("finish");
    for answer in [
        store
            .resume_pause(&ended_run, "a/0", 0, &event(&name, "u1"), now_ms())
            .await
            .expect("resume"),
        store
            .expire_pause(&ended_run, "a/0", now_ms())
            .await
            .expect("expire"),
    ] {
        assert!(!answer.applied);
        assert_eq!(answer.pause.map(|p| p.status), Some(PauseStatus::Cancelled));
    }
    let run = store.get_run(&ended_run).await.expect("get").expect("run");
    assert_eq!(
        run.pauses["a/0"].status,
        PauseStatus::Waiting,
        "not changed"
    );
    assert!(
        !run.history
            .iter()
            .any(|h| h.kind.starts_with("pause.") && h.kind != "pause.registered")
    );
}
