//! The Redis state, event and job stores pass weir-core's conformance suites against a real
//! redis-server (`WEIR_TEST_REDIS_URL`, set by scripts/test.sh). Each store gets a key prefix
//! of its own, so runs never see each other's data.

use std::sync::Arc;

use weir_core::events::EventStore;
use weir_core::jobs::JobStore;
use weir_core::state::StateStore;
use weir_core::testkit::{catalog, events, jobs, service_url, state, url_with};
use weir_state_redis::{RedisEventStore, RedisStateStore};

/// `WEIR_TEST_REDIS_URL` with a new key prefix at each call (`None`: skip; panics under CI).
fn fresh_url() -> Option<impl Fn() -> String + Send + Sync> {
    let base = service_url("WEIR_TEST_REDIS_URL")?;
    Some(move || url_with(&base, &format!("prefix=weirtest-{}", ulid::Ulid::new())))
}

async fn state_store(url: String) -> Arc<dyn StateStore> {
    Arc::new(RedisStateStore::connect(&url).await.expect("connect"))
}

async fn job_store(url: String) -> Arc<dyn JobStore> {
    state_store(url)
        .await
        .jobs()
        .expect("the redis store keeps jobs")
}

async fn catalog_of(url: String) -> Arc<dyn weir_core::catalog::Catalog> {
    state_store(url)
        .await
        .catalog()
        .expect("the redis store keeps a catalog")
}

async fn event_store(url: String) -> Arc<dyn EventStore> {
    Arc::new(RedisEventStore::connect(&url).await.expect("connect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_store_conformance() {
    let Some(url) = fresh_url() else { return };
    state::run_all(&|| state_store(url())).await;
}

#[tokio::test]
async fn event_store_conformance() {
    let Some(url) = fresh_url() else { return };
    events::run_all(&|| event_store(url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_conformance() {
    let Some(url) = fresh_url() else { return };
    catalog::run_all(&|| catalog_of(url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_store_conformance() {
    let Some(url) = fresh_url() else { return };
    jobs::run_all(&|| job_store(url())).await;
}
