//! SQS-specific behaviour on the test endpoint (`WEIR_TEST_SQS_URL`): batches of 10, the
//! visibility heartbeat, delayed nacks, a process that died holding a delivery, messages
//! published before any group, deleted queues, empty keys and payloads, FIFO key order, size
//! limits, an unreachable endpoint.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use common::url_with;
use tokio::time::timeout;
use weir_broker_sqs::{MAX_MESSAGE_BYTES, SqsBroker};
use weir_core::ErrorKind;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{nothing_within, recv, recv_within, take};
use weir_core::testkit::unique;

const PARAMS: &str = "visibility=2s&wait=5s&refresh=500ms";

async fn broker() -> Option<SqsBroker> {
    let url = url_with(PARAMS)?;
    Some(SqsBroker::connect(&url).await.expect("connect"))
}

/// Visible plus in-flight messages of a queue.
async fn messages_in(broker: &SqsBroker, topic: &str, group: &str) -> u64 {
    let name = broker.queue_name(topic, group);
    let url = broker
        .client()
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .expect("queue url")
        .queue_url
        .expect("url");
    let attrs = broker
        .client()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("attributes");
    let attrs = attrs.attributes.unwrap_or_default();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|a| {
        attrs
            .get(a)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    })
    .sum()
}

/// 25 messages in one `publish_batch` (3 `SendMessageBatch` calls) all arrive; 25 acks made
/// at once (deleted in batches of up to 10) all succeed and leave the queue empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_ten() {
    let Some(broker) = broker().await else { return };
    let (topic, group) = (unique("batch"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..25)
        .map(|i| (format!("k{i}"), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("batch");
    let mut deliveries = Vec::new();
    for _ in 0..25 {
        deliveries.push(recv(&mut sub, "a message of the batch").await);
    }
    let mut got: Vec<String> = deliveries
        .iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect();
    got.sort();
    let mut expected: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(got, expected);
    let acks: Vec<_> = deliveries
        .into_iter()
        .map(|d| tokio::spawn(d.ack()))
        .collect();
    for ack in acks {
        ack.await.expect("join").expect("ack");
    }
    nothing_within(&mut sub, Duration::from_millis(500), "after the acks").await;
    assert_eq!(messages_in(&broker, &topic, &group).await, 0);
}

/// A delivery held three times as long as the visibility timeout is not given to another
/// consumer meanwhile (the heartbeat extends it); acked, it never comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_delivery_stays_invisible() {
    let Some(broker) = broker().await else { return };
    let (topic, group) = (unique("held"), unique("g"));
    let mut a = broker.subscribe(&topic, &group).await.expect("subscribe");
    let mut b = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"slow"))
        .await
        .expect("publish");
    let d = recv(&mut a, "the held delivery").await;
    nothing_within(
        &mut b,
        Duration::from_secs(6),
        "the other consumer, while the delivery is held",
    )
    .await;
    d.ack().await.expect("ack");
    nothing_within(
        &mut b,
        Duration::from_secs(3),
        "the other consumer, after the ack",
    )
    .await;
}

/// A nack with a 1.5 s delay comes back after it (whole seconds: 2 s), counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_nack() {
    let Some(broker) = broker().await else { return };
    let (topic, group) = (unique("delay"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"later"))
        .await
        .expect("publish");
    let d = recv(&mut sub, "the delivery to nack").await;
    assert_eq!(d.redeliveries, 0);
    let nacked = Instant::now();
    d.nack(Some(Duration::from_millis(1500)))
        .await
        .expect("nack");
    let d = recv_within(&mut sub, Duration::from_secs(10), "the delayed redelivery").await;
    assert!(
        nacked.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        nacked.elapsed()
    );
    assert_eq!(&d.payload[..], b"later");
    assert_eq!(d.redeliveries, 1);
    d.ack().await.expect("ack");
    let err = recv_nack_too_long(&broker, &topic, &group).await;
    assert_eq!(err, ErrorKind::InvalidInput);
}

async fn recv_nack_too_long(broker: &SqsBroker, topic: &str, group: &str) -> ErrorKind {
    let mut sub = broker.subscribe(topic, group).await.expect("subscribe");
    broker
        .publish(topic, "k", Bytes::from_static(b"much later"))
        .await
        .expect("publish");
    let d = recv(&mut sub, "the delivery to nack").await;
    d.nack(Some(Duration::from_secs(3600)))
        .await
        .expect_err("a delay over 15 minutes")
        .kind()
}

/// A process dies holding a delivery (its runtime goes away: no heartbeat, no hand-back):
/// another consumer gets it after the visibility timeout, counted as a redelivery.
#[test]
fn a_dead_process_delivery_comes_back() {
    let Some(url) = url_with(PARAMS) else { return };
    let (topic, group) = (unique("dead"), unique("g"));
    let dying = tokio::runtime::Runtime::new().expect("runtime");
    dying.block_on(async {
        let broker = SqsBroker::connect(&url).await.expect("connect");
        let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
        broker
            .publish(&topic, "k", Bytes::from_static(b"orphan"))
            .await
            .expect("publish");
        let d = recv(&mut sub, "the delivery the dying process holds").await;
        std::mem::forget(d);
        std::mem::forget(sub);
    });
    drop(dying);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let broker = SqsBroker::connect(&url).await.expect("connect");
        let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
        let started = Instant::now();
        let d = recv_within(
            &mut sub,
            Duration::from_secs(20),
            "the redelivery to another process",
        )
        .await;
        assert_eq!(&d.payload[..], b"orphan");
        assert!(d.redeliveries >= 1);
        assert!(started.elapsed() < Duration::from_secs(15));
        d.ack().await.expect("ack");
    });
}

