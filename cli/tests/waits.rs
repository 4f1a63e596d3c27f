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
    let run = finished_run_of(&engine, "onboarding", &signup).await;
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
    let run = finished_run_of(&engine, "onboarding", &signup).await;
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

/// A function `id` triggered by `trigger`: step `a`, then `b` (echoing its input) after `a`
/// through `edge` (the rest of the `after` item).
fn after_a(id: &str, trigger: &str, edge: Value) -> Value {
    let step = |script: &str| json!({"path": format!("file://./steps/{script}"), "timeout": "10s"});
    let mut b = step("echo_input");
    let mut after = edge;
    after["step"] = json!("a");
    b["after"] = json!([after]);
    json!({"id": id, "triggers": [{"event": trigger}], "steps": {"a": step("welcome"), "b": b}})
}

/// The run of function `function_id` that `event_id` started, once finished.
async fn finished_run_of(engine: &Engine, function_id: &str, event_id: &str) -> Run {
    let filter = RunFilter {
        function_id: Some(function_id.into()),
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

async fn any_resumes_on_the_first_spec_that_matches(state: &str) {
    let wait = json!({"async": {"any": [
        {"event": "order/paid", "match": "async.data.order == event.data.order"},
        {"event": "order/cancelled", "match": "async.data.order == event.data.order"}
    ], "ttl": "5s"}});
    let f = function_dir(&after_a("checkout", "order/placed", wait), SCRIPTS);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let placed = send(
        &engine,
        json!({"name": "order/placed", "data": {"order": 42}}),
    )
    .await;
    // Another order's cancellation does not count; this order's does.
    send(
        &engine,
        json!({"name": "order/cancelled", "data": {"order": 41}}),
    )
    .await;
    let cancelled = send(
        &engine,
        json!({"name": "order/cancelled", "data": {"order": 42}}),
    )
    .await;
    let run = finished_run_of(&engine, "checkout", &placed).await;
    assert_eq!(run.steps["b"].status, StepStatus::Completed, "{run:#?}");
    let input = run.steps["b"].output.as_ref().expect("input");
    assert_eq!(input["async"]["id"], json!(cancelled), "{input}");
    assert_eq!(input["ctx"]["async_index"], json!(1), "{input}");
    handle.shutdown().await;
}

async fn all_resumes_once_every_spec_matched(state: &str) {
    let wait = json!({"async": {"all": [
        {"event": "doc/signed.buyer", "match": "async.data.doc == event.data.doc"},
        {"event": "doc/signed.seller", "match": "async.data.doc == event.data.doc"}
    ], "ttl": "5s"}});
    let f = function_dir(&after_a("contract", "doc/sent", wait), SCRIPTS);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let sent = send(&engine, json!({"name": "doc/sent", "data": {"doc": "d1"}})).await;
    let seller = send(
        &engine,
        json!({"name": "doc/signed.seller", "data": {"doc": "d1"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let filter = RunFilter {
        function_id: Some("contract".into()),
        ..Default::default()
    };
    let runs = engine.state().list_runs(&filter).await.expect("list");
    let run = engine
        .state()
        .get_run(&runs[0].id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(
        run.steps["b"].status,
        StepStatus::Pending,
        "one of two signatures: {run:#?}"
    );
    let buyer = send(
        &engine,
        json!({"name": "doc/signed.buyer", "data": {"doc": "d1"}}),
    )
    .await;
    let run = finished_run_of(&engine, "contract", &sent).await;
    assert_eq!(run.steps["b"].status, StepStatus::Completed, "{run:#?}");
    let input = run.steps["b"].output.as_ref().expect("input");
    let ids: Vec<&Value> = input["async"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(
        ids,
        vec![&json!(buyer), &json!(seller)],
        "in spec order: {input}"
    );
    handle.shutdown().await;
}

async fn a_wait_edge_sleeps_then_runs_the_child(state: &str) {
    let f = function_dir(&after_a("nap", "t/nap", json!({"wait": "300ms"})), SCRIPTS);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let id = send(&engine, json!({"name": "t/nap"})).await;
    let run = finished_run_of(&engine, "nap", &id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    let at = |kind: &str, step: &str| {
        run.history
            .iter()
            .find(|h| h.kind == kind && h.step.as_deref() == Some(step))
            .map(|h| h.at)
            .unwrap_or_else(|| panic!("no {kind} of {step}: {:#?}", run.history))
    };
    let slept = at("step.started", "b") - at("step.completed", "a");
    assert!(slept >= 300, "b started {slept} ms after a completed");
    assert!(run.history.iter().any(|h| h.kind == "pause.woke"));
    handle.shutdown().await;
    // A time from the event (epoch seconds), and one that is not a time.
    let until = json!({"wait": "event.data.remind_at"});
    let f = function_dir(&after_a("remind", "t/remind", until), SCRIPTS);
    let (engine2, handle2) = engine_on(&f.dir, state).await;
    let soon = (weir::core::event::now_ms() + 300) as f64 / 1000.0;
    let id = send(
        &engine2,
        json!({"name": "t/remind", "data": {"remind_at": soon}}),
    )
    .await;
    let run = finished_run_of(&engine2, "remind", &id).await;
    assert_eq!(run.steps["b"].status, StepStatus::Completed, "{run:#?}");
    let id = send(
        &engine2,
        json!({"name": "t/remind", "data": {"remind_at": "next week"}}),
    )
    .await;
    let run = finished_run_of(&engine2, "remind", &id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:#?}");
    let error = run.steps["a"].error.clone().unwrap_or_default();
    assert!(
        error.contains("\"next week\" is not an RFC 3339 time"),
        "{error}"
    );
    assert_eq!(run.steps["b"].status, StepStatus::Skipped);
    handle2.shutdown().await;
}

/// A function whose step `a` runs for 30 s (marking its start and end in files), cancelled
/// by the same user's `user/deleted`.
fn cancellable(dir_marker: &str) -> (Value, Vec<(&'static str, String)>) {
    let def = json!({"id": "long", "triggers": [{"event": "user/signed.up"}],
        "cancel": [{"event": "user/deleted", "if": "async.user.id == event.user.id", "timeout": "1h"}],
        "steps": {"a": {"path": "file://./steps/slow", "timeout": "60s"},
                  "b": {"path": "file://./steps/welcome", "after": [{"step": "a"}]}}});
    let slow = format!(
        "echo started >> {dir_marker}/started; sleep 30; echo finished >> {dir_marker}/finished; echo '{{}}'"
    );
    (
        def,
        vec![("slow", slow), ("welcome", SCRIPTS[0].1.to_string())],
    )
}

async fn a_matching_event_cancels_the_run_and_stops_its_step(state: &str) {
    let markers = tempfile::tempdir().expect("tempdir");
    let (def, scripts) = cancellable(&markers.path().display().to_string());
    let scripts: Vec<(&str, &str)> = scripts.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let f = function_dir(&def, &scripts);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let signup = send(
        &engine,
        json!({"name": "user/signed.up", "user": {"id": "u7"}}),
    )
    .await;
    let started = markers.path().join("started");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !started.exists() {
        assert!(tokio::time::Instant::now() < deadline, "a never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another user's deletion changes nothing; this user's cancels the run.
    send(
        &engine,
        json!({"name": "user/deleted", "user": {"id": "u8"}}),
    )
    .await;
    let deleted = send(
        &engine,
        json!({"name": "user/deleted", "user": {"id": "u7"}}),
    )
    .await;
    let began = tokio::time::Instant::now();
    let run = finished_run_of(&engine, "long", &signup).await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "cancelled late: {:?}",
        began.elapsed()
    );
    assert_eq!(run.status, RunStatus::Cancelled, "{run:#?}");
    assert_eq!(run.steps["a"].status, StepStatus::Cancelled);
    assert_eq!(run.steps["b"].status, StepStatus::Cancelled);
    let entry = run
        .history
        .iter()
        .find(|h| h.kind == "run.cancelled")
        .expect("entry");
    assert!(
        entry.detail.as_deref().unwrap_or("").contains(&deleted),
        "names the event: {entry:?}"
    );
    // The attempt was stopped: its process never finished, even given time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !markers.path().join("finished").exists(),
        "the step was not stopped"
    );
    assert_eq!(
        std::fs::read_to_string(&started)
            .expect("started")
            .lines()
            .count(),
        1,
        "the step ran once"
    );
    // An event that came before the run started cancels it too (the lookback).
    let early = send(
        &engine,
        json!({"name": "user/signed.up", "user": {"id": "u9"}}),
    )
    .await;
    send(
        &engine,
        json!({"name": "user/deleted", "user": {"id": "u9"}}),
    )
    .await;
    let run = finished_run_of(&engine, "long", &early).await;
    assert_eq!(run.status, RunStatus::Cancelled, "{run:#?}");
    handle.shutdown().await;
}

async fn a_later_wait_needs_a_later_event(state: &str) {
    let step = |script: &str| json!({"path": format!("file://./steps/{script}"), "timeout": "10s"});
    let wait =
        json!({"event": "doc/approved", "match": "async.data.doc == event.data.doc", "ttl": "10s"});
    let mut b = step("echo_input");
    b["after"] = json!([{"step": "a", "async": wait}]);
    let mut c = step("echo_input");
    c["after"] = json!([{"step": "b", "async": wait}]);
    let def = json!({"id": "two-approvals", "triggers": [{"event": "doc/sent"}],
                     "steps": {"a": step("welcome"), "b": b, "c": c}});
    let f = function_dir(&def, SCRIPTS);
    let (engine, handle) = engine_on(&f.dir, state).await;
    let sent = send(&engine, json!({"name": "doc/sent", "data": {"doc": "d9"}})).await;
    let first = send(
        &engine,
        json!({"name": "doc/approved", "data": {"doc": "d9"}}),
    )
    .await;
    let filter = RunFilter {
        function_id: Some("two-approvals".into()),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let run_id = loop {
        let runs = engine.state().list_runs(&filter).await.expect("list");
        if let Some(r) = runs.first() {
            let run = engine
                .state()
                .get_run(&r.id)
                .await
                .expect("get")
                .expect("run");
            if run.steps["b"].status == StepStatus::Completed && run.pauses.len() == 2 {
                break r.id.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "b never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The first approval resumed b's wait: it does not also resume c's (through the lookback).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = engine
        .state()
        .get_run(&run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.steps["c"].status, StepStatus::Pending, "{run:#?}");
    let second = send(
        &engine,
        json!({"name": "doc/approved", "data": {"doc": "d9"}}),
    )
    .await;
    let run = finished_run_of(&engine, "two-approvals", &sent).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    let b_input = run.steps["b"].output.as_ref().expect("b");
    let c_input = run.steps["c"].output.as_ref().expect("c");
    assert_eq!(b_input["async"]["id"], json!(first));
    assert_eq!(c_input["async"]["id"], json!(second));
    handle.shutdown().await;
}

on_every_state!(
    a_second_event_right_after_the_first_resumes_b,
    no_second_event_takes_the_timeout_branch,
    any_resumes_on_the_first_spec_that_matches,
    all_resumes_once_every_spec_matched,
    a_wait_edge_sleeps_then_runs_the_child,
    a_matching_event_cancels_the_run_and_stops_its_step,
    a_later_wait_needs_a_later_event,
);

/// Eight nodes' routers delivering the same event at once: each pause is resumed once, and
/// each resumed step runs once.
#[cfg(feature = "broker-redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_routers_delivering_one_event_resume_each_pause_once() {
    let Some(state) = common::redis_state_url() else {
        return;
    };
    let ledger = tempfile::NamedTempFile::new().expect("ledger");
    let mut b = json!({"path": "file://./steps/record", "timeout": "10s"});
    b["after"] = json!([{"step": "a", "async": {"event": "user/activated",
                         "match": "async.user.id == event.user.id", "ttl": "60s"}}]);
    let def = json!({"id": "onboarding", "triggers": [{"event": "user/signed.up"}],
                     "steps": {"a": {"path": "file://./steps/welcome"}, "b": b}});
    let record = format!(
        "cat > /dev/null; echo \"$WEIR_RUN_ID\" >> {}; echo '{{}}'",
        ledger.path().display()
    );
    let f = function_dir(&def, &[("welcome", SCRIPTS[0].1), ("record", &record)]);
    let broker = format!("{state}&lease=2s");
    let mut nodes = Vec::new();
    for _ in 0..8 {
        nodes.push(common::engine_on_broker(&f.dir, &state, &broker).await);
    }
    let engine = &nodes[0].0;
    for _ in 0..20 {
        send(
            engine,
            json!({"name": "user/signed.up", "user": {"id": "u1"}}),
        )
        .await;
    }
    let waiting = RunFilter {
        function_id: Some("onboarding".into()),
        status: Some(RunStatus::Waiting),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while engine
        .state()
        .list_runs(&waiting)
        .await
        .expect("list")
        .len()
        < 20
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runs never all waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let activated =
        weir::core::Event::from_json(json!({"name": "user/activated", "user": {"id": "u1"}}), "")
            .expect("event");
    let routes = nodes.iter().map(|(e, _)| e.route(&activated));
    for routed in futures::future::join_all(routes).await {
        routed.expect("routed");
    }
    let completed = RunFilter {
        function_id: Some("onboarding".into()),
        status: Some(RunStatus::Completed),
        ..Default::default()
    };
    let runs = loop {
        let runs = engine.state().list_runs(&completed).await.expect("list");
        if runs.len() == 20 {
            break runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline + Duration::from_secs(20),
            "{} of 20 runs completed",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let recorded = std::fs::read_to_string(ledger.path()).expect("ledger");
    for r in &runs {
        let run = engine
            .state()
            .get_run(&r.id)
            .await
            .expect("get")
            .expect("run");
        let matched = run
            .history
            .iter()
            .filter(|h| h.kind == "pause.matched")
            .count();
        assert_eq!(matched, 1, "{}: one resume", r.id);
        let ran = recorded.lines().filter(|l| *l == r.id).count();
        assert_eq!(ran, 1, "{}: b ran once", r.id);
    }
    for (_, handle) in nodes {
        handle.shutdown().await;
    }
}

/// A node that recorded `a`'s completion (with its pause) and died before filing the pause:
/// the step message, handled again by another node, files it and finds the event that came
/// meanwhile in the lookback; `b` runs with it.
#[tokio::test]
async fn a_pause_its_node_never_filed_is_filed_and_resumed_by_the_redelivery() {
    use weir::core::pause::{Pause, PauseSpec, PauseStatus};
    use weir::core::state::{AttemptOutcome, StepMessage};
    let f = function_dir(&three_branches("30s"), SCRIPTS);
    // No loops: this test is the only node, and drives it by hand.
    let engine = weir::App::default()
        .build_engine(&weir::embedded::EngineOptions::default())
        .await
        .expect("engine");
    let loaded = weir::functions::load_all(&f.dir, engine.drivers());
    engine.functions().replace(loaded.functions);
    let signup =
        weir::core::Event::from_json(json!({"name": "user/signed.up", "user": {"id": "u5"}}), "")
            .expect("event");
    engine
        .events()
        .append(&[std::sync::Arc::new(signup.clone())])
        .await
        .expect("store");
    let run_id = engine.route(&signup).await.expect("route").remove(0);
    let function = engine.functions().live("onboarding").expect("function");
    // What the dead node did: started `a`, recorded its completion with the pause.
    let now = weir::core::event::now_ms();
    let state = engine.state();
    state
        .start_attempt(&run_id, "a", 1, now, 30_000)
        .await
        .expect("start");
    let pause = Pause {
        run_id: run_id.clone(),
        function_id: function.id.clone(),
        function_version: function.version.clone(),
        step: "a".into(),
        ordinal: 0,
        specs: vec![PauseSpec {
            event: "user/activated".into(),
            key: "user.id=\"u5\"".into(),
        }],
        all: false,
        cancels: false,
        edges: Vec::new(),
        exclude: Vec::new(),
        trigger_id: signup.id.clone(),
        trigger: None,
        registered_ms: now,
        expires_ms: now + 30_000,
        status: PauseStatus::Waiting,
        matched: Vec::new(),
        resolved_ms: None,
    };
    let done = AttemptOutcome::Completed {
        output: json!({"welcomed": true}),
        log: None,
    };
    state
        .finish_attempt_with_pauses(&run_id, "a", 1, &done, &[pause])
        .await
        .expect("finish");
    // The activation comes while no node has the pause filed.
    let activated =
        weir::core::Event::from_json(json!({"name": "user/activated", "user": {"id": "u5"}}), "")
            .expect("event");
    engine
        .events()
        .append(&[std::sync::Arc::new(activated.clone())])
        .await
        .expect("store");
    assert_eq!(
        engine.route(&activated).await.expect("route"),
        Vec::<String>::new()
    );
    let run = state.get_run(&run_id).await.expect("get").expect("run");
    assert_eq!(
        run.pauses["a/0"].status,
        PauseStatus::Waiting,
        "not filed: not found"
    );
    // `a`'s message again: the pause is filed and resumed from the stored activation.
    let step = |s: &str| StepMessage {
        run_id: run_id.clone(),
        step_id: s.into(),
        attempt: 1,
    };
    engine.execute(&step("a")).await.expect("recover");
    let run = state.get_run(&run_id).await.expect("get").expect("run");
    assert_eq!(run.pauses["a/0"].status, PauseStatus::Matched, "{run:#?}");
    assert_eq!(run.steps["b"].status, StepStatus::Queued);
    assert_eq!(run.steps["c"].status, StepStatus::Skipped);
    engine.execute(&step("b")).await.expect("b");
    let run = state.get_run(&run_id).await.expect("get").expect("run");
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    let input = run.steps["b"].output.as_ref().expect("input");
    assert_eq!(input["async"]["id"], json!(activated.id));
}
