//! Behaviour beyond the conformance suite, on the test RabbitMQ (`WEIR_TEST_AMQP_URL`):
//! size limits, errors, name limits, redelivery counts, delays, dropped and cancelled
//! deliveries, dropped subscriptions, returned delayed messages.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{raw_connection, url_with, url_with_credentials};
use weir_broker_amqp::{AmqpBroker, AmqpBrokerConfig};
use weir_core::ErrorKind;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{nothing_within, recv, recv_within, take};
use weir_core::testkit::unique;

const PARAMS: &str = "prefix=weir-test-edge&queue_expires=2m";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_too_large() {
    let Some(url) = url_with(&format!("{PARAMS}&max_message_bytes=1024")) else {
        return;
    };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    assert_eq!(broker.capabilities().max_message_bytes, 1024);
    let (topic, group) = (unique("size"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let err = broker
        .publish(&topic, "k", Bytes::from(vec![0u8; 1025]))
        .await
        .expect_err("1025 bytes");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("max_bytes: 1024"), "{err}");
    // A batch with one oversized message publishes nothing.
    let batch = vec![
        ("a".to_owned(), Bytes::from_static(b"fine")),
        ("b".to_owned(), Bytes::from(vec![0u8; 2000])),
    ];
    let err = broker
        .publish_batch(&topic, batch)
        .await
        .expect_err("batch");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    nothing_within(
        &mut sub,
        Duration::from_millis(300),
        "the rejected messages",
    )
    .await;
    // Exactly the limit is fine.
    broker
        .publish(&topic, "k", Bytes::from(vec![1u8; 1024]))
        .await
        .expect("1024 bytes");
    assert_eq!(
        take(&mut sub, "the message of exactly the limit")
            .await
            .len(),
        1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_a_config_error_without_the_password() {
    let Some(bad) = url_with_credentials("weir-nobody", "s3cret-pw") else {
        return;
    };
    let err = AmqpBroker::connect(&bad)
        .await
        .expect_err("bad credentials");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_retryable(), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
}

#[tokio::test]
async fn unreachable_rabbitmq_is_unavailable() {
    // Needs no server: nothing listens on port 1.
    let started = Instant::now();
    let err = AmqpBroker::connect("amqp://u:s3cret@127.0.0.1:1/%2f?timeout=500ms")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_invalid_input() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    for (topic, group) in [("a.b", "g"), ("t", "g:1"), ("", "g"), ("t", "with space")] {
        let err = broker
            .subscribe(topic, group)
            .await
            .err()
            .expect("bad name accepted");
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidInput,
            "{topic}/{group}: {err}"
        );
    }
    let err = broker
        .publish("a.b", "k", Bytes::new())
        .await
        .expect_err("bad topic");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// The queue exists with another type: subscribing says so (permanent `Config` error), and
/// the broker keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_type_mismatch_is_a_config_error() {
    let (Some(quorum), Some(classic)) = (
        url_with(PARAMS),
        url_with(&format!("{PARAMS}&queue_type=classic")),
    ) else {
        return;
    };
    let (topic, group) = (unique("qtype"), unique("g"));
    let q = AmqpBroker::connect(&quorum).await.expect("connect");
    drop(q.subscribe(&topic, &group).await.expect("subscribe"));
    let c = AmqpBroker::connect(&classic).await.expect("connect");
    let err = c
        .subscribe(&topic, &group)
        .await
        .err()
        .expect("type mismatch accepted");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_retryable());
    // Publishing on the same broker still works.
    c.publish(&topic, "k", Bytes::from_static(b"x"))
        .await
        .expect("publish after a failed declaration");
}

/// Every nack counts: the count goes up by one per nack, with or without delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_count_every_nack() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("count"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "key-x", Bytes::from_static(b"again"))
        .await
        .expect("publish");
    let mut seen = Vec::new();
    for round in 0..4 {
        let d = recv(&mut sub, "a delivery to nack").await;
        assert_eq!(d.key, "key-x");
        seen.push(d.redeliveries);
        // Alternate plain and delayed nacks.
        let delay = (round % 2 == 1).then(|| Duration::from_millis(50));
        d.nack(delay).await.expect("nack");
    }
    let d = recv(&mut sub, "the delivery after four nacks").await;
    seen.push(d.redeliveries);
    d.ack().await.expect("ack");
    assert_eq!(seen, vec![0, 1, 2, 3, 4], "redelivery counts");
    nothing_within(&mut sub, Duration::from_millis(300), "after the ack").await;
}

