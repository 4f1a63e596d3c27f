//! The runtime-driver conformance suite, every fixture a Rust program built to wasm32-wasip1
//! (the harness is in `common/harness.rs`).

mod common;

use common::harness::Harness;
use weir_core::testkit::driver::run_all;

#[tokio::test]
async fn conformance() {
    let h = Harness::new().await;
    run_all(&h).await;
    assert_eq!(
        h.driver.stats().running,
        0,
        "instances left after the suite"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_multi_threaded_runtime() {
    let h = Harness::new().await;
    run_all(&h).await;
    assert_eq!(
        h.driver.stats().running,
        0,
        "instances left after the suite"
    );
}
