//! What Kafka makes hard, on a librdkafka mock cluster: out-of-order acks, nack by
//! republishing, redelivery counting across consumers, flow control, limits, errors.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{WAIT, url_with};
use weir_broker_kafka::KafkaBroker;
use weir_core::ErrorKind;
use weir_core::broker::{Broker, Delivery};
use weir_core::testkit::broker::{nothing_within, recv_within, take_within, text};
use weir_core::testkit::unique;

const PARAMS: &str = "prefix=weir-ktest&topic_creation=auto&commit_interval=100ms\
                      &session.timeout.ms=2500&heartbeat.interval.ms=250";

async fn broker(extra: &str) -> KafkaBroker {
    KafkaBroker::connect(&url_with(&format!("{PARAMS}&{extra}")))
        .await
        .expect("connect")
}

async fn publish_all(broker: &KafkaBroker, topic: &str, key: &str, payloads: &[&str]) {
    for p in payloads {
        broker
            .publish(topic, key, Bytes::from(p.to_string()))
            .await
            .expect("publish");
    }
}

/// Acks out of order commit only the contiguous acked prefix, and the commit metadata records
/// what was acked above it: a restarted consumer of the group gets exactly the unacked
/// messages again, each counted as a redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_acks_redeliver_exactly_the_unacked() {
    let broker = broker("revoke_grace=300ms").await;
    let (topic, group) = (unique("ooo"), unique("g"));
    let mut first = broker.subscribe(&topic, &group).await.expect("subscribe");
    let all: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    publish_all(&broker, &topic, "one-key", &refs).await;

    let mut held: Vec<Option<Delivery>> = Vec::new();
    for i in 0..10 {
        let d = recv_within(&mut first, WAIT, "a first delivery").await;
        assert_eq!(text(&d), format!("m{i}"), "one key, publish order");
        assert_eq!(d.redeliveries, 0);
        held.push(Some(d));
    }
    // Ack 6, 3, 0, 4, 1 (out of order); 2, 5, 7, 8, 9 stay unacked.
    for i in [6, 3, 0, 4, 1] {
        let d = held[i].take().expect("held");
        d.ack().await.expect("ack");
    }
    // The consumer dies holding the rest: it leaves without acking or nacking them (a
    // delivery dropped inside a runtime is republished; leak them instead, as a crash would).
    let unacked: Vec<Delivery> = held.into_iter().flatten().collect();
    drop(first);
    std::mem::forget(unacked);

    let mut second = broker.subscribe(&topic, &group).await.expect("subscribe");
    let mut got = Vec::new();
    for _ in 0..5 {
        let d = recv_within(
            &mut second,
            WAIT,
            "an unacked message, at the second consumer",
        )
        .await;
        assert!(
            d.redeliveries >= 1,
            "{} was handed out before: redeliveries = {}",
            text(&d),
            d.redeliveries
        );
        got.push(text(&d));
        d.ack().await.expect("ack");
    }
    assert_eq!(
        got,
        ["m2", "m5", "m7", "m8", "m9"],
        "exactly the unacked, in order"
    );
    nothing_within(
        &mut second,
        Duration::from_millis(500),
        "the second consumer, after the unacked messages",
    )
    .await;

    // Everything is acked and committed now: a third consumer gets nothing.
    drop(second);
    let mut third = broker.subscribe(&topic, &group).await.expect("subscribe");
    nothing_within(&mut third, Duration::from_secs(4), "the third consumer").await;
}