/// Delays of different lengths: each comes back no earlier than asked, and not much later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_nacks_come_back_on_time() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("delays"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let delays = [1500u64, 300, 900];
    for ms in delays {
        broker
            .publish(&topic, "k", Bytes::from(ms.to_string()))
            .await
            .expect("publish");
    }
    let mut nacked_at = std::collections::HashMap::new();
    for _ in delays {
        let d = recv(&mut sub, "a delivery to nack with a delay").await;
        let ms: u64 = String::from_utf8_lossy(&d.payload).parse().expect("ms");
        nacked_at.insert(ms, Instant::now());
        d.nack(Some(Duration::from_millis(ms))).await.expect("nack");
    }
    for _ in delays {
        let d = recv_within(&mut sub, Duration::from_secs(10), "a delayed redelivery").await;
        let ms: u64 = String::from_utf8_lossy(&d.payload).parse().expect("ms");
        let waited = nacked_at[&ms].elapsed();
        assert!(
            waited >= Duration::from_millis(ms - 20),
            "{ms} ms delay came back after {waited:?}"
        );
        assert!(
            waited <= Duration::from_millis(ms * 5 / 4 + 500),
            "{ms} ms delay came back after {waited:?}"
        );
        assert!(d.redeliveries >= 1);
        d.ack().await.expect("ack");
    }
}

/// A delay above the ceiling is scheduled at the ceiling and reported as `InvalidInput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_above_the_ceiling_is_reported() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let max = broker
        .capabilities()
        .max_native_delay
        .expect("native delay");
    assert_eq!(max, weir_broker_amqp::MAX_NATIVE_DELAY);
    let (topic, group) = (unique("ceiling"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"far"))
        .await
        .expect("publish");
    let d = recv(&mut sub, "the delivery to nack").await;
    let err = d
        .nack(Some(max + Duration::from_secs(1)))
        .await
        .expect_err("beyond the ceiling");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    nothing_within(
        &mut sub,
        Duration::from_millis(300),
        "the message nacked with a delay above the ceiling",
    )
    .await;
}

/// A dropped subscription hands back what RabbitMQ sent ahead to it; a delivery it handed out
/// can still be acked after the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_subscription_hands_back_its_prefetch() {
    const N: usize = 20;
    let Some(url) = url_with(&format!("{PARAMS}&prefetch=50")) else {
        return;
    };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("handback"), unique("g"));
    let mut first = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..N)
        .map(|i| (format!("k{i}"), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("publish");
    // The first subscription takes one (and holds the rest in its prefetch), then goes away.
    let kept = recv(&mut first, "the first subscription's delivery").await;
    let kept_payload = String::from_utf8_lossy(&kept.payload).into_owned();
    drop(first);
    let mut second = broker.subscribe(&topic, &group).await.expect("subscribe");
    let mut got = BTreeSet::new();
    for _ in 0..N - 1 {
        let d = recv(&mut second, "a handed-back message").await;
        got.insert(String::from_utf8_lossy(&d.payload).into_owned());
        d.ack().await.expect("ack");
    }
    kept.ack()
        .await
        .expect("ack after the subscription was dropped");
    got.insert(kept_payload);
    let expected: BTreeSet<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
    nothing_within(
        &mut second,
        Duration::from_millis(500),
        "after the handed-back messages",
    )
    .await;
}

/// Concurrent publishes on one broker share its channel: all are confirmed and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = std::sync::Arc::new(AmqpBroker::connect(&url).await.expect("connect"));
    let (topic, group) = (unique("concurrent"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (broker, topic) = (broker.clone(), topic.clone());
            tokio::spawn(async move {
                for i in 0..50 {
                    broker
                        .publish(&topic, "k", Bytes::from(format!("{t}-{i}")))
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("publisher");
    }
    let mut got = BTreeSet::new();
    for _ in 0..400 {
        got.insert(take(&mut sub, "a published message").await);
    }
    assert_eq!(got.len(), 400);
}

/// The topic exchange deleted under the broker (by an operator): the next publish declares it
/// again instead of failing, but the bindings went with it: until a subscription of the group
/// binds its queue again, what is published is stored nowhere (README, Limits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_exchange_is_declared_again_without_its_bindings() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("deleted"), unique("g"));
    let mut before = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"first"))
        .await
        .expect("publish");
    assert_eq!(&take(&mut before, "the first message").await[..], b"first");
    let raw = raw_connection().await;
    let channel = raw.create_channel().await.expect("channel");
    channel
        .exchange_delete(
            format!("weir-test-edge.{topic}").as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .expect("exchange.delete");
    let started = Instant::now();
    broker
        .publish(&topic, "k", Bytes::from_static(b"second"))
        .await
        .expect("publish after the exchange was deleted");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The exchange is back, its binding to the group queue is not: "second" went nowhere.
    nothing_within(
        &mut before,
        Duration::from_millis(500),
        "the message published while the binding is gone",
    )
    .await;
    // A subscription of the group binds the queue again.
    drop(before);
    let mut again = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"third"))
        .await
        .expect("publish");
    assert_eq!(
        &take(&mut again, "the message after the queue was bound again").await[..],
        b"third"
    );
    let _ = raw.close(200, "OK".into()).await;
}

