//! The runtime-driver conformance suite, every fixture, against a real Docker engine.

mod common;

use weir_core::testkit::driver as suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let Some(h) = common::Harness::new().await else {
        return;
    };
    suite::run_all(&h).await;
}
