//! Dead letters: a message the engine cannot handle ends, within a bounded time, as a dead
//! letter and a visibly failed run, never as a run left `running`. A poison message (one that
//! does not decode) is given up on at once; a run whose stored state is corrupted fails its
//! step message `dead_letter_after` times first. `weir dead` lists, shows, drops and retries
//! them; a retried dead letter reopens its run.

mod common;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use weir::api::EventKeys;
use weir::core::broker::{TOPIC_EVENTS, TOPIC_STEPS};
use weir::core::dead::DeadLetter;
use weir::core::engine::{Engine, EngineConfig};
use weir::core::run::{Run, RunFilter, RunStatus, StepStatus};

/// `a` runs, then `b` after sleeping `nap`: the run waits (running) in between.
fn napping(nap: &str) -> common::FnDir {
    let step = |script: &str| json!({"path": format!("file://./steps/{script}"), "timeout": "10s"});
    let mut b = step("ok");
    b["after"] = json!([{"step": "a", "wait": nap}]);
    let def =
        json!({"id": "nap", "triggers": [{"event": "t/nap"}], "steps": {"a": step("ok"), "b": b}});
    common::function_dir(&def, &[("ok", r#"echo '{"ok": true}'"#)])
}

fn config() -> EngineConfig {
    EngineConfig {
        stuck_message_delay: Duration::from_millis(50),
        dead_letter_after: 3,
        ..common::fast_config()
    }
}

/// Polls `check` until it gives a value, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `t/nap` and waits until its run has finished step `a`; the run.
async fn napping_run(engine: &Engine) -> Run {
    engine
        .ingest_body(br#"{"name": "t/nap"}"#)
        .await
        .expect("ingest");
    eventually(Duration::from_secs(10), "step a completed", || async {
        let runs = engine
            .state()
            .list_runs(&RunFilter::default())
            .await
            .expect("list");
        let run = engine
            .state()
            .get_run(&runs.first()?.id)
            .await
            .expect("get")?;
        (run.steps["a"].status == StepStatus::Completed).then_some(run)
    })
    .await
}

/// The dead letters the engine recorded, once there are `n`.
async fn dead_letters(engine: &Engine, n: usize) -> Vec<DeadLetter> {
    eventually(Duration::from_secs(10), "dead letters", || async {
        let page = engine
            .state()
            .list_dead_letters(None, 100)
            .await
            .expect("list");
        (page.items.len() >= n).then_some(page.items)
    })
    .await
}

fn weir(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("weir");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

on_every_state!(a_poison_message_is_a_dead_letter_at_once_and_fails_its_run);

async fn a_poison_message_is_a_dead_letter_at_once_and_fails_its_run(state: &str) {
    let f = napping("1h");
    let (engine, _handle) = common::engine_configured(&f.dir, state, "memory://", config()).await;
    let run = napping_run(&engine).await;
    let broker = engine.broker();
    broker
        .publish(TOPIC_STEPS, &run.id, Bytes::from_static(b"\xffnot a step"))
        .await
        .expect("publish");
    broker
        .publish(
            TOPIC_EVENTS,
            "poison",
            Bytes::from_static(br#"{"name": 42"#),
        )
        .await
        .expect("publish");
    let letters = dead_letters(&engine, 2).await;
    let step = letters
        .iter()
        .find(|d| d.topic == TOPIC_STEPS)
        .expect("step");
    let event = letters
        .iter()
        .find(|d| d.topic == TOPIC_EVENTS)
        .expect("event");
    assert_eq!(step.run_id.as_deref(), Some(run.id.as_str()));
    assert!(step.base64, "a message that is not UTF-8 is kept as base64");
    assert_eq!(step.payload_bytes().expect("bytes"), b"\xffnot a step");
    assert!(step.reason.contains("cannot be decoded"), "{}", step.reason);
    assert_eq!(step.deliveries, 1, "given up on at once");
    assert_eq!(event.run_id, None);
    assert_eq!(event.payload, r#"{"name": 42"#);

    // Its run failed, saying why.
    let failed = engine
        .state()
        .get_run(&run.id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(failed.status, RunStatus::Failed);
    let last = failed.history.last().expect("timeline");
    assert_eq!(last.kind, "run.failed");
    let detail = last.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains(&format!("dead letter {}", step.id)),
        "{detail}"
    );
    // Counted right after the letter is recorded and the run failed (which the test saw).
    let metrics = eventually(
        Duration::from_secs(10),
        "the failed run counted",
        || async {
            let metrics = engine.metrics().encode();
            let letters = ["steps", "events"].iter().all(|t| {
                metrics.contains(&format!("weir_dead_letters_total{{topic=\"{t}\"}} 1\n"))
            });
            let run = metrics
                .contains("weir_runs_finished_total{function=\"nap\",status=\"failed\"} 1\n");
            (letters && run).then_some(metrics)
        },
    )
    .await;
    for topic in ["steps", "events"] {
        let series = format!("weir_dead_letters_total{{topic=\"{topic}\"}} 1\n");
        assert!(metrics.contains(&series), "{metrics}");
    }

    // The command line: list, show, drop.
    let base = common::serve_api(engine.clone(), EventKeys::Any, EventKeys::Any).await;
    let (ok, listed) = weir(&["dead", "list", "--url", &base, "--json"]);
    assert!(ok, "{listed}");
    let listed: Value = serde_json::from_str(&listed).expect("json");
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&step.id.as_str()) && ids.contains(&event.id.as_str()));
    let (ok, table) = weir(&["dead", "--url", &base]);
    assert!(
        ok && table.contains(&run.id) && table.contains("cannot be decoded"),
        "{table}"
    );
    let (ok, shown) = weir(&["dead", "show", &event.id, "--url", &base]);
    assert!(ok && shown.contains(r#"{"name": 42"#), "{shown}");
    let (ok, dropped) = weir(&["dead", "drop", &event.id, "--url", &base]);
    assert!(ok, "{dropped}");
    let (ok, gone) = weir(&["dead", "show", &event.id, "--url", &base]);
    assert!(!ok && gone.contains("404"), "{gone}");
    let left = engine
        .state()
        .list_dead_letters(None, 10)
        .await
        .expect("list");
    assert_eq!(left.items, vec![step.clone()]);
}

/// A run whose stored state is corrupted (on Redis, by hand) fails its next step message
/// `dead_letter_after` times, then becomes a dead letter and a failed run; its page answers
/// what is known instead of an error. Repaired and retried, the run moves on and completes.
#[cfg(feature = "state-redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_run_fails_visibly_and_completes_once_repaired_and_retried() {
    let Some(state) = common::redis_state_url() else {
        return;
    };
    let prefix = state.rsplit_once("prefix=").expect("a prefix").1.to_owned();
    let f = napping("1s");
    let (engine, _handle) = common::engine_configured(&f.dir, &state, "memory://", config()).await;
    let run = napping_run(&engine).await;
    let client = redis::Client::open(state.split('?').next().expect("url")).expect("client");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = format!("{prefix}:{{r:{}}}:run", run.id);
    let meta: String = redis::cmd("HGET")
        .arg(&key)
        .arg("meta")
        .query_async(&mut redis)
        .await
        .expect("meta");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("meta")
        .arg("{not json")
        .query_async(&mut redis)
        .await
        .expect("corrupt");

    // When the sleep ends, `b`'s message fails three times, then is given up on.
    let letters = dead_letters(&engine, 1).await;
    let dead = &letters[0];
    assert_eq!(dead.run_id.as_deref(), Some(run.id.as_str()));
    assert_eq!(dead.topic, TOPIC_STEPS);
    assert_eq!(dead.deliveries, 3);
    let base = common::serve_api(engine.clone(), EventKeys::Any, EventKeys::Any).await;
    let page: Value = reqwest::get(format!("{base}/v1/runs/{}", run.id))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(page["status"], "failed", "{page}");
    assert!(
        page["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot be decoded")),
        "{page}"
    );
    let last = page["timeline"].as_array().and_then(|t| t.last()).cloned();
    assert_eq!(
        last.as_ref().map(|e| e["kind"].clone()),
        Some(json!("run.failed"))
    );

    // Repaired, then retried from the command line: the run reopens and completes.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("meta")
        .arg(&meta)
        .query_async(&mut redis)
        .await
        .expect("repair");
    let (ok, said) = weir(&["dead", "retry", &dead.id, "--url", &base]);
    assert!(ok, "{said}");
    let done = engine
        .wait_for_run(&run.id, Duration::from_secs(20))
        .await
        .expect("run");
    assert_eq!(done.status, RunStatus::Completed, "{:#?}", done.history);
    assert_eq!(done.steps["b"].status, StepStatus::Completed);
    assert!(done.history.iter().any(|e| e.kind == "run.reopened"));
    let left = engine
        .state()
        .list_dead_letters(None, 10)
        .await
        .expect("list");
    assert!(left.items.is_empty(), "a retried dead letter is gone");
}
