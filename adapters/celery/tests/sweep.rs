//! The sweep answers a task whose run finished while no adapter was there to answer it, with
//! `rpc://` results (no result backend to look in: the adapter's record of answered tasks is
//! in weir's state store). A real Celery client sends `tasks.add(2, 3)` with a `link=`
//! callback; the adapter takes it and is stopped while the run's step waits; the run then
//! finishes with no adapter running. Two adapters are then started on the same engine, as two
//! nodes would be: the client's `.get()` returns 5, and the callback is published once.
//!
//! Needs a RabbitMQ (`WEIR_TEST_AMQP_URL`) and a Python with Celery
//! (`WEIR_TEST_CELERY_PYTHON`).

mod common;

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use weir_adapter_celery::CeleryAmqpAdapter;
use weir_adapter_celery::finished::{SWEEP_EVERY, SWEEP_GRACE};
use weir_core::run::{RunFilter, RunStatus};
use weir_core::testkit::{service_url, unique};

/// Sends `tasks.add(2, 3)` to queue argv[2] with a `tasks.mul(7, 7)` callback, prints its id,
/// then what `.get()` gives.
const CLIENT: &str = r#"
import json, sys
from celery import Celery
broker, queue = sys.argv[1:3]
app = Celery("tasks", broker=broker, backend="rpc://")
r = app.signature("tasks.add", (2, 3)).apply_async(
    queue=queue, link=app.signature("tasks.mul", (7, 7), immutable=True))
print(r.id, flush=True)
try:
    print(json.dumps(r.get(timeout=60)), flush=True)
except Exception as e:
    print(json.dumps(f"{type(e).__name__}: {e}"), flush=True)
"#;

/// How many messages wait in `queue`.
async fn waiting(amqp: &str, queue: &str) -> u32 {
    let connection = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())
        .await
        .expect("connects");
    let channel = connection.create_channel().await.expect("channel");
    let queue = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            Default::default(),
        )
        .await
        .expect("the callback's queue exists");
    let _ = connection.close(200, "done".into()).await;
    queue.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_finished_with_no_adapter_running_is_answered_once_by_the_sweep() {
    let (Some(amqp), Some(python)) = (
        service_url("WEIR_TEST_AMQP_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let started = dir.path().join("started");
    let gate = dir.path().join("gate");
    common::write_function(
        dir.path(),
        "adder",
        &json!({"id": "adder", "triggers": [{"event": "celery/tasks.add"}],
                "steps": {"add": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        &format!(
            "touch {started}\nwhile [ ! -f {gate} ]; do sleep 0.02; done\n\
             exec python3 -c 'import json, sys; a = json.load(sys.stdin)[\"event\"][\"data\"][\"args\"]; print(json.dumps(a[0] + a[1]))'",
            started = started.display(),
            gate = gate.display()
        ),
    );
    let (engine, handle) = common::engine(dir.path(), &["adder"]).await;
    let queue = unique("weir-sweep");
    let next = unique("celery-next");
    let url = format!("celery+{amqp}?queue={queue}&results=rpc&routes=tasks.mul:{next}");

    let mut client = tokio::process::Command::new(&python)
        .args(["-c", CLIENT, &amqp, &queue])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the client runs");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = common::run_adapter(
        Box::new(CeleryAmqpAdapter::open(&url).await.expect("opens")),
        &engine,
    );
    let task_id = lines
        .next_line()
        .await
        .expect("reads")
        .expect("the task id");

    // The step has started: the adapter goes, and only then does the run finish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the step never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await;
    std::fs::write(&gate, "").expect("gate");
    let completed = RunFilter {
        status: Some(RunStatus::Completed),
        ..RunFilter::default()
    };
    loop {
        let runs = engine.state().list_runs(&completed).await.expect("list");
        if runs.iter().any(|r| r.event_id == task_id) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Two nodes' adapters start; their sweeps find the task unanswered.
    let second = common::run_adapter(
        Box::new(CeleryAmqpAdapter::open(&url).await.expect("opens")),
        &engine,
    );
    let third = common::run_adapter(
        Box::new(CeleryAmqpAdapter::open(&url).await.expect("opens")),
        &engine,
    );
    let answer = tokio::time::timeout(SWEEP_GRACE + SWEEP_EVERY * 10, lines.next_line())
        .await
        .expect("the sweep answers within its grace and a few rounds")
        .expect("reads")
        .expect("an answer");
    assert_eq!(answer, "5", "what .get() gave");
    // The callback went before the reply; both sweeps have had another round since.
    tokio::time::sleep(SWEEP_EVERY * 2).await;
    assert_eq!(waiting(&amqp, &next).await, 1, "the callback is sent once");
    assert_eq!(
        engine
            .state()
            .get_blob(&format!("celery-answer:{task_id}"))
            .await
            .expect("get")
            .as_deref(),
        Some(&b"answered"[..]),
        "the task is recorded as answered"
    );

    second.stop().await;
    third.stop().await;
    let _ = client.wait().await;
    handle.shutdown().await;
}
