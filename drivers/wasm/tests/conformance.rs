//! The runtime-driver conformance suite, every fixture a Rust program built to wasm32-wasip1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use weir_core::driver::{Driver, StepRequest};
use weir_core::testkit::driver::{self as suite, DriverHarness, Fixture};
use weir_driver_wasm::WasmDriver;

struct Harness {
    dir: tempfile::TempDir,
    driver: Arc<WasmDriver>,
}

impl Harness {
    /// A driver with every fixture prepared (compiled), as weir prepares steps at load: the
    /// suite's 1 s timeout is then the attempt's, not a debug build's compile time.
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let driver = Arc::new(common::driver(&common::modules::shared_cache_dir()));
        let h = Harness { dir, driver };
        for fixture in Fixture::ALL {
            let spec = h
                .request(fixture, Bytes::new(), suite::QUICK_TIMEOUT)
                .spec();
            h.driver.prepare(&spec).await.expect("prepare");
        }
        assert_eq!(h.driver.stats().compiled, Fixture::ALL.len() as u64);
        h
    }
}

impl DriverHarness for Harness {
    fn driver(&self) -> Arc<dyn Driver> {
        self.driver.clone()
    }

    fn request(&self, fixture: Fixture, input: Bytes, timeout: Duration) -> StepRequest {
        let name = match fixture {
            Fixture::Echo => "echo",
            Fixture::EchoArg => "echo_arg",
            Fixture::Text => "text",
            Fixture::FailWithLog => "fail_with_log",
            Fixture::Sleep => "sleep",
            Fixture::ClientError => "client_error",
            Fixture::Flood => "flood",
        };
        common::request(
            self.dir.path(),
            &common::module(name),
            input,
            common::runtime(json!({})),
            timeout,
        )
    }

    fn supports_argv(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn conformance() {
    let h = Harness::new().await;
    suite::run_all(&h).await;
    assert_eq!(
        h.driver.stats().running,
        0,
        "instances left after the suite"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_multi_threaded_runtime() {
    let h = Harness::new().await;
    suite::run_all(&h).await;
    assert_eq!(
        h.driver.stats().running,
        0,
        "instances left after the suite"
    );
}
