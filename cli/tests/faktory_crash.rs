//! Two `weir serve` nodes on one Redis, each with the Faktory adapter, and two Python workers:
//! 2,000 jobs pushed through both nodes (half of a type a weir function handles, half for the
//! workers). One node is `kill -9`ed while its worker holds reserved jobs, and restarted.
//! Every handled job is one completed run; every job for the workers is worked, and the jobs
//! the dead node's worker held come back after their reservation (60 s) ran out and are
//! worked by the other worker. None is lost, and no job is left queued, reserved or retrying.
//!
//! Needs a Redis (`WEIR_TEST_REDIS_URL`) and a Python with the `faktory` package
//! (`WEIR_TEST_FAKTORY_PYTHON`).

#![cfg(all(
    feature = "state-redis",
    feature = "broker-redis",
    feature = "adapter-faktory"
))]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_core::testkit::{service_url, unique};

/// Jobs of each kind.
const JOBS: usize = 1_000;

/// Pushes jobs through argv[1]: argv[3] handled ones and argv[3] for workers, ids prefixed
/// argv[2]; prints `true` when every push was taken.
const PUSH: &str = r#"
import json, sys
import faktory
url, prefix, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ok = True
with faktory.connection(url) as client:
    for i in range(start, start + n):
        ok &= client.queue("handled", args=(i,), jid=f"{prefix}-h{i:05}")
        ok &= client.queue("legacy", args=(i,), jid=f"{prefix}-l{i:05}", reserve_for=60, retry=25)
print(json.dumps(ok))
"#;

/// A worker of argv[1]: `legacy` appends its jid to `$LOG` (a few ms of work each).
const WORKER: &str = r#"
import os, sys, time
import faktory
def legacy(i):
    with open(os.environ["LOG"], "a") as log:
        log.write(f"{i}\n")
    time.sleep(0.005)
w = faktory.Worker(faktory=sys.argv[1], queues=["default"], concurrency=4, use_threads=True)
w.register("legacy", legacy)
w.run()
"#;

