//! Chains and callbacks across a real Celery worker and weir, on both brokers: weir runs
//! `tasks.add` (and `tasks.fail`), the worker runs `tasks.mul` and `tasks.record`. A chain
//! that goes weir → worker, one that goes worker → weir, one that stays in weir and ends in an
//! immutable signature, a `link=` callback and a `link_error=` errback: the client's `.get()`
//! on each chain returns what Celery workers alone would have returned, and each callback runs
//! once with the arguments a worker would have sent it.
//!
//! Needs a Redis (`WEIR_TEST_REDIS_URL`), a RabbitMQ (`WEIR_TEST_AMQP_URL`) and a Python with
//! Celery (`WEIR_TEST_CELERY_PYTHON`).

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use weir_adapter_celery::{CeleryAmqpAdapter, CeleryRedisAdapter};
use weir_core::adapter::Adapter;
use weir_core::testkit::{service_url, unique};

/// The worker's tasks; each writes `name args` to `$LOG`. Its routes send `tasks.add` to
/// weir's queue, as the producer's do.
const WORKER_TASKS: &str = r#"
import json, os
from celery import Celery
app = Celery("tasks", broker=os.environ["BROKER"], backend=os.environ["BACKEND"])
app.conf.task_routes = {"tasks.add": {"queue": os.environ["WEIR_QUEUE"]},
                        "tasks.fail": {"queue": os.environ["WEIR_QUEUE"]}}

def record(name, args):
    with open(os.environ["LOG"], "a") as log:
        log.write(name + " " + json.dumps(args) + "\n")

@app.task(name="tasks.mul")
def mul(x, y):
    record("mul", [x, y])
    return x * y

@app.task(name="tasks.record")
def record_failure(task_id):
    record("record", [task_id])
"#;

/// Sends the chains and callbacks; prints what each `.get()` gave, and the id of the task
/// whose errback must run.
const CLIENT: &str = r#"
import json, sys
from celery import Celery, chain
broker, backend, weir_queue, celery_queue = sys.argv[1:5]
app = Celery("tasks", broker=broker, backend=backend)
app.conf.task_routes = {"tasks.add": {"queue": weir_queue}, "tasks.fail": {"queue": weir_queue},
                        "tasks.mul": {"queue": celery_queue}, "tasks.record": {"queue": celery_queue}}
add, mul, fail, record = (app.signature(n) for n in ("tasks.add", "tasks.mul", "tasks.fail", "tasks.record"))
answers = {}
def get(name, result):
    try:
        answers[name] = result.get(timeout=30)
    except Exception as e:
        answers[name] = f"{type(e).__name__}: {e}"
get("weir_then_worker", chain(add.clone((2, 2)), mul.clone((10,))).apply_async())
get("worker_then_weir", chain(mul.clone((3, 3)), add.clone((1,))).apply_async())
get("weir_only", chain(add.clone((1, 1)), add.clone((2,)), add.clone((7, 7)).set(immutable=True)).apply_async())
get("linked", add.clone((1, 1)).apply_async(link=mul.clone((5,))))
failed = fail.clone(()).apply_async(link_error=record.clone(()))
get("failed", failed)
answers["failed_id"] = failed.id
print(json.dumps(answers))
"#;

async fn chains_and_callbacks_cross_sides(
    python: &str,
    broker: &str,
    backend: &str,
    adapter_url: impl Fn(&str, &str) -> String,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_function(
        dir.path(),
        "adder",
        &json!({"id": "adder", "triggers": [{"event": "celery/tasks.add"}],
                "steps": {"add": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        r#"exec python3 -c 'import json, sys; a = json.load(sys.stdin)["event"]["data"]["args"]; print(json.dumps(a[0] + a[1]))'"#,
    );
    common::write_function(
        dir.path(),
        "failer",
        &json!({"id": "failer", "triggers": [{"event": "celery/tasks.fail"}],
                "retries": {"attempts": 1},
                "steps": {"boom": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        "echo 'no luck' >&2; exit 3",
    );
    let (engine, handle) = common::engine(dir.path(), &["adder", "failer"]).await;
    let weir_queue = unique("weir-chain");
    let celery_queue = unique("celery-chain");
    std::fs::write(dir.path().join("tasks.py"), WORKER_TASKS).expect("tasks.py");
    let log = dir.path().join("worker.log");
    let mut worker = tokio::process::Command::new(python)
        .args(["-m", "celery", "-A", "tasks", "worker", "-Q", &celery_queue])
        .args(["--pool", "solo", "--without-heartbeat", "--without-mingle"])
        .args(["--without-gossip", "--loglevel", "warning"])
        .current_dir(dir.path())
        .env("BROKER", broker)
        .env("BACKEND", backend)
        .env("WEIR_QUEUE", &weir_queue)
        .env("LOG", &log)
        .kill_on_drop(true)
        .spawn()
        .expect("the Celery worker starts");
    let url = adapter_url(&weir_queue, &celery_queue);
    let adapter: Box<dyn Adapter> = if url.starts_with("celery+redis") {
        Box::new(CeleryRedisAdapter::open(&url).await.expect("opens"))
    } else {
        Box::new(CeleryAmqpAdapter::open(&url).await.expect("opens"))
    };
    let running = common::run_adapter(adapter, &engine);

    let out = tokio::process::Command::new(python)
        .args(["-c", CLIENT, broker, backend, &weir_queue, &celery_queue])
        .output()
        .await
        .expect("the client runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answers["weir_then_worker"], 40, "{answers}");
    assert_eq!(answers["worker_then_weir"], 10, "{answers}");
    assert_eq!(answers["weir_only"], 14, "{answers}");
    assert_eq!(answers["linked"], 2, "{answers}");
    assert!(
        answers["failed"]
            .as_str()
            .is_some_and(|m| m.starts_with("StepFailed")),
        "{answers}"
    );
    // The callback and the errback ran on the worker, once each, with a worker's arguments.
    let failed_id = answers["failed_id"].as_str().expect("id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ran = loop {
        let ran = std::fs::read_to_string(&log).unwrap_or_default();
        if ran.contains("mul [2, 5]") && ran.contains(&failed_id) {
            break ran;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the callbacks did not run: {ran}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ran = std::fs::read_to_string(&log).unwrap_or(ran);
    assert_eq!(ran.matches("mul [2, 5]").count(), 1, "{ran}");
    assert_eq!(
        ran.matches(&format!("record [\"{failed_id}\"]")).count(),
        1,
        "{ran}"
    );

    running.stop().await;
    let _ = worker.kill().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    let (Some(redis), Some(python)) = (
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let host = redis.trim_start_matches("redis://").to_string();
    let results = common::encoded(&redis);
    chains_and_callbacks_cross_sides(&python, &redis, &redis, |weir, celery| {
        format!(
            "celery+redis://{host}?queue={weir}&results={results}&routes=tasks.mul:{celery},tasks.record:{celery},tasks.add:{weir}"
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq() {
    let (Some(amqp), Some(redis), Some(python)) = (
        service_url("WEIR_TEST_AMQP_URL"),
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let results = common::encoded(&redis);
    chains_and_callbacks_cross_sides(&python, &amqp, &redis, |weir, celery| {
        format!(
            "celery+{amqp}?queue={weir}&results={results}&routes=tasks.mul:{celery},tasks.record:{celery},tasks.add:{weir}"
        )
    })
    .await;
}
