//! Runs weir-core's broker conformance suite against [`AmqpBroker`] on the test RabbitMQ
//! (`WEIR_TEST_AMQP_URL`): with a fresh broker per test, one shared broker, classic queues,
//! and a current-thread runtime.

mod common;

use std::sync::Arc;

use common::url_with;
use weir_broker_amqp::AmqpBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::run_all;

const PARAMS: &str = "prefix=weir-test&queue_expires=2m";

/// A new broker (own connection).
async fn connect(url: &str) -> Arc<dyn Broker> {
    Arc::new(AmqpBroker::connect(url).await.expect("connect"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_classic_queues() {
    let Some(url) = url_with("prefix=weir-test-classic&queue_type=classic&queue_expires=2m") else {
        return;
    };
    run_all(&|| connect(&url)).await;
}

#[tokio::test]
async fn conformance_current_thread_runtime() {
    let Some(url) = url_with(PARAMS) else { return };
    run_all(&|| connect(&url)).await;
}