/// A nack republishes the message at the end of its partition for the nacking group only:
/// it comes back after the messages of its key published before the nack and before those
/// published after; another group of the topic never sees the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_republishes_in_key_order_for_its_group_only() {
    let broker = broker("").await;
    let topic = unique("nack-order");
    let mut a = broker
        .subscribe(&topic, &unique("ga"))
        .await
        .expect("subscribe");
    let mut b = broker
        .subscribe(&topic, &unique("gb"))
        .await
        .expect("subscribe");
    publish_all(&broker, &topic, "run-1", &["m0", "m1", "m2", "m3"]).await;

    let d = recv_within(&mut a, WAIT, "m0, to nack").await;
    assert_eq!(text(&d), "m0");
    d.nack(None).await.expect("nack");
    for expected in ["m1", "m2", "m3"] {
        assert_eq!(
            &take_within(&mut a, WAIT, "a message after the nacked one").await[..],
            expected.as_bytes()
        );
    }
    let again = recv_within(&mut a, WAIT, "m0 after its nack").await;
    assert_eq!(text(&again), "m0", "the nacked message comes back after m3");
    assert_eq!(again.key, "run-1");
    assert_eq!(again.redeliveries, 1);
    // Nacked twice: counted twice.
    again.nack(None).await.expect("nack");
    let third = recv_within(&mut a, WAIT, "m0 after its second nack").await;
    assert_eq!((text(&third).as_str(), third.redeliveries), ("m0", 2));
    third.ack().await.expect("ack");
    publish_all(&broker, &topic, "run-1", &["m4"]).await;
    assert_eq!(&take_within(&mut a, WAIT, "m4").await[..], b"m4");
    nothing_within(&mut a, Duration::from_millis(300), "group a, after m4").await;

    for expected in ["m0", "m1", "m2", "m3", "m4"] {
        let d = recv_within(&mut b, WAIT, "a message of the other group").await;
        assert_eq!(text(&d), expected, "the other group: each once, in order");
        assert_eq!(d.redeliveries, 0);
        d.ack().await.expect("ack");
    }
    nothing_within(
        &mut b,
        Duration::from_millis(500),
        "the other group, after every message",
    )
    .await;
}

/// A delivery dropped without ack or nack comes back (republished) to the same consumer: at
/// once the first time, then after a backoff growing with its redeliveries (1 s, 2 s…), so a
/// handler that keeps dropping it does not loop hot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_comes_back_with_a_backoff() {
    let broker = broker("").await;
    let (topic, group) = (unique("dropped"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    publish_all(&broker, &topic, "k", &["lost?"]).await;
    let first = recv_within(&mut sub, WAIT, "the delivery to drop").await;
    let mut dropped_at = Instant::now();
    drop(first);
    for (redeliveries, backoff_ms) in [(1, 0), (2, 1000), (3, 2000)] {
        let d = recv_within(&mut sub, WAIT, "a redelivery after a drop").await;
        let waited = dropped_at.elapsed();
        assert_eq!(text(&d), "lost?");
        assert_eq!(d.redeliveries, redeliveries);
        assert!(
            waited >= Duration::from_millis(backoff_ms).saturating_sub(Duration::from_millis(100)),
            "redelivery {redeliveries} after {waited:?}"
        );
        if redeliveries == 1 {
            assert!(waited < Duration::from_millis(900), "{waited:?}");
        }
        if redeliveries == 3 {
            d.ack().await.expect("ack");
        } else {
            dropped_at = Instant::now();
            drop(d);
        }
    }
    nothing_within(&mut sub, Duration::from_millis(300), "after the ack").await;
}

/// A dropped delivery waiting for its republish (dropped a second time) is not held:
/// closing the subscription does not wait `revoke_grace` for it, and the republish is given
/// up (the group's next consumer gets the original, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_does_not_hold_up_a_close() {
    let broker = broker("revoke_grace=5s").await;
    let (topic, group) = (unique("dropped-close"), unique("g"));
    let mut first = broker.subscribe(&topic, &group).await.expect("subscribe");
    publish_all(&broker, &topic, "k", &["m0"]).await;
    drop(recv_within(&mut first, WAIT, "the delivery to drop").await);
    let again = recv_within(&mut first, WAIT, "the redelivery after the drop").await;
    assert_eq!(again.redeliveries, 1);
    drop(again); // republished after 1 s
    drop(first);
    let started = Instant::now();
    let mut second = broker.subscribe(&topic, &group).await.expect("subscribe");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the close waited {:?}",
        started.elapsed()
    );
    let d = recv_within(
        &mut second,
        WAIT,
        "the message, at the group's next consumer",
    )
    .await;
    assert_eq!((text(&d).as_str(), d.redeliveries), ("m0", 2));
    d.ack().await.expect("ack");
    nothing_within(
        &mut second,
        Duration::from_secs(3),
        "the next consumer, after the ack",
    )
    .await;
}

