//! Tests that look inside a subscription, each on a librdkafka mock cluster of its own (the
//! errors injected into one disturb no other test).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use weir_core::ErrorKind;
use weir_core::broker::{Broker, Delivery, Subscription};

use crate::subscription::KafkaSubscription;
use crate::{AdminFailure, KafkaBroker, admin_failure};

const PARAMS: &str = "prefix=weir-itest&topic_creation=auto&commit_interval=100ms\
                      &session.timeout.ms=2500&heartbeat.interval.ms=250";

async fn broker(
    cluster: &MockCluster<'_, impl rdkafka::ClientContext>,
    extra: &str,
) -> KafkaBroker {
    let url = format!("kafka://{}?{PARAMS}&{extra}", cluster.bootstrap_servers());
    KafkaBroker::connect(&url).await.expect("connect")
}

async fn recv(sub: &mut KafkaSubscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(15), sub.next())
        .await
        .expect("no delivery in time")
        .expect("next failed")
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.payload).into_owned()
}

async fn nothing_within(sub: &mut KafkaSubscription, within: Duration) {
    if let Ok(result) = tokio::time::timeout(within, sub.next()).await {
        panic!("unexpected delivery {result:?}");
    }
}

/// Waits (up to 10 s) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "not in time: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn held(sub: &KafkaSubscription) -> usize {
    let tracker = sub.shared().tracker();
    tracker.held(&tracker.partitions())
}

/// A republish that fails (here: Kafka refuses the produce request) is retried in the
/// background with backoff, holding nothing meanwhile; once it goes through, the message
/// comes back once and the original counts as acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_republish_is_retried_in_the_background() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let broker = broker(&cluster, "timeout=1s").await;
    let mut sub = broker.open("retry", "g").await.expect("subscribe");
    broker
        .publish("retry", "k", Bytes::from_static(b"m0"))
        .await
        .expect("publish");
    let d = recv(&mut sub).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
    );
    let err = d.nack(None).await.expect_err("the first republish fails");
    assert!(err.to_string().contains("publish"), "{err}");
    assert_eq!(sub.shared().in_flight.load(Ordering::SeqCst), 1, "retrying");
    assert_eq!(held(&sub), 0, "nothing held while waiting to retry");

    let again = recv(&mut sub).await;
    assert_eq!((text(&again).as_str(), again.redeliveries), ("m0", 1));
    again.ack().await.expect("ack");
    eventually("the retry finished", || {
        sub.shared().in_flight.load(Ordering::SeqCst) == 0
    })
    .await;
    nothing_within(&mut sub, Duration::from_millis(500)).await;
    // The original counts as acked: everything is committed.
    let points = sub.shared().tracker().commit_points(None, true);
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(
        (points[0].offset, points[0].metadata.as_str()),
        (2, "weir:d=1")
    );
}

/// A nack whose future is dropped at once (a cancelled handler) still republishes: the
/// copy comes back and the original does not stay held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_nack_still_republishes() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let broker = broker(&cluster, "").await;
    let mut sub = broker.open("cancel", "g").await.expect("subscribe");
    broker
        .publish("cancel", "k", Bytes::from_static(b"m0"))
        .await
        .expect("publish");
    let d = recv(&mut sub).await;
    let _ = tokio::time::timeout(Duration::ZERO, d.nack(None)).await;
    let again = recv(&mut sub).await;
    assert_eq!((text(&again).as_str(), again.redeliveries), ("m0", 1));
    again.ack().await.expect("ack");
    eventually("nothing held", || held(&sub) == 0).await;
    nothing_within(&mut sub, Duration::from_millis(500)).await;
}

/// While `prefetch` messages wait for `next()`, the subscription pauses its partitions:
/// the messages it took stay bounded however long the handler stalls, and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscription_takes_no_more_than_prefetch() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let broker = broker(&cluster, "prefetch=4").await;
    let mut sub = broker.open("stall", "g").await.expect("subscribe");
    let batch = (0..100)
        .map(|i| ("k".to_string(), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch("stall", batch).await.expect("publish");
    let first = recv(&mut sub).await;
    assert_eq!(text(&first), "m0");
    first.ack().await.expect("ack");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let queued = sub.shared().queued.load(Ordering::SeqCst);
    assert!(queued <= 5, "{queued} messages taken while stalled");
    assert!(sub.shared().paused.load(Ordering::SeqCst), "paused");
    for i in 1..100 {
        let d = recv(&mut sub).await;
        assert_eq!(text(&d), format!("m{i}"));
        d.ack().await.expect("ack");
    }
    assert!(!sub.shared().paused.load(Ordering::SeqCst), "resumed");
    nothing_within(&mut sub, Duration::from_millis(300)).await;
}

/// Failing offset commits are counted (and warned about past a few in a row); once Kafka
/// takes them again the count resets and the acked offsets are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_commits_are_counted_and_retried() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let broker = broker(&cluster, "").await;
    let mut sub = broker.open("commits", "g").await.expect("subscribe");
    broker
        .publish("commits", "k", Bytes::from_static(b"m0"))
        .await
        .expect("publish");
    let d = recv(&mut sub).await;
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 12],
    );
    d.ack().await.expect("ack");
    let failures = || sub.shared().commit_failures.lock().expect("lock").0;
    eventually("commit failures counted", || {
        failures() >= crate::subscription::COMMIT_WARN_AFTER
    })
    .await;
    assert!(
        sub.shared()
            .commit_failures
            .lock()
            .expect("lock")
            .1
            .is_some(),
        "warned"
    );
    eventually("commits succeed again", || failures() == 0).await;
    drop(sub);
    let mut next = broker.open("commits", "g").await.expect("subscribe");
    nothing_within(&mut next, Duration::from_secs(4)).await;
}

/// `topic_creation=admin`: which `CreateTopics` failures fall back to automatic creation.
#[test]
fn admin_failures() {
    use RDKafkaErrorCode as C;
    assert_eq!(
        admin_failure(C::UnsupportedVersion),
        AdminFailure::Unsupported
    );
    assert_eq!(
        admin_failure(C::UnsupportedFeature),
        AdminFailure::Unsupported
    );
    assert_eq!(
        admin_failure(C::TopicAuthorizationFailed),
        AdminFailure::NotAllowed
    );
    assert_eq!(
        admin_failure(C::ClusterAuthorizationFailed),
        AdminFailure::NotAllowed
    );
    for refused in [
        C::InvalidReplicationFactor,
        C::InvalidPartitions,
        C::PolicyViolation,
        C::InvalidConfig,
    ] {
        assert_eq!(admin_failure(refused), AdminFailure::Refused, "{refused:?}");
    }
    for transient in [
        C::RequestTimedOut,
        C::OperationTimedOut,
        C::NotController,
        C::Fail,
    ] {
        assert_eq!(
            admin_failure(transient),
            AdminFailure::Other(ErrorKind::Unavailable),
            "{transient:?}"
        );
    }
}
