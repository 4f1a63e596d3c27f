//! Runs weir-core's broker conformance suite against [`SqsBroker`] on the test SQS endpoint
//! (`WEIR_TEST_SQS_URL`, a local moto server in scripts/test.sh), with standard and with FIFO
//! queues, and again behind a proxy that slows every request down by 20–50 ms (a slow endpoint
//! must cost latency, not messages). A short visibility timeout keeps redeliveries after a
//! consumer's death quick.

mod common;

use std::sync::Arc;

use common::proxy::Proxy;
use common::url_with;
use weir_broker_sqs::SqsBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::run_all;

const PARAMS: &str = "visibility=3s&wait=5s&refresh=1s";
/// FIFO queues with 1 s long polls (see [`conformance_fifo_queues`]).
const FIFO_PARAMS: &str = "visibility=3s&wait=1s&refresh=1s&ack_linger=0ms&fifo=true";
/// How long the slowed endpoint holds each request back, in milliseconds.
const SLOW_MS: (u64, u64) = (20, 50);

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
    let Some(url) = url_with(FIFO_PARAMS) else {
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

/// `url` behind a proxy adding 20–50 ms to every request (the endpoint must be plain HTTP).
async fn slowed(url: &str) -> Proxy {
    Proxy::slowed(url, SLOW_MS.0, SLOW_MS.1)
        .await
        .expect("the slowed runs need a plain-HTTP endpoint= in WEIR_TEST_SQS_URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_standard_queues_slow_endpoint() {
    let Some(url) = url_with(PARAMS) else { return };
    let proxy = slowed(&url).await;
    run_all(&|| connect(&proxy.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fifo_queues_slow_endpoint() {
    let Some(url) = url_with(FIFO_PARAMS) else {
        return;
    };
    let proxy = slowed(&url).await;
    run_all(&|| connect(&proxy.url)).await;
}

/// One broker for every test, on one thread, behind the slowed endpoint.
#[tokio::test]
async fn conformance_shared_broker_current_thread_slow_endpoint() {
    let Some(url) = url_with(PARAMS) else { return };
    let proxy = slowed(&url).await;
    let broker = connect(&proxy.url).await;
    run_all(&move || std::future::ready(broker.clone())).await;
}