/// Names whose queue `{prefix}.{topic}.{group}` would exceed AMQP's 255 bytes are refused with
/// `InvalidInput` (lapin would panic on them); exactly 255 bytes work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_over_255_bytes_are_invalid_input() {
    let prefix = format!("weir-test-long{}", "x".repeat(86));
    assert_eq!(prefix.len(), 100);
    let Some(url) = url_with(&format!("prefix={prefix}&queue_expires=2m")) else {
        return;
    };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let mut topic = unique("t");
    topic.push_str(&"t".repeat(120 - topic.len()));
    assert_eq!(topic.len(), 120);
    let err = broker
        .subscribe(&topic, &"g".repeat(120))
        .await
        .err()
        .expect("a 342-byte queue name accepted");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(!err.is_retryable());
    let err = broker
        .subscribe(&topic, &"g".repeat(34))
        .await
        .err()
        .expect("a 256-byte queue name accepted");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    // 100 + 1 + 120 + 1 + 33 = 255 bytes: a real queue, and a delayed nack (its routing key is
    // the queue name) brings the message back.
    let mut sub = broker
        .subscribe(&topic, &"g".repeat(33))
        .await
        .expect("a 255-byte queue name");
    broker
        .publish(&topic, "k", Bytes::from_static(b"long"))
        .await
        .expect("publish");
    let d = recv(&mut sub, "the delivery to nack").await;
    d.nack(Some(Duration::from_millis(50)))
        .await
        .expect("delayed nack");
    assert_eq!(&take(&mut sub, "the delayed redelivery").await[..], b"long");
}

/// A delayed nack cancelled before its delayed copy was published (its future dropped): the
/// message is requeued at once, instead of staying unacked on the live channel (holding a
/// prefetch slot) until `consumer_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_delayed_nack_requeues_the_message() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("cancel"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"cancelled"))
        .await
        .expect("publish");
    let d = recv(&mut sub, "the delivery to nack").await;
    // Polled once (it starts declaring the delay bucket), then dropped.
    let nack = tokio::time::timeout(Duration::ZERO, d.nack(Some(Duration::from_secs(3600))));
    assert!(nack.await.is_err(), "the delayed nack finished in one poll");
    let again = recv_within(
        &mut sub,
        Duration::from_secs(5),
        "the message requeued by the cancelled nack",
    )
    .await;
    assert_eq!(&again.payload[..], b"cancelled");
    assert!(again.redeliveries >= 1, "{}", again.redeliveries);
    again.ack().await.expect("ack");
    nothing_within(&mut sub, Duration::from_millis(300), "after the ack").await;
}

