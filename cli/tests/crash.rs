//! The crash test (issue: "weir serve survives a kill -9 and loses nothing"): two `weir serve`
//! processes share Redis state and the Redis broker; 2,000 events each trigger a 3-step
//! function whose steps append to a ledger; one process is `kill -9`ed mid-way and restarted.
//! Every run must complete, every step's output must be recorded exactly once, no event may be
//! lost; the test prints how many steps ran more than once.

#![cfg(all(feature = "state-redis", feature = "broker-redis"))]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const EVENTS: usize = 2_000;
const KEY: &str = "crash-key";

/// A 3-step chain whose steps append `run step attempt pid` to the ledger.
fn function(dir: &Path, ledger: &Path) -> PathBuf {
    let step = |after: Option<&str>| {
        let mut s = json!({"path": "file://./steps/append", "runtime": {"type": "process"}, "timeout": "20s"});
        if let Some(a) = after {
            s["after"] = json!([{"step": a}]);
        }
        s
    };
    let def = json!({"id": "ledger", "triggers": [{"event": "crash/test"}],
                     "steps": {"one": step(None), "two": step(Some("one")), "three": step(Some("two"))}});
    let script = format!(
        "#!/bin/sh\ncat > /dev/null\nprintf '%s %s %s %s\\n' \"$WEIR_RUN_ID\" \"$WEIR_STEP_ID\" \"$WEIR_ATTEMPT\" \"$$\" >> {}\nprintf '{{\"step\":\"%s\",\"run\":\"%s\"}}\\n' \"$WEIR_STEP_ID\" \"$WEIR_RUN_ID\"\n",
        ledger.display()
    );
    write_function(dir, &def, "append", &script)
}

