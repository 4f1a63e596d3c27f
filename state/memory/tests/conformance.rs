//! The memory state and event stores pass weir-core's conformance suites.

use std::sync::Arc;

use weir_core::events::EventStore;
use weir_core::state::StateStore;
use weir_state_memory::{MemoryEventStore, MemoryStateStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_store_conformance() {
    weir_core::testkit::state::run_all(&|| async {
        Arc::new(MemoryStateStore::new()) as Arc<dyn StateStore>
    })
    .await;
}

#[tokio::test]
async fn event_store_conformance() {
    weir_core::testkit::events::run_all(&|| async {
        Arc::new(MemoryEventStore::new()) as Arc<dyn EventStore>
    })
    .await;
}
