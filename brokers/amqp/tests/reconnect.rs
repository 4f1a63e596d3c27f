//! The connection dropped from the server side (`rabbitmqctl close_connection`, the scoped
//! form of `close_all_connections`, so tests running beside these keep their connections):
//! the same broker and subscriptions carry on, nothing confirmed is lost, unacked deliveries
//! come again.
//!
//! Needs `rabbitmqctl` of the test RabbitMQ on this machine (scripts/test.sh starts one).
//! The tests run one at a time ([`SERIAL`]): each drops every connection of this process.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{rabbitmqctl, url_with};
use parking_lot::Mutex;
use tokio::time::timeout;
use weir_broker_amqp::AmqpBroker;
use weir_core::ErrorKind;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{nothing_within, recv, recv_within};
use weir_core::testkit::unique;

const PARAMS: &str = "prefix=weir-test-drop&queue_expires=2m&timeout=30s&reconnect_max=1s";

/// Held by each test: a test's drops would otherwise hit the connections of the others
/// (`cargo test` runs them as threads of one process).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Closes, from the server side, every connection this test process opened (lapin's
/// connections are named `weir-broker-amqp/{pid}`). Returns how many were closed.
async fn drop_my_connections() -> usize {
    tokio::task::spawn_blocking(|| {
        let me = format!("weir-broker-amqp/{}\"", std::process::id());
        let listing = rabbitmqctl(&[
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ]);
        let pids: Vec<String> = listing
            .lines()
            .filter(|line| line.contains(&me))
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect();
        for pid in &pids {
            rabbitmqctl(&["close_connection", pid, "test"]);
        }
        pids.len()
    })
    .await
    .expect("rabbitmqctl task")
}

/// While messages are published and consumed, the connection is closed twice from the server:
/// every confirmed message is eventually acked by the consumer (duplicates allowed), and the
/// broker reconnected by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drop_loses_nothing_confirmed() {
    const N: usize = 3000;
    let Some(url) = url_with(PARAMS) else { return };
    let _serial = SERIAL.lock().await;
    let broker = Arc::new(AmqpBroker::connect(&url).await.expect("connect"));
    let (topic, group) = (unique("drop"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    assert_eq!(broker.connections(), 1);

    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let published_enough = Arc::new(AtomicBool::new(false));
    let drops_done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (broker, topic, confirmed, published_enough, drops_done) = (
            broker.clone(),
            topic.clone(),
            confirmed.clone(),
            published_enough.clone(),
            drops_done.clone(),
        );
        tokio::spawn(async move {
            let mut errors = 0usize;
            let mut next = 0usize;
            // Publish batches of 10 until N are confirmed and both drops happened.
            while next < N || !drops_done.load(Ordering::SeqCst) {
                let batch: Vec<(String, Bytes)> = (next..next + 10)
                    .map(|i| (format!("k{i}"), Bytes::from(format!("m{i}"))))
                    .collect();
                // A failed batch is published again, as a caller would (at-least-once).
                loop {
                    match broker.publish_batch(&topic, batch.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            assert!(e.is_retryable(), "publish failed permanently: {e}");
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                confirmed.lock().extend(next..next + 10);
                next += 10;
                if next >= N / 3 {
                    published_enough.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            errors
        })
    };

    let dropper = {
        let (published_enough, drops_done) = (published_enough.clone(), drops_done.clone());
        tokio::spawn(async move {
            while !published_enough.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let first = drop_my_connections().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let second = drop_my_connections().await;
            drops_done.store(true, Ordering::SeqCst);
            (first, second)
        })
    };

    let mut acked = BTreeSet::new();
    let mut deliveries = 0usize;
    let mut ack_failures = 0usize;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = publisher.is_finished() && {
            let confirmed = confirmed.lock();
            confirmed.is_subset(&acked)
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s, {} of {} confirmed messages acked",
            acked.len(),
            confirmed.lock().len()
        );
        let Ok(next) = timeout(Duration::from_millis(200), sub.next()).await else {
            continue;
        };
        let d = next.expect("next() fails only on permanent errors");
        deliveries += 1;
        let text = String::from_utf8(d.payload.to_vec()).expect("utf-8");
        let i: usize = text[1..].parse().expect("m{i}");
        assert_eq!(d.key, format!("k{i}"), "key mixed up");
        match d.ack().await {
            Ok(()) => {
                acked.insert(i);
            }
            Err(e) => {
                // The channel went away under the ack: RabbitMQ redelivers it.
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                ack_failures += 1;
            }
        }
    }
    let (first, second) = dropper.await.expect("dropper");
    let publish_errors = publisher.await.expect("publisher");
    assert!(first >= 1, "no connection of this test was found to drop");
    assert!(
        second >= 1,
        "the broker had not reconnected before the second drop"
    );
    assert!(
        broker.connections() >= 3,
        "the broker reconnected {} times for two drops",
        broker.connections() - 1
    );
    let total = confirmed.lock().len();
    assert!(total >= N);
    eprintln!(
        "connection drops: {total} confirmed, all acked; {deliveries} deliveries ({} duplicates), \
         {ack_failures} failed acks, {publish_errors} failed publish_batch calls, {} connections",
        deliveries - total,
        broker.connections()
    );

    // The same broker and subscription still work.
    broker
        .publish(&topic, "after", Bytes::from_static(b"after"))
        .await
        .expect("publish after the drops");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = recv_within(
            &mut sub,
            deadline.saturating_duration_since(Instant::now()),
            "the message published after the drops",
        )
        .await;
        let is_after = &d.payload[..] == b"after";
        d.ack().await.expect("ack after the drops");
        if is_after {
            break;
        }
    }
}

/// A delivery held unacked when the connection drops: its ack fails with a retryable error,
/// and it comes again, counted as a redelivery, through the same subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_delivery_is_redelivered_after_a_drop() {
    let Some(url) = url_with(PARAMS) else { return };
    let _serial = SERIAL.lock().await;
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("held"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"held"))
        .await
        .expect("publish");
    let held = recv(&mut sub, "the delivery held over the drop").await;
    assert_eq!(held.redeliveries, 0);

    assert!(drop_my_connections().await >= 1, "no connection to drop");
    let again = recv_within(
        &mut sub,
        Duration::from_secs(30),
        "the redelivery after the drop",
    )
    .await;
    assert_eq!(&again.payload[..], b"held");
    assert_eq!(again.key, "k");
    assert!(
        again.redeliveries >= 1,
        "redeliveries = {}",
        again.redeliveries
    );
    let err = held.ack().await.expect_err("an ack on the dropped channel");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    again.ack().await.expect("ack of the redelivery");
    nothing_within(&mut sub, Duration::from_millis(500), "after the ack").await;
    assert!(broker.connections() >= 2);
}

