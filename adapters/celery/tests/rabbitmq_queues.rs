//! Queues as Celery declares them on RabbitMQ beyond the default: a queue with
//! `x-max-priority` that the producer declared first (weir consumes it as it is), and a quorum
//! queue bound to a topic exchange, where Celery 5.5 sends countdown tasks through its native
//! delayed delivery (`celery_delayed_*`), which weir sets up as a worker does
//! (`delayed_delivery=true`): the countdown task reaches weir after its delay and runs.
//!
//! Needs a RabbitMQ (`WEIR_TEST_AMQP_URL`), a Redis (`WEIR_TEST_REDIS_URL`) and a Python with
//! Celery (`WEIR_TEST_CELERY_PYTHON`).

mod common;

use serde_json::{Value, json};
use weir_adapter_celery::CeleryAmqpAdapter;
use weir_core::testkit::{service_url, unique};

/// Sends argv[5] (JSON: [[args, options], …]) as `tasks.add` to queue argv[3] on broker
/// argv[1], results in argv[2]; the queue is declared by the producer as argv[4] says
/// (`priority`: x-max-priority 10; `quorum`: a quorum queue on the topic exchange argv[3]-x),
/// and declared first.
/// Prints per task its value (or error) and the seconds it took.
const CLIENT: &str = r#"
import json, sys, time
from celery import Celery
from kombu import Exchange, Queue
broker, backend, queue, kind, tasks = sys.argv[1:6]
app = Celery("tasks", broker=broker, backend=backend)
if kind == "priority":
    q = Queue(queue, Exchange(queue, type="direct"), routing_key=queue,
              queue_arguments={"x-max-priority": 10})
else:
    q = Queue(queue, Exchange(queue + "-x", type="topic"), routing_key=queue,
              queue_arguments={"x-queue-type": "quorum"})
app.conf.task_queues = [q]
app.conf.task_routes = {"tasks.add": {"queue": queue}}
with app.connection_for_write() as conn:
    q(conn.default_channel).declare()
answers = []
for args, options in json.loads(tasks):
    sent = time.time()
    result = app.send_task("tasks.add", args, **options)
    try:
        answers.append({"value": result.get(timeout=30), "after": time.time() - sent})
    except Exception as e:
        answers.append({"raised": f"{type(e).__name__}: {e}"})
print(json.dumps(answers))
"#;

async fn run_client(python: &str, args: &[&str]) -> Vec<Value> {
    let out = tokio::process::Command::new(python)
        .args(["-c", CLIENT])
        .args(args)
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

async fn with_adapter(url: &str, client: impl AsyncFnOnce() -> Vec<Value>) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_function(
        dir.path(),
        "adder",
        &json!({"id": "adder", "triggers": [{"event": "celery/tasks.add"}],
                "steps": {"add": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        r#"exec python3 -c 'import json, sys; a = json.load(sys.stdin)["event"]["data"]["args"]; print(json.dumps(a[0] + a[1]))'"#,
    );
    let (engine, handle) = common::engine(dir.path(), &["adder"]).await;
    let adapter = CeleryAmqpAdapter::open(url)
        .await
        .expect("the adapter opens");
    let running = common::run_adapter(Box::new(adapter), &engine);
    let answers = client().await;
    running.stop().await;
    handle.shutdown().await;
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_queue_the_producer_declared_is_consumed_as_it_is() {
    let (Some(amqp), Some(redis), Some(python)) = (
        service_url("WEIR_TEST_AMQP_URL"),
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let queue = unique("celery-priority");
    // The producer declares the queue first (with x-max-priority), then weir consumes it: a
    // declaration of its own with other arguments would be refused (PRECONDITION_FAILED).
    let tasks = json!([[[1, 2], {"priority": 9}]]).to_string();
    let first = run_client(&python, &[&amqp, &redis, &queue, "priority", "[]"]).await;
    assert!(first.is_empty());
    let url = format!(
        "celery+{amqp}?queue={queue}&results={}",
        common::encoded(&redis)
    );
    let answers = with_adapter(&url, async || {
        run_client(&python, &[&amqp, &redis, &queue, "priority", &tasks]).await
    })
    .await;
    assert_eq!(answers[0]["value"], 3, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_countdown_task_on_a_quorum_queue_arrives_through_native_delayed_delivery() {
    let (Some(amqp), Some(redis), Some(python)) = (
        service_url("WEIR_TEST_AMQP_URL"),
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let queue = unique("celery-quorum");
    let url = format!(
        "celery+{amqp}?queue={queue}&exchange={queue}-x&delayed_delivery=true&results={}",
        common::encoded(&redis)
    );
    let tasks = json!([[[2, 3], {"countdown": 2}], [[4, 4], {}]]).to_string();
    let answers = with_adapter(&url, async || {
        run_client(&python, &[&amqp, &redis, &queue, "quorum", &tasks]).await
    })
    .await;
    assert_eq!(answers[0]["value"], 5, "{answers:?}");
    let after = answers[0]["after"].as_f64().unwrap_or_default();
    assert!(after >= 1.9, "the countdown task answered after {after} s");
    assert_eq!(answers[1]["value"], 8, "{answers:?}");
}
