//! Broker conformance suite: every [`Broker`] driver runs [`run_all`] with a
//! [`Factory<dyn Broker>`](Factory); and helpers for a broker's own tests ([`recv`],
//! [`recv_within`], [`take`], [`take_within`], [`nothing_within`], [`text`]; names from
//! [`unique`]).
//!
//! Each test uses topic and group names of its own (with a random suffix), so one external
//! broker can serve the whole suite. Every test subscribes before it publishes (a broker need
//! not deliver to a group what was published before it existed), bounds every wait with a
//! timeout, and panics with a message naming what went wrong. Tests of optional capabilities
//! (delay, ordering, large payloads, redelivery on nack) are skipped when the broker's
//! [`BrokerCapabilities`] say it lacks them.
//!
//! Waiting for "nothing more" cancels a pending [`Subscription::next`]; a driver should make
//! `next` cancel-safe (a message it has not returned is not lost).
//!
//! [`competing_consumers`] needs a broker that spreads a group's messages over its consumers
//! (both of its two must get some): a Kafka topic needs two partitions or more for it.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use weir_broker_memory::MemoryBroker;
//! use weir_core::broker::Broker;
//! use weir_core::testkit::broker::run_all;
//!
//! #[tokio::main]
//! async fn main() {
//!     // A fresh broker for every test…
//!     run_all(&|| async { Arc::new(MemoryBroker::new()) as Arc<dyn Broker> }).await;
//!     // …or one shared by every test, as an external broker would be.
//!     let shared: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
//!     run_all(&move || std::future::ready(shared.clone())).await;
//! }
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::time::timeout;

use super::{Factory, unique};
use crate::broker::{Broker, BrokerCapabilities, Delivery, Subscription};

/// How long a delivery that should come may take ([`recv`], [`take`]).
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a redelivery after a consumer died may take (brokers with visibility timeouts).
pub const REDELIVERY_WAIT: Duration = Duration::from_secs(60);
/// How long to watch for a delivery that should not come.
const QUIET: Duration = Duration::from_millis(300);

/// Runs every test of the suite, one after the other.
pub async fn run_all(factory: &dyn Factory<dyn Broker>) {
    publish_consume_ack(factory).await;
    nack_redelivers(factory).await;
    nack_with_delay(factory).await;
    dead_consumer_delivery_redelivered(factory).await;
    competing_consumers(factory).await;
    groups_each_get_everything(factory).await;
    ordered_by_key(factory).await;
    large_payload(factory).await;
    publish_batch(factory).await;
}

/// Waits up to `within` for the next delivery; panics naming `what` on timeout or error.
pub async fn recv_within(
    sub: &mut Box<dyn Subscription>,
    within: Duration,
    what: &str,
) -> Delivery {
    match timeout(within, sub.next()).await {
        Ok(Ok(delivery)) => delivery,
        Ok(Err(e)) => panic!("{what}: next() failed: {e}"),
        Err(_) => panic!("{what}: no delivery within {within:?}"),
    }
}

/// Waits up to [`WAIT`] for the next delivery; panics naming `what` on timeout or error.
pub async fn recv(sub: &mut Box<dyn Subscription>, what: &str) -> Delivery {
    recv_within(sub, WAIT, what).await
}

/// Receives (waiting up to `within`) and acks; returns the payload. Panics naming `what`.
pub async fn take_within(sub: &mut Box<dyn Subscription>, within: Duration, what: &str) -> Bytes {
    let delivery = recv_within(sub, within, what).await;
    let payload = delivery.payload.clone();
    ack(delivery, what).await;
    payload
}

/// Receives (waiting up to [`WAIT`]) and acks; returns the payload. Panics naming `what`.
pub async fn take(sub: &mut Box<dyn Subscription>, what: &str) -> Bytes {
    take_within(sub, WAIT, what).await
}

/// Panics naming `what` if a delivery (or an error) arrives within `within`.
pub async fn nothing_within(sub: &mut Box<dyn Subscription>, within: Duration, what: &str) {
    if let Ok(result) = timeout(within, sub.next()).await {
        panic!("{what}: unexpected delivery within {within:?}: {result:?}");
    }
}

/// The payload of `delivery` as text (invalid UTF-8 replaced).
pub fn text(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.payload).into_owned()
}

