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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_conformance() {
    weir_core::testkit::jobs::run_all(&|| async {
        MemoryStateStore::new()
            .jobs()
            .expect("the memory store keeps jobs")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_conformance() {
    weir_core::testkit::catalog::run_all(&|| async {
        MemoryStateStore::new()
            .catalog()
            .expect("the memory store keeps a catalog")
    })
    .await;
}

#[tokio::test]
async fn flush_empties_the_job_store() {
    use weir_core::jobs::{JobSet, QueuedJob};
    let jobs = MemoryStateStore::new().jobs().expect("jobs");
    let job = QueuedJob {
        id: "j1".into(),
        queue: "q".into(),
        reserve_ms: 1_000,
        payload: bytes::Bytes::from_static(b"{}"),
    };
    jobs.enqueue(&job).await.expect("enqueue");
    jobs.add_to_set(JobSet::Dead, &job, 1).await.expect("add");
    jobs.record(1, 1).await.expect("record");
    jobs.flush().await.expect("flush");
    let counts = jobs.counts().await.expect("counts");
    assert!(counts.queues.is_empty(), "{counts:?}");
    assert!(counts.sets.values().all(|n| *n == 0), "{counts:?}");
    assert_eq!((counts.processed, counts.failures), (0, 0));
}
