//! Event coordination end to end: a run waits for another event from the same user (the
//! `async` edge), or takes its `onTimeout` edge when none comes; on memory and on Redis.

mod common;

use std::time::Duration;

use common::{engine_on, function_dir};
use serde_json::{Value, json};
use weir::core::engine::Engine;
use weir::core::run::{Run, RunFilter, RunStatus, StepStatus};

/// The seed's flow: A on signup; B when the same user activates (with the activation as
/// `async`); C when they have not activated within `ttl`.
fn three_branches(ttl: &str) -> Value {
    let step = |script: &str| json!({"path": format!("file://./steps/{script}"), "timeout": "10s"});
    let mut b = step("echo_input");
    let wait =
        json!({"event": "user/activated", "match": "async.user.id == event.user.id", "ttl": ttl});
    b["after"] = json!([{"step": "a", "async": wait}]);
    let mut c = step("remind");
    let mut timeout = wait.clone();
    timeout["onTimeout"] = json!(true);
    c["after"] = json!([{"step": "a", "async": timeout}]);
    json!({"id": "onboarding", "triggers": [{"event": "user/signed.up"}],
           "steps": {"a": step("welcome"), "b": b, "c": c}})
}

const SCRIPTS: &[(&str, &str)] = &[
    ("welcome", r#"echo '{"welcomed": true}'"#),
    ("echo_input", "cat"),
    ("remind", r#"echo '{"reminded": true}'"#),
];

async fn send(engine: &Engine, event: Value) -> String {
    let ids = engine
        .ingest_body(event.to_string().as_bytes())
        .await
        .expect("ingest");
    ids[0].clone()
}

/// The run `event_id` started, once finished.
async fn finished_run(engine: &Engine, event_id: &str) -> Run {
    let filter = RunFilter {
        function_id: Some("onboarding".into()),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let runs = engine.state().list_runs(&filter).await.expect("list");
        if let Some(r) = runs.iter().find(|r| r.event_id == event_id) {
            return engine
                .wait_for_run(&r.id, Duration::from_secs(20))
                .await
                .expect("run finishes");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run for {event_id}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn kinds(run: &Run) -> Vec<&str> {
    run.history.iter().map(|h| h.kind.as_str()).collect()
}

async fn a_second_event_right_after_the_first_resumes_b(state: &str) {
    let f = function_dir(&three_branches("5s"), SCRIPTS);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let signup = send(
        &engine,
        json!({"name": "user/signed.up", "user": {"id": "u1"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let activated = send(
        &engine,
        json!({"name": "user/activated", "user": {"id": "u1"}, "data": {"plan": "pro"}}),
    )
    .await;
    let run = finished_run(&engine, &signup).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    assert_eq!(run.steps["b"].status, StepStatus::Completed, "{run:#?}");
    assert_eq!(run.steps["c"].status, StepStatus::Skipped, "{run:#?}");
    let input = run.steps["b"].output.as_ref().expect("b's input echoed");
    assert_eq!(input["async"]["id"], json!(activated), "{input}");
    assert_eq!(input["async"]["data"]["plan"], json!("pro"));
    assert_eq!(input["event"]["id"], json!(signup));
    let k = kinds(&run);
    assert!(
        k.contains(&"pause.registered") && k.contains(&"pause.matched"),
        "{k:?}"
    );
    let matched = run
        .history
        .iter()
        .find(|h| h.kind == "pause.matched")
        .expect("matched");
    assert!(
        matched.detail.as_deref().unwrap_or("").contains(&activated),
        "the timeline names the event: {matched:?}"
    );
    handle.shutdown().await;
}

async fn no_second_event_takes_the_timeout_branch(state: &str) {
    let f = function_dir(&three_branches("1s"), SCRIPTS);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let signup = send(
        &engine,
        json!({"name": "user/signed.up", "user": {"id": "u2"}}),
    )
    .await;
    // Another user's activation never resumes this run.
    send(
        &engine,
        json!({"name": "user/activated", "user": {"id": "u3"}}),
    )
    .await;
    let run = finished_run(&engine, &signup).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    assert_eq!(run.steps["b"].status, StepStatus::Skipped, "{run:#?}");
    assert_eq!(run.steps["c"].status, StepStatus::Completed);
    assert_eq!(run.steps["c"].output, Some(json!({"reminded": true})));
    assert!(
        kinds(&run).contains(&"pause.timed_out"),
        "{:?}",
        kinds(&run)
    );
    let pause = run.pauses.values().next().expect("the pause is in the run");
    assert!(pause.matched.is_empty(), "u3's event matched: {pause:?}");
    handle.shutdown().await;
}

#[tokio::test]
async fn memory_a_second_event_right_after_the_first_resumes_b() {
    a_second_event_right_after_the_first_resumes_b("memory://").await;
}

#[tokio::test]
async fn memory_no_second_event_takes_the_timeout_branch() {
    no_second_event_takes_the_timeout_branch("memory://").await;
}

#[tokio::test]
async fn redis_a_second_event_right_after_the_first_resumes_b() {
    let Some(url) = common::redis_state_url() else {
        return;
    };
    a_second_event_right_after_the_first_resumes_b(&url).await;
}

#[tokio::test]
async fn redis_no_second_event_takes_the_timeout_branch() {
    let Some(url) = common::redis_state_url() else {
        return;
    };
    no_second_event_takes_the_timeout_branch(&url).await;
}
