//! Helpers shared by the integration tests: one librdkafka mock cluster per test process.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::mocking::MockCluster;
use tokio::time::timeout;
use weir_core::broker::{Delivery, Subscription};

/// The bootstrap servers of this process's mock cluster (started on first use, one broker,
/// kept until the process exits).
pub fn mock_servers() -> &'static str {
    static SERVERS: OnceLock<String> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let cluster = MockCluster::new(1).expect("start the librdkafka mock cluster");
        let servers = cluster.bootstrap_servers();
        // The cluster must outlive every client of the process.
        std::mem::forget(cluster);
        servers
    })
}

/// A `kafka://` URL of the mock cluster with `params` appended.
pub fn url_with(params: &str) -> String {
    format!("kafka://{}?{params}", mock_servers())
}

/// A name unique to this test run.
pub fn unique(what: &str) -> String {
    format!("weir-ktest-{what}-{:016x}", rand::random::<u64>())
}

pub async fn recv_within(sub: &mut Box<dyn Subscription>, within: Duration) -> Delivery {
    timeout(within, sub.next())
        .await
        .expect("no delivery in time")
        .expect("next failed")
}

pub async fn recv(sub: &mut Box<dyn Subscription>) -> Delivery {
    recv_within(sub, Duration::from_secs(15)).await
}

pub fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.payload).into_owned()
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
