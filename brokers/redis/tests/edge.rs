//! Edge cases of [`RedisBroker`] beyond the conformance suite, and the recovery cases a dead
//! consumer brings (need `WEIR_TEST_REDIS_URL`).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{raw, raw_url, url_with};
use tokio::time::timeout;
use weir_broker_redis::{MAX_NATIVE_DELAY, RedisBroker};
use weir_core::ErrorKind;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{nothing_within, recv, recv_within, take};
use weir_core::testkit::unique;

const PARAMS: &str = "prefix=weir-test&lease=2s&block=250ms";

async fn broker(params: &str) -> Option<RedisBroker> {
    let url = url_with(params)?;
    Some(RedisBroker::connect(&url).await.expect("connect"))
}

async fn xlen(stream: &str) -> i64 {
    let url = raw_url().expect("url");
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut raw(&url).await)
        .await
        .expect("xlen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_is_cancel_safe_under_load() {
    const N: usize = 300;
    let Some(broker) = broker(PARAMS).await else {
        return;
    };
    let broker = Arc::new(broker);
    let (topic, group) = (unique("cancel"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let publisher = {
        let broker = broker.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for i in 0..N {
                broker
                    .publish(&topic, "k", Bytes::from(format!("m{i}")))
                    .await
                    .expect("publish");
                if i % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    // Cancel next() all the time; nothing may be lost or duplicated.
    let mut got = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut cancelled = 0;
    while got.len() < N && tokio::time::Instant::now() < deadline {
        match timeout(Duration::from_micros(300), sub.next()).await {
            Err(_) => cancelled += 1,
            Ok(d) => {
                let d = d.expect("next");
                assert_eq!(d.redeliveries, 0, "redelivered: lost in a cancelled next()");
                let payload = String::from_utf8_lossy(&d.payload).into_owned();
                assert!(got.insert(payload.clone()), "{payload} delivered twice");
                d.ack().await.expect("ack");
            }
        }
    }
    publisher.await.expect("publisher");
    assert_eq!(
        got.len(),
        N,
        "lost messages ({cancelled} cancelled next() calls)"
    );
    assert!(cancelled > 0, "the test never cancelled next()");
    nothing_within(&mut sub, Duration::from_millis(300), "after every message").await;
}

#[tokio::test]
async fn redeliveries_count_every_nack_and_drop() {
    let Some(broker) = broker(PARAMS).await else {
        return;
    };
    let (topic, group) = (unique("count"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"x"))
        .await
        .expect("publish");
    recv(&mut sub, "the first delivery")
        .await
        .nack(None)
        .await
        .expect("nack");
    drop(recv(&mut sub, "the delivery after a nack").await);
    recv(&mut sub, "the delivery after a drop")
        .await
        .nack(Some(Duration::from_millis(10)))
        .await
        .expect("nack");
    let d = recv(&mut sub, "the delivery after a delayed nack").await;
    assert_eq!(d.redeliveries, 3);
    assert_eq!(d.key, "k");
    d.ack().await.expect("ack");
    nothing_within(&mut sub, Duration::from_millis(300), "after the ack").await;
    // Acked redeliveries are deleted from the group's retry stream.
    assert_eq!(xlen(&format!("weir-test:retry:{topic}:{group}")).await, 0);
}

/// Acks made together go out in few `XACK`s, each still answered only once Redis has it: after
/// every ack returned nothing is pending, and the group's retry stream is empty again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_made_together_share_commands_and_lose_nothing() {
    const N: usize = 400;
    let Some(broker) = broker(&format!("{PARAMS}&count={N}")).await else {
        return;
    };
    let (topic, group) = (unique("acks"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..N)
        .map(|i| ("k".to_owned(), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("publish");
    // Half of them come back through the retry stream (nacked once).
    let mut deliveries = Vec::with_capacity(N);
    for i in 0..N {
        let d = recv(&mut sub, "a first delivery").await;
        if i % 2 == 0 {
            d.nack(None).await.expect("nack");
        } else {
            deliveries.push(d);
        }
    }
    while deliveries.len() < N {
        deliveries.push(recv(&mut sub, "a redelivery after a nack").await);
    }
    assert_eq!(
        deliveries.iter().filter(|d| d.redeliveries == 1).count(),
        N / 2
    );

    let before = broker.ack_commands();
    let acks: Vec<_> = deliveries
        .into_iter()
        .map(|d| tokio::spawn(d.ack()))
        .collect();
    for ack in acks {
        ack.await.expect("ack task").expect("ack");
    }
    let commands = broker.ack_commands() - before;
    // One per ack without batching; here the first goes alone and the rest wait for it.
    assert!(
        (2..(N / 4) as u64).contains(&commands),
        "{commands} ack commands for {N} acks"
    );

    let url = raw_url().expect("url");
    let mut conn = raw(&url).await;
    for stream in [
        format!("weir-test:stream:{topic}"),
        format!("weir-test:retry:{topic}:{group}"),
    ] {
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(&group)
            .query_async(&mut conn)
            .await
            .expect("xpending");
        let redis::Value::Array(summary) = pending else {
            panic!("XPENDING answered {pending:?}");
        };
        assert_eq!(summary.first(), Some(&redis::Value::Int(0)), "{stream}");
    }
    assert_eq!(xlen(&format!("weir-test:retry:{topic}:{group}")).await, 0);
    nothing_within(&mut sub, Duration::from_millis(300), "after every ack").await;
}

#[tokio::test]
async fn oversized_payloads_are_rejected_and_batches_are_all_or_nothing() {
    let Some(broker) = broker("prefix=weir-test&lease=2s&max_message_bytes=1024").await else {
        return;
    };
    assert_eq!(broker.capabilities().max_message_bytes, 1024);
    let (topic, group) = (unique("big"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let big = Bytes::from(vec![0u8; 1025]);
    let err = broker
        .publish(&topic, "k", big.clone())
        .await
        .expect_err("accepted > max");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(!err.is_retryable());
    let batch = vec![
        ("k".to_owned(), Bytes::from_static(b"ok")),
        ("k".to_owned(), big),
    ];
    let err = broker
        .publish_batch(&topic, batch)
        .await
        .expect_err("accepted > max");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    nothing_within(
        &mut sub,
        Duration::from_millis(300),
        "the rejected messages",
    )
    .await;
    broker
        .publish_batch(&topic, Vec::new())
        .await
        .expect("empty batch");
}

#[tokio::test]
async fn messages_before_any_group_go_to_the_first_group() {
    let Some(broker) = broker(PARAMS).await else {
        return;
    };
    let topic = unique("early");
    broker
        .publish(&topic, "k", Bytes::from_static(b"early"))
        .await
        .expect("publish");
    let mut first = broker
        .subscribe(&topic, &unique("g"))
        .await
        .expect("subscribe");
    assert_eq!(&take(&mut first, "the early message").await[..], b"early");
    nothing_within(
        &mut first,
        Duration::from_millis(300),
        "after the early message",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_entries_are_trimmed_once_every_group_has_them() {
    let Some(broker) = broker(PARAMS).await else {
        return;
    };
    let topic = unique("trim");
    let stream = format!("weir-test:stream:{topic}");
    let mut a = broker
        .subscribe(&topic, &unique("ga"))
        .await
        .expect("subscribe");
    let b_group = unique("gb");
    drop(broker.subscribe(&topic, &b_group).await.expect("subscribe"));
    for i in 0..20 {
        broker
            .publish(&topic, "k", Bytes::from(format!("m{i}")))
            .await
            .expect("publish");
    }
    for _ in 0..20 {
        take(&mut a, "group a's messages").await;
    }
    // `a` trims every lease (2 s); group b has read nothing, so nothing goes.
    nothing_within(
        &mut a,
        Duration::from_millis(2500),
        "group a, while group b has read nothing",
    )
    .await;
    assert_eq!(
        xlen(&stream).await,
        20,
        "trimmed entries group b has not read"
    );

    let mut b = broker.subscribe(&topic, &b_group).await.expect("subscribe");
    for _ in 0..10 {
        take(&mut b, "group b's first ten messages").await;
    }
    nothing_within(
        &mut a,
        Duration::from_millis(2500),
        "group a, after group b read ten",
    )
    .await;
    assert_eq!(
        xlen(&stream).await,
        10,
        "not trimmed to what group b still needs"
    );
    for _ in 0..10 {
        take(&mut b, "group b's last ten messages").await;
    }
    nothing_within(
        &mut a,
        Duration::from_millis(2500),
        "group a, after group b read all",
    )
    .await;
    assert_eq!(xlen(&stream).await, 0, "acked entries kept");
}

#[tokio::test]
async fn maxlen_caps_the_stream() {
    let Some(broker) = broker("prefix=weir-test&maxlen=10").await else {
        return;
    };
    let topic = unique("maxlen");
    let batch = (0..1000)
        .map(|i| (format!("k{i}"), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("publish");
    let len = xlen(&format!("weir-test:stream:{topic}")).await;
    // Approximate trimming (`~`) keeps whole stream nodes (100 entries by default).
    assert!((10..=200).contains(&len), "XLEN {len}");
}

#[tokio::test]
async fn a_delay_beyond_the_ceiling_is_scheduled_at_it_and_reported() {
    let Some(broker) = broker(PARAMS).await else {
        return;
    };
    assert_eq!(
        broker.capabilities().max_native_delay,
        Some(MAX_NATIVE_DELAY)
    );
    let (topic, group) = (unique("ceiling"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"x"))
        .await
        .expect("publish");
    let err = recv(&mut sub, "the delivery to nack")
        .await
        .nack(Some(MAX_NATIVE_DELAY * 2))
        .await
        .expect_err("delay beyond the ceiling");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let url = raw_url().expect("url");
    let delayed: i64 = redis::cmd("ZCARD")
        .arg(format!("weir-test:delayed:{topic}:{group}"))
        .query_async(&mut raw(&url).await)
        .await
        .expect("zcard");
    assert_eq!(delayed, 1, "the message was not kept");
    nothing_within(
        &mut sub,
        Duration::from_millis(300),
        "the message nacked with a delay beyond the ceiling",
    )
    .await;
}

#[tokio::test]
async fn a_dropped_subscription_deletes_its_consumer() {
    let Some(broker) = broker(PARAMS).await else {
        return;
    };
    let (topic, group) = (unique("forget"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"x"))
        .await
        .expect("publish");
    take(&mut sub, "the message").await;
    drop(sub);
    let url = raw_url().expect("url");
    let mut con = raw(&url).await;
    let stream = format!("weir-test:stream:{topic}");
    let mut consumers = usize::MAX;
    for _ in 0..50 {
        let list: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg(&group)
            .query_async(&mut con)
            .await
            .expect("xinfo");
        consumers = list.len();
        if consumers == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        consumers, 0,
        "the consumer of a dropped subscription is still listed"
    );
}

#[tokio::test]
async fn bad_names_are_invalid_input() {
    let Some(broker) = broker(PARAMS).await else {
        return;
    };
    for (topic, group) in [("a:b", "g"), ("t", "g:1"), ("", "g"), ("t", "with space")] {
        let err = broker
            .subscribe(topic, group)
            .await
            .err()
            .expect("accepted");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{topic}/{group}");
    }
    let err = broker
        .publish("a:b", "k", Bytes::new())
        .await
        .expect_err("accepted");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = RedisBroker::connect(&format!("redis://:pw@127.0.0.1:{port}?timeout=200ms"))
        .await
        .expect_err("connected to nothing");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(!format!("{err:?}").contains(":pw@"), "{err:?}");
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
