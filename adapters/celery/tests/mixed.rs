//! A mixed deployment, as a team moving to weir runs it: a real Celery worker consumes one
//! queue while weir consumes another, on the same broker. Tasks routed to weir's queue run as
//! weir runs; tasks routed to the worker's queue run there; a task routed to weir that no weir
//! function handles is moved to the worker's queue (`unhandled=requeue:…`) and runs there.
//! Every task completes exactly once, on its side, and every client gets its result.
//!
//! On both brokers. Needs a Redis (`WEIR_TEST_REDIS_URL`), a RabbitMQ (`WEIR_TEST_AMQP_URL`)
//! and a Python with Celery (`WEIR_TEST_CELERY_PYTHON`).

mod common;

use std::collections::HashSet;

use serde_json::{Value, json};
use weir_adapter_celery::{CeleryAmqpAdapter, CeleryRedisAdapter};
use weir_core::adapter::Adapter;
use weir_core::run::{RunFilter, RunStatus};
use weir_core::testkit::{service_url, unique};

/// The Celery worker's tasks: `tasks.mul` and `tasks.sub`, each writing its task id to `$LOG`.
const WORKER_TASKS: &str = r#"
import os
from celery import Celery
app = Celery("tasks", broker=os.environ["BROKER"], backend=os.environ["BACKEND"])

def record(request):
    with open(os.environ["LOG"], "a") as log:
        log.write(request.id + "\n")

@app.task(name="tasks.mul", bind=True)
def mul(self, x, y):
    record(self.request)
    return x * y

@app.task(name="tasks.sub", bind=True)
def sub(self, x, y):
    record(self.request)
    return x - y
"#;

/// Sends argv[4] tasks of each kind on broker argv[1]: `tasks.add` and `tasks.sub` routed to
/// weir's queue (argv[2]), `tasks.mul` to the worker's (argv[3]); then reads every result from
/// backend argv[5] and prints `{"sent": n, "wrong": [...]}`.
const CLIENT: &str = r#"
import json, sys
from celery import Celery
broker, weir_queue, celery_queue, n, backend = sys.argv[1:6]
n = int(n)
app = Celery("tasks", broker=broker, backend=backend)
app.conf.task_routes = {"tasks.add": {"queue": weir_queue}, "tasks.sub": {"queue": weir_queue},
                        "tasks.mul": {"queue": celery_queue}}
sent = []
for i in range(n):
    sent.append((app.send_task("tasks.add", (i, 1)), i + 1))
    sent.append((app.send_task("tasks.mul", (i, 2)), i * 2))
    sent.append((app.send_task("tasks.sub", (i, 1)), i - 1))
wrong = []
for result, expected in sent:
    try:
        value = result.get(timeout=60)
    except Exception as e:
        value = f"{type(e).__name__}: {e}"
    if value != expected:
        wrong.append([result.id, expected, value])
print(json.dumps({"sent": len(sent), "wrong": wrong[:10]}))
"#;

/// The mixed deployment on `broker` with results in the Redis `backend`; `adapter_url` is
/// weir's adapter for `(weir's queue, the worker's queue)`.
async fn a_celery_worker_and_weir_share_the_work_each_task_once(
    python: &str,
    broker: &str,
    backend: &str,
    adapter_url: impl Fn(&str, &str) -> String,
) {
    const EACH: usize = 334; // 1,002 tasks in all
    let dir = tempfile::tempdir().expect("tempdir");
    // weir's adder, in shell: the sum of the task's two args.
    common::write_function(
        dir.path(),
        "adder",
        &json!({"id": "adder", "triggers": [{"event": "celery/tasks.add"}],
                "steps": {"add": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        r#"args=$(sed -n 's/.*"args":\[\(-\{0,1\}[0-9]*\),\(-\{0,1\}[0-9]*\)\].*/\1 \2/p'); set -- $args; echo $(($1 + $2))"#,
    );
    let (engine, handle) = common::engine(dir.path(), &["adder"]).await;
    let weir_queue = unique("weir-side");
    let celery_queue = unique("celery-side");

    std::fs::write(dir.path().join("tasks.py"), WORKER_TASKS).expect("tasks.py");
    let log = dir.path().join("worker.log");
    let mut worker = tokio::process::Command::new(python)
        .args(["-m", "celery", "-A", "tasks", "worker", "-Q", &celery_queue])
        .args(["--pool", "solo", "--without-heartbeat", "--without-mingle"])
        .args(["--without-gossip", "--loglevel", "warning"])
        .current_dir(dir.path())
        .env("BROKER", broker)
        .env("BACKEND", backend)
        .env("LOG", &log)
        .kill_on_drop(true)
        .spawn()
        .expect("the Celery worker starts");

    let adapter = weir_adapter_celery_open(&adapter_url(&weir_queue, &celery_queue)).await;
    let running = common::run_adapter(adapter, &engine);

    let out = tokio::process::Command::new(python)
        .args(["-c", CLIENT, broker, &weir_queue, &celery_queue])
        .args([&EACH.to_string(), backend])
        .output()
        .await
        .expect("the client runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["sent"], 3 * EACH, "{answer}");
    assert_eq!(answer["wrong"], json!([]), "every client got its result");

    // weir ran each add once, and nothing else.
    let runs = engine
        .state()
        .list_runs(&RunFilter {
            limit: Some(10 * EACH),
            ..RunFilter::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.len(), EACH, "one weir run per tasks.add");
    assert!(
        runs.iter()
            .all(|r| r.function_id == "adder" && r.status == RunStatus::Completed)
    );
    let events: HashSet<&str> = runs.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(events.len(), EACH, "no task ran twice");

    // The worker ran each mul and each sub once.
    let ran = std::fs::read_to_string(&log).expect("the worker's log");
    let ids: Vec<&str> = ran.lines().collect();
    let unique_ids: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        2 * EACH,
        "tasks.mul and tasks.sub ran on the worker"
    );
    assert_eq!(
        unique_ids.len(),
        ids.len(),
        "no task ran twice on the worker"
    );

    running.stop().await;
    let _ = worker.kill().await;
    handle.shutdown().await;
}

/// The adapter of `url`, either transport.
async fn weir_adapter_celery_open(url: &str) -> Box<dyn Adapter> {
    let adapter: Box<dyn Adapter> = if url.starts_with("celery+redis") {
        Box::new(
            CeleryRedisAdapter::open(url)
                .await
                .expect("the adapter opens"),
        )
    } else {
        Box::new(
            CeleryAmqpAdapter::open(url)
                .await
                .expect("the adapter opens"),
        )
    };
    adapter
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
    a_celery_worker_and_weir_share_the_work_each_task_once(
        &python,
        &redis,
        &redis,
        |weir, celery| {
            format!(
                "celery+redis://{host}?queue={weir}&results={results}&unhandled=requeue:{celery}"
            )
        },
    )
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
    a_celery_worker_and_weir_share_the_work_each_task_once(
        &python,
        &amqp,
        &redis,
        |weir, celery| {
            format!("celery+{amqp}?queue={weir}&results={results}&unhandled=requeue:{celery}")
        },
    )
    .await;
}
