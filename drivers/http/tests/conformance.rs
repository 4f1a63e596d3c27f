//! The `http` runtime passes weir's runtime-driver conformance suite, with and without signing.

mod common;

use std::sync::Arc;

use serde_json::json;
use weir_core::testkit::driver::{Harness, run_all, sample_request};
use weir_driver_http::{HttpDriver, HttpDriverConfig};

async fn suite(signing_key: Option<&str>) {
    let (base, _) = common::serve().await; // a route per fixture: tests/common/mod.rs
    let signing_key = signing_key.map(str::to_string);
    let driver = HttpDriver::new(HttpDriverConfig { signing_key }).expect("driver");
    let harness = Harness::new(Arc::new(driver), move |fixture, input, timeout| {
        let url = format!("{base}/{fixture:?}");
        sample_request(json!({"type": "http", "url": url}), input, timeout)
    });
    run_all(&harness).await;
}

#[tokio::test]
async fn conformance() {
    suite(None).await;
}

#[tokio::test]
async fn conformance_with_signing() {
    suite(Some(common::KEY)).await;
}