/// A nack with a delay does not hold its offset: when the partition goes meanwhile (here:
/// the subscription is dropped), the close does not wait for it, and no copy is made after
/// the delay: the partition's next owner delivers the original, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_nack_does_not_outlive_its_partition() {
    let broker = broker("revoke_grace=5s").await;
    let (topic, group) = (unique("delayed"), unique("g"));
    let mut first = broker.subscribe(&topic, &group).await.expect("subscribe");
    publish_all(&broker, &topic, "k", &["m0"]).await;
    let d = recv_within(&mut first, WAIT, "the delivery to nack").await;
    d.nack(Some(Duration::from_secs(2)))
        .await
        .expect("a delayed nack returns at once");
    drop(first);
    let started = Instant::now();
    let mut second = broker.subscribe(&topic, &group).await.expect("subscribe");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the close waited {:?}",
        started.elapsed()
    );
    let d = recv_within(
        &mut second,
        WAIT,
        "the message, at the partition's next owner",
    )
    .await;
    assert_eq!((text(&d).as_str(), d.redeliveries), ("m0", 1));
    d.ack().await.expect("ack");
    nothing_within(
        &mut second,
        Duration::from_secs(4),
        "the next owner, after the ack",
    )
    .await;
}

/// Each owner of a partition commits on what its predecessor left: A acks m1..m9 but not
/// m0 and dies; B gets m0 again and dies holding it; C gets m0 only, not m1..m9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_pass_on_what_their_predecessors_acked() {
    let broker = broker("revoke_grace=300ms").await;
    let (topic, group) = (unique("inherit"), unique("g"));
    let mut a = broker.subscribe(&topic, &group).await.expect("subscribe");
    let all: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    publish_all(&broker, &topic, "one-key", &refs).await;
    let mut held = Vec::new();
    for i in 0..10 {
        let d = recv_within(&mut a, WAIT, "a message, at consumer a").await;
        assert_eq!(text(&d), format!("m{i}"));
        if i == 0 {
            held.push(d);
        } else {
            d.ack().await.expect("ack");
        }
    }
    drop(a);
    std::mem::forget(held); // a crash: m0 neither acked nor nacked

    let mut b = broker.subscribe(&topic, &group).await.expect("subscribe");
    let d = recv_within(&mut b, WAIT, "m0, at consumer b").await;
    assert_eq!((text(&d).as_str(), d.redeliveries), ("m0", 1));
    tokio::time::sleep(Duration::from_millis(500)).await; // B commits meanwhile
    drop(b);
    std::mem::forget(d);

    let mut c = broker.subscribe(&topic, &group).await.expect("subscribe");
    let d = recv_within(&mut c, WAIT, "m0, at consumer c").await;
    assert_eq!(text(&d), "m0");
    assert!(d.redeliveries >= 1, "handed out before");
    d.ack().await.expect("ack");
    nothing_within(&mut c, Duration::from_secs(1), "consumer c, after m0").await;
}

