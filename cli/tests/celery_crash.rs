//! kill -9 of a weir node while it consumes a Celery queue, on both brokers: two `weir serve`
//! nodes share Redis state and broker and consume the same Celery queue through the adapter;
//! a real Celery client sends 400 tasks; one node is `kill -9`ed mid-way and restarted. Every
//! task still runs exactly once (one weir run per task id, all completed) and every client's
//! `.get()` returns its task's result.
//!
//! Needs a Redis (`WEIR_TEST_REDIS_URL`), a RabbitMQ (`WEIR_TEST_AMQP_URL`) and a Python with
//! Celery (`WEIR_TEST_CELERY_PYTHON`).

#![cfg(all(
    feature = "state-redis",
    feature = "broker-redis",
    feature = "adapter-celery"
))]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_core::testkit::{service_url, unique};

const TASKS: usize = 400;

/// Sends TASKS `tasks.add(i, 1)` to queue argv[2] on broker argv[1]; prints their ids as JSON.
const SEND: &str = r#"
import json, sys
from celery import Celery
app = Celery("tasks", broker=sys.argv[1])
app.conf.task_routes = {"*": {"queue": sys.argv[2]}}
print(json.dumps([app.send_task("tasks.add", (i, 1)).id for i in range(int(sys.argv[3]))]))
"#;

/// Reads the result of each task id of argv[2] (JSON) from backend argv[1]; prints the ones
/// whose result is not `i + 1`.
const GET: &str = r#"
import json, sys, time
from celery import Celery
app = Celery("tasks", backend=sys.argv[1])
wrong = []
deadline = time.time() + 120
for i, task_id in enumerate(json.loads(sys.argv[2])):
    try:
        value = app.AsyncResult(task_id).get(timeout=max(1, deadline - time.time()))
    except Exception as e:
        value = f"{type(e).__name__}: {e}"
    if value != i + 1:
        wrong.append([task_id, value])
print(json.dumps(wrong[:10]))
"#;

/// `functions/adder`: its step appends the run id to the ledger, waits a little (so the kill
/// lands while tasks are in flight) and prints the sum of the task's args.
fn adder(dir: &Path, ledger: &Path) -> std::path::PathBuf {
    let f = dir.join("functions").join("adder");
    std::fs::create_dir_all(&f).expect("mkdir");
    let def = json!({"id": "adder", "triggers": [{"event": "celery/tasks.add"}],
                     "steps": {"add": {"path": "file://./step", "runtime": {"type": "process"}, "timeout": "20s"}}});
    std::fs::write(f.join("weir.json"), def.to_string()).expect("weir.json");
    let script = format!(
        "#!/bin/sh\nargs=$(sed -n 's/.*\"args\":\\[\\([0-9]*\\),\\([0-9]*\\)\\].*/\\1 \\2/p')\necho \"$WEIR_RUN_ID $PPID\" >> {}\nsleep 0.01\nset -- $args\necho $(($1 + $2))\n",
        ledger.display()
    );
    std::fs::write(f.join("step"), script).expect("step");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.join("step"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    dir.join("functions")
}

fn python(python: &str, script: &str, args: &[&str]) -> Value {
    let out = Command::new(python)
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn ledger_lines(ledger: &Path) -> usize {
    std::fs::read_to_string(ledger).map_or(0, |t| t.lines().count())
}

/// The scenario on `client_broker` (what the Celery client sends to) with weir's nodes running
/// `adapter` (the adapter URL for the queue).
async fn a_kill_9_mid_consumption_runs_every_task_once(
    python_bin: &str,
    redis: &str,
    client_broker: &str,
    adapter: impl Fn(&str) -> String,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ledger = tmp.path().join("ledger.txt");
    let functions = adder(tmp.path(), &ledger);
    let sep = if redis.contains('?') { '&' } else { '?' };
    let prefix = format!("weircelerycrash-{}", ulid::Ulid::new());
    let state = format!("{redis}{sep}prefix={prefix}");
    let broker = format!("{redis}{sep}prefix={prefix}&lease=2s");
    let queue = unique("celery-crash");
    let adapter = adapter(&queue);
    let extra = ["--adapter", adapter.as_str()];
    let (port_a, port_b) = (common::free_port(), common::free_port());
    let start = |port: u16, log: &str| {
        common::start_node_with(
            &functions,
            &state,
            &broker,
            port,
            &tmp.path().join(log),
            &extra,
        )
    };
    let _node_a = start(port_a, "a.log");
    let mut node_b = start(port_b, "b.log");

    let ids = python(
        python_bin,
        SEND,
        &[client_broker, &queue, &TASKS.to_string()],
    );
    // Kill node B once a quarter of the tasks ran, then bring it back.
    let started = Instant::now();
    while ledger_lines(&ledger) < TASKS / 4 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = node_b.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let _ = node_b.0.wait();
    let killed_at = ledger_lines(&ledger);
    let _node_b = start(port_b, "b2.log");

    // Every client gets its result.
    let wrong = python(python_bin, GET, &[redis, &ids.to_string()]);
    let log = |name: &str| {
        let text = std::fs::read_to_string(tmp.path().join(name)).unwrap_or_default();
        text[text.len().saturating_sub(1500)..].to_string()
    };
    assert_eq!(
        wrong,
        json!([]),
        "every task's result (killed after {killed_at} steps; a.log: {}; b.log: {})",
        log("a.log"),
        log("b.log")
    );

    // One completed run per task, and nothing else.
    let runs: Vec<Value> = reqwest::get(format!(
        "http://127.0.0.1:{port_a}/v1/runs?function=adder&limit={}",
        TASKS * 2
    ))
    .await
    .expect("get runs")
    .json()
    .await
    .expect("json");
    assert_eq!(runs.len(), TASKS, "one run per task");
    assert!(
        runs.iter().all(|r| r["status"] == "completed"),
        "all completed"
    );
    let events: HashSet<&str> = runs
        .iter()
        .map(|r| r["event_id"].as_str().expect("event id"))
        .collect();
    let sent: HashSet<&str> = ids
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id"))
        .collect();
    assert_eq!(events, sent, "the runs are the tasks sent, each once");

    // Steps run at least once: a step killed mid-way runs again on the other node.
    let text = std::fs::read_to_string(&ledger).expect("ledger");
    let mut executions: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        let run = line.split(' ').next().unwrap_or_default();
        *executions.entry(run).or_default() += 1;
    }
    let again = executions.values().filter(|n| **n > 1).count();
    println!(
        "killed after {killed_at} of {TASKS} steps; {again} steps ran more than once (killed mid-step)"
    );
    assert_eq!(executions.len(), TASKS, "every run's step ran");
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
    let results = common::url_encoded(&redis);
    a_kill_9_mid_consumption_runs_every_task_once(&python, &redis, &redis, |queue| {
        format!("celery+redis://{host}?queue={queue}&results={results}&lease=3s")
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
    let results = common::url_encoded(&redis);
    a_kill_9_mid_consumption_runs_every_task_once(&python, &redis, &amqp, |queue| {
        format!("celery+{amqp}?queue={queue}&results={results}")
    })
    .await;
}
