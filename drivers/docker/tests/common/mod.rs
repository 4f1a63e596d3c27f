//! The test harness: step images built from scratch with Debian's static busybox, a driver
//! connected to `WEIR_TEST_DOCKER_URL`, and helpers to see which containers exist.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, Driver, StepRequest, StepSpec};
use weir_core::testkit::Factory;
use weir_core::testkit::driver::{DriverHarness, Fixture};
use weir_core::testkit::service_url;
use weir_driver_docker::{DockerDriver, DockerDriverConfig};

/// Where the static busybox comes from (`apt-get install busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// The function id of every test step.
pub const FUNCTION_ID: &str = "weir-docker-tests";

pub struct Harness {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub driver: Arc<DockerDriver>,
    pub docker: Docker,
}

impl Harness {
    /// A harness with every conformance fixture prepared, or `None` (skip) without
    /// `WEIR_TEST_DOCKER_URL`.
    pub async fn new() -> Option<Harness> {
        let url = service_url("WEIR_TEST_DOCKER_URL")?;
        let driver = DockerDriver::connect(DockerDriverConfig::with_host(&url))
            .await
            .expect("connect to the Docker engine at WEIR_TEST_DOCKER_URL");
        let docker = Docker::connect_with_host(&url)
            .expect("docker client")
            .negotiate_version()
            .await
            .expect("docker version");
        let h = Harness {
            url,
            dir: tempfile::tempdir().expect("tempdir"),
            driver: Arc::new(driver),
            docker,
        };
        for fixture in Fixture::ALL {
            let script = match fixture {
                Fixture::Echo => "exec cat",
                Fixture::EchoArg => "printf '%s' \"$1\"",
                Fixture::Text => "echo hello weir",
                Fixture::FailWithLog => "echo boom >&2\nexit 3",
                Fixture::Sleep => "sleep 30",
                Fixture::ClientError => "echo '{\"status\":422}'",
                Fixture::Flood => "yes weir | head -c 10485760",
            };
            h.step(&format!("{fixture:?}"), script);
        }
        for fixture in Fixture::ALL {
            let spec = h.spec(&format!("{fixture:?}"));
            h.driver.prepare(&spec).await.expect("prepare the fixture");
        }
        Some(h)
    }

    /// Writes a step directory `name` whose image runs `script` with busybox `sh -c` (the input
    /// argument, if any, is `$1`).
    pub fn step(&self, name: &str, script: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("step dir");
        std::fs::copy(BUSYBOX, dir.join("busybox"))
            .expect("copy /bin/busybox (apt-get install busybox-static)");
        let entrypoint = json!(["/bin/busybox", "sh", "-c", script, "step"]);
        let dockerfile =
            format!("FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT {entrypoint}\n");
        std::fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
        dir
    }

    pub fn spec(&self, name: &str) -> StepSpec {
        self.request_for(name, Bytes::new(), Duration::from_secs(1))
            .spec()
    }

    /// A request running the step directory `name`, under a fresh run id.
    pub fn request_for(&self, name: &str, input: Bytes, timeout: Duration) -> StepRequest {
        StepRequest {
            input,
            function_id: FUNCTION_ID.into(),
            function_dir: self.dir.path().to_path_buf(),
            run_id: unique_run_id(),
            step_id: name.to_lowercase(),
            attempt: 2,
            path: Some(PathBuf::from(name)),
            runtime: Map::from_iter([("type".to_string(), json!("docker"))]),
            timeout,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            env: Default::default(),
        }
    }

    /// Containers labelled with `run_id`, running or not.
    pub async fn containers_of_run(&self, run_id: &str) -> Vec<String> {
        containers_labelled(&self.docker, "weir.run_id", run_id).await
    }

    /// Waits until no container of `run_id` exists; panics after `within`.
    pub async fn assert_run_leaves_nothing(&self, run_id: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = self.containers_of_run(run_id).await;
            if left.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "containers of run {run_id} still exist after {within:?}: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Ids and states (`id:state`) of the containers whose label `key` is `value`.
pub async fn containers_labelled(docker: &Docker, key: &str, value: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("{key}={value}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .map(|c| {
            format!(
                "{}:{}",
                c.id.unwrap_or_default(),
                c.state.map(|s| s.to_string()).unwrap_or_default()
            )
        })
        .collect()
}

pub fn unique_run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "run-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[async_trait]
impl Factory<dyn Driver> for Harness {
    async fn make(&self) -> Arc<dyn Driver> {
        self.driver.clone()
    }
}

impl DriverHarness for Harness {
    fn request(&self, fixture: Fixture, input: Bytes, timeout: Duration) -> StepRequest {
        self.request_for(&format!("{fixture:?}"), input, timeout)
    }

    fn supports_argv(&self) -> bool {
        true
    }
}

/// Sets `runtime.<key>` on a request.
pub fn with_runtime(mut request: StepRequest, key: &str, value: Value) -> StepRequest {
    request.runtime.insert(key.to_string(), value);
    request
}

/// The step's path as the driver sees it.
pub fn step_path(h: &Harness, name: &str) -> PathBuf {
    Path::new(h.dir.path()).join(name)
}