/// `publish_batch` keeps one key's messages in order even when librdkafka's queue is full
/// (here it holds 5 messages): a record that does not fit is tried again before the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_batch_keeps_key_order_when_the_queue_is_full() {
    let broker = broker("queue.buffering.max.messages=5").await;
    let (topic, group) = (unique("batch-order"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..300)
        .map(|i| ("k".to_string(), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("publish");
    for i in 0..300 {
        let d = recv_within(&mut sub, WAIT, "a message of the batch").await;
        assert_eq!(text(&d), format!("m{i}"));
        d.ack().await.expect("ack");
    }
    nothing_within(&mut sub, Duration::from_millis(300), "after the batch").await;
}

/// Messages a subscription took from Kafka but never handed out go to the group's next
/// consumer when it is dropped, not counted as redeliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_hands_back_what_it_did_not_hand_out() {
    let broker = broker("").await;
    let (topic, group) = (unique("handback"), unique("g"));
    let mut first = broker.subscribe(&topic, &group).await.expect("subscribe");
    publish_all(&broker, &topic, "k", &["m0", "m1", "m2", "m3", "m4"]).await;
    assert_eq!(&take_within(&mut first, WAIT, "m0").await[..], b"m0");
    // Let the consumer thread take the rest from Kafka before the drop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);

    let mut second = broker.subscribe(&topic, &group).await.expect("subscribe");
    for expected in ["m1", "m2", "m3", "m4"] {
        let d = recv_within(&mut second, WAIT, "a handed-back message").await;
        assert_eq!(text(&d), expected);
        assert_eq!(
            d.redeliveries, 0,
            "a message never handed out counts no redelivery"
        );
        d.ack().await.expect("ack");
    }
    nothing_within(
        &mut second,
        Duration::from_millis(500),
        "after the handed-back messages",
    )
    .await;
}

/// With `prefetch=4` the consumer thread stops taking messages from librdkafka while 4 wait
/// for `next()`: a slow consumer still gets all 60 messages of a key, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_loses_nothing() {
    let broker = broker("prefetch=4").await;
    let (topic, group) = (unique("prefetch"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..60)
        .map(|i| ("k".to_string(), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("publish");
    for i in 0..60 {
        if i % 15 == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            String::from_utf8_lossy(&take_within(&mut sub, WAIT, "a message of the key").await),
            format!("m{i}")
        );
    }
    nothing_within(&mut sub, Duration::from_millis(300), "after every message").await;
}

/// A payload over `max_message_bytes` fails with `TooLarge` before anything is sent; a batch
/// with one such payload sends none of its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_fails_before_sending() {
    let broker = broker("max_message_bytes=1024").await;
    let (topic, group) = (unique("large"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let err = broker
        .publish(&topic, "k", Bytes::from(vec![7u8; 1025]))
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(!err.is_retryable());
    let batch = vec![
        ("k".to_string(), Bytes::from_static(b"small")),
        ("k".to_string(), Bytes::from(vec![7u8; 1025])),
    ];
    let err = broker
        .publish_batch(&topic, batch)
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    broker
        .publish(&topic, "k", Bytes::from(vec![7u8; 1024]))
        .await
        .expect("exactly the limit");
    let d = recv_within(&mut sub, WAIT, "the message of exactly the limit").await;
    assert_eq!(
        d.payload.len(),
        1024,
        "the small message of the batch was not sent"
    );
    d.ack().await.expect("ack");
    nothing_within(
        &mut sub,
        Duration::from_millis(300),
        "the rejected messages",
    )
    .await;
}

/// Two groups and a consumer joining a group later: every group gets every message, and the
/// late consumer of a group does not get what the group already acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_partitions_and_groups_get_everything() {
    let broker = broker("").await;
    let (topic, group) = (unique("spread"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..40)
        .map(|i| (format!("run-{}", i % 8), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("publish");
    let mut got = BTreeSet::new();
    let mut last_per_key = std::collections::HashMap::new();
    for _ in 0..40 {
        let d = recv_within(&mut sub, WAIT, "a message of the batch").await;
        let n: usize = text(&d)[1..].parse().expect("number");
        if let Some(prev) = last_per_key.insert(d.key.clone(), n) {
            assert!(prev < n, "key {} out of order: m{prev} then m{n}", d.key);
        }
        assert!(got.insert(n), "m{n} twice");
        d.ack().await.expect("ack");
    }
    drop(sub);
    let mut late = broker.subscribe(&topic, &group).await.expect("subscribe");
    nothing_within(&mut late, Duration::from_secs(4), "the late consumer").await;
}

/// `topic_creation=admin` on a cluster whose `CreateTopics` times out (the mock, which lacks
/// the request): a retryable `Unavailable`, each time (a timeout says nothing about the
/// cluster's abilities: no fall back to automatic creation with the cluster's defaults).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_topic_creation_timing_out_is_retryable() {
    let url = url_with(
        "prefix=weir-ktest&topic_creation=admin&timeout=1s&session.timeout.ms=2500\
         &heartbeat.interval.ms=250",
    );
    let broker = KafkaBroker::connect(&url).await.expect("connect");
    let topic = unique("admin");
    for _ in 0..2 {
        let err = broker
            .publish(&topic, "k", Bytes::from_static(b"x"))
            .await
            .expect_err("CreateTopics times out");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("creating the topic"), "{err}");
    }
}

/// `topic_creation=none`: a missing topic is an error, not created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_creation_none_needs_existing_topics() {
    let url = url_with("prefix=weir-ktest&topic_creation=none&timeout=1s");
    let broker = KafkaBroker::connect(&url).await.expect("connect");
    let err = broker
        .publish(&unique("missing"), "k", Bytes::from_static(b"x"))
        .await
        .expect_err("missing topic");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// No broker answering: `connect` fails with a retryable `Unavailable`, without secrets.
#[tokio::test]
async fn unreachable_cluster_is_unavailable() {
    let err = KafkaBroker::connect("kafka://127.0.0.1:1?timeout=500ms&sasl.password=s3cret")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
}

/// Topic and group names become Kafka names: other characters are refused.
#[tokio::test]
async fn bad_names_are_invalid_input() {
    let broker = KafkaBroker::connect(&url_with(PARAMS))
        .await
        .expect("connect");
    let err = broker
        .publish("a topic", "k", Bytes::from_static(b"x"))
        .await
        .expect_err("space");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = broker.subscribe("t", "g/1").await.err().expect("slash");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
