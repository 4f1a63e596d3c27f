//! The states a Celery client sees while weir runs its task, as with a worker: STARTED while it
//! runs (with `track_started=true`, Celery's `task_track_started`), RETRY while a failed step
//! waits for its retry, then SUCCESS; a late progress report never hides the result.
//!
//! Needs a Redis (`WEIR_TEST_REDIS_URL`) and a Python with Celery (`WEIR_TEST_CELERY_PYTHON`).

mod common;

use serde_json::{Value, json};
use weir_adapter_celery::CeleryRedisAdapter;
use weir_core::testkit::{service_url, unique};

/// Sends `tasks.slow` and `tasks.flaky` to queue argv[2] on Redis argv[1], polls each one's
/// `.state` until it is final, and prints the states seen and the results.
const CLIENT: &str = r#"
import json, sys, time
from celery import Celery
app = Celery("tasks", broker=sys.argv[1], backend=sys.argv[1])
app.conf.task_routes = {"*": {"queue": sys.argv[2]}}
answers = {}
for name in ("tasks.slow", "tasks.flaky"):
    result = app.send_task(name, ())
    seen = []
    deadline = time.time() + 30
    while time.time() < deadline:
        state = result.state
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.02)
    answers[name] = {"states": seen, "value": result.get(timeout=5)}
print(json.dumps(answers))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sees_started_then_retry_then_success() {
    let (Some(redis), Some(python)) = (
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let step = |name: &str| {
        json!({"id": name, "triggers": [{"event": format!("celery/tasks.{name}")}],
               "retries": {"attempts": 3},
               "steps": {"run": {"path": "file://./step", "runtime": {"type": "process"}}}})
    };
    common::write_function(dir.path(), "slow", &step("slow"), "sleep 1; echo 1");
    let marker = dir.path().join("flaky.tried");
    common::write_function(
        dir.path(),
        "flaky",
        &step("flaky"),
        &format!(
            "if [ -f {m} ]; then echo 7; else touch {m}; echo 'not yet' >&2; exit 1; fi",
            m = marker.display()
        ),
    );
    let (engine, handle) = common::engine(dir.path(), &["slow", "flaky"]).await;
    let queue = unique("celery-states");
    let host = redis.trim_start_matches("redis://");
    let adapter = CeleryRedisAdapter::open(&format!(
        "celery+redis://{host}?queue={queue}&results={}&track_started=true",
        common::encoded(&redis)
    ))
    .await
    .expect("the adapter opens");
    let running = common::run_adapter(Box::new(adapter), &engine);

    let out = tokio::process::Command::new(&python)
        .args(["-c", CLIENT, &redis, &queue])
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        answers["tasks.slow"]["states"],
        json!(["PENDING", "STARTED", "SUCCESS"]),
        "{answers}"
    );
    assert_eq!(answers["tasks.slow"]["value"], 1);
    let flaky: Vec<&str> = answers["tasks.flaky"]["states"]
        .as_array()
        .expect("states")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let retry = flaky.iter().position(|s| *s == "RETRY");
    assert!(
        retry.is_some() && flaky.last() == Some(&"SUCCESS"),
        "RETRY while the step waits, then SUCCESS: {flaky:?}"
    );
    assert_eq!(answers["tasks.flaky"]["value"], 7);

    running.stop().await;
    handle.shutdown().await;
}
