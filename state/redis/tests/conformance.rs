//! The Redis state and event stores pass weir-core's conformance suites against a real
//! redis-server (`WEIR_TEST_REDIS_URL`, set by scripts/test.sh). Each test run uses its own key
//! prefix, so runs never see each other's data.

use std::sync::Arc;

use weir_core::events::EventStore;
use weir_core::state::StateStore;
use weir_core::testkit::service_url;

fn url_with_fresh_prefix(base: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}prefix=weirtest-{}", ulid::Ulid::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_store_conformance() {
    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    weir_core::testkit::state::run_all(&move || {
        let url = url_with_fresh_prefix(&base);
        Box::pin(async move {
            Arc::new(
                weir_state_redis::RedisStateStore::connect(&url)
                    .await
                    .expect("connect"),
            ) as Arc<dyn StateStore>
        })
    })
    .await;
}

#[tokio::test]
async fn event_store_conformance() {
    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    weir_core::testkit::events::run_all(&move || {
        let url = url_with_fresh_prefix(&base);
        Box::pin(async move {
            Arc::new(
                weir_state_redis::RedisEventStore::connect(&url)
                    .await
                    .expect("connect"),
            ) as Arc<dyn EventStore>
        })
    })
    .await;
}
