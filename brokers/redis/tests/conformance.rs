//! Runs weir-core's broker conformance suite against [`RedisBroker`] on the test Redis
//! (`WEIR_TEST_REDIS_URL`); the recovery cases a dead consumer brings are in `edge.rs`.
//!
//! The suite runs with a 2 s lease, so a redelivery after a consumer's death takes seconds,
//! not the 30 s default.

mod common;

use std::sync::Arc;

use common::url_with;
use weir_broker_redis::RedisBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::run_all;

const PARAMS: &str = "prefix=weir-test&lease=2s&block=250ms";

/// A new broker (own connections).
async fn connect(url: &str) -> Arc<dyn Broker> {
    Arc::new(RedisBroker::connect(url).await.expect("connect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fresh_broker_per_test() {
    let Some(url) = url_with(PARAMS) else { return };
    run_all(&|| connect(&url)).await;
}

/// One broker for every test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_shared_broker() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = connect(&url).await;
    run_all(&move || std::future::ready(broker.clone())).await;
}

#[tokio::test]
async fn conformance_current_thread_runtime() {
    let Some(url) = url_with(PARAMS) else { return };
    run_all(&|| connect(&url)).await;
}
