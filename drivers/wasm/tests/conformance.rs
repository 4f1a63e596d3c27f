//! The `wasm` runtime passes weir's runtime-driver conformance suite, every fixture a Rust
//! program built to wasm32-wasip1 (`test-modules/`; built and named in `tests/common/`).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use weir_core::driver::{Driver, StepRequest};
use weir_core::testkit::driver::{Fixture, Harness, QUICK_TIMEOUT, run_all, sample_request};

/// Every fixture is prepared (compiled) first, as weir prepares steps at load: the suite's 1 s
/// timeout is then the attempt's, not a debug build's compile time.
async fn suite() {
    let driver = Arc::new(common::driver(&common::modules::shared_cache_dir()));
    let request = |fixture, input, timeout| StepRequest {
        path: Some(common::fixture(fixture)),
        ..sample_request(json!({"type": "wasm"}), input, timeout)
    };
    for fixture in Fixture::ALL {
        let spec = request(fixture, Bytes::new(), QUICK_TIMEOUT).spec();
        driver.prepare(&spec).await.expect("prepare");
    }
    assert_eq!(driver.stats().compiled, Fixture::ALL.len() as u64);
    run_all(&Harness::new(driver.clone(), request).with_argv(true)).await;
    assert_eq!(driver.stats().running, 0, "instances left after the suite");
}

#[tokio::test]
async fn conformance() {
    suite().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_multi_threaded_runtime() {
    suite().await;
}