/// Writes `functions/<id>/weir.json` and the executable `steps/<step>` under `dir`; returns the
/// functions directory.
fn write_function(dir: &Path, def: &Value, step: &str, script: &str) -> PathBuf {
    let f = dir.join("functions").join(def["id"].as_str().expect("id"));
    std::fs::create_dir_all(f.join("steps")).expect("mkdir");
    std::fs::write(
        f.join("weir.json"),
        serde_json::to_vec_pretty(def).expect("json"),
    )
    .expect("write");
    let path = f.join("steps").join(step);
    std::fs::write(&path, script).expect("write script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir.join("functions")
}

async fn post_events(base: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for chunk in 0..EVENTS / 100 {
        let batch: Vec<Value> = (0..100)
            .map(|i| json!({"name": "crash/test", "data": {"n": chunk * 100 + i}}))
            .collect();
        let answer: Value = client
            .post(format!("{base}/e/{KEY}"))
            .json(&batch)
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        ids.extend(
            answer["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_str().expect("id").to_string()),
        );
    }
    ids
}

async fn completed_runs(base: &str) -> Vec<Value> {
    let url = format!(
        "{base}/v1/runs?function=ledger&status=completed&limit={}",
        EVENTS * 2
    );
    reqwest::get(url)
        .await
        .expect("get")
        .json::<Vec<Value>>()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_survive_a_kill_9_and_lose_nothing() {
    let Some(redis) = weir_core::testkit::service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ledger = tmp.path().join("ledger.txt");
    let functions = function(tmp.path(), &ledger);
    let sep = if redis.contains('?') { '&' } else { '?' };
    let prefix = format!("weircrash-{}", ulid::Ulid::new());
    let state = format!("{redis}{sep}prefix={prefix}");
    let broker = format!("{redis}{sep}prefix={prefix}&lease=2s");
    let (port_a, port_b) = (common::free_port(), common::free_port());
    let node_a = common::start_node(
        &functions,
        &state,
        &broker,
        port_a,
        &tmp.path().join("a.log"),
    );
    let mut node_b = common::start_node(
        &functions,
        &state,
        &broker,
        port_b,
        &tmp.path().join("b.log"),
    );
    let base_a = format!("http://127.0.0.1:{port_a}");

    let started = Instant::now();
    let ids = post_events(&base_a).await;
    assert_eq!(ids.len(), EVENTS, "every event accepted");

    // Kill node B with SIGKILL once some runs are done, then bring it back.
    loop {
        let done = completed_runs(&base_a).await.len();
        if done >= EVENTS / 4 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    let node_b = common::start_node(
        &functions,
        &state,
        &broker,
        port_b,
        &tmp.path().join("b2.log"),
    );

    // Every run completes.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut runs = Vec::new();
    while Instant::now() < deadline {
        runs = completed_runs(&base_a).await;
        if runs.len() >= EVENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a_log = std::fs::read_to_string(tmp.path().join("a.log")).unwrap_or_default();
    assert_eq!(
        runs.len(),
        EVENTS,
        "runs completed == events sent (node A log tail: {})",
        &a_log[a_log.len().saturating_sub(2000)..]
    );

    // No event lost: every event id has its run; one run per event.
    let mut by_event: HashMap<String, usize> = HashMap::new();
    for r in &runs {
        *by_event
            .entry(r["event_id"].as_str().expect("event id").to_string())
            .or_default() += 1;
    }
    for id in &ids {
        assert_eq!(
            by_event.get(id),
            Some(&1),
            "event {id} has exactly one completed run"
        );
    }

    // Every step's output is recorded exactly once, by the run's state.
    let client = reqwest::Client::new();
    for r in runs.iter().step_by(10) {
        let run: Value = client
            .get(format!(
                "{base_a}/v1/runs/{}",
                r["id"].as_str().expect("id")
            ))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        for step in ["one", "two", "three"] {
            assert_eq!(run["steps"][step]["status"], "completed", "{run}");
            assert_eq!(run["steps"][step]["output"]["step"], step, "{run}");
            assert_eq!(run["steps"][step]["output"]["run"], r["id"], "{run}");
        }
    }

    // The ledger tells how many steps ran more than once (at-least-once execution).
    let text = std::fs::read_to_string(&ledger).expect("ledger");
    let mut executions: HashMap<(String, String), usize> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(run), Some(step)) = (parts.next(), parts.next()) else {
            continue;
        };
        *executions
            .entry((run.to_string(), step.to_string()))
            .or_default() += 1;
    }
    assert_eq!(executions.len(), EVENTS * 3, "every step of every run ran");
    let re_executed = executions.values().filter(|n| **n > 1).count();
    println!(
        "crash test: {EVENTS} runs completed in {:.1?}; {re_executed} step(s) re-executed after the kill -9; outputs recorded once each",
        started.elapsed()
    );
    drop(node_a);
    drop(node_b);
}

/// A redis-server of the test's own (never the shared one), with every write fsynced so a
/// restart loses nothing.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = common::free_port();
        let r = PrivateRedis { port, dir };
        r.launch();
        r
    }

    fn launch(&self) {
        let status = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--pidfile",
                &self.dir.path().join("redis.pid").display().to_string(),
            ])
            .status()
            .expect("redis-server");
        assert!(status.success());
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("private redis did not start");
    }

    fn stop(&self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .status();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A function whose only step fails its first two attempts (per run), then succeeds.
fn flaky_function(dir: &Path) -> PathBuf {
    let def = json!({"id": "flaky", "triggers": [{"event": "restart/test"}],
                     "steps": {"only": {"path": "file://./steps/only", "runtime": {"type": "process"}}}});
    let script = "#!/bin/sh\ncat > /dev/null\nif [ \"$WEIR_ATTEMPT\" -lt 3 ]; then echo \"attempt $WEIR_ATTEMPT fails\" >&2; exit 1; fi\necho '{\"ok\": true}'\n";
    write_function(dir, &def, "only", script)
}

async fn runs_with_status(base: &str, function: &str, status: &str) -> usize {
    let url = format!("{base}/v1/runs?function={function}&status={status}&limit=10000");
    match reqwest::get(url).await {
        Ok(r) => r.json::<Vec<Value>>().await.map(|v| v.len()).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn wait_for(base: &str, function: &str, status: &str, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let got = runs_with_status(base, function, status).await;
        if got >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stop every process while runs wait on retry timers; start again: the runs resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_waiting_on_retries_resume_after_a_full_restart() {
    let Some(redis) = weir_core::testkit::service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let functions = flaky_function(tmp.path());
    let sep = if redis.contains('?') { '&' } else { '?' };
    let prefix = format!("weirrestart-{}", ulid::Ulid::new());
    let state = format!("{redis}{sep}prefix={prefix}");
    let broker = format!("{redis}{sep}prefix={prefix}&lease=2s");
    let port = common::free_port();
    let node = common::start_node(
        &functions,
        &state,
        &broker,
        port,
        &tmp.path().join("n1.log"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let batch: Vec<Value> = (0..20)
        .map(|i| json!({"name": "restart/test", "data": {"i": i}}))
        .collect();
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/e/{KEY}"))
        .json(&batch)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["ids"].as_array().map(Vec::len), Some(20));
    // Let every run fail its first attempt and wait on its retry timer, then stop everything.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        runs_with_status(&base, "flaky", "completed").await,
        0,
        "retries take ≥ 0.5 s"
    );
    drop(node);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node = common::start_node(
        &functions,
        &state,
        &broker,
        port,
        &tmp.path().join("n2.log"),
    );
    let done = wait_for(&base, "flaky", "completed", 20, Duration::from_secs(60)).await;
    assert_eq!(
        done, 20,
        "every run resumed and completed after the restart"
    );
    drop(node);
}

/// Redis restarts mid-run: errors are retried, the node reconnects by itself, no run is lost.
/// A batch posted while Redis is down is not refused at the first failed call: ingest rides
/// out the restart (within `ingest_deadline`) and answers 200 once the events are stored and
/// published; their runs complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_posted_while_redis_restarts_is_accepted_once_it_is_back() {
    if weir_core::testkit::service_url("WEIR_TEST_REDIS_URL").is_none() {
        return;
    }
    let redis = PrivateRedis::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ledger = tmp.path().join("ledger.txt");
    let functions = function(tmp.path(), &ledger);
    let state = format!("{}?prefix=weir", redis.url());
    let broker = format!("{}?prefix=weir&lease=2s", redis.url());
    let port = common::free_port();
    let _node = common::start_node(&functions, &state, &broker, port, &tmp.path().join("n.log"));
    let base = format!("http://127.0.0.1:{port}");
    redis.stop();
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"name": "crash/test", "data": {"n": i}}))
        .collect();
    let post = tokio::spawn(async move {
        let answer = reqwest::Client::new()
            .post(format!("{base}/e/{KEY}"))
            .json(&batch)
            .send()
            .await
            .expect("post");
        (answer.status().as_u16(), answer.text().await.expect("body"))
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!post.is_finished(), "ingest answered while Redis was down");
    redis.launch();
    let (status, body) = post.await.expect("post task");
    assert_eq!(status, 200, "{body}");
    let ids: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ids["ids"].as_array().map(Vec::len), Some(50), "{body}");
    let base = format!("http://127.0.0.1:{port}");
    let done = wait_for(&base, "ledger", "completed", 50, Duration::from_secs(60)).await;
    assert_eq!(done, 50, "every accepted event's run completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_loses_no_run() {
    // Needs redis-server on the PATH (scripts/test.sh installs it); tied to the same service.
    if weir_core::testkit::service_url("WEIR_TEST_REDIS_URL").is_none() {
        return;
    }
    let redis = PrivateRedis::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ledger = tmp.path().join("ledger.txt");
    let functions = function(tmp.path(), &ledger);
    let state = format!("{}?prefix=weir", redis.url());
    let broker = format!("{}?prefix=weir&lease=2s", redis.url());
    let port = common::free_port();
    let _node = common::start_node(&functions, &state, &broker, port, &tmp.path().join("n.log"));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut sent = 0;
    for round in 0..4 {
        let batch: Vec<Value> = (0..50)
            .map(|i| json!({"name": "crash/test", "data": {"n": round * 50 + i}}))
            .collect();
        let answer: Value = client
            .post(format!("{base}/e/{KEY}"))
            .json(&batch)
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        sent += answer["ids"].as_array().map(Vec::len).unwrap_or(0);
        if round == 1 {
            redis.stop();
            tokio::time::sleep(Duration::from_millis(500)).await;
            redis.launch();
        }
    }
    assert_eq!(sent, 200, "all events accepted once Redis was back");
    let done = wait_for(&base, "ledger", "completed", 200, Duration::from_secs(120)).await;
    let log = std::fs::read_to_string(tmp.path().join("n.log")).unwrap_or_default();
    if done != 200 {
        let stuck = stuck_runs(&base, "ledger").await;
        panic!(
            "{done}/200 runs completed across the Redis restart\nstuck runs: {stuck}\nnode log tail: {}",
            &log[log.len().saturating_sub(3000)..]
        );
    }
    let retried = log.lines().filter(|l| l.contains("WARN")).count();
    if std::env::var("WEIR_TEST_VERBOSE").is_ok() {
        println!("{log}");
        let runs: Vec<Value> = reqwest::get(format!("{base}/v1/runs?function=ledger&limit=1000"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let slowest = runs
            .iter()
            .max_by_key(|r| {
                r["ended_at"].as_i64().unwrap_or(0) - r["created_at"].as_i64().unwrap_or(0)
            })
            .expect("runs");
        let detail: Value = reqwest::get(format!(
            "{base}/v1/runs/{}",
            slowest["id"].as_str().expect("id")
        ))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
        println!("slowest run: {}", detail["timeline"]);
    }
    println!("redis restart: 200/200 runs completed; {retried} warning(s) about retried errors");
}

/// The timelines of runs still running, for failure messages.
async fn stuck_runs(base: &str, function: &str) -> String {
    let url = format!("{base}/v1/runs?function={function}&status=running&limit=5");
    let Ok(answer) = reqwest::get(url).await else {
        return "(API unreachable)".into();
    };
    let runs: Vec<Value> = answer.json().await.unwrap_or_default();
    let mut out = String::new();
    for r in runs {
        let id = r["id"].as_str().unwrap_or_default();
        if let Ok(detail) = reqwest::get(format!("{base}/v1/runs/{id}")).await {
            let detail: Value = detail.json().await.unwrap_or_default();
            out.push_str(&format!("\n{}\n{}", detail["steps"], detail["timeline"]));
        }
    }
    out
}
