//! Helpers shared by the integration tests (the broker helpers are weir-core's
//! `testkit::broker`).
#![allow(dead_code)]

/// `WEIR_TEST_REDIS_URL` with `params` appended (`None`: skip; panics under `CI=true`).
pub fn url_with(params: &str) -> Option<String> {
    weir_core::testkit::service_url_with("WEIR_TEST_REDIS_URL", params)
}

/// The test server's URL as given (for raw commands).
pub fn raw_url() -> Option<String> {
    weir_core::testkit::service_url("WEIR_TEST_REDIS_URL")
}

/// A raw connection to the test server.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}
