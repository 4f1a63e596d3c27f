//! Runs weir-core's broker conformance suite against [`RedisBroker`] on the test Redis
//! (`WEIR_TEST_REDIS_URL`), plus the recovery cases a dead consumer brings.
//!
//! The suite runs with a 2 s lease, so a redelivery after a consumer's death takes seconds,
//! not the 30 s default.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use common::{raw, raw_url, url_with};
use weir_broker_redis::RedisBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{nothing_within, recv, recv_within, run_all, take};
use weir_core::testkit::{Factory, unique};

const PARAMS: &str = "prefix=weir-test&lease=2s&block=250ms";

/// A new broker (own connections) for every test.
struct Fresh(String);

#[async_trait]
impl Factory<dyn Broker> for Fresh {
    async fn make(&self) -> Arc<dyn Broker> {
        Arc::new(RedisBroker::connect(&self.0).await.expect("connect"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_fresh_broker_per_test() {
    let Some(url) = url_with(PARAMS) else { return };
    run_all(&Fresh(url)).await;
}

/// One broker for every test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_shared_broker() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker: Arc<dyn Broker> = Arc::new(RedisBroker::connect(&url).await.expect("connect"));
    run_all(&move || std::future::ready(broker.clone())).await;
}

#[tokio::test]
async fn conformance_current_thread_runtime() {
    let Some(url) = url_with(PARAMS) else { return };
    run_all(&Fresh(url)).await;
}

/// A consumer (of another process) takes an entry and never acks it: after the lease, a
/// consumer of the group gets it, counted as a redelivery — and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_entry_is_reclaimed_after_the_lease() {
    let (Some(url), Some(raw_url)) = (url_with(PARAMS), raw_url()) else {
        return;
    };
    let broker = RedisBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("ghost"), unique("g"));
    // Create the group, then go away.
    drop(broker.subscribe(&topic, &group).await.expect("subscribe"));
    broker
        .publish(&topic, "k", Bytes::from_static(b"orphan"))
        .await
        .expect("publish");
    // A consumer that reads it and dies.
    let mut con = raw(&raw_url).await;
    let stream = format!("weir-test:stream:{topic}");
    let taken: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group)
        .arg("ghost")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut con)
        .await
        .expect("xreadgroup");
    assert!(
        !matches!(taken, redis::Value::Nil),
        "the ghost read nothing"
    );
    let started = Instant::now();

    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    nothing_within(
        &mut sub,
        Duration::from_millis(1200),
        "the entry before the lease ends",
    )
    .await;
    let d = recv_within(&mut sub, Duration::from_secs(10), "the reclaimed entry").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "reclaimed after {waited:?}"
    );
    assert_eq!(&d.payload[..], b"orphan");
    assert_eq!(d.key, "k");
    assert!(d.redeliveries >= 1, "redeliveries = {}", d.redeliveries);
    d.ack().await.expect("ack");
    nothing_within(&mut sub, Duration::from_millis(300), "after the ack").await;
    let pending: (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&stream)
        .arg(&group)
        .query_async(&mut con)
        .await
        .expect("xpending");
    assert_eq!(pending.0, 0, "entries still pending after the ack");
}

/// A process dies holding a delivery (its runtime goes away: no heartbeat, no requeue on
/// drop): a consumer of another "process" gets it after the lease.
#[test]
fn a_delivery_of_a_process_that_died_is_redelivered_after_the_lease() {
    let Some(url) = url_with(PARAMS) else { return };
    let (topic, group) = (unique("died"), unique("g"));

    let dying = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (delivery, sub) = dying.block_on(async {
        let broker = RedisBroker::connect(&url).await.expect("connect");
        let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
        broker
            .publish(&topic, "k", Bytes::from_static(b"in flight"))
            .await
            .expect("publish");
        (
            recv(&mut sub, "the delivery the dying process holds").await,
            sub,
        )
    });
    drop(dying); // the process is gone; what it held is dropped outside any runtime
    drop(delivery);
    drop(sub);
    let died = Instant::now();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let broker = RedisBroker::connect(&url).await.expect("connect");
        let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
        let d = recv_within(
            &mut sub,
            Duration::from_secs(15),
            "the redelivery to another process",
        )
        .await;
        let waited = died.elapsed();
        assert!(
            waited >= Duration::from_millis(1500),
            "redelivered after {waited:?}"
        );
        assert_eq!(&d.payload[..], b"in flight");
        assert!(d.redeliveries >= 1);
        d.ack().await.expect("ack");
        nothing_within(&mut sub, Duration::from_millis(300), "after the ack").await;
    });
}