/// A delivery dropped on a thread without a tokio runtime is requeued too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_dropped_outside_a_runtime_is_requeued() {
    let Some(url) = url_with(PARAMS) else { return };
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("noruntime"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"dropped"))
        .await
        .expect("publish");
    let d = recv(&mut sub, "the delivery to drop").await;
    std::thread::spawn(move || {
        assert!(tokio::runtime::Handle::try_current().is_err());
        drop(d);
    })
    .join()
    .expect("thread");
    let again = recv_within(
        &mut sub,
        Duration::from_secs(5),
        "the message requeued by the drop",
    )
    .await;
    assert_eq!(&again.payload[..], b"dropped");
    assert!(again.redeliveries >= 1, "{}", again.redeliveries);
    again.ack().await.expect("ack");
}

/// Delayed copies whose delay queue was deleted (so RabbitMQ returns them as unroutable)
/// while other tasks publish to a topic on the same broker: each returned copy is noticed as
/// such (the queue is declared again and the copy published again), never mistaken for a
/// confirmed one, so no message is lost; and no topic publish fails or is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_delayed_copies_are_never_taken_for_confirmed() {
    const ROUNDS: usize = 30;
    let prefix = format!("weir-test-ret-{:08x}", rand::random::<u32>());
    let Some(url) = url_with(&format!("prefix={prefix}&queue_expires=2m")) else {
        return;
    };
    let broker = std::sync::Arc::new(AmqpBroker::connect(&url).await.expect("connect"));
    let (topic, busy) = (unique("ret"), unique("busy"));
    let mut sub = broker
        .subscribe(&topic, &unique("g"))
        .await
        .expect("subscribe");
    let mut busy_sub = broker
        .subscribe(&busy, &unique("g"))
        .await
        .expect("subscribe");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers: Vec<_> = (0..4)
        .map(|t| {
            let (broker, busy, stop) = (broker.clone(), busy.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    broker
                        .publish(&busy, "k", Bytes::from(format!("{t}-{n}")))
                        .await
                        .expect("topic publish beside returned delayed copies");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let raw = raw_connection().await;
    let channel = raw.create_channel().await.expect("channel");
    // 50 ms goes to the 56 ms bucket.
    let delay_queue = format!("{prefix}:delay:56");
    for round in 0..ROUNDS {
        let payload = format!("m{round}");
        broker
            .publish(&topic, "k", Bytes::from(payload.clone()))
            .await
            .expect("publish");
        let d = recv(&mut sub, "the delivery to nack").await;
        assert_eq!(String::from_utf8_lossy(&d.payload), payload);
        if round > 0 {
            // Declared by the broker in an earlier round, deleted behind its back.
            channel
                .queue_delete(
                    delay_queue.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await
                .expect("queue.delete");
        }
        d.nack(Some(Duration::from_millis(50)))
            .await
            .expect("delayed nack");
        let back = recv_within(
            &mut sub,
            Duration::from_secs(10),
            "the returned delayed copy",
        )
        .await;
        assert_eq!(
            String::from_utf8_lossy(&back.payload),
            payload,
            "round {round}"
        );
        assert!(back.redeliveries >= 1);
        back.ack().await.expect("ack");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut published = 0;
    for task in publishers {
        published += task.await.expect("publisher");
    }
    let mut got = BTreeSet::new();
    for _ in 0..published {
        got.insert(take(&mut busy_sub, "a message of the busy topic").await);
    }
    assert_eq!(got.len(), published);
    nothing_within(
        &mut busy_sub,
        Duration::from_millis(300),
        "the busy topic, after every message",
    )
    .await;
    nothing_within(&mut sub, Duration::from_millis(300), "after every round").await;
    let _ = channel
        .queue_delete(
            delay_queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
    let _ = raw.close(200, "OK".into()).await;
}

/// Settings a program set out of range after parsing are refused by `with_config` (a
/// `Config` error), not a panic computing a deadline. Needs no server.
#[tokio::test]
async fn out_of_range_settings_are_refused_by_with_config() {
    let mut config = AmqpBrokerConfig::from_url("amqp://u:s3cret@127.0.0.1:1/%2f").expect("parse");
    config.timeout = Duration::MAX;
    let err = AmqpBroker::with_config(config.clone())
        .await
        .expect_err("timeout = Duration::MAX");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("timeout"), "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    config.timeout = Duration::from_secs(1);
    config.reconnect_max = Duration::from_secs(24 * 3600);
    let err = AmqpBroker::with_config(config)
        .await
        .expect_err("reconnect_max = 1 day");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
