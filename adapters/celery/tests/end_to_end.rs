//! A real Celery client's `send_task("tasks.add", (2, 3)).get()` returns what a weir function
//! made of it: the task taken from kombu's Redis list by the adapter, run as a weir run, its
//! result written back to the Redis result backend. A task weir refuses (pickle) raises in the
//! client with the reason; a failing function raises with the step's error.
//!
//! Needs a Redis (`WEIR_TEST_REDIS_URL`) and a Python with Celery (`WEIR_TEST_CELERY_PYTHON`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use weir_adapter_celery::CeleryRedisAdapter;
use weir_core::adapter::{Adapter, Shutdown};
use weir_core::driver::DriverSet;
use weir_core::engine::{Engine, EngineConfig, EngineParts, Roles};
use weir_core::testkit::{service_url, unique};

/// Sends each task of argv[3] (a JSON list of [name, args, serializer]) to queue argv[2] on
/// Redis argv[1] (broker and result backend) and prints, per task, what `.get()` gave.
const CLIENT: &str = r#"
import json, sys
from celery import Celery
app = Celery("tasks", broker=sys.argv[1], backend=sys.argv[1])
app.conf.update(task_routes={"*": {"queue": sys.argv[2]}}, accept_content=["json", "pickle"])
for name, args, serializer in json.loads(sys.argv[3]):
    result = app.send_task(name, args, serializer=serializer)
    try:
        print(json.dumps({"value": result.get(timeout=20)}))
    except Exception as e:
        print(json.dumps({"raised": type(e).__name__, "message": str(e)}))
"#;

/// The function `adder`: `celery/tasks.add` → its step prints the sum of the task's args;
/// `celery/tasks.fail` → its step fails for good.
fn functions() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, definition: Value, script: &str| {
        let fn_dir = dir.path().join(name);
        std::fs::create_dir_all(&fn_dir).expect("mkdir");
        std::fs::write(fn_dir.join("weir.json"), definition.to_string()).expect("weir.json");
        let step = fn_dir.join("step");
        std::fs::write(&step, format!("#!/bin/sh\n{script}\n")).expect("step");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&step, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    write(
        "adder",
        json!({"id": "adder", "triggers": [{"event": "celery/tasks.add"}],
               "steps": {"add": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        r#"exec python3 -c 'import json, sys; a = json.load(sys.stdin)["event"]["data"]["args"]; print(json.dumps(a[0] + a[1]))'"#,
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

async fn engine(functions: &std::path::Path) -> (Engine, weir_core::engine::EngineHandle) {
    let drivers = DriverSet::new().with(Arc::new(weir_driver_process::ProcessDriver::new()));
    let engine = Engine::new(EngineParts {
        state: Arc::new(weir_state_memory::MemoryStateStore::new()),
        events: Arc::new(weir_state_memory::MemoryEventStore::new()),
        broker: Arc::new(weir_broker_memory::MemoryBroker::new()),
        drivers,
        config: EngineConfig::default(),
    });
    let mut loaded = Vec::new();
    for name in ["adder", "failer"] {
        loaded.push(
            weir_core::function::load_function(&functions.join(name), engine.drivers())
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        );
    }
    engine.functions().replace(loaded);
    let handle = engine.start(Roles::ALL).await.expect("start");
    (engine, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_celery_client_gets_the_result_of_the_weir_run() {
    let (Some(redis), Some(python)) = (
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let dir = functions();
    let (engine, handle) = engine(dir.path()).await;
    let queue = unique("celery-e2e");
    let broker = redis.trim_start_matches("redis://");
    let results = redis.replace(':', "%3A").replace('/', "%2F");
    let adapter = CeleryRedisAdapter::open(&format!(
        "celery+redis://{broker}?queue={queue}&results={results}&lease=3s"
    ))
    .await
    .expect("the adapter opens");
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { adapter.run(engine, shutdown).await }
    });

    let tasks = json!([
        ["tasks.add", [2, 3], "json"],
        ["tasks.add", [2, 3], "pickle"],
        ["tasks.fail", [], "json"],
    ]);
    let out = tokio::process::Command::new(&python)
        .args(["-c", CLIENT, &redis, &queue, &tasks.to_string()])
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
    assert_eq!(answers[0], json!({"value": 5}), "{answers:?}");
    assert_eq!(answers[1]["raised"], "RefusedByWeir", "{answers:?}");
    assert!(
        answers[1]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("pickle serializer is not supported"),
        "{answers:?}"
    );
    assert_eq!(answers[2]["raised"], "StepFailed", "{answers:?}");
    assert!(
        answers[2]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("step boom failed"),
        "{answers:?}"
    );

    trigger.raise();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the adapter stops at shutdown")
        .expect("joins")
        .expect("no error");
    handle.shutdown().await;
}
