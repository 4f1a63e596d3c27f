//! What a step's container gets (argument, stdin, env, limits) and that none outlives its
//! attempt: exit, failure, timeout, out of memory, output flood, cancellation.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Harness, with_runtime};
use serde_json::{Value, json};
use weir_core::ErrorKind;
use weir_core::driver::{DEFAULT_MAX_LOG_BYTES, Driver};
use weir_core::protocol::parse_output;
use weir_core::testkit::driver::{self as suite, DriverHarness, Fixture};
use weir_driver_docker::MAX_ARG_BYTES;

const QUICK: Duration = suite::QUICK_TIMEOUT;

async fn output_of(h: &Harness, name: &str, script: &str, input: Bytes) -> Value {
    h.step(name, script);
    let result = h
        .driver
        .execute(h.request_for(name, input, QUICK))
        .await
        .expect("execute");
    assert!(result.success, "{result:?}");
    parse_output(&result.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_identifies_the_attempt_and_the_functions_env_reaches_the_step() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let script = r#"printf '{"run":"%s","step":"%s","attempt":"%s","fn":"%s","greeting":"%s"}' "$WEIR_RUN_ID" "$WEIR_STEP_ID" "$WEIR_ATTEMPT" "$WEIR_FUNCTION_ID" "$GREETING""#;
    h.step("env", script);
    let mut request = h.request_for("env", suite::sample_input(), QUICK);
    request.env = Arc::new(vec![
        (
            "GREETING".into(),
            "hello from .env, with spaces and = signs".into(),
        ),
        ("WEIR_RUN_ID".into(), "spoofed".into()),
    ]);
    let run_id = request.run_id.clone();
    let result = h.driver.execute(request).await.expect("execute");
    assert_eq!(
        parse_output(&result.stdout),
        json!({"run": run_id, "step": "env", "attempt": "2", "fn": common::FUNCTION_ID,
               "greeting": "hello from .env, with spaces and = signs"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_inputs_come_on_stdin_only() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let script = r#"printf '{"argc":%d,"stdin":%d}' $# "$(wc -c)""#;
    let small = suite::sample_input();
    let out = output_of(&h, "argc", script, small.clone()).await;
    assert_eq!(out, json!({"argc": 1, "stdin": small.len()}));
    let at_limit = Bytes::from(vec![b'x'; MAX_ARG_BYTES - 1]);
    let out = output_of(&h, "argc", script, at_limit).await;
    assert_eq!(out, json!({"argc": 1, "stdin": MAX_ARG_BYTES - 1}));
    let over = Bytes::from(vec![b'x'; MAX_ARG_BYTES]);
    let out = output_of(&h, "argc", script, over).await;
    assert_eq!(out, json!({"argc": 0, "stdin": MAX_ARG_BYTES}));
    let out = output_of(&h, "argc", script, Bytes::new()).await;
    assert_eq!(out, json!({"argc": 1, "stdin": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cpus_and_network_settings_apply() {
    let Some(h) = Harness::new().await else {
        return;
    };
    // cgroup v2 files first, then v1.
    let script = r#"
        mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
        cpu=$(cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
        printf '{"memory":"%s","cpu":"%s","nets":"%s"}' "$mem" "$cpu" "$(ls /sys/class/net | tr '\n' ' ')""#;
    h.step("limits", script);
    let request = h.request_for("limits", Bytes::new(), QUICK);
    let request = with_runtime(request, "memory", json!("64MiB"));
    let request = with_runtime(request, "cpus", json!(0.5));
    let request = with_runtime(request, "network", json!("none"));
    let result = h.driver.execute(request).await.expect("execute");
    assert!(result.success, "{result:?}");
    let out = parse_output(&result.stdout);
    assert_eq!(out["memory"], json!((64 << 20).to_string()), "{out}");
    assert!(out["cpu"].as_str().unwrap().starts_with("50000"), "{out}");
    assert_eq!(out["nets"], json!("lo "), "network none: {out}");

    // By default the step has Docker's default (bridge) network, no limits.
    let result = h
        .driver
        .execute(h.request_for("limits", Bytes::new(), QUICK))
        .await
        .expect("execute");
    let out = parse_output(&result.stdout);
    assert!(out["nets"].as_str().unwrap().contains("eth0"), "{out}");
    assert_ne!(out["memory"], json!((64 << 20).to_string()), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_fails_clearly_and_is_removed() {
    let Some(h) = Harness::new().await else {
        return;
    };
    // busybox tail keeps the whole (newline-free) input in memory: 200 MiB in a 32 MiB box.
    h.step("hog", "echo eating >&2\nhead -c 200m /dev/zero | tail");
    let request = h.request_for("hog", Bytes::new(), QUICK);
    let request = with_runtime(request, "memory", json!("32m"));
    let run_id = request.run_id.clone();
    let result = h.driver.execute(request).await.expect("execute");
    assert!(!result.success, "{result:?}");
    assert_eq!(
        result.detail.as_deref(),
        Some("killed: out of memory (runtime.memory = 32 MiB)"),
        "{result:?}"
    );
    assert!(result.log.contains("eating"), "{result:?}");
    assert!(h.containers_of_run(&run_id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_killed_for_memory_fails_the_attempt_although_the_step_exits_0() {
    let Some(h) = Harness::new().await else {
        return;
    };
    // The child `tail` is OOM-killed (its raised oom_score_adj makes it the kernel's choice);
    // the shell goes on and, once Docker had time to see the kill, exits 0 with an output.
    // The child reads /dev/zero itself: fed by a `head` in a pipeline, the writer could charge
    // the cgroup again before the killed child's memory was freed, and the kernel's second
    // kill took the shell (seen in CI, about one run in three here).
    h.step(
        "child-hog",
        "(echo 1000 > /proc/self/oom_score_adj && exec tail /dev/zero)\nsleep 1\necho '{\"complete\": true}'",
    );
    let request = h.request_for("child-hog", Bytes::new(), QUICK);
    let request = with_runtime(request, "memory", json!("32m"));
    let run_id = request.run_id.clone();
    let result = h.driver.execute(request).await.expect("execute");
    assert!(!result.success, "{result:?}");
    let detail = result.detail.as_deref().unwrap_or_default();
    assert!(
        detail.starts_with("killed: out of memory (runtime.memory = 32 MiB)")
            && detail.contains("exited 0"),
        "{result:?}"
    );
    assert!(h.containers_of_run(&run_id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_and_removes_the_container() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let request = h.request(Fixture::Sleep, Bytes::new(), Duration::from_secs(2));
    let run_id = request.run_id.clone();
    let start = Instant::now();
    let err = h.driver.execute(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("timed out after 2s"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(h.containers_of_run(&run_id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_flood_fails_and_removes_the_container() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let request = h.request(Fixture::Flood, Bytes::new(), QUICK);
    let run_id = request.run_id.clone();
    let err = h.driver.execute(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(h.containers_of_run(&run_id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_attempt_removes_its_container() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let request = h.request(Fixture::Sleep, Bytes::new(), QUICK);
    let run_id = request.run_id.clone();
    let driver = h.driver.clone();
    let task = tokio::spawn(async move { driver.execute(request).await });
    wait_running(&h, &run_id).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    h.assert_run_leaves_nothing(&run_id, Duration::from_secs(5))
        .await;
}

/// Waits until a container of `run_id` runs.
async fn wait_running(h: &Harness, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let containers = h.containers_of_run(run_id).await;
        if containers.iter().any(|c| c.ends_with(":running")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no running container for run {run_id}: {containers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_are_reported_and_the_log_keeps_its_tail() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let result = h
        .driver
        .execute(h.request(Fixture::FailWithLog, Bytes::new(), QUICK))
        .await
        .expect("execute");
    assert_eq!(result.detail.as_deref(), Some("exited with code 3"));
    assert_eq!(result.log, "boom\n");

    h.step(
        "noisy",
        "head -c 300000 /dev/zero | tr '\\0' 'a' >&2\necho END >&2\necho '{}'",
    );
    let result = h
        .driver
        .execute(h.request_for("noisy", Bytes::new(), QUICK))
        .await
        .expect("execute");
    assert!(result.success, "{result:?}");
    assert!(
        result.log.starts_with("[log truncated"),
        "{}",
        &result.log[..60]
    );
    assert!(result.log.ends_with("aaaEND\n"));
    assert!(result.log.len() <= DEFAULT_MAX_LOG_BYTES + 100);
    // stdout and stderr are kept apart even when interleaved.
    h.step(
        "both",
        "for i in 1 2 3; do echo out$i; echo err$i >&2; done",
    );
    let result = h
        .driver
        .execute(h.request_for("both", Bytes::new(), QUICK))
        .await
        .expect("execute");
    assert_eq!(result.stdout, Bytes::from("out1\nout2\nout3\n"));
    assert_eq!(result.log, "err1\nerr2\nerr3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_ignores_a_large_stdin_still_completes() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let input = suite::large_input(4 * suite::LARGE_INPUT_BYTES);
    let result = h
        .driver
        .execute(h.request(Fixture::Text, input, QUICK))
        .await
        .expect("execute");
    assert!(result.success, "{result:?}");
    assert_eq!(result.stdout, Bytes::from("hello weir\n"));
}
