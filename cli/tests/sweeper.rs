//! The sweeper keeps "a running run always has something that will move it on": a run
//! corrupted on purpose so that nothing will (its step queued but its message lost; its
//! stored state unreadable) is repaired (the step enqueued again, the run completes) or failed
//! with a timeline entry, within a bounded time.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use weir::core::engine::{Engine, EngineConfig};
use weir::core::event::now_ms;
use weir::core::run::{HistoryEntry, Run, RunStatus, StepState, StepStatus};

fn config() -> EngineConfig {
    EngineConfig {
        stuck_run_grace: Duration::from_millis(300),
        sweep_every: Duration::from_millis(100),
        ..common::fast_config()
    }
}

fn chain() -> common::FnDir {
    let step = |after: Option<&str>| {
        let mut s = json!({"path": "file://./steps/ok", "timeout": "10s"});
        if let Some(parent) = after {
            s["after"] = json!([{ "step": parent }]);
        }
        s
    };
    let def = json!({"id": "chain", "triggers": [{"event": "t/chain"}],
                     "steps": {"a": step(None), "b": step(Some("a"))}});
    common::function_dir(&def, &[("ok", r#"echo '{"ok": true}'"#)])
}

/// Stores the run `t/chain` would start, with `a` queued, as the router does, but publishes
/// nothing: the run's message is lost. Created `idle_ms` ago, idle since.
async fn run_whose_message_was_lost(engine: &Engine, idle_ms: i64) -> Run {
    let function = engine.functions().list()[0].clone();
    let event = weir::core::Event::from_json(json!({"name": "t/chain"}), "").expect("event");
    let key = format!("{}:{}:{}", function.id, function.version, event.id);
    let created_at = now_ms() - idle_ms;
    let mut steps = BTreeMap::new();
    let mut a = StepState::pending();
    a.status = StepStatus::Queued;
    steps.insert("a".to_string(), a);
    steps.insert("b".to_string(), StepState::pending());
    let mut created = HistoryEntry::now("run.created");
    created.at = created_at;
    let run = Run {
        id: Run::id_for_key(&key, &event.id),
        key,
        function_id: function.id.clone(),
        function_version: function.version.clone(),
        fn_version: None,
        event,
        status: RunStatus::Running,
        steps,
        created_at,
        ended_at: None,
        history: vec![created],
        pauses: Default::default(),
    };
    engine.state().create_run(&run).await.expect("create");
    run
}

on_every_state!(a_run_whose_message_was_lost_is_enqueued_again_and_completes);

async fn a_run_whose_message_was_lost_is_enqueued_again_and_completes(state: &str) {
    let f = chain();
    let (engine, _handle) = common::engine_configured(&f.dir, state, "memory://", config()).await;
    let run = run_whose_message_was_lost(&engine, 1000).await;
    let done = engine
        .wait_for_run(&run.id, Duration::from_secs(20))
        .await
        .expect("the sweeper repairs the run");
    assert_eq!(done.status, RunStatus::Completed, "{:#?}", done.history);
    assert_eq!(done.steps["b"].status, StepStatus::Completed);
    let swept = done
        .history
        .iter()
        .find(|e| e.kind == "run.swept")
        .expect("the timeline says the sweeper enqueued it again");
    assert!(
        swept.detail.as_deref().is_some_and(|d| d.contains("a")),
        "{swept:?}"
    );
    let metrics = engine.metrics().encode();
    assert!(
        metrics.contains("weir_runs_swept_total{outcome=\"repaired\"} 1\n"),
        "{metrics}"
    );
}

/// On Redis, a run whose stored state cannot be decoded and that nothing will touch again is
/// failed by the sweeper, with a timeline entry saying why.
#[cfg(feature = "state-redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_state_is_unreadable_is_failed_by_the_sweeper() {
    let Some(state) = common::redis_state_url() else {
        return;
    };
    let prefix = state.rsplit_once("prefix=").expect("a prefix").1.to_owned();
    let f = chain();
    let (engine, _handle) = common::engine_configured(&f.dir, &state, "memory://", config()).await;
    // Stored fresh, so that the sweeper looks at it only a grace (300 ms) later: corrupted
    // long before.
    let client = redis::Client::open(state.split('?').next().expect("url")).expect("client");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let run = run_whose_message_was_lost(&engine, 0).await;
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:{{r:{}}}:run", run.id))
        .arg("event")
        .arg("[broken")
        .query_async(&mut redis)
        .await
        .expect("corrupt");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let outline = loop {
        let outline = engine
            .state()
            .get_run_outline(&run.id)
            .await
            .expect("outline")
            .expect("the run");
        if outline.status == Some(RunStatus::Failed) {
            break outline;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not failed: {outline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last = outline.history.last().expect("timeline");
    assert_eq!(last.kind, "run.failed");
    assert!(
        last.detail
            .as_deref()
            .is_some_and(|d| d.contains("cannot read the run's stored state")),
        "{last:?}"
    );
    assert!(
        engine
            .metrics()
            .encode()
            .contains("weir_runs_swept_total{outcome=\"failed\"} 1\n")
    );
}