/// Published while the topic has no group: kept in the holding queue and moved to the group
/// that subscribes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_before_any_group_is_kept() {
    let Some(broker) = broker().await else { return };
    let topic = unique("early");
    broker
        .publish(&topic, "k1", Bytes::from_static(b"early-1"))
        .await
        .expect("publish");
    broker
        .publish_batch(&topic, vec![("k2".into(), Bytes::from_static(b"early-2"))])
        .await
        .expect("publish");
    let mut sub = broker.subscribe(&topic, "late").await.expect("subscribe");
    let mut got = vec![
        take(&mut sub, "a held message").await,
        take(&mut sub, "the other held message").await,
    ];
    got.sort();
    assert_eq!(
        got,
        vec![
            Bytes::from_static(b"early-1"),
            Bytes::from_static(b"early-2")
        ]
    );
    // From now on the group queue gets them directly.
    broker
        .publish(&topic, "k3", Bytes::from_static(b"direct"))
        .await
        .expect("publish");
    assert_eq!(
        &take(&mut sub, "the message published to the group queue").await[..],
        b"direct"
    );
}

/// A group queue deleted by hand: publish forgets it and, with no group left, keeps the
/// message in the holding queue for the next group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_group_queue_is_forgotten() {
    let Some(broker) = broker().await else { return };
    let topic = unique("gone");
    let sub = broker.subscribe(&topic, "old").await.expect("subscribe");
    drop(sub);
    let name = broker.queue_name(&topic, "old");
    let url = broker
        .client()
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .expect("queue url")
        .queue_url
        .expect("url");
    broker
        .client()
        .delete_queue()
        .queue_url(url)
        .send()
        .await
        .expect("delete");
    broker
        .publish(&topic, "k", Bytes::from_static(b"kept"))
        .await
        .expect("publish after the group queue was deleted");
    let mut sub = broker.subscribe(&topic, "new").await.expect("subscribe");
    assert_eq!(
        &take(&mut sub, "the message kept for the next group").await[..],
        b"kept"
    );
}

