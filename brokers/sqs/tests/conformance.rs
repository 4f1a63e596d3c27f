//! Runs weir-core's broker conformance suite against [`SqsBroker`] on the test SQS endpoint
//! (`WEIR_TEST_SQS_URL`, a local moto server in scripts/test.sh), with standard and with FIFO
//! queues. A short visibility timeout keeps redeliveries after a consumer's death quick.

mod common;

use std::sync::Arc;

use common::url_with;
use weir_broker_sqs::SqsBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::run_all;

const PARAMS: &str = "visibility=3s&wait=5s&refresh=1s";

/// A new broker (own client and caches).
async fn connect(url: &str) -> Arc<dyn Broker> {
    Arc::new(SqsBroker::connect(url).await.expect("connect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_standard_queues() {
    let Some(url) = url_with(PARAMS) else { return };
    run_all(&|| connect(&url)).await;
}

/// FIFO queues with 1 s long polls: moto's FIFO receive decides which keys are busy when a
/// poll starts and spins until `wait` ends without seeing keys freed by acks meanwhile (SQS
/// answers as soon as a key is free), so long polls would stall the competing consumers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fifo_queues() {
    let Some(url) = url_with("visibility=3s&wait=1s&refresh=1s&ack_linger=0ms&fifo=true") else {
        return;
    };
    let broker = SqsBroker::connect(&url).await.expect("connect");
    assert!(broker.capabilities().ordered_by_key);
    run_all(&|| connect(&url)).await;
}

/// One broker for every test.
#[tokio::test]
async fn conformance_shared_broker_current_thread() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = connect(&url).await;
    run_all(&move || std::future::ready(broker.clone())).await;
}
