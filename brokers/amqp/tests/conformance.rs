//! Runs weir-core's broker conformance suite against [`AmqpBroker`] on the test RabbitMQ
//! (`WEIR_TEST_AMQP_URL`): with a fresh broker per test, one shared broker, classic queues,
//! and a current-thread runtime.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::url_with;
use weir_broker_amqp::AmqpBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{BrokerFactory, run_all};

const PARAMS: &str = "prefix=weir-test&queue_expires=2m";

/// A new broker (own connection) for every test.
struct Fresh(String);

#[async_trait]
impl BrokerFactory for Fresh {
    async fn broker(&self) -> Arc<dyn Broker> {
        Arc::new(AmqpBroker::connect(&self.0).await.expect("connect"))
    }
}

/// One broker for every test.
struct Shared(Arc<AmqpBroker>);

#[async_trait]
impl BrokerFactory for Shared {
    async fn broker(&self) -> Arc<dyn Broker> {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fresh_broker_per_test() {
    let Some(url) = url_with(PARAMS) else { return };
    run_all(&Fresh(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_shared_broker() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    run_all(&Shared(Arc::new(broker))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_classic_queues() {
    let Some(url) = url_with("prefix=weir-test-classic&queue_type=classic&queue_expires=2m") else {
        return;
    };
    run_all(&Fresh(url)).await;
}

#[tokio::test]
async fn conformance_current_thread_runtime() {
    let Some(url) = url_with(PARAMS) else { return };
    run_all(&Fresh(url)).await;
}