async fn ack(delivery: Delivery, what: &str) {
    if let Err(e) = delivery.ack().await {
        panic!("{what}: ack failed: {e}");
    }
}

async fn subscribe(broker: &dyn Broker, topic: &str, group: &str) -> Box<dyn Subscription> {
    match broker.subscribe(topic, group).await {
        Ok(sub) => sub,
        Err(e) => panic!("broker conformance: subscribe({topic}, {group}) failed: {e}"),
    }
}

async fn publish(broker: &dyn Broker, topic: &str, key: &str, payload: impl Into<Bytes>) {
    if let Err(e) = broker.publish(topic, key, payload.into()).await {
        panic!("broker conformance: publish to {topic} failed: {e}");
    }
}

fn skip(test: &str, caps: BrokerCapabilities, why: &str) {
    eprintln!("broker conformance: skipping {test}: {why} ({caps:?})");
}

/// Publish, consume, ack: payload and key arrive intact, and nothing comes again after the ack.
pub async fn publish_consume_ack(factory: &dyn Factory<dyn Broker>) {
    let broker = factory.make().await;
    let (topic, group) = (unique("ack"), unique("g"));
    let mut sub = subscribe(&*broker, &topic, &group).await;
    publish(&*broker, &topic, "key-1", &b"hello \x00\xff world"[..]).await;

    let d = recv(&mut sub, "publish_consume_ack").await;
    assert_eq!(
        &d.payload[..],
        b"hello \x00\xff world",
        "broker conformance: payload changed"
    );
    assert_eq!(d.key, "key-1", "broker conformance: key changed");
    assert_eq!(
        d.redeliveries, 0,
        "broker conformance: first delivery counts redeliveries"
    );
    ack(d, "publish_consume_ack").await;
    nothing_within(
        &mut sub,
        QUIET,
        "publish_consume_ack: redelivered after ack",
    )
    .await;
}

/// A nacked message is delivered again, with `redeliveries` ≥ 1.
pub async fn nack_redelivers(factory: &dyn Factory<dyn Broker>) {
    let broker = factory.make().await;
    let caps = broker.capabilities();
    if !caps.redelivers_on_nack {
        return skip("nack_redelivers", caps, "no redelivery on nack");
    }
    let (topic, group) = (unique("nack"), unique("g"));
    let mut sub = subscribe(&*broker, &topic, &group).await;
    publish(&*broker, &topic, "k", "again").await;

    let d = recv(&mut sub, "nack_redelivers: first delivery").await;
    d.nack(None).await.expect("broker conformance: nack failed");
    let d = recv(&mut sub, "nack_redelivers: redelivery after nack").await;
    assert_eq!(
        text(&d),
        "again",
        "broker conformance: redelivered payload changed"
    );
    assert_eq!(d.key, "k", "broker conformance: redelivered key changed");
    assert!(
        d.redeliveries >= 1,
        "broker conformance: redelivery has redeliveries = 0"
    );
    ack(d, "nack_redelivers").await;
}

/// A nack with a 200 ms delay is redelivered after the delay, not before.
pub async fn nack_with_delay(factory: &dyn Factory<dyn Broker>) {
    let broker = factory.make().await;
    let caps = broker.capabilities();
    let delay = Duration::from_millis(200);
    if !caps.redelivers_on_nack || caps.max_native_delay.is_none_or(|max| max < delay) {
        return skip("nack_with_delay", caps, "no native delay of 200 ms");
    }
    let (topic, group) = (unique("delay"), unique("g"));
    let mut sub = subscribe(&*broker, &topic, &group).await;
    publish(&*broker, &topic, "k", "later").await;

    let d = recv(&mut sub, "nack_with_delay: first delivery").await;
    let nacked_at = Instant::now();
    d.nack(Some(delay))
        .await
        .expect("broker conformance: nack with delay failed");
    let d = recv(&mut sub, "nack_with_delay: redelivery after the delay").await;
    let waited = nacked_at.elapsed();
    // A little slack for brokers whose clock is not ours.
    assert!(
        waited >= delay - Duration::from_millis(20),
        "broker conformance: nack delayed {delay:?} came back after {waited:?}"
    );
    assert_eq!(
        text(&d),
        "later",
        "broker conformance: delayed payload changed"
    );
    assert!(
        d.redeliveries >= 1,
        "broker conformance: delayed redelivery has redeliveries = 0"
    );
    ack(d, "nack_with_delay").await;
}

