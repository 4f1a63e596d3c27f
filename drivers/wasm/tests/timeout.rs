//! Timeouts leave nothing running: no instance, no CPU burnt afterwards. One test in this
//! binary, so the process's CPU time is the guest's.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use weir_core::ErrorKind;
use weir_core::driver::Driver;
use weir_driver_wasm::WasmDriver;

use common::{module, request, runtime};

/// CPU time used by this process so far (user + system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the command name: state is field 3; utime and stime are fields 14 and 15.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Asserts that the process stays (almost) idle for half a second.
async fn assert_idle(what: &str, driver: &WasmDriver) {
    assert_eq!(
        driver.stats().running,
        0,
        "{what}: an instance is still alive"
    );
    let before = cpu_time();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let burnt = cpu_time() - before;
    assert!(
        burnt < Duration::from_millis(150),
        "{what}: {burnt:?} of CPU burnt in 500 ms after the attempt ended: the guest still runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_and_cancelled_instances_stop() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver(&common::modules::shared_cache_dir());
    let rt = || runtime(json!({}));
    let timeout = Duration::from_millis(500);
    for name in ["spin", "sleep"] {
        // Compile first, so the timing below is the attempt's.
        let warm = request(
            dir.path(),
            &module(name),
            "{}",
            rt(),
            Duration::from_millis(1),
        );
        let _ = driver.execute(warm).await;
        let start = Instant::now();
        let err = driver
            .execute(request(dir.path(), &module(name), "{}", rt(), timeout))
            .await
            .unwrap_err();
        let elapsed = start.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{name}: {err}");
        assert!(err.is_retryable(), "{name}: {err}");
        assert!(
            err.to_string().starts_with("step timed out after 500ms"),
            "{name}: {err}"
        );
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_millis(500),
            "{name}: returned after {elapsed:?}"
        );
        assert_idle(name, &driver).await;
    }

    // A caller dropping the attempt (its own deadline) stops the guest too.
    let long = request(
        dir.path(),
        &module("spin"),
        "{}",
        rt(),
        Duration::from_secs(30),
    );
    let cancelled = tokio::time::timeout(Duration::from_millis(300), driver.execute(long)).await;
    assert!(cancelled.is_err(), "spin returned: {cancelled:?}");
    assert_idle("cancelled spin", &driver).await;

    // The driver is still fine afterwards.
    let ok = driver
        .execute(request(
            dir.path(),
            &module("echo"),
            "{\"ok\":1}",
            rt(),
            timeout,
        ))
        .await
        .expect("echo");
    assert_eq!(
        weir_core::protocol::parse_output(&ok.stdout),
        json!({"ok": 1})
    );
}
