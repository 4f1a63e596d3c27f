//! Leases on the test endpoint (`WEIR_TEST_SQS_URL`): a hung nack does not cost the other
//! deliveries their lease, a busy consumer does not sit on buffered messages, and what a
//! cancelled `next()` received is neither lost for the visibility timeout nor delivered late.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::proxy::Proxy;
use common::url_with;
use tokio::time::timeout;
use weir_broker_sqs::SqsBroker;
use weir_core::ErrorKind;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{nothing_within, recv, recv_within};
use weir_core::testkit::unique;

/// A nack whose connection died silently (the proxy swallows it) fails with a retryable
/// `Timeout` within about `visibility / 3`, and meanwhile the heartbeat keeps renewing the
/// other delivery the consumer holds: a competing consumer (another process) never gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_nack_costs_no_other_lease() {
    let Some(url) = url_with("visibility=3s&wait=2s&refresh=500ms") else {
        return;
    };
    let Some(proxy) = Proxy::start(&url, b"AmazonSQS.ChangeMessageVisibility\r\n").await else {
        eprintln!("skipped: the proxy needs a plain http:// endpoint");
        return;
    };
    let holder = SqsBroker::connect(&proxy.url).await.expect("connect");
    let other = SqsBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("hung"), unique("g"));
    let mut a = holder.subscribe(&topic, &group).await.expect("subscribe");
    let mut b = other.subscribe(&topic, &group).await.expect("subscribe");
    let batch = vec![
        ("k1".to_owned(), Bytes::from_static(b"nacked")),
        ("k2".to_owned(), Bytes::from_static(b"held")),
    ];
    other.publish_batch(&topic, batch).await.expect("publish");
    let (d1, d2) = (
        recv(&mut a, "the first message").await,
        recv(&mut a, "the second message").await,
    );
    let (nacked, held) = if &d1.payload[..] == b"nacked" {
        (d1, d2)
    } else {
        (d2, d1)
    };
    assert_eq!(&held.payload[..], b"held");

    proxy.arm();
    let nack = tokio::spawn(async move {
        let started = Instant::now();
        let result = nacked.nack(None).await;
        (result, started.elapsed())
    });
    // Three visibility timeouts: "held" must stay with `a`. "nacked" may come (its nack never
    // arrived, so it comes back after the visibility timeout).
    let deadline = Instant::now() + Duration::from_secs(9);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Ok(next) = timeout(left, b.next()).await {
            let d = next.expect("next");
            assert_eq!(
                &d.payload[..],
                b"nacked",
                "a held delivery went to another consumer while a nack hung"
            );
            d.ack().await.expect("ack");
        }
    }
    assert!(proxy.swallowed() >= 1, "the nack did not reach the proxy");
    let (result, took) = timeout(Duration::from_secs(1), nack)
        .await
        .expect("the hung nack still had not returned after 9 s")
        .expect("join");
    let err = result.expect_err("the nack's request vanished");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    assert!(took < Duration::from_millis(2500), "nack took {took:?}");
    held.ack()
        .await
        .expect("ack after three visibility timeouts");
}

/// A consumer that holds one delivery and asks for no more does not keep the rest of its
/// poll: buffered messages older than `visibility / 2` go back, and a competing consumer gets
/// them well within the visibility timeout's multiple; the held delivery stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_consumer_hands_back_its_buffer() {
    let Some(url) = url_with("visibility=2s&wait=1s&refresh=500ms") else {
        return;
    };
    let broker = SqsBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("busy"), unique("g"));
    let mut a = broker.subscribe(&topic, &group).await.expect("subscribe");
    let mut b = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..5)
        .map(|i| (format!("k{i}"), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("publish");
    let held = recv(&mut a, "the held delivery").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = recv_within(&mut b, Duration::from_secs(8), "a handed-back message").await;
        assert_ne!(
            d.payload, held.payload,
            "the held delivery was handed out twice"
        );
        assert!(d.redeliveries >= 1, "a handed-back message is a redelivery");
        got.push(d.payload.clone());
        d.ack().await.expect("ack");
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 4, "{got:?}");
    nothing_within(
        &mut b,
        Duration::from_secs(3),
        "after the handed-back messages",
    )
    .await;
    held.ack().await.expect("ack");
}

