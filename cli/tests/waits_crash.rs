//! Event coordination across `weir serve` nodes that die: two nodes share Redis state and the
//! Redis broker; 1,000 runs wait for their user's activation (8 s ttl); half the users
//! activate, and one node is `kill -9`ed right then and restarted. No pause may be lost, no
//! pause may end twice, and each run must take exactly one branch: `b` for the users who
//! activated, `c` (the timeout) for the others.

#![cfg(all(feature = "state-redis", feature = "broker-redis"))]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const RUNS: usize = 1_000;
const KEY: &str = "crash-key";

/// `a`, then `b` on the user's activation or `c` when none came within the ttl; `b` and `c`
/// append `run step` to the ledger.
fn function(ledger: &Path) -> common::FnDir {
    let wait =
        json!({"event": "user/activated", "match": "async.user.id == event.user.id", "ttl": "8s"});
    let mut timeout = wait.clone();
    timeout["onTimeout"] = json!(true);
    let step = |path: &str| json!({"path": format!("file://./steps/{path}"), "timeout": "20s"});
    let mut b = step("branch");
    b["after"] = json!([{"step": "a", "async": wait}]);
    let mut c = step("branch");
    c["after"] = json!([{"step": "a", "async": timeout}]);
    let def = json!({"id": "onboarding", "triggers": [{"event": "user/signed.up"}],
                     "steps": {"a": step("welcome"), "b": b, "c": c}});
    let branch = format!(
        "cat > /dev/null\nprintf '%s %s\\n' \"$WEIR_RUN_ID\" \"$WEIR_STEP_ID\" >> {}\necho '{{}}'",
        ledger.display()
    );
    common::function_dir(
        &def,
        &[
            ("welcome", "cat > /dev/null\necho '{}'"),
            ("branch", &branch),
        ],
    )
}

async fn post(base: &str, events: Vec<Value>) {
    let client = reqwest::Client::new();
    for chunk in events.chunks(100) {
        let answer = client
            .post(format!("{base}/e/{KEY}"))
            .json(&chunk)
            .send()
            .await
            .expect("post");
        assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    }
}

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_survive_a_kill_9_and_each_run_takes_one_branch() {
    let Some(redis) = weir_core::testkit::service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let ledger = tmp.path().join("ledger.txt");
    let f = function(&ledger);
    let functions = f.dir.clone();
    let sep = if redis.contains('?') { '&' } else { '?' };
    let prefix = format!("weirwaits-{}", ulid::Ulid::new());
    let state = format!("{redis}{sep}prefix={prefix}");
    let broker = format!("{redis}{sep}prefix={prefix}&lease=2s");
    let (port_a, port_b) = (common::free_port(), common::free_port());
    let _node_a = common::start_node(
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
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );

    let user = |i: usize| json!({"id": format!("u{i}")});
    let signups = (0..RUNS)
        .map(|i| json!({"name": "user/signed.up", "user": user(i)}))
        .collect();
    post(&base_a, signups).await;
    // Half the users activate, through node B, which is killed right after.
    let activations = (0..RUNS)
        .step_by(2)
        .map(|i| json!({"name": "user/activated", "user": user(i)}))
        .collect();
    post(&base_b, activations).await;
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
    let _node_b = common::start_node(
        &functions,
        &state,
        &broker,
        port_b,
        &tmp.path().join("b2.log"),
    );

    // Every run ends (the timeouts 8 s after `a`).
    let deadline = Instant::now() + Duration::from_secs(120);
    let runs = loop {
        let runs = get(&format!("{base_a}/v1/runs?function=onboarding&limit=5000")).await;
        let runs = runs.as_array().expect("runs").clone();
        let ended = runs.iter().filter(|r| r["status"] == "completed").count();
        if ended == RUNS || Instant::now() > deadline {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let log = std::fs::read_to_string(tmp.path().join("a.log")).unwrap_or_default();
    let ended = runs.iter().filter(|r| r["status"] == "completed").count();
    assert_eq!(
        ended,
        RUNS,
        "every run ended (node A log tail: {})",
        &log[log.len().saturating_sub(2000)..]
    );

    // Each run took exactly one branch, the right one, and its pause ended once.
    let mut taken: HashMap<String, &str> = HashMap::new();
    for r in &runs {
        let id = r["id"].as_str().expect("id");
        let run = get(&format!("{base_a}/v1/runs/{id}")).await;
        let user = run["event"]["user"]["id"]
            .as_str()
            .expect("user")
            .to_string();
        let n: usize = user[1..].parse().expect("u<n>");
        let (b, c) = (&run["steps"]["b"]["status"], &run["steps"]["c"]["status"]);
        let expected = if n.is_multiple_of(2) {
            ("completed", "skipped")
        } else {
            ("skipped", "completed")
        };
        assert_eq!(
            (b.as_str(), c.as_str()),
            (Some(expected.0), Some(expected.1)),
            "{user}: {run:#}"
        );
        let ends = run["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .filter(|h| h["kind"] == "pause.matched" || h["kind"] == "pause.timed_out")
            .count();
        assert_eq!(ends, 1, "{user}'s pause ended once: {run:#}");
        taken.insert(id.to_string(), if n.is_multiple_of(2) { "b" } else { "c" });
    }
    // The branch not taken never ran (a branch may run twice if its node died mid-step).
    let ledger = std::fs::read_to_string(&ledger).expect("ledger");
    let mut ran: HashMap<(String, String), usize> = HashMap::new();
    for line in ledger.lines() {
        let (run, step) = line.split_once(' ').expect("run step");
        *ran.entry((run.to_string(), step.to_string())).or_default() += 1;
    }
    let mut twice = 0;
    for ((run, step), count) in &ran {
        assert_eq!(
            taken.get(run).copied(),
            Some(step.as_str()),
            "{run} ran {step}, not its branch"
        );
        twice += usize::from(*count > 1);
    }
    assert_eq!(ran.len(), RUNS, "every run's branch ran");
    eprintln!("branches that ran twice (a node died mid-step): {twice}");
}
