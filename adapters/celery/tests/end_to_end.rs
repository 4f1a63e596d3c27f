//! A real Celery client's `send_task(…).get()` gets what a Celery worker would have given,
//! while weir runs the tasks: on kombu's Redis transport and on RabbitMQ, with the Redis result
//! backend and with `rpc://`. Covered: a result, a refused pickle task, a failing function
//! (raises with the step's error), a countdown (runs after it), an expired task (REVOKED), a
//! task no function handles (NotRegistered), custom headers and the task's ids in the event.
//!
//! Needs a Redis (`WEIR_TEST_REDIS_URL`), a RabbitMQ (`WEIR_TEST_AMQP_URL`) and a Python with
//! Celery (`WEIR_TEST_CELERY_PYTHON`).

mod common;

use serde_json::{Value, json};
use weir_adapter_celery::{CeleryAmqpAdapter, CeleryRedisAdapter};
use weir_core::adapter::Adapter;
use weir_core::testkit::{service_url, unique};

/// Sends each task of argv[3] (a JSON list of [name, args, options for `send_task`]) to queue
/// argv[2] on broker argv[1] with result backend argv[4], and prints, per task, what `.get()`
/// gave and how many seconds after sending.
const CLIENT: &str = r#"
import json, sys, time
from celery import Celery
app = Celery("tasks", broker=sys.argv[1], backend=sys.argv[4])
app.conf.update(task_routes={"*": {"queue": sys.argv[2]}}, accept_content=["json", "pickle"])
for name, args, options in json.loads(sys.argv[3]):
    sent = time.time()
    result = app.send_task(name, args, **options)
    try:
        answer = {"value": result.get(timeout=20)}
    except Exception as e:
        answer = {"raised": type(e).__name__, "message": str(e)}
    answer["after"] = time.time() - sent
    print(json.dumps(answer))
"#;

/// The functions `adder` (`celery/tasks.add` → the sum of the task's args), `echo`
/// (`celery/tasks.echo` → the event's data) and `failer` (`celery/tasks.fail` → its step fails
/// for good).
fn functions() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, definition: Value, script: &str| {
        common::write_function(dir.path(), name, &definition, script);
    };
    write(
        "adder",
        json!({"id": "adder", "triggers": [{"event": "celery/tasks.add"}],
               "steps": {"add": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        r#"exec python3 -c 'import json, sys; a = json.load(sys.stdin)["event"]["data"]["args"]; print(json.dumps(a[0] + a[1]))'"#,
    );
    write(
        "echo",
        json!({"id": "echo", "triggers": [{"event": "celery/tasks.echo"}],
               "steps": {"echo": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        r#"exec python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["event"]["data"]))'"#,
    );
    write(
        "failer",
        json!({"id": "failer", "triggers": [{"event": "celery/tasks.fail"}],
               "retries": {"attempts": 1},
               "steps": {"boom": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        "echo 'the disk is full' >&2; exit 3",
    );
    dir
}

/// A real Celery client sends tasks of every kind to `queue` on `broker` and reads their
/// results from `backend`, while `adapter` consumes the queue for an engine with the
/// functions above; each answer is what a Celery worker would have given.
async fn a_celery_client_gets_what_a_worker_would_give(
    adapter: Box<dyn Adapter>,
    python: &str,
    broker: &str,
    backend: &str,
    queue: &str,
) {
    let dir = functions();
    let (engine, handle) = common::engine(dir.path(), &["adder", "echo", "failer"]).await;
    let running = common::run_adapter(adapter, &engine);

    let tasks = json!([
        ["tasks.add", [2, 3], {}],
        ["tasks.add", [2, 3], {"serializer": "pickle"}],
        ["tasks.fail", [], {}],
        ["tasks.add", [4, 5], {"countdown": 2}],
        ["tasks.add", [1, 1], {"expires": -60}],
        ["tasks.add", [1, 1], {"countdown": 30, "expires": 5}],
        ["tasks.nobody", [], {}],
        ["tasks.echo", ["a"], {"headers": {"tenant": "acme"}, "priority": 6}],
    ]);
    let out = tokio::process::Command::new(python)
        .args(["-c", CLIENT, broker, queue, &tasks.to_string(), backend])
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let message = |i: usize| {
        answers[i]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(answers[0]["value"], 5, "{answers:?}");
    assert_eq!(answers[1]["raised"], "RefusedByWeir", "{answers:?}");
    assert!(
        message(1).contains("pickle serializer is not supported"),
        "{answers:?}"
    );
    assert_eq!(answers[2]["raised"], "StepFailed", "{answers:?}");
    assert!(message(2).contains("step boom failed"), "{answers:?}");
    // countdown: the run starts after it, not before.
    assert_eq!(answers[3]["value"], 9, "{answers:?}");
    let after = answers[3]["after"].as_f64().unwrap_or_default();
    assert!(after >= 1.9, "a countdown of 2 s answered after {after} s");
    // expires passed, or before the eta: revoked, as a worker does.
    for i in [4, 5] {
        assert_eq!(answers[i]["raised"], "TaskRevokedError", "{answers:?}");
    }
    assert!(message(4).contains("expired"), "{answers:?}");
    // No weir function: NotRegistered, as a worker that does not know the task.
    assert_eq!(answers[6]["raised"], "NotRegistered", "{answers:?}");
    assert!(message(6).contains("tasks.nobody"), "{answers:?}");
    // The task's call, ids and custom headers reach the function.
    let data = &answers[7]["value"];
    assert_eq!(data["args"], json!(["a"]), "{answers:?}");
    assert_eq!(data["headers"]["tenant"], "acme", "{answers:?}");
    assert!(
        data["task_id"].is_string() && data["root_id"] == data["task_id"],
        "{data}"
    );
    assert_eq!(data["retries"], 0, "{data}");

    running.stop().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_with_the_redis_result_backend() {
    let (Some(redis), Some(python)) = (
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let queue = unique("celery-e2e");
    let broker = redis.trim_start_matches("redis://");
    let adapter = CeleryRedisAdapter::open(&format!(
        "celery+redis://{broker}?queue={queue}&results={}&lease=3s",
        common::encoded(&redis)
    ))
    .await
    .expect("the adapter opens");
    a_celery_client_gets_what_a_worker_would_give(
        Box::new(adapter),
        &python,
        &redis,
        &redis,
        &queue,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_with_the_redis_result_backend() {
    let (Some(amqp), Some(redis), Some(python)) = (
        service_url("WEIR_TEST_AMQP_URL"),
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let queue = unique("celery-e2e");
    let adapter = CeleryAmqpAdapter::open(&format!(
        "celery+{amqp}?queue={queue}&results={}",
        common::encoded(&redis)
    ))
    .await
    .expect("the adapter opens");
    a_celery_client_gets_what_a_worker_would_give(
        Box::new(adapter),
        &python,
        &amqp,
        &redis,
        &queue,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_with_rpc_results() {
    let (Some(amqp), Some(python)) = (
        service_url("WEIR_TEST_AMQP_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let queue = unique("celery-e2e");
    let adapter = CeleryAmqpAdapter::open(&format!("celery+{amqp}?queue={queue}&results=rpc"))
        .await
        .expect("the adapter opens");
    a_celery_client_gets_what_a_worker_would_give(
        Box::new(adapter),
        &python,
        &amqp,
        "rpc://",
        &queue,
    )
    .await;
}
