//! Function versions kept in the state store: a node stores what it loads from its files as a
//! numbered version with its files, and a run pinned to a version no node has on disk any more
//! is finished from the stored version.

#![cfg(all(feature = "state-redis", feature = "broker-redis"))]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "crash-key";

/// Writes function `pinned` whose one step fails until `marker` exists, then answers
/// `{"version": N}`; returns the functions directory.
fn write_version(dir: &Path, marker: &Path, n: u32) -> PathBuf {
    let f = dir.join("functions/pinned");
    std::fs::create_dir_all(f.join("steps")).expect("mkdir");
    let def = json!({"id": "pinned", "triggers": [{"event": "pinned/test"}],
        "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"},
                        "retries": {"attempts": 30}}}});
    std::fs::write(f.join("weir.json"), def.to_string()).expect("write");
    let script = format!(
        "#!/bin/sh\ncat > /dev/null\n[ -f {} ] || exit 1\necho '{{\"version\": {n}}}'\n",
        marker.display()
    );
    let step = f.join("steps/s");
    std::fs::write(&step, script).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&step, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir.join("functions")
}

async fn runs(base: &str) -> Vec<Value> {
    let url = format!("{base}/v1/runs?function=pinned&limit=1000");
    match reqwest::get(url).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn post(base: &str, n: usize) -> Vec<String> {
    let batch: Vec<Value> = (0..n)
        .map(|i| json!({"name": "pinned/test", "data": {"i": i}}))
        .collect();
    common::send_events(base, KEY, &json!(batch)).await
}

/// The output of the step of the run started by event `event_id`, once it completed.
async fn output_of(base: &str, event_id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let found = runs(base)
            .await
            .into_iter()
            .find(|r| r["event_id"] == event_id && r["status"] == "completed");
        if let Some(run) = found {
            let id = run["id"].as_str().expect("id");
            let shown: Value = reqwest::get(format!("{base}/v1/runs/{id}"))
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            return shown["steps"]["s"]["output"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the run of {event_id} did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two nodes run version 1; its runs wait on retry timers; both stop; version 2 replaces
/// version 1 on disk; both start again with only version 2: the waiting runs finish on
/// version 1 (fetched from the state store), new runs start on version 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_a_version_no_node_has_on_disk_finish_on_it() {
    let Some(redis) = weir_core::testkit::service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let marker = tmp.path().join("steps-may-succeed");
    let functions = write_version(tmp.path(), &marker, 1);
    let sep = if redis.contains('?') { '&' } else { '?' };
    let prefix = format!("weirversions-{}", ulid::Ulid::new());
    let state = format!("{redis}{sep}prefix={prefix}");
    let broker = format!("{redis}{sep}prefix={prefix}&lease=2s");
    let ports = [common::free_port(), common::free_port()];
    let start = |round: &str| -> Vec<common::Node> {
        ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let log = tmp.path().join(format!("{round}-{i}.log"));
                let versions = tmp.path().join(format!("versions-{i}"));
                let versions = versions.display().to_string();
                common::start_node_with(
                    &functions,
                    &state,
                    &broker,
                    *port,
                    &log,
                    &["--versions-dir", &versions],
                )
            })
            .collect()
    };
    let bases = ports.map(|p| format!("http://127.0.0.1:{p}"));

    let nodes = start("v1");
    let old = post(&bases[0], 10).await;
    // Every run fails its first attempt and waits on a retry timer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs(&bases[0]).await.len() < 10 {
        assert!(Instant::now() < deadline, "the runs were not created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v1_hash = runs(&bases[0]).await[0]["function_version"].clone();
    drop(nodes);

    // Only version 2 on disk from now on; steps may succeed.
    std::fs::remove_dir_all(tmp.path().join("functions")).expect("rm");
    write_version(tmp.path(), &marker, 2);
    std::fs::write(&marker, "").expect("marker");
    let _nodes = start("v2");
    for id in &old {
        assert_eq!(
            output_of(&bases[1], id, Duration::from_secs(60)).await,
            json!({"version": 1}),
            "a run of version 1 finished on version 1"
        );
    }
    let new = post(&bases[1], 1).await;
    assert_eq!(
        output_of(&bases[0], &new[0], Duration::from_secs(30)).await,
        json!({"version": 2}),
        "a new run starts on version 2"
    );
    let listed = runs(&bases[0]).await;
    let v2_hash = &listed
        .iter()
        .find(|r| r["event_id"] == new[0].as_str())
        .expect("the new run")["function_version"];
    assert_ne!(*v2_hash, v1_hash);
}
