//! The `process` runtime passes weir's runtime-driver conformance suite.

mod common;

use std::sync::Arc;

use serde_json::json;
use weir_core::driver::StepRequest;
use weir_core::testkit::driver::{Harness, run_all, sample_request};
use weir_driver_process::ProcessDriver;

#[tokio::test]
async fn conformance() {
    let dir = common::fixtures(); // a script per fixture: tests/common/mod.rs
    let path = dir.path().to_path_buf();
    let harness = Harness::new(
        Arc::new(ProcessDriver::new()),
        move |fixture, input, timeout| StepRequest {
            path: Some(path.join(format!("{fixture:?}"))),
            function_dir: path.clone(),
            ..sample_request(json!({"type": "process"}), input, timeout)
        },
    );
    run_all(&harness.with_argv(true)).await;
}
