//! The conformance suite's harness: every fixture a Rust program built to wasm32-wasip1.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use weir_core::driver::{Driver, StepRequest};
use weir_core::testkit::Factory;
use weir_core::testkit::driver::{self as suite, DriverHarness, Fixture};
use weir_driver_wasm::WasmDriver;

/// Runs each fixture as a test module of its own.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub driver: Arc<WasmDriver>,
}

impl Harness {
    /// A driver with every fixture prepared (compiled), as weir prepares steps at load: the
    /// suite's 1 s timeout is then the attempt's, not a debug build's compile time.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let driver = Arc::new(super::driver(&super::modules::shared_cache_dir()));
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

#[async_trait]
impl Factory<dyn Driver> for Harness {
    async fn make(&self) -> Arc<dyn Driver> {
        self.driver.clone()
    }
}

impl DriverHarness for Harness {
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
        super::request(
            self.dir.path(),
            &super::module(name),
            input,
            super::runtime(json!({})),
            timeout,
        )
    }

    fn supports_argv(&self) -> bool {
        true
    }
}
