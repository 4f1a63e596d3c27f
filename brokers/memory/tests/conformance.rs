//! Runs weir-core's broker conformance suite against [`MemoryBroker`].

use std::sync::Arc;

use weir_broker_memory::MemoryBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::run_all;

/// A new broker for every test.
async fn fresh() -> Arc<dyn Broker> {
    Arc::new(MemoryBroker::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fresh_broker_per_test() {
    run_all(&fresh).await;
}

/// One broker for every test, as an external broker would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_shared_broker() {
    let shared: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    run_all(&move || std::future::ready(shared.clone())).await;
}

#[tokio::test]
async fn conformance_current_thread_runtime() {
    run_all(&fresh).await;
}
