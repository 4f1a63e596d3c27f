//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use tokio::time::timeout;
use weir_core::broker::{Delivery, Subscription};

/// `WEIR_TEST_REDIS_URL` with `params` appended (`None`: skip; panics under `CI=true`).
pub fn url_with(params: &str) -> Option<String> {
    let base = weir_core::testkit::service_url("WEIR_TEST_REDIS_URL")?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}{params}"))
}

/// The test server's URL as given (for raw commands).
pub fn raw_url() -> Option<String> {
    weir_core::testkit::service_url("WEIR_TEST_REDIS_URL")
}

/// A name unique to this test run.
pub fn unique(what: &str) -> String {
    format!("weir-rtest-{what}-{:016x}", rand::random::<u64>())
}

pub async fn recv_within(sub: &mut Box<dyn Subscription>, within: Duration) -> Delivery {
    timeout(within, sub.next())
        .await
        .expect("no delivery in time")
        .expect("next failed")
}

pub async fn recv(sub: &mut Box<dyn Subscription>) -> Delivery {
    recv_within(sub, Duration::from_secs(10)).await
}

/// Receives and acks; returns the payload.
pub async fn take(sub: &mut Box<dyn Subscription>) -> Bytes {
    let d = recv(sub).await;
    let payload = d.payload.clone();
    d.ack().await.expect("ack");
    payload
}

/// Panics if a delivery arrives within `within`.
pub async fn nothing_within(sub: &mut Box<dyn Subscription>, within: Duration) {
    if let Ok(result) = timeout(within, sub.next()).await {
        panic!("unexpected delivery {result:?}");
    }
}

/// A raw connection to the test server.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}
