//! Step images: built from the step's Dockerfile per content hash (cached, rebuilt on change,
//! rebuilt when removed), `runtime.image` used as is, and clear errors for what cannot run.

mod common;

use std::time::Duration;

use bollard::query_parameters::RemoveImageOptionsBuilder;
use bytes::Bytes;
use common::{Harness, with_runtime};
use serde_json::{Map, Value, json};
use weir_core::ErrorKind;
use weir_core::driver::Driver;
use weir_core::protocol::parse_output;
use weir_core::testkit::driver::{self as suite, DriverHarness, Fixture};
use weir_driver_docker::{DockerDriver, DockerDriverConfig};

const QUICK: Duration = suite::QUICK_TIMEOUT;

async fn remove_image(h: &Harness, image: &str) {
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    h.docker
        .remove_image(image, Some(options), None)
        .await
        .expect("remove image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_image_is_cached_by_content_and_rebuilt_on_change() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let dir = h.step("rebuild", "echo one");
    // Unique content, so this test really builds.
    std::fs::write(dir.join("marker"), common::unique_run_id()).unwrap();
    let spec = h.spec("rebuild");
    let first = h.driver.image_for(&spec).await.expect("build");
    assert!(
        first.starts_with("weir-step/weir-docker-tests-rebuild:"),
        "{first}"
    );
    assert_eq!(h.driver.image_for(&spec).await.unwrap(), first);
    let inspect = h.docker.inspect_image(&first).await.expect("inspect");
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(
        labels.get("weir.step_id").map(String::as_str),
        Some("rebuild")
    );
    let run = |h: &Harness| {
        let request = h.request_for("rebuild", Bytes::new(), QUICK);
        let driver = h.driver.clone();
        async move { driver.execute(request).await }
    };
    assert_eq!(run(&h).await.unwrap().stdout, Bytes::from("one\n"));

    h.step("rebuild", "echo two");
    let second = h.driver.image_for(&spec).await.expect("rebuild");
    assert_ne!(second, first);
    assert_eq!(run(&h).await.unwrap().stdout, Bytes::from("two\n"));

    // Removed behind the driver's back: the next attempt builds it again.
    remove_image(&h, &second).await;
    assert_eq!(run(&h).await.unwrap().stdout, Bytes::from("two\n"));
    remove_image(&h, &first).await;
    remove_image(&h, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_image_runs_an_existing_image_as_is() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let image = h.driver.image_for(&h.spec("Echo")).await.unwrap();
    let input = suite::sample_input();
    let mut request = h.request(Fixture::Echo, input.clone(), QUICK);
    request.path = None;
    let request = with_runtime(request, "image", json!(image));
    let result = h.driver.execute(request).await.expect("execute");
    let expected: Value = serde_json::from_slice(&input).unwrap();
    assert_eq!(parse_output(&result.stdout), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_input_follows_the_entrypoint_or_else_the_cmd() {
    let Some(h) = Harness::new().await else {
        return;
    };
    // No ENTRYPOINT: the CMD runs, with the input appended.
    let dir = h.dir.path().join("cmd-only");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(common::BUSYBOX, dir.join("busybox")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"sh\", \"-c\", \"printf '%s|%s' \\\"$0\\\" \\\"$1\\\"\", \"first\"]\n",
    )
    .unwrap();
    let result = h
        .driver
        .execute(h.request_for("cmd-only", Bytes::from("{\"a\":1}"), QUICK))
        .await
        .expect("execute");
    assert_eq!(result.stdout, Bytes::from("first|{\"a\":1}"), "{result:?}");

    // ENTRYPOINT and CMD: the CMD (default arguments) is replaced by the input, or dropped.
    let dir = h.dir.path().join("both");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(common::BUSYBOX, dir.join("busybox")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"printf '%s:%s' $# \\\"$1\\\"\", \"zero\"]\nCMD [\"default-arg\"]\n",
    )
    .unwrap();
    let run = |input: &'static [u8]| {
        h.driver
            .execute(h.request_for("both", Bytes::from_static(input), QUICK))
    };
    assert_eq!(run(b"{}").await.unwrap().stdout, Bytes::from("1:{}"));
    let large: &'static [u8] = vec![b' '; weir_driver_docker::MAX_ARG_BYTES].leak();
    assert_eq!(run(large).await.unwrap().stdout, Bytes::from("0:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_a_clear_error() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let missing = "weir-test/definitely-missing:nope";
    let request = || {
        let mut r = h.request(Fixture::Echo, Bytes::new(), QUICK);
        r.path = None;
        with_runtime(r, "image", json!(missing))
    };
    let config = DockerDriverConfig {
        pull_missing: false,
        ..DockerDriverConfig::with_host(&h.url)
    };
    let no_pull = DockerDriver::connect(config).await.unwrap();
    let err = no_pull.execute(request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(message.contains(missing), "{message}");
    assert!(
        message.contains("not found locally; pulling is disabled"),
        "{message}"
    );

    // Pulling is tried (no registry answers here, or it has no such image) and its failure said.
    let err = h.driver.execute(request()).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "image {missing:?} (runtime.image) not found locally, and pulling it failed"
        )),
        "{message}"
    );
    assert!(
        matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Unavailable),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_names_the_step_and_shows_the_engines_message() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let dir = h.dir.path().join("broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY no-such-file /x\n",
    )
    .unwrap();
    let err = h.driver.prepare(&h.spec("broken")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(
        message.contains("building the Docker image of step \"broken\""),
        "{message}"
    );
    assert!(
        message.contains(&dir.join("Dockerfile").display().to_string()),
        "{message}"
    );
    assert!(message.contains("no-such-file"), "{message}");
    // An attempt reports the same, without running anything.
    let err = h
        .driver
        .execute(h.request_for("broken", Bytes::new(), QUICK))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn check_validates_keys_and_the_image_source() {
    let driver = DockerDriver::new(DockerDriverConfig::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let empty = tempfile::tempdir().unwrap();
    let rt = |v: Value| -> Map<String, Value> { v.as_object().unwrap().clone() };
    let image = rt(
        json!({"type": "docker", "image": "app:1", "memory": "128m", "cpus": 1, "network": "none"}),
    );
    driver.check(&image, None).expect("an image");
    driver
        .check(&rt(json!({"type": "docker"})), Some(dir.path()))
        .expect("a build context");
    driver
        .check(
            &rt(json!({"type": "docker"})),
            Some(&dir.path().join("Dockerfile")),
        )
        .expect("a Dockerfile");
    let err = |runtime: Value, path: Option<&std::path::Path>| {
        let e = driver.check(&rt(runtime), path).unwrap_err();
        assert_eq!(e.kind(), weir_core::ErrorKind::Config, "{e}");
        e.to_string()
    };
    let e = err(
        json!({"type": "docker", "image": "a", "memroy": "1g"}),
        None,
    );
    assert!(e.contains("unknown key `runtime.memroy`"), "{e}");
    let e = err(json!({"type": "docker"}), None);
    assert!(e.contains("needs `runtime.image`"), "{e}");
    let e = err(json!({"type": "docker", "image": "a"}), Some(dir.path()));
    assert!(e.contains("not both"), "{e}");
    let e = err(json!({"type": "docker"}), Some(empty.path()));
    assert!(e.contains("has no Dockerfile"), "{e}");
    let e = err(json!({"type": "docker"}), Some(&empty.path().join("nope")));
    assert!(e.contains("cannot be read"), "{e}");
    let e = err(
        json!({"type": "docker", "image": "a", "memory": "2 potatoes"}),
        None,
    );
    assert!(e.contains("runtime.memory"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_fail_the_attempt_before_anything_runs() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let request = with_runtime(
        h.request(Fixture::Echo, Bytes::new(), QUICK),
        "cpu",
        json!(1),
    );
    let err = h.driver.execute(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("`runtime.cpu`"), "{err}");

    let request = with_runtime(
        h.request(Fixture::Echo, Bytes::new(), QUICK),
        "network",
        json!("no-such-network"),
    );
    let run_id = request.run_id.clone();
    let err = h.driver.execute(request).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("no-such-network"), "{err}");
    assert!(h.containers_of_run(&run_id).await.is_empty());
}

#[tokio::test]
async fn an_unreachable_engine_is_a_retryable_error_naming_it() {
    let host = "unix:///nonexistent/weir-docker.sock";
    let err = DockerDriver::connect(DockerDriverConfig::with_host(host))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert!(err.to_string().contains(host), "{err}");
    let err = DockerDriver::connect(DockerDriverConfig::with_host("ftp://nowhere"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("ftp://nowhere"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerignore_keeps_files_out_of_the_image_and_out_of_the_rebuild_decision() {
    let Some(h) = Harness::new().await else {
        return;
    };
    let dir = h.step("ignoring", "ls /ctx");
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        dockerfile.replace("COPY busybox", "COPY ctx /ctx\nCOPY busybox"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("ctx/cache")).unwrap();
    std::fs::write(dir.join("ctx/keep.txt"), common::unique_run_id()).unwrap();
    std::fs::write(dir.join("ctx/secret.env"), "TOKEN=1").unwrap();
    std::fs::write(dir.join("ctx/cache/blob"), "x").unwrap();
    std::fs::write(dir.join(".dockerignore"), "ctx/secret.env\nctx/cache\n").unwrap();

    let spec = h.spec("ignoring");
    let image = h.driver.image_for(&spec).await.expect("build");
    let request = h.request_for("ignoring", Bytes::new(), QUICK);
    let result = h.driver.execute(request).await.expect("execute");
    assert!(result.success, "{result:?}");
    assert_eq!(result.stdout, Bytes::from("keep.txt\n"), "{result:?}");

    // A change to an ignored file is no change to the step.
    std::fs::write(dir.join("ctx/secret.env"), "TOKEN=2").unwrap();
    std::fs::write(dir.join("ctx/cache/blob"), "y").unwrap();
    assert_eq!(h.driver.image_for(&spec).await.unwrap(), image);
    remove_image(&h, &image).await;
}
