//! Runs weir-core's broker conformance suite against [`KafkaBroker`] on a librdkafka mock
//! cluster started in the test process (one cluster for the whole suite: a consumer-group
//! join takes seconds there).

mod common;

use std::sync::Arc;

use common::url_with;
use weir_broker_kafka::KafkaBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::run_all;

/// Short session timeout: the mock cluster waits `session.timeout.ms - 1s` for members to
/// rejoin a rebalance (44 s with the default). The mock has no `CreateTopics`: topics are
/// created automatically (4 partitions).
const PARAMS: &str = "prefix=weir-test&topic_creation=auto&commit_interval=100ms&session.timeout.ms=2500&heartbeat.interval.ms=250";

/// A new broker (own producer, own admin client).
async fn connect() -> Arc<dyn Broker> {
    let broker = KafkaBroker::connect(&url_with(PARAMS)).await;
    Arc::new(broker.expect("connect"))
}

/// One broker for every test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_shared_broker() {
    let broker = connect().await;
    run_all(&move || std::future::ready(broker.clone())).await;
}

#[tokio::test]
async fn conformance_fresh_broker_per_test_current_thread() {
    run_all(&connect).await;
}