/// A live consumer holding a delivery far longer than the lease keeps it: the heartbeat
/// renews the lease, so the group's other consumer does not get a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_live_consumer_keeps_its_delivery() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = RedisBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("slow"), unique("g"));
    let mut slow = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"long step"))
        .await
        .expect("publish");
    let d = recv(&mut slow, "the slow consumer's delivery").await;
    let mut other = broker.subscribe(&topic, &group).await.expect("subscribe");
    // Three leases.
    nothing_within(
        &mut other,
        Duration::from_secs(6),
        "the other consumer, while the slow one holds the delivery",
    )
    .await;
    d.ack().await.expect("ack");
    nothing_within(
        &mut other,
        Duration::from_millis(300),
        "the other consumer, after the ack",
    )
    .await;
}

/// A delayed nack survives the process that made it: the sorted set is in Redis, and any
/// subscriber of the group moves it when due.
#[test]
fn a_delayed_nack_survives_the_nacking_process() {
    let Some(url) = url_with(PARAMS) else { return };
    let (topic, group) = (unique("delay-died"), unique("g"));
    let dying = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    dying.block_on(async {
        let broker = RedisBroker::connect(&url).await.expect("connect");
        let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
        broker
            .publish(&topic, "k", Bytes::from_static(b"later"))
            .await
            .expect("publish");
        let d = recv(&mut sub, "the delivery to nack").await;
        d.nack(Some(Duration::from_millis(500)))
            .await
            .expect("nack");
    });
    drop(dying); // its local timer is gone
    let nacked = Instant::now();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let broker = RedisBroker::connect(&url).await.expect("connect");
        let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
        let d = recv_within(&mut sub, Duration::from_secs(5), "the delayed redelivery").await;
        let waited = nacked.elapsed();
        assert!(
            waited >= Duration::from_millis(450),
            "came back after {waited:?}"
        );
        assert_eq!(&d.payload[..], b"later");
        assert_eq!(d.redeliveries, 1);
        d.ack().await.expect("ack");
    });
}

/// Entries a subscription read but never handed out go back to the group when it is
/// dropped, at once (not after the lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_hands_back_its_buffer() {
    let Some(url) = url_with("prefix=weir-test&lease=30s&block=250ms") else {
        return;
    };
    let broker = RedisBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("handback"), unique("g"));
    let mut first = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..5)
        .map(|i| (format!("k{i}"), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("publish");
    // One read takes the whole batch into `first`'s buffer; it hands out one.
    assert_eq!(
        &take(&mut first, "the first subscription's message").await[..],
        b"m0"
    );
    drop(first);

    let mut second = broker.subscribe(&topic, &group).await.expect("subscribe");
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = recv_within(&mut second, Duration::from_secs(3), "a handed-back message").await;
        assert_eq!(
            d.redeliveries, 0,
            "a message never handed out counts no redelivery"
        );
        got.push(String::from_utf8_lossy(&d.payload).into_owned());
        d.ack().await.expect("ack");
    }
    got.sort();
    assert_eq!(got, ["m1", "m2", "m3", "m4"]);
    nothing_within(
        &mut second,
        Duration::from_millis(300),
        "after the handed-back messages",
    )
    .await;
}