/// A `next()` cancelled while its poll runs, then the subscription dropped: what the poll
/// received goes back at once, not after the (long) visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_hands_back_what_its_cancelled_poll_got() {
    let Some(url) = url_with("visibility=30s&wait=3s&refresh=500ms") else {
        return;
    };
    let broker = SqsBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("cancel"), unique("g"));
    let mut a = broker.subscribe(&topic, &group).await.expect("subscribe");
    assert!(
        timeout(Duration::from_millis(300), a.next()).await.is_err(),
        "nothing was published yet"
    );
    broker
        .publish(&topic, "k", Bytes::from_static(b"caught"))
        .await
        .expect("publish");
    // The poll started by the cancelled next() receives it meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(a);
    let mut c = broker.subscribe(&topic, &group).await.expect("subscribe");
    let d = recv_within(
        &mut c,
        Duration::from_secs(8),
        "the message the cancelled poll got",
    )
    .await;
    assert_eq!(&d.payload[..], b"caught");
    assert!(
        d.redeliveries >= 1,
        "the cancelled poll had not received it"
    );
    d.ack().await.expect("ack");
}

/// A `next()` cancelled while its poll runs, and called again only after three visibility
/// timeouts: what the poll received went back meanwhile (another process got it), and the
/// late `next()` does not deliver it a second time with a stale receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_next_does_not_deliver_a_stale_poll() {
    let Some(url) = url_with("visibility=2s&wait=3s&refresh=500ms") else {
        return;
    };
    let (one, two) = (
        SqsBroker::connect(&url).await.expect("connect"),
        SqsBroker::connect(&url).await.expect("connect"),
    );
    let (topic, group) = (unique("late"), unique("g"));
    let mut a = one.subscribe(&topic, &group).await.expect("subscribe");
    let mut b = two.subscribe(&topic, &group).await.expect("subscribe");
    assert!(timeout(Duration::from_millis(300), a.next()).await.is_err());
    one.publish(&topic, "k", Bytes::from_static(b"once"))
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let d = recv(&mut b, "the message, at the other process").await;
    assert_eq!(&d.payload[..], b"once");
    nothing_within(&mut a, Duration::from_secs(2), "the late next()").await;
    d.ack().await.expect("ack");
}

/// An ack whose `DeleteMessageBatch` vanishes (its connection went silent) is tried again on a
/// fresh call after `visibility / 3`, and succeeds; meanwhile another ack of the same consumer
/// goes through at once (deletes run side by side), and neither acked message ever reaches a
/// competing consumer (the one being acked is renewed until its delete is answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_ack_holds_up_no_other_ack_and_keeps_its_lease() {
    let Some(url) = url_with("visibility=6s&wait=1s&refresh=500ms") else {
        return;
    };
    let Some(proxy) = Proxy::start(&url, b"AmazonSQS.DeleteMessageBatch\r\n").await else {
        eprintln!("skipped: the proxy needs a plain http:// endpoint");
        return;
    };
    let holder = SqsBroker::connect(&proxy.url).await.expect("connect");
    let other = SqsBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("hung-ack"), unique("g"));
    let mut a = holder.subscribe(&topic, &group).await.expect("subscribe");
    let batch = vec![
        ("k1".to_owned(), Bytes::from_static(b"first")),
        ("k2".to_owned(), Bytes::from_static(b"second")),
    ];
    other.publish_batch(&topic, batch).await.expect("publish");
    let d1 = recv(&mut a, "the first message").await;
    let d2 = recv(&mut a, "the second message").await;
    let mut b = other.subscribe(&topic, &group).await.expect("subscribe");

    proxy.arm_once();
    let first = tokio::spawn(async move {
        let started = Instant::now();
        (d1.ack().await, started.elapsed())
    });
    // Wait until the first delete vanished, then ack the second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.swallowed() == 0 {
        assert!(
            Instant::now() < deadline,
            "the first ack's delete never reached the proxy"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    timeout(Duration::from_secs(3), d2.ack())
        .await
        .expect("the second ack waited behind the hung one")
        .expect("second ack");
    let second_took = started.elapsed();
    assert!(
        second_took < Duration::from_millis(1_800),
        "the second ack took {second_took:?}: it waited for the hung delete (2 s bound)"
    );

    let (result, took) = timeout(Duration::from_secs(10), first)
        .await
        .expect("the hung ack never returned")
        .expect("join");
    result.expect("the hung ack succeeds on its second call");
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(7),
        "the hung ack took {took:?}; its call is bounded to visibility / 3 (2 s)"
    );
    // Two visibility timeouts: neither message comes back to anyone.
    nothing_within(&mut b, Duration::from_secs(12), "an acked message").await;
    nothing_within(&mut a, Duration::from_millis(300), "an acked message").await;
}

