//! The crash test (issue: "weir serve survives a kill -9 and loses nothing"): two `weir serve`
//! processes share Redis state and the Redis broker; 2,000 events each trigger a 3-step
//! function whose steps append to a ledger; one process is `kill -9`ed mid-way and restarted.
//! Every run must complete, every step's output must be recorded exactly once, no event may be
//! lost; the test prints how many steps ran more than once.

#![cfg(all(feature = "state-redis", feature = "broker-redis"))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const EVENTS: usize = 2_000;
const KEY: &str = "crash-key";

/// Kills the process when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_node(functions: &Path, state: &str, broker: &str, port: u16, log: &Path) -> Node {
    let log = std::fs::File::create(log).expect("log file");
    let node = Node(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--functions"])
            .arg(functions)
            .args(["--state", state, "--broker", broker, "--event-key", KEY])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--step-lease",
                "2s",
                "--executor-concurrency",
                "32",
            ])
            .env("WEIR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("weir serve"),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return node;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("node on {port} did not start");
}

/// A 3-step chain whose steps append `run step attempt pid` to the ledger.
fn function(dir: &Path, ledger: &Path) -> PathBuf {
    let f = dir.join("functions/ledger");
    std::fs::create_dir_all(f.join("steps")).expect("mkdir");
    let step = |after: Option<&str>| {
        let mut s = json!({"path": "file://./steps/append", "runtime": {"type": "process"}, "timeout": "20s"});
        if let Some(a) = after {
            s["after"] = json!([{"step": a}]);
        }
        s
    };
    let def = json!({"id": "ledger", "triggers": [{"event": "crash/test"}],
                     "steps": {"one": step(None), "two": step(Some("one")), "three": step(Some("two"))}});
    std::fs::write(
        f.join("weir.json"),
        serde_json::to_vec_pretty(&def).expect("json"),
    )
    .expect("write");
    let script = format!(
        "#!/bin/sh\ncat > /dev/null\nprintf '%s %s %s %s\\n' \"$WEIR_RUN_ID\" \"$WEIR_STEP_ID\" \"$WEIR_ATTEMPT\" \"$$\" >> {}\nprintf '{{\"step\":\"%s\",\"run\":\"%s\"}}\\n' \"$WEIR_STEP_ID\" \"$WEIR_RUN_ID\"\n",
        ledger.display()
    );
    let path = f.join("steps/append");
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
    let (port_a, port_b) = (free_port(), free_port());
    let node_a = start_node(
        &functions,
        &state,
        &broker,
        port_a,
        &tmp.path().join("a.log"),
    );
    let mut node_b = start_node(
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
    let node_b = start_node(
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
