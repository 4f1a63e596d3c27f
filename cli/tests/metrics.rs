//! `GET /metrics`: what the engine counted, after real runs on the embedded engine, in the
//! OpenMetrics text Prometheus scrapes; behind the API keys when they are configured.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::serve_api as serve;
use common::{engine_with, function_dir, run_event};
use serde_json::json;
use weir::api::Keys;
use weir::core::run::RunStatus;

/// What `GET /metrics` answers.
async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

/// The value of the sample `name` (with its labels, as printed) in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_attempts_and_events_are_counted() {
    // `ok` always completes; `flaky` fails once (retryable), then completes; `doomed` fails
    // for good (`retry: false`) when the event asks for it.
    let def = json!({
        "id": "counted",
        "triggers": [{"event": "app/go"}],
        "retries": {"attempts": 3},
        "steps": {
            "ok": {"path": "file://./steps/ok", "runtime": {"type": "process"}},
            "flaky": {"path": "file://./steps/flaky", "runtime": {"type": "process"}},
            "doomed": {"path": "file://./steps/doomed", "runtime": {"type": "process"}}
        }
    });
    let f = function_dir(
        &def,
        &[
            ("ok", r#"echo '{"ok": true}'"#),
            (
                "flaky",
                r#"case "$1" in *'"attempt":1}'*) echo 'not yet' >&2; exit 3;; esac; echo '{}'"#,
            ),
            (
                "doomed",
                r#"case "$1" in *'"fail":true'*) echo '{"error": "no", "retry": false}'; exit 1;; esac; echo '{}'"#,
            ),
        ],
    );
    let (engine, _handle) = engine_with(&f.dir).await;
    let base = serve(engine.clone(), Keys::Any, Keys::Any).await;
    let before = reqwest::get(format!("{base}/metrics")).await.expect("get");
    assert_eq!(before.status(), 200);
    assert_eq!(
        before.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let before = before.text().await.expect("text");
    // A loaded function's series exist at zero before its first run.
    assert_eq!(
        sample(&before, r#"weir_runs_started_total{function="counted"}"#),
        Some(0.0),
        "{before}"
    );
    assert_eq!(
        sample(
            &before,
            r#"weir_step_attempts_total{function="counted",step="doomed",outcome="failed"}"#
        ),
        Some(0.0),
        "{before}"
    );
    assert_eq!(sample(&before, "weir_functions_loaded"), Some(1.0));

    let good = run_event(&engine, "counted", &json!({"name": "app/go", "id": "e1"})).await;
    assert_eq!(good.status, RunStatus::Completed, "{good:?}");
    let bad = run_event(
        &engine,
        "counted",
        &json!({"name": "app/go", "id": "e2", "data": {"fail": true}}),
    )
    .await;
    assert_eq!(bad.status, RunStatus::Failed, "{bad:?}");
    // Refused: malformed JSON (nothing stored); unmatched: no function listens.
    assert!(engine.ingest_body(b"{nope").await.is_err());
    engine
        .ingest_body(br#"{"name": "nobody/listens"}"#)
        .await
        .expect("ingest");

    // Counts are made just after the store writes that `run_event` waits for, and the
    // unmatched event is routed after ingest answered: scrape until every run and attempt is
    // counted and the router has seen that event (2 s at most), then check it all.
    let mut text = String::new();
    for _ in 0..200 {
        text = scrape(&base).await;
        let total = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        if total("weir_runs_finished_total{") == 2.0
            && total("weir_step_attempts_total{") == 8.0
            && total("weir_timers_fired_total") >= 2.0
            && total("weir_events_unmatched_total") == 1.0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let count = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} in {text}"));
    assert_eq!(count(r#"weir_runs_started_total{function="counted"}"#), 2.0);
    assert_eq!(
        count(r#"weir_runs_finished_total{function="counted",status="completed"}"#),
        1.0
    );
    assert_eq!(
        count(r#"weir_runs_finished_total{function="counted",status="failed"}"#),
        1.0
    );
    let attempts = |step: &str, outcome: &str| {
        count(&format!(
            r#"weir_step_attempts_total{{function="counted",step="{step}",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(attempts("ok", "completed"), 2.0);
    assert_eq!(attempts("ok", "failed"), 0.0);
    // Each run's flaky step failed once, then completed on its retry.
    assert_eq!(attempts("flaky", "retried"), 2.0);
    assert_eq!(attempts("flaky", "completed"), 2.0);
    assert_eq!(attempts("doomed", "completed"), 1.0);
    assert_eq!(attempts("doomed", "failed"), 1.0);
    assert_eq!(attempts("doomed", "retried"), 0.0);
    assert_eq!(
        count(r#"weir_step_attempt_duration_seconds_count{function="counted",step="flaky"}"#),
        4.0
    );
    assert!(count(r#"weir_step_attempt_duration_seconds_sum{function="counted",step="ok"}"#) > 0.0);
    assert_eq!(count("weir_events_accepted_total"), 3.0);
    assert_eq!(
        count(r#"weir_events_rejected_total{reason="invalid_input"}"#),
        1.0
    );
    assert_eq!(count("weir_events_unmatched_total"), 1.0);
    // Two retries went through the scheduler's timers.
    assert!(count("weir_timers_fired_total") >= 2.0, "{text}");
    assert_eq!(count("weir_step_attempts_running"), 0.0);
    assert_eq!(count(r#"weir_engine_errors_total{role="executor"}"#), 0.0);
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_take_an_api_key_when_keys_are_configured() {
    let def = json!({"id": "quiet", "triggers": [{"event": "a/b"}],
                     "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"}}}});
    let f = function_dir(&def, &[("s", "echo '{}'")]);
    let (engine, _handle) = engine_with(&f.dir).await;
    let only = |key: &str| Keys::Only(Arc::new(HashSet::from([key.to_string()])));
    let base = serve(engine, only("ek"), only("sesame")).await;
    let client = reqwest::Client::new();
    // Refused at the door, each under its reason.
    let refused = client
        .post(format!("{base}/e/wrong"))
        .body(r#"{"name": "a/b"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 401);
    // Its own client: the server closes a connection whose body it refused, and a pooled
    // connection closed under the client fails the next request on it.
    let too_big = reqwest::Client::new()
        .post(format!("{base}/e/ek"))
        .body(vec![b' '; 4 << 20])
        .send()
        .await
        .expect("post");
    assert_eq!(too_big.status(), 413);
    let without = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(without.status(), 401);
    let with = client
        .get(format!("{base}/metrics"))
        .bearer_auth("sesame")
        .send()
        .await
        .expect("get");
    assert_eq!(with.status(), 200);
    let text = with.text().await.expect("text");
    assert_eq!(
        sample(&text, r#"weir_runs_started_total{function="quiet"}"#),
        Some(0.0),
        "{text}"
    );
    for (reason, n) in [("unknown_key", 1.0), ("too_large", 1.0), ("timeout", 0.0)] {
        let series = format!(r#"weir_events_rejected_total{{reason="{reason}"}}"#);
        assert_eq!(sample(&text, &series), Some(n), "{series} in {text}");
    }
    assert_eq!(sample(&text, "weir_events_accepted_total"), Some(0.0));
}
