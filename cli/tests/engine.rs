//! The engine end to end on the embedded default with real process steps: joins, skips,
//! retries, non-retriable failures, timeouts, triggers.

mod common;

use std::time::Duration;

use common::{engine_on, function_dir, run_event};
use serde_json::json;
use weir::core::run::{RunFilter, RunStatus, StepStatus};

fn step(path: &str) -> serde_json::Value {
    json!({"path": format!("file://./steps/{path}"), "runtime": {"type": "process"}, "timeout": "10s"})
}

async fn diamond_runs_the_join_once_with_both_outputs(state: &str) {
    let mut d = step("d");
    d["after"] = json!([{"step": "b"}, {"step": "c"}]);
    let mut b = step("b");
    b["after"] = json!([{"step": "a"}]);
    let mut c = step("c");
    c["after"] = json!([{"step": "a"}]);
    let def = json!({"id": "diamond", "triggers": [{"event": "t/diamond"}],
                     "steps": {"a": step("a"), "b": b, "c": c, "d": d}});
    let f = function_dir(
        &def,
        &[
            ("a", r#"echo '{"from":"a"}'"#),
            ("b", r#"sleep 0.05; echo '{"from":"b"}'"#),
            ("c", r#"echo '{"from":"c"}'"#),
            // d records each execution and echoes the steps it saw
            (
                "d",
                r#"echo x >> "$(dirname "$0")/../d.count"; cat | sed 's/.*"steps":\({[^}]*}[^}]*}[^}]*}[^}]*}\).*/\1/'"#,
            ),
        ],
    );
    let (engine, handle) = engine_on(&f.dir, state).await;
    let run = run_event(&engine, "diamond", &json!({"name": "t/diamond"})).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    let d = &run.steps["d"];
    assert_eq!(d.status, StepStatus::Completed);
    assert_eq!(d.attempts, 1);
    assert_eq!(
        d.output,
        Some(json!({"a": {"from": "a"}, "b": {"from": "b"}, "c": {"from": "c"}}))
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let count = std::fs::read_to_string(f.dir.join("d.count")).expect("d ran");
    assert_eq!(count.lines().count(), 1, "d must run exactly once");
    handle.shutdown().await;
}

async fn false_condition_skips_the_child_and_every_descendant(state: &str) {
    let mut b = step("ok");
    b["after"] = json!([{"step": "a", "if": "response.go == true"}]);
    let mut c = step("ok");
    c["after"] = json!([{"step": "b"}]);
    let mut e = step("ok");
    e["after"] = json!([{"step": "a", "if": "steps['a'].go == false && event.data.n == 7"}]);
    let def = json!({"id": "skips", "triggers": [{"event": "t/skip"}],
                     "steps": {"a": step("a"), "b": b, "c": c, "e": e}});
    let f = function_dir(
        &def,
        &[
            ("a", r#"echo '{"go": false}'"#),
            ("ok", r#"echo '{"ok": true}'"#),
        ],
    );
    let (engine, handle) = engine_on(&f.dir, state).await;
    let run = run_event(
        &engine,
        "skips",
        &json!({"name": "t/skip", "data": {"n": 7}}),
    )
    .await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.steps["b"].status, StepStatus::Skipped);
    assert_eq!(
        run.steps["c"].status,
        StepStatus::Skipped,
        "a skip propagates to descendants"
    );
    assert_eq!(run.steps["b"].attempts, 0);
    assert!(
        run.steps["b"]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("is false"),
        "{:?}",
        run.steps["b"]
    );
    assert_eq!(
        run.steps["e"].status,
        StepStatus::Completed,
        "a true condition is taken"
    );
    handle.shutdown().await;
}

async fn step_failing_twice_then_succeeding_completes_with_three_attempts(state: &str) {
    let def = json!({"id": "flaky", "triggers": [{"event": "t/flaky"}], "steps": {"a": step("a")}});
    let script = r#"n=$(cat "$(dirname "$0")/../tries" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$(dirname "$0")/../tries"
if [ $n -lt 3 ]; then echo "attempt $n fails" >&2; exit 1; fi
echo "{\"attempt\": $WEIR_ATTEMPT}""#;
    let f = function_dir(&def, &[("a", script)]);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let run = run_event(&engine, "flaky", &json!({"name": "t/flaky"})).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    assert_eq!(run.steps["a"].attempts, 3);
    assert_eq!(run.steps["a"].output, Some(json!({"attempt": 3})));
    let retries = run
        .history
        .iter()
        .filter(|h| h.kind == "step.retry_scheduled")
        .count();
    assert_eq!(retries, 2, "the timeline shows both retries");
    handle.shutdown().await;
}

async fn status_4xx_output_fails_the_run_without_retrying(state: &str) {
    let mut b = step("ok");
    b["after"] = json!([{"step": "a"}]);
    let def = json!({"id": "client-error", "triggers": [{"event": "t/4xx"}], "steps": {"a": step("a"), "b": b}});
    let f = function_dir(
        &def,
        &[
            ("a", r#"echo '{"status": 404, "error": "no such user"}'"#),
            ("ok", "echo '{}'"),
        ],
    );
    let (engine, handle) = engine_on(&f.dir, state).await;
    let run = run_event(&engine, "client-error", &json!({"name": "t/4xx"})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.steps["a"].status, StepStatus::Failed);
    assert_eq!(run.steps["a"].attempts, 1, "a 4xx is not retried");
    assert!(
        run.steps["a"]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("no such user")
    );
    assert_eq!(
        run.steps["b"].status,
        StepStatus::Skipped,
        "children of a failed step are skipped"
    );
    handle.shutdown().await;
}

async fn retries_stop_at_the_configured_attempts(state: &str) {
    let def = json!({"id": "always-fails", "triggers": [{"event": "t/fail"}], "retries": {"attempts": 2},
                     "steps": {"a": step("a")}});
    let f = function_dir(&def, &[("a", "echo boom >&2; exit 3")]);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let run = run_event(&engine, "always-fails", &json!({"name": "t/fail"})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.steps["a"].attempts, 2);
    let err = run.steps["a"].error.clone().unwrap_or_default();
    assert!(err.contains("exited with code 3"), "{err}");
    assert!(run.steps["a"].log.as_deref().unwrap_or("").contains("boom"));
    handle.shutdown().await;
}

async fn a_step_over_its_timeout_is_killed_and_fails(state: &str) {
    let mut a = step("a");
    a["timeout"] = json!("300ms");
    let def = json!({"id": "slow", "triggers": [{"event": "t/slow"}], "retries": {"attempts": 1}, "steps": {"a": a}});
    let f = function_dir(&def, &[("a", "sleep 20; echo '{}'")]);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let started = std::time::Instant::now();
    let run = run_event(&engine, "slow", &json!({"name": "t/slow"})).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout cut the step"
    );
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.steps["a"]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{:?}",
        run.steps["a"]
    );
    handle.shutdown().await;
}

async fn trigger_expression_and_name_decide_which_events_start_runs(state: &str) {
    let def = json!({"id": "picky", "triggers": [{"event": "user/*", "expression": "user.created_at > '2020-01-01'"}],
                     "steps": {"a": step("a")}});
    let f = function_dir(&def, &[("a", "echo '{}'")]);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let run = run_event(
        &engine,
        "picky",
        &json!({"name": "user/signed.up", "user": {"created_at": "2021-01-01"}}),
    )
    .await;
    assert_eq!(run.status, RunStatus::Completed);
    engine
        .ingest_body(br#"{"name": "user/signed.up", "user": {"created_at": "2019-01-01"}}"#)
        .await
        .expect("ingest");
    engine
        .ingest_body(br#"{"name": "user/signed.up"}"#)
        .await
        .expect("ingest");
    engine
        .ingest_body(br#"{"name": "order/created", "user": {"created_at": "2021-01-01"}}"#)
        .await
        .expect("ingest");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let runs = engine
        .state()
        .list_runs(&RunFilter::default())
        .await
        .expect("list");
    assert_eq!(
        runs.len(),
        1,
        "only the matching event started a run: {runs:?}"
    );
    handle.shutdown().await;
}

async fn the_same_event_id_starts_one_run(state: &str) {
    let def = json!({"id": "once", "triggers": [{"event": "t/once"}], "steps": {"a": step("a")}});
    let f = function_dir(&def, &[("a", "echo '{}'")]);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let run = run_event(&engine, "once", &json!({"name": "t/once", "id": "evt-1"})).await;
    assert_eq!(run.status, RunStatus::Completed);
    engine
        .ingest_body(br#"{"name": "t/once", "id": "evt-1"}"#)
        .await
        .expect("ingest");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let runs = engine
        .state()
        .list_runs(&RunFilter::default())
        .await
        .expect("list");
    assert_eq!(
        runs.len(),
        1,
        "a re-sent event id does not start a second run"
    );
    handle.shutdown().await;
}

/// A node that recorded a step's end and died before moving the run on: the redelivered
/// message finds the attempt finished and moves the run on instead.
async fn a_redelivered_message_recovers_a_run_its_node_left_behind(state: &str) {
    use weir::core::state::{AttemptOutcome, StartAttempt, StepMessage};
    let mut b = step("b");
    b["after"] = json!([{"step": "a"}]);
    let def = json!({"id": "left-behind", "triggers": [{"event": "t/left"}], "steps": {"a": step("a"), "b": b}});
    let f = function_dir(&def, &[("a", "echo '{}'"), ("b", "echo '{\"b\": 1}'")]);
    // The engine's loops are not started: this test plays the dead node by hand.
    let (engine, handle) = engine_on(&f.dir, state).await;
    handle.shutdown().await;
    let event = weir::core::Event::from_json(json!({"name": "t/left"}), "").expect("event");
    let run_id = engine.route(&event).await.expect("route").remove(0);
    let store = engine.state();
    let now = weir::core::event::now_ms();
    let started = store
        .start_attempt(&run_id, "a", 1, now, 30_000)
        .await
        .expect("start");
    assert_eq!(started, StartAttempt::Started);
    let out = AttemptOutcome::Completed {
        output: json!({"a": 1}),
        log: None,
    };
    assert!(
        store
            .finish_attempt(&run_id, "a", 1, &out)
            .await
            .expect("finish")
            .applied
    );
    // ... and the node died here: b is still pending.
    let stuck = store.get_run(&run_id).await.expect("get").expect("run");
    assert_eq!(stuck.steps["b"].status, StepStatus::Pending);
    let msg = StepMessage {
        run_id: run_id.clone(),
        step_id: "a".into(),
        attempt: 1,
    };
    engine.execute(&msg).await.expect("redelivery");
    let b_msg = StepMessage {
        run_id: run_id.clone(),
        step_id: "b".into(),
        attempt: 1,
    };
    engine.execute(&b_msg).await.expect("b runs");
    let run = store.get_run(&run_id).await.expect("get").expect("run");
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    assert_eq!(run.steps["b"].output, Some(json!({"b": 1})));
}

/// The runs of function `id`, finished, once `n` of them exist (or the deadline passes).
async fn finished_runs(
    engine: &weir::core::engine::Engine,
    id: &str,
    n: usize,
) -> Vec<weir::core::run::Run> {
    let filter = RunFilter {
        function_id: Some(id.to_string()),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let runs = engine.state().list_runs(&filter).await.expect("list");
        let done = runs
            .iter()
            .filter(|r| r.status != RunStatus::Running)
            .count();
        if done >= n || tokio::time::Instant::now() > deadline {
            let mut out = Vec::new();
            for r in runs.iter().filter(|r| r.status != RunStatus::Running) {
                out.push(
                    engine
                        .state()
                        .get_run(&r.id)
                        .await
                        .expect("get")
                        .expect("run"),
                );
            }
            return out;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cron trigger starts one run per tick, with the `weir/scheduled.timer` event of the tick.
async fn cron_ticks_start_one_run_each(state: &str) {
    let def = json!({"id": "every-second", "triggers": [{"cron": "* * * * * *"}],
                     "steps": {"a": step("a")}});
    let f = function_dir(&def, &[("a", "echo '{\"ok\": true}'")]);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let runs = finished_runs(&engine, "every-second", 2).await;
    handle.shutdown().await;
    assert!(runs.len() >= 2, "two ticks in 15 s: {} runs", runs.len());
    let mut ticks: Vec<i64> = runs.iter().map(|r| r.event.ts).collect();
    ticks.sort_unstable();
    ticks.dedup();
    assert_eq!(ticks.len(), runs.len(), "one run per tick: {ticks:?}");
    for run in &runs {
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(run.event.name, "weir/scheduled.timer");
        assert_eq!(
            run.event.data,
            json!({"cron": "* * * * * *", "function": "every-second"})
        );
        assert_eq!(run.event.ts % 1000, 0, "ticks fall on whole seconds");
        assert_eq!(run.steps["a"].output, Some(json!({"ok": true})));
    }
}

/// Two nodes sharing Redis state, each with its own scheduler, executor and broker: every
/// tick of a per-second schedule has exactly one run, and its step runs once.
#[cfg(feature = "state-redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_ticks_fire_once_across_two_nodes() {
    let Some(url) = common::redis_state_url() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ledger = tmp.path().join("ledger");
    let def = json!({"id": "tick-ledger", "triggers": [{"cron": "* * * * * *"}],
                     "steps": {"a": step("a")}});
    let script = format!("echo \"$1\" >> {}; echo '{{}}'", ledger.display());
    let f = function_dir(&def, &[("a", script.as_str())]);
    let (one, one_handle) = engine_on(&f.dir, &url).await;
    let (two, two_handle) = engine_on(&f.dir, &url).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    one_handle
        .shutdown_gracefully(Duration::from_secs(10))
        .await;
    two_handle
        .shutdown_gracefully(Duration::from_secs(10))
        .await;
    drop(two);
    // Every run, finished or not: a tick whose run was cut short by the shutdown still counts.
    let listed = one
        .state()
        .list_runs(&RunFilter {
            function_id: Some("tick-ledger".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    let mut runs = Vec::new();
    for r in &listed {
        runs.push(one.state().get_run(&r.id).await.expect("get").expect("run"));
    }
    assert!(
        runs.len() >= 3,
        "3.5 s of a per-second schedule: {} runs",
        runs.len()
    );
    let mut ticks: Vec<i64> = runs.iter().map(|r| r.event.ts).collect();
    ticks.sort_unstable();
    let mut distinct = ticks.clone();
    distinct.dedup();
    assert_eq!(distinct, ticks, "one run per tick");
    assert_eq!(
        ticks.last().expect("ticks") - ticks[0],
        1000 * (ticks.len() as i64 - 1),
        "no tick skipped: {ticks:?}"
    );
    let completed = runs
        .iter()
        .filter(|r| r.status == RunStatus::Completed)
        .count();
    assert!(
        completed >= 2,
        "{completed} of {} runs completed",
        runs.len()
    );
    let lines = std::fs::read_to_string(&ledger).expect("ledger");
    assert_eq!(
        lines.lines().count(),
        completed,
        "each completed tick's step ran once:\n{lines}"
    );
}

/// An event larger than the broker accepts (a 4 KiB limit here, like SQS's 256 KiB) goes
/// through the state store: the run completes and its step sees the whole event.
async fn a_message_too_large_for_the_broker_goes_through_the_state_store(state: &str) {
    let def = json!({"id": "big", "triggers": [{"event": "t/big"}], "steps": {"a": step("a")}});
    // The step answers how many bytes of input it got as its first argument.
    let f = function_dir(&def, &[("a", r#"printf '{"bytes": %d}' "${#1}""#)]);
    let (engine, handle) =
        common::engine_on_broker(&f.dir, state, "memory://?max_message_bytes=4096").await;
    let blob = "x".repeat(20_000);
    let run = run_event(
        &engine,
        "big",
        &json!({"name": "t/big", "data": {"blob": blob}}),
    )
    .await;
    handle.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.history);
    let seen = run.steps["a"]
        .output
        .as_ref()
        .and_then(|o| o["bytes"].as_u64());
    assert!(
        seen.is_some_and(|n| n > 20_000),
        "the step got the whole event: {:?}",
        run.steps["a"].output
    );
}

/// An event ingested with a due time starts its run then, not before; on a durable state
/// store the delay survives the node that accepted the event (another node starts the run).
async fn a_delayed_event_starts_its_run_when_due(state: &str) {
    use weir::core::Event;
    let def = json!({"id": "later", "triggers": [{"event": "t/later"}], "steps": {"a": step("a")}});
    let f = function_dir(&def, &[("a", "echo '{\"ran\": true}'")]);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let event = Event::from_json(json!({"name": "t/later", "id": "late-1"}), "").expect("event");
    let accepted = weir::core::event::now_ms();
    let due = accepted + 1_500;
    let ids = engine
        .ingest_at(vec![event.clone()], due)
        .await
        .expect("ingest_at");
    assert_eq!(ids, ["late-1"]);
    // Sending it again (a redelivered message) keeps one timer and, later, one run.
    engine.ingest_at(vec![event], due).await.expect("again");
    assert!(
        engine.events().get("late-1").await.expect("get").is_some(),
        "the event is stored at once"
    );
    let durable = !state.starts_with("memory");
    let engine = if durable {
        // The accepting node goes away; the run starts on the next one.
        handle.shutdown().await;
        engine_on(&f.dir, state).await
    } else {
        (engine, handle)
    };
    let (engine, handle) = engine;
    let filter = RunFilter::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let run_id = loop {
        let runs = engine.state().list_runs(&filter).await.expect("list");
        if let Some(r) = runs.first() {
            assert!(
                r.created_at >= due,
                "the run started {} ms before its due time",
                due - r.created_at
            );
            break r.id.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run after the due time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let run = engine
        .wait_for_run(&run_id, Duration::from_secs(10))
        .await
        .expect("finishes");
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.history);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let runs = engine.state().list_runs(&filter).await.expect("list");
    assert_eq!(runs.len(), 1, "one run for the event sent twice");
    handle.shutdown().await;
}

on_every_state!(
    a_delayed_event_starts_its_run_when_due,
    a_message_too_large_for_the_broker_goes_through_the_state_store,
    cron_ticks_start_one_run_each,
    a_redelivered_message_recovers_a_run_its_node_left_behind,
    diamond_runs_the_join_once_with_both_outputs,
    false_condition_skips_the_child_and_every_descendant,
    step_failing_twice_then_succeeding_completes_with_three_attempts,
    status_4xx_output_fails_the_run_without_retrying,
    retries_stop_at_the_configured_attempts,
    a_step_over_its_timeout_is_killed_and_fails,
    trigger_expression_and_name_decide_which_events_start_runs,
    the_same_event_id_starts_one_run,
);
