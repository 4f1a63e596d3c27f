//! Runs weir-core's broker conformance suite against [`MemoryBroker`].

use std::sync::Arc;

use async_trait::async_trait;
use weir_broker_memory::MemoryBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{BrokerFactory, run_all};

struct Fresh;

#[async_trait]
impl BrokerFactory for Fresh {
    async fn broker(&self) -> Arc<dyn Broker> {
        Arc::new(MemoryBroker::new())
    }
}

/// One broker for every test, as an external broker would be.
struct Shared(Arc<MemoryBroker>);

#[async_trait]
impl BrokerFactory for Shared {
    async fn broker(&self) -> Arc<dyn Broker> {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fresh_broker_per_test() {
    run_all(&Fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_shared_broker() {
    run_all(&Shared(Arc::new(MemoryBroker::new()))).await;
}

#[tokio::test]
async fn conformance_current_thread_runtime() {
    run_all(&Fresh).await;
}