/// `functions/handler`: a no-op step for `faktory/handled`.
fn handler(dir: &Path) -> std::path::PathBuf {
    let f = dir.join("functions").join("handler");
    std::fs::create_dir_all(&f).expect("mkdir");
    let def = json!({"id": "handler", "triggers": [{"event": "faktory/handled"}],
                     "steps": {"noop": {"path": "file://./step", "runtime": {"type": "process"}}}});
    std::fs::write(f.join("weir.json"), def.to_string()).expect("weir.json");
    std::fs::write(f.join("step"), "#!/bin/sh\necho '{}'\n").expect("step");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.join("step"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    dir.join("functions")
}

fn worker(python: &str, url: &str, log: &Path) -> Child {
    Command::new(python)
        .args(["-c", WORKER, url])
        .env("LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts")
}

/// The jobs the workers logged, each with how many times it was worked.
fn worked(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// INFO from the Faktory port `port`.
async fn info(port: u16) -> Value {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("greeting");
    writer
        .write_all(b"HELLO {\"v\":2}\r\nINFO\r\n")
        .await
        .expect("writes");
    line.clear();
    reader.read_line(&mut line).await.expect("ok");
    line.clear();
    reader.read_line(&mut line).await.expect("bulk");
    let len: usize = line.trim()[1..].parse().expect("length");
    let mut body = vec![0; len + 2];
    reader.read_exact(&mut body).await.expect("body");
    serde_json::from_slice(&body[..len]).expect("json")
}

fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loses_no_job_and_reserved_jobs_come_back() {
    let (Some(redis), Some(python)) = (
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_FAKTORY_PYTHON"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let functions = handler(tmp.path());
    let sep = if redis.contains('?') { '&' } else { '?' };
    let prefix = format!("weirfaktorycrash-{}", ulid::Ulid::new());
    let state = format!("{redis}{sep}prefix={prefix}");
    let broker = format!("{redis}{sep}prefix={prefix}&lease=2s");
    let (http_a, http_b) = (common::free_port(), common::free_port());
    let (fk_a, fk_b) = (common::free_port(), common::free_port());
    let start = |http: u16, faktory: u16, log: &str| {
        let adapter = format!("faktory://127.0.0.1:{faktory}");
        let node = common::start_node_with(
            &functions,
            &state,
            &broker,
            http,
            &tmp.path().join(log),
            &["--adapter", &adapter],
        );
        wait_for_port(faktory);
        node
    };
    let _node_a = start(http_a, fk_a, "a.log");
    let mut node_b = start(http_b, fk_b, "b.log");
    let (url_a, url_b) = (
        format!("tcp://127.0.0.1:{fk_a}"),
        format!("tcp://127.0.0.1:{fk_b}"),
    );

    let ids = unique("job");
    let half = (JOBS / 2).to_string();
    let push = |url: &str, start: &str| {
        let out = Command::new(&python)
            .args(["-c", PUSH, url, &ids, &half, start])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "true");
    };
    push(&url_a, "0");
    push(&url_b, &half);

    let log = tmp.path().join("worked.log");
    let mut worker_a = worker(&python, &url_a, &log);
    let mut worker_b = worker(&python, &url_b, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while worked(&log).len() < JOBS / 4 {
        assert!(Instant::now() < deadline, "the workers do not work");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Node B dies with its worker's jobs reserved; its worker goes too.
    let pid = node_b.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let _ = node_b.0.wait();
    let _ = worker_b.kill();
    let _ = worker_b.wait();
    let killed_at = worked(&log).len();
    let _node_b = start(http_b, fk_b, "b2.log");

    // Every job for the workers is worked. Those held at the kill come back once their
    // reservation ran out (60 s) and their retry came due (15 to 44 s more): until then they
    // are reserved, then retrying.
    let deadline = Instant::now() + Duration::from_secs(200);
    let expected: HashSet<String> = (0..JOBS).map(|i| i.to_string()).collect();
    let state = loop {
        let state = info(fk_a).await;
        let f = &state["faktory"];
        let settled = f["total_enqueued"] == 0
            && f["tasks"]["Busy"]["size"] == 0
            && f["tasks"]["Retries"]["size"] == 0;
        let seen: HashSet<String> = worked(&log).into_iter().collect();
        if settled && seen == expected {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs never worked (killed after {killed_at}): {state}",
            expected.difference(&seen).count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(state["faktory"]["tasks"]["Dead"]["size"], 0, "{state}");
    let again = worked(&log).len() - JOBS;
    let held = state["faktory"]["total_failures"].as_u64().unwrap_or(0);
    println!(
        "killed after {killed_at} jobs worked; {held} were held at the kill; {again} worked twice"
    );
    assert!(held >= 1, "the killed node's worker held jobs: {state}");
    assert!(
        again as u64 <= held,
        "only jobs held at the kill ran twice: {again} of {held}"
    );

    // One completed run per handled job.
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs: Vec<Value> = loop {
        let runs: Vec<Value> = reqwest::get(format!(
            "http://127.0.0.1:{http_a}/v1/runs?function=handler&limit={}",
            JOBS * 2
        ))
        .await
        .expect("get runs")
        .json()
        .await
        .expect("json");
        if runs.len() >= JOBS && runs.iter().all(|r| r["status"] == "completed") {
            break runs;
        }
        assert!(Instant::now() < deadline, "{} runs so far", runs.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(runs.len(), JOBS, "one run per handled job");
    let events: HashSet<&str> = runs
        .iter()
        .map(|r| r["event_id"].as_str().expect("event id"))
        .collect();
    assert_eq!(events.len(), JOBS);
    assert!(events.iter().all(|e| e.starts_with(&format!("{ids}-h"))));

    let _ = worker_a.kill();
    let _ = worker_a.wait();
}