/// The largest payload round-trips intact; one byte more is `TooLarge`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits() {
    let Some(broker) = broker().await else { return };
    let (topic, group) = (unique("size"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let payload: Bytes = (0..MAX_MESSAGE_BYTES)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    broker
        .publish(&topic, "big", payload.clone())
        .await
        .expect("publish the largest payload");
    let d = recv(&mut sub, "the largest payload").await;
    assert!(d.payload == payload, "payload changed");
    d.ack().await.expect("ack");
    let too_big = Bytes::from(vec![0u8; MAX_MESSAGE_BYTES + 1]);
    let err = broker
        .publish(&topic, "big", too_big)
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(!err.is_retryable());
}

/// FIFO: after a nack (and after a dropped delivery) the key's order holds, although the
/// next messages of the key were received together with the nacked one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_key_order_survives_nack_and_drop() {
    let Some(url) = url_with("visibility=3s&wait=1s&refresh=500ms&fifo=true") else {
        return;
    };
    let broker = SqsBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("fifo"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..5)
        .map(|i| ("the-key".to_owned(), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("batch");
    let d = recv(&mut sub, "m0").await;
    assert_eq!(&d.payload[..], b"m0");
    d.nack(None).await.expect("nack");
    let d = recv(&mut sub, "m0 after its nack").await;
    assert_eq!(&d.payload[..], b"m0", "m0 was overtaken after its nack");
    assert!(d.redeliveries >= 1);
    d.ack().await.expect("ack");
    let d = recv(&mut sub, "m1").await;
    assert_eq!(&d.payload[..], b"m1");
    drop(d);
    for i in 1..5 {
        let d = recv(&mut sub, "a message after the drop").await;
        assert_eq!(
            d.payload,
            Bytes::from(format!("m{i}")),
            "order after a drop"
        );
        d.ack().await.expect("ack");
    }
    nothing_within(&mut sub, Duration::from_millis(500), "after every message").await;
}

/// An endpoint where nothing listens: `Unavailable`, retryable.
#[tokio::test]
async fn unreachable_endpoint_is_unavailable() {
    let url =
        "sqs://w?region=us-east-1&endpoint=http://127.0.0.1:9&access_key_id=a&secret_access_key=b";
    let err = SqsBroker::connect(url).await.expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(!format!("{err:?}").contains("secret_access_key=b"));
}

/// The URL of queue `name`.
async fn queue_url(broker: &SqsBroker, name: &str) -> String {
    broker
        .client()
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .expect("queue url")
        .queue_url
        .expect("url")
}

async fn delete_queue(broker: &SqsBroker, name: &str) {
    let url = queue_url(broker, name).await;
    broker
        .client()
        .delete_queue()
        .queue_url(url)
        .send()
        .await
        .expect("delete");
}

/// An empty key and an empty payload (each travels without its attribute, which AWS would
/// refuse empty) arrive as sent, through `publish` and `publish_batch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_key_and_payload() {
    let Some(broker) = broker().await else { return };
    let (topic, group) = (unique("empty"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let cases = [("", ""), ("", "p"), ("k", "")];
    for (key, payload) in cases {
        broker
            .publish(&topic, key, Bytes::from(payload))
            .await
            .expect("publish");
    }
    let batch = cases
        .iter()
        .map(|(k, p)| ((*k).to_owned(), Bytes::from(*p)))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("batch");
    let mut got = Vec::new();
    for _ in 0..6 {
        let d = recv(&mut sub, "an empty key or payload").await;
        got.push((d.key.clone(), d.payload.clone()));
        d.ack().await.expect("ack");
    }
    got.sort();
    let mut expected: Vec<(String, Bytes)> = cases
        .iter()
        .chain(cases.iter())
        .map(|(k, p)| ((*k).to_owned(), Bytes::from(*p)))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}

/// The holding queue deleted by hand after `publish` cached its URL: the next publish to the
/// group-less topic creates it again instead of failing until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_holding_queue_is_created_again() {
    let Some(broker) = broker().await else { return };
    let topic = unique("hold");
    broker
        .publish(&topic, "k", Bytes::from_static(b"lost"))
        .await
        .expect("publish");
    delete_queue(&broker, &broker.holding_queue_name(&topic)).await;
    broker
        .publish(&topic, "k", Bytes::from_static(b"kept"))
        .await
        .expect("publish after the holding queue was deleted");
    let mut sub = broker.subscribe(&topic, "g").await.expect("subscribe");
    assert_eq!(
        &take(
            &mut sub,
            "the message published after the holding queue was deleted"
        )
        .await[..],
        b"kept"
    );
}

/// The holding-queue mover meets a group queue that was deleted (one this process still
/// knows from a subscription): it forgets it and moves the held message into the live group
/// instead of failing every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mover_forgets_a_deleted_group_queue() {
    let Some(url) = url_with(PARAMS) else { return };
    let consumer = SqsBroker::connect(&url).await.expect("connect");
    let publisher = SqsBroker::connect(&url).await.expect("connect");
    let topic = unique("move");
    // Sorted first, so the old mover tried it before the live one.
    let _gone = consumer
        .subscribe(&topic, "a-gone")
        .await
        .expect("subscribe");
    delete_queue(&consumer, &consumer.queue_name(&topic, "a-gone")).await;
    // Another process sees no group queue: the message waits in the holding queue.
    publisher
        .publish(&topic, "k", Bytes::from_static(b"moved"))
        .await
        .expect("publish");
    let mut live = consumer
        .subscribe(&topic, "b-live")
        .await
        .expect("subscribe");
    assert_eq!(&take(&mut live, "the moved message").await[..], b"moved");
    nothing_within(&mut live, Duration::from_secs(2), "after the moved message").await;
}

/// FIFO: a key's next buffered message waits until the key's delivery is settled (other keys
/// pass it); a nack made while a poll is in flight brings the message back once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_key_waits_for_its_delivery() {
    let Some(url) = url_with("visibility=3s&wait=1s&refresh=500ms&fifo=true") else {
        return;
    };
    let broker = SqsBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("fifo"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = vec![
        ("K".to_owned(), Bytes::from_static(b"k0")),
        ("K".to_owned(), Bytes::from_static(b"k1")),
        ("J".to_owned(), Bytes::from_static(b"j0")),
    ];
    broker.publish_batch(&topic, batch).await.expect("batch");
    let k0 = recv(&mut sub, "k0").await;
    assert_eq!(&k0.payload[..], b"k0");
    let j0 = recv(&mut sub, "j0").await;
    assert_eq!(&j0.payload[..], b"j0", "another key passes a busy one");
    j0.ack().await.expect("ack");
    nothing_within(
        &mut sub,
        Duration::from_millis(1500),
        "k1, while k0 is held",
    )
    .await;
    // Nack k0 while a next() (and its poll) is in flight.
    let nack = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        k0.nack(None).await
    });
    let again = recv(&mut sub, "k0 after its nack").await;
    nack.await.expect("join").expect("nack");
    assert_eq!(&again.payload[..], b"k0", "k1 overtook k0");
    assert_eq!(again.redeliveries, 1, "k0 was received more than twice");
    assert!(
        timeout(Duration::from_millis(500), sub.next())
            .await
            .is_err(),
        "k1 handed out while k0 is in process"
    );
    again.ack().await.expect("ack");
    let k1 = recv(&mut sub, "k1").await;
    assert_eq!(&k1.payload[..], b"k1");
    k1.ack().await.expect("ack");
    nothing_within(&mut sub, Duration::from_millis(500), "after every message").await;
}