/// A consumer that dies holding an unacked delivery: a new consumer of the group gets it.
pub async fn dead_consumer_delivery_redelivered(factory: &dyn Factory<dyn Broker>) {
    let broker = factory.make().await;
    let (topic, group) = (unique("dead"), unique("g"));
    let mut sub = subscribe(&*broker, &topic, &group).await;
    publish(&*broker, &topic, "k", "orphaned").await;

    let d = recv(&mut sub, "dead_consumer: first delivery").await;
    assert_eq!(text(&d), "orphaned", "broker conformance: payload changed");
    drop(d);
    drop(sub);

    let mut sub = subscribe(&*broker, &topic, &group).await;
    let what = "dead_consumer: redelivery to a new consumer of the group";
    let d = recv_within(&mut sub, REDELIVERY_WAIT, what).await;
    assert_eq!(
        text(&d),
        "orphaned",
        "broker conformance: redelivered payload changed"
    );
    assert!(
        d.redeliveries >= 1,
        "broker conformance: redelivery has redeliveries = 0"
    );
    ack(d, "dead_consumer").await;
}

/// Two consumers of one group: once the group has formed, each message goes to exactly one of
/// them, and all are delivered.
///
/// The group is settled first: with both consumers taking messages, probes are published
/// until each has received one. A group still forming may move work between its members while
/// they consume (a Kafka rebalance when the second member joins or the topic appears), and
/// at-least-once delivery allows a message taken before such a move to come again; after the
/// settling, any duplicate is a fault. This checks delivery, not speed: the case gives up
/// after [`WAIT`] without a delivery to either consumer (or [`REDELIVERY_WAIT`] in all), so a
/// slow service (a loaded CI machine) still passes as long as it makes progress.
pub async fn competing_consumers(factory: &dyn Factory<dyn Broker>) {
    const N: usize = 100;
    const PROBE: &str = "probe-";
    let broker = factory.make().await;
    let (topic, group) = (unique("compete"), unique("g"));
    let subs = [
        subscribe(&*broker, &topic, &group).await,
        subscribe(&*broker, &topic, &group).await,
    ];

    let start = Instant::now();
    let since_start = move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let received = Arc::new(AtomicUsize::new(0));
    // Milliseconds since `start` of the last delivery to either consumer.
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let probed: Arc<[AtomicBool; 2]> = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let consumers: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, mut sub)| {
            let (received, progress) = (received.clone(), progress.clone());
            let (stop, probed) = (stop.clone(), probed.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let Ok(next) = timeout(Duration::from_millis(100), sub.next()).await else {
                        continue;
                    };
                    let d = next.expect("broker conformance: competing_consumers: next() failed");
                    let payload = text(&d);
                    ack(d, "competing_consumers").await;
                    progress.fetch_max(since_start(), Ordering::SeqCst);
                    if payload.starts_with(PROBE) {
                        probed[i].store(true, Ordering::SeqCst);
                    } else {
                        got.push(payload);
                        received.fetch_add(1, Ordering::SeqCst);
                    }
                }
                got
            })
        })
        .collect();

    let mut probes = 0u64;
    while !probed.iter().all(|p| p.load(Ordering::SeqCst)) {
        assert!(
            start.elapsed() < REDELIVERY_WAIT,
            "broker conformance: competing_consumers: the group did not form: {probes} probes \
             published, not each consumer received one within {REDELIVERY_WAIT:?}"
        );
        publish(
            &*broker,
            &topic,
            &format!("probe{probes}"),
            format!("{PROBE}{probes}"),
        )
        .await;
        probes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = Instant::now();
    progress.fetch_max(since_start(), Ordering::SeqCst);
    for i in 0..N {
        publish(&*broker, &topic, &format!("k{}", i % 10), format!("m{i}")).await;
    }
    while received.load(Ordering::SeqCst) < N {
        let last = Duration::from_millis(progress.load(Ordering::SeqCst));
        if start.elapsed() > last + WAIT || settled.elapsed() > REDELIVERY_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);

    let mut all = BTreeSet::new();
    for consumer in consumers {
        let got = consumer
            .await
            .expect("broker conformance: competing consumer panicked");
        for payload in got {
            assert!(
                all.insert(payload.clone()),
                "broker conformance: {payload} delivered twice"
            );
        }
    }
    let expected: BTreeSet<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(
        all, expected,
        "broker conformance: competing consumers did not get every message"
    );
}