/// Deliveries RabbitMQ had sent ahead (in lapin's buffer) when the connection dropped are not
/// handed out: they could not be acked, and RabbitMQ requeued them. Each comes once, through
/// the restarted consumer, and every ack succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_deliveries_of_a_dropped_channel_are_skipped() {
    const N: usize = 20;
    let Some(url) = url_with(&format!("{PARAMS}&prefetch=50")) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("buffered"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    let batch = (0..N)
        .map(|i| (format!("k{i}"), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch(&topic, batch).await.expect("publish");
    let held = recv(&mut sub, "the delivery held over the drop").await;
    // Let the rest of the prefetch reach lapin's buffer, then drop the connection and let
    // lapin notice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(drop_my_connections().await >= 1, "no connection to drop");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut got = BTreeSet::new();
    while got.len() < N {
        let d = recv_within(
            &mut sub,
            Duration::from_secs(30),
            "a delivery after the drop",
        )
        .await;
        assert!(
            d.redeliveries >= 1,
            "a delivery of the dropped channel was handed out: {d:?}"
        );
        let payload = String::from_utf8(d.payload.to_vec()).expect("utf-8");
        d.ack()
            .await
            .expect("ack of a delivery handed out after the drop");
        assert!(got.insert(payload.clone()), "{payload} came twice");
    }
    let err = held.ack().await.expect_err("an ack on the dropped channel");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    nothing_within(&mut sub, Duration::from_millis(500), "after every message").await;
}

/// A delayed nack of a delivery whose channel is gone publishes no delayed copy (RabbitMQ
/// requeued the original already, the copy would be a certain duplicate): it fails with a
/// retryable error, and the message comes back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_nack_on_a_dropped_channel_schedules_nothing() {
    let Some(url) = url_with(PARAMS) else { return };
    let _serial = SERIAL.lock().await;
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("deadnack"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    broker
        .publish(&topic, "k", Bytes::from_static(b"once"))
        .await
        .expect("publish");
    let held = recv(&mut sub, "the delivery held over the drop").await;
    assert!(drop_my_connections().await >= 1, "no connection to drop");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let err = held
        .nack(Some(Duration::from_millis(200)))
        .await
        .expect_err("a delayed nack on the dropped channel");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    let again = recv_within(
        &mut sub,
        Duration::from_secs(30),
        "the redelivery after the drop",
    )
    .await;
    assert_eq!(&again.payload[..], b"once");
    assert!(again.redeliveries >= 1);
    again.ack().await.expect("ack");
    // No delayed copy follows.
    nothing_within(&mut sub, Duration::from_millis(1500), "a delayed copy").await;
}

/// RabbitMQ restarted (`stop_app` / `start_app`): the broker and its subscription carry on,
/// and what was confirmed before the restart is delivered after it. Ignored by default: it
/// stops the whole RabbitMQ, which would fail tests running beside it; scripts/test.sh runs it
/// alone after the rest:
/// `cargo nextest run -p weir-broker-amqp --run-ignored only`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared RabbitMQ"]
async fn rabbitmq_restart() {
    let Some(url) = url_with(PARAMS) else { return };
    let _serial = SERIAL.lock().await;
    let broker = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("restart"), unique("g"));
    let mut sub = broker.subscribe(&topic, &group).await.expect("subscribe");
    for i in 0..100 {
        broker
            .publish(&topic, "k", Bytes::from(format!("m{i}")))
            .await
            .expect("publish");
    }
    tokio::task::spawn_blocking(|| {
        rabbitmqctl(&["stop_app"]);
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup", "--timeout", "60"]);
    })
    .await
    .expect("restart");
    broker
        .publish(&topic, "k", Bytes::from_static(b"m100"))
        .await
        .expect("publish after the restart");
    let mut got = BTreeSet::new();
    while got.len() < 101 {
        let d = recv_within(
            &mut sub,
            Duration::from_secs(60),
            "a message after the restart",
        )
        .await;
        got.insert(String::from_utf8(d.payload.to_vec()).expect("utf-8"));
        let _ = d.ack().await;
    }
    assert!(broker.connections() >= 2);
}