/// FIFO: an `ack()` cancelled before its outcome (say under a `timeout`) does not leave its
/// key busy: the key's next message is still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_ack_does_not_block_its_fifo_key() {
    let Some(url) = url_with("fifo=true&visibility=3s&wait=1s&ack_linger=300ms&refresh=500ms")
    else {
        return;
    };
    let broker = SqsBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("cancel-ack"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = vec![
        ("K".to_owned(), Bytes::from_static(b"k0")),
        ("K".to_owned(), Bytes::from_static(b"k1")),
    ];
    broker.publish_batch(&topic, batch).await.expect("publish");
    let d0 = recv(&mut sub, "the key's first message").await;
    assert_eq!(&d0.payload[..], b"k0");
    // The ack waits up to 300 ms for others to share its delete: cancelled well before.
    assert!(
        timeout(Duration::from_millis(20), d0.ack()).await.is_err(),
        "the ack was expected to still be lingering"
    );
    let d1 = recv_within(&mut sub, Duration::from_secs(15), "the key's next message").await;
    assert_eq!(&d1.payload[..], b"k1");
    d1.ack().await.expect("ack");
}

/// A buffered message whose lease was set a while ago (its consumer stopped asking, so the
/// heartbeat stopped renewing it) is renewed as it is handed out: when the heartbeat's next
/// rounds then fail, the delivery keeps its lease, and a competing consumer does not get it.
/// (Handed out as it was, its lease would run out `visibility` after its last renewal, while
/// the rounds fail.)
///
/// Timeline with `visibility=9s` (heartbeat every 3 s, each round bounded to 3 s; buffered
/// messages renewed while the consumer asked within 4.5 s, handed back once 4.5 s old while it
/// does not): the second message, buffered, is renewed at 3 s and not at 6 s; `next()` at
/// 8 s takes it (5 s old: over `visibility / 3`, so renewed now, until 17 s); the rounds
/// at 9 s and 12 s vanish, the one at 15 s renews. Without the renewal at hand-out the lease
/// would end at 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aged_buffered_message_is_renewed_as_it_is_handed_out() {
    let Some(url) = url_with("visibility=9s&wait=1s&refresh=500ms") else {
        return;
    };
    let Some(proxy) = Proxy::start(&url, b"AmazonSQS.ChangeMessageVisibilityBatch\r\n").await
    else {
        eprintln!("skipped: the proxy needs a plain http:// endpoint");
        return;
    };
    let holder = SqsBroker::connect(&proxy.url).await.expect("connect");
    let other = SqsBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("aged"), unique("g"));
    let mut a = holder.subscribe(&topic, &group).await.expect("subscribe");
    let subscribed = Instant::now();
    let batch = vec![
        ("k1".to_owned(), Bytes::from_static(b"first")),
        ("k2".to_owned(), Bytes::from_static(b"second")),
    ];
    other.publish_batch(&topic, batch).await.expect("publish");
    let first = recv(&mut a, "the first message").await;
    let first_payload = first.payload.clone();
    first.ack().await.expect("ack");
    let mut b = other.subscribe(&topic, &group).await.expect("subscribe");

    tokio::time::sleep_until((subscribed + Duration::from_millis(8_000)).into()).await;
    proxy.arm_times(2);
    let second = recv_within(&mut a, Duration::from_secs(1), "the buffered message").await;
    let mut payloads = [&first_payload[..], &second.payload[..]];
    payloads.sort();
    assert_eq!(payloads, [&b"first"[..], &b"second"[..]]);

    // Past the failed rounds and the lease the message would have had without the renewal.
    let until = subscribed + Duration::from_secs(20);
    nothing_within(
        &mut b,
        until.saturating_duration_since(Instant::now()),
        "a held delivery",
    )
    .await;
    assert_eq!(
        proxy.swallowed(),
        2,
        "the heartbeat rounds at 9 s and 12 s vanished"
    );
    second.ack().await.expect("ack");
}