/// Two groups of one topic: each gets every message.
pub async fn groups_each_get_everything(factory: &dyn Factory<dyn Broker>) {
    const N: usize = 20;
    let broker = factory.make().await;
    let topic = unique("fanout");
    let mut a = subscribe(&*broker, &topic, &unique("ga")).await;
    let mut b = subscribe(&*broker, &topic, &unique("gb")).await;
    for i in 0..N {
        publish(&*broker, &topic, &format!("k{i}"), format!("m{i}")).await;
    }
    let expected: BTreeSet<String> = (0..N).map(|i| format!("m{i}")).collect();
    for (name, sub) in [("first", &mut a), ("second", &mut b)] {
        let mut got = BTreeSet::new();
        for _ in 0..N {
            let d = recv(sub, &format!("groups_each_get_everything: {name} group")).await;
            got.insert(text(&d));
            ack(d, "groups_each_get_everything").await;
        }
        assert_eq!(
            got, expected,
            "broker conformance: {name} group missed messages"
        );
    }
}

/// With `ordered_by_key`, one consumer gets 50 messages of one key in publish order.
pub async fn ordered_by_key(factory: &dyn Factory<dyn Broker>) {
    const N: usize = 50;
    let broker = factory.make().await;
    let caps = broker.capabilities();
    if !caps.ordered_by_key {
        return skip("ordered_by_key", caps, "not ordered by key");
    }
    let (topic, group) = (unique("order"), unique("g"));
    let mut sub = subscribe(&*broker, &topic, &group).await;
    for i in 0..N {
        publish(&*broker, &topic, "the-key", format!("m{i}")).await;
    }
    for i in 0..N {
        let d = recv(&mut sub, "ordered_by_key").await;
        assert_eq!(
            text(&d),
            format!("m{i}"),
            "broker conformance: key order broken"
        );
        ack(d, "ordered_by_key").await;
    }
}

/// A 1 MiB payload round-trips intact when `max_message_bytes` allows it.
pub async fn large_payload(factory: &dyn Factory<dyn Broker>) {
    const SIZE: usize = 1 << 20;
    let broker = factory.make().await;
    let caps = broker.capabilities();
    if caps.max_message_bytes < SIZE {
        return skip("large_payload", caps, "max_message_bytes below 1 MiB");
    }
    let (topic, group) = (unique("large"), unique("g"));
    let mut sub = subscribe(&*broker, &topic, &group).await;
    let payload: Bytes = (0..SIZE)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    publish(&*broker, &topic, "big", payload.clone()).await;

    let d = recv(&mut sub, "large_payload").await;
    assert_eq!(
        d.payload.len(),
        SIZE,
        "broker conformance: 1 MiB payload changed size"
    );
    assert!(
        d.payload == payload,
        "broker conformance: 1 MiB payload changed"
    );
    ack(d, "large_payload").await;
}

/// `publish_batch` delivers every message of the batch.
pub async fn publish_batch(factory: &dyn Factory<dyn Broker>) {
    const N: usize = 50;
    let broker = factory.make().await;
    let (topic, group) = (unique("batch"), unique("g"));
    let mut sub = subscribe(&*broker, &topic, &group).await;
    let batch = (0..N)
        .map(|i| (format!("k{i}"), Bytes::from(format!("m{i}"))))
        .collect();
    if let Err(e) = broker.publish_batch(&topic, batch).await {
        panic!("broker conformance: publish_batch failed: {e}");
    }

    let mut got = BTreeSet::new();
    for _ in 0..N {
        let d = recv(&mut sub, "publish_batch").await;
        let payload = text(&d);
        assert_eq!(
            d.key,
            format!("k{}", &payload[1..]),
            "broker conformance: batch key mixed up"
        );
        assert!(
            got.insert(payload),
            "broker conformance: batch message delivered twice"
        );
        ack(d, "publish_batch").await;
    }
    let expected: BTreeSet<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(
        got, expected,
        "broker conformance: publish_batch lost messages"
    );
}
