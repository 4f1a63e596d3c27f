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

/// Deleting a finished run leaves none of its keys behind: the run's hash, outputs and
/// timeline, and its entries in every listing index (Redis drops a sorted set it empties).
#[tokio::test]
async fn deleted_runs_leave_no_keys() {
    let Some(base) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let url = url_with_fresh_prefix(&base);
    let prefix = url.rsplit_once("prefix=").expect("prefix").1.to_string();
    let store = weir_state_redis::RedisStateStore::connect(&url)
        .await
        .expect("connect");
    let run = weir_core::testkit::state::sample_run("fn-keys", "alice");
    store.create_run(&run).await.expect("create");
    let mut con = redis::Client::open(base.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let pattern = format!("{prefix}:*");
    let keys = |con: &mut redis::aio::MultiplexedConnection| {
        let mut con = con.clone();
        let pattern = pattern.clone();
        async move {
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut con)
                .await
                .expect("KEYS");
            keys.sort();
            keys
        }
    };
    assert!(
        keys(&mut con).await.len() >= 6,
        "the run, its timeline and four indexes: {:?}",
        keys(&mut con).await
    );
    store
        .finish_run(&run.id, weir_core::run::RunStatus::Completed)
        .await
        .expect("finish");
    let later = weir_core::event::now_ms() + 1_000;
    assert_eq!(
        store.delete_finished_runs(later, 10).await.expect("delete"),
        1
    );
    assert_eq!(keys(&mut con).await, Vec::<String>::new());
}
