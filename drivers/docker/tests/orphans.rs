//! A weir process killed mid-step leaves its container behind; the next driver start removes it,
//! and never a container of a live weir process.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Harness, unique_run_id};
use weir_core::driver::Driver;
use weir_core::testkit::driver::{DriverHarness, Fixture};
use weir_driver_docker::{DockerDriver, DockerDriverConfig};

/// The `hold` example, which `cargo test` builds next to the test binaries.
fn hold_example() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("hold"))
        .expect("target dir");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test -p weir-driver-docker` (it builds the examples) or `cargo build -p weir-driver-docker --example hold`",
        path.display()
    );
    path
}

async fn wait_running(h: &Harness, run_id: &str, child: &mut Option<&mut std::process::Child>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let containers = h.containers_of_run(run_id).await;
        if containers.iter().any(|c| c.ends_with(":running")) {
            return;
        }
        if let Some(child) = child.as_mut() {
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "the hold example exited before its step started"
            );
        }
        assert!(
            Instant::now() < deadline,
            "no running container for run {run_id}: {containers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weir_killed_mid_step_leaves_an_orphan_that_the_next_start_removes() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let image = h
        .driver
        .image_for(&h.spec("Sleep"))
        .await
        .expect("sleep image");

    // Another weir process runs a 30 s step and is killed with SIGKILL mid-step.
    let orphan_run = unique_run_id();
    let mut hold = std::process::Command::new(hold_example())
        .args([&h.url, &image, &orphan_run])
        .spawn()
        .expect("spawn the hold example");
    wait_running(&h, &orphan_run, &mut Some(&mut hold)).await;
    hold.kill().expect("kill -9 the hold example");
    hold.wait().expect("reap the hold example");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = h.containers_of_run(&orphan_run).await;
    assert_eq!(left.len(), 1, "the killed process's container: {left:?}");
    assert!(left[0].ends_with(":running"), "{left:?}");

    // This (live) process runs a step meanwhile: not an orphan.
    let live = h.request(Fixture::Sleep, Bytes::new(), Duration::from_secs(25));
    let live_run = live.run_id.clone();
    let driver = h.driver.clone();
    let task = tokio::spawn(async move { driver.execute(live).await });
    wait_running(&h, &live_run, &mut None).await;

    // A driver starting (as `weir` does on start) removes the orphan only.
    let restarted = DockerDriver::connect(DockerDriverConfig::with_host(&h.url))
        .await
        .expect("connect");
    assert_eq!(h.containers_of_run(&orphan_run).await, Vec::<String>::new());
    let live_left = h.containers_of_run(&live_run).await;
    assert!(
        live_left.len() == 1 && live_left[0].ends_with(":running"),
        "a live process's container was touched: {live_left:?}"
    );
    assert_eq!(
        restarted.remove_orphans().await.expect("sweep"),
        Vec::<String>::new()
    );

    task.abort();
    let _ = task.await;
    h.assert_run_leaves_nothing(&live_run, Duration::from_secs(5))
        .await;
    // The harness's own driver is still usable.
    let result = h
        .driver
        .execute(h.request(Fixture::Text, Bytes::new(), Duration::from_secs(20)))
        .await
        .expect("execute");
    assert!(result.success);
}
