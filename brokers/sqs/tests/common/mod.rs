//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod proxy;

use std::time::Duration;

use bytes::Bytes;
use tokio::time::timeout;
use weir_core::broker::{Delivery, Subscription};

/// `WEIR_TEST_SQS_URL` with a prefix of its own (the URL's prefix plus a random suffix, so
/// every run gets fresh queues) and `params` appended. `None`: skip; panics under `CI=true`.
pub fn url_with(params: &str) -> Option<String> {
    let base = weir_core::testkit::service_url("WEIR_TEST_SQS_URL")?;
    let rest = base
        .strip_prefix("sqs://")
        .expect("WEIR_TEST_SQS_URL starts with sqs://");
    let (prefix, query) = rest.split_once('?').unwrap_or((rest, ""));
    let prefix = if prefix.is_empty() {
        "weirtest"
    } else {
        prefix
    };
    let prefix = format!(
        "{}-{:08x}",
        &prefix[..prefix.len().min(12)],
        rand::random::<u32>()
    );
    let query = [query, params]
        .iter()
        .filter(|q| !q.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("&");
    Some(format!("sqs://{prefix}?{query}"))
}

/// A name unique to this test run.
pub fn unique(what: &str) -> String {
    format!("{what}-{:08x}", rand::random::<u32>())
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
