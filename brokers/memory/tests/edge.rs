//! Edge cases of [`MemoryBroker`] beyond the conformance suite.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::timeout;
use weir_broker_memory::{MAX_MESSAGE_BYTES, MemoryBroker};
use weir_core::ErrorKind;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{nothing_within, recv, take};

/// How long to watch for a delivery that should not come.
const QUIET: Duration = Duration::from_millis(100);

#[tokio::test]
async fn messages_before_any_group_go_to_the_first_group_only() {
    let broker = MemoryBroker::new();
    broker
        .publish("t", "k", Bytes::from_static(b"early"))
        .await
        .expect("publish");
    let mut first = broker.subscribe("t", "a").await.expect("subscribe");
    let mut second = broker.subscribe("t", "b").await.expect("subscribe");
    assert_eq!(&take(&mut first, "the early message").await[..], b"early");
    nothing_within(&mut second, QUIET, "the second group").await;
    nothing_within(&mut first, QUIET, "the first group after its ack").await;
}

#[tokio::test]
async fn oversized_payloads_are_rejected_and_batches_are_all_or_nothing() {
    let broker = MemoryBroker::new();
    let mut sub = broker.subscribe("t", "g").await.expect("subscribe");
    let big = Bytes::from(vec![0u8; MAX_MESSAGE_BYTES + 1]);
    let err = broker
        .publish("t", "k", big.clone())
        .await
        .expect_err("accepted > max");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(!err.is_retryable());

    let batch = vec![
        ("k".to_owned(), Bytes::from_static(b"ok")),
        ("k".to_owned(), big),
    ];
    let err = broker
        .publish_batch("t", batch)
        .await
        .expect_err("accepted > max");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    nothing_within(&mut sub, QUIET, "a rejected batch").await;
}

#[tokio::test]
async fn redeliveries_count_every_nack_and_drop() {
    let broker = MemoryBroker::new();
    let mut sub = broker.subscribe("t", "g").await.expect("subscribe");
    broker
        .publish("t", "k", Bytes::from_static(b"x"))
        .await
        .expect("publish");
    let d = recv(&mut sub, "the first delivery").await;
    d.nack(None).await.expect("nack");
    drop(recv(&mut sub, "the delivery after a nack").await);
    recv(&mut sub, "the delivery after a drop")
        .await
        .nack(Some(Duration::from_millis(10)))
        .await
        .expect("nack");
    let d = recv(&mut sub, "the delivery after a delayed nack").await;
    assert_eq!(d.redeliveries, 3);
    d.ack().await.expect("ack");
    nothing_within(&mut sub, QUIET, "after the ack").await;
}

#[tokio::test]
async fn a_dropped_delivery_keeps_its_place_at_the_front() {
    let broker = MemoryBroker::new();
    let mut sub = broker.subscribe("t", "g").await.expect("subscribe");
    for p in ["1", "2"] {
        broker
            .publish("t", "k", Bytes::from(p))
            .await
            .expect("publish");
    }
    drop(recv(&mut sub, "the first message").await);
    assert_eq!(&take(&mut sub, "the dropped message").await[..], b"1");
    assert_eq!(&take(&mut sub, "the second message").await[..], b"2");
}

#[tokio::test]
async fn next_is_cancel_safe() {
    let broker = MemoryBroker::new();
    let mut sub = broker.subscribe("t", "g").await.expect("subscribe");
    // Cancel waits many times; a message published afterwards still arrives.
    for _ in 0..5 {
        nothing_within(&mut sub, QUIET, "before any publish").await;
    }
    broker
        .publish("t", "k", Bytes::from_static(b"after"))
        .await
        .expect("publish");
    assert_eq!(
        &take(&mut sub, "the message after the cancelled waits").await[..],
        b"after"
    );
}

#[tokio::test]
async fn a_delivery_dropped_outside_the_runtime_is_requeued() {
    let broker = MemoryBroker::new();
    let mut sub = broker.subscribe("t", "g").await.expect("subscribe");
    broker
        .publish("t", "k", Bytes::from_static(b"x"))
        .await
        .expect("publish");
    let d = recv(&mut sub, "the first delivery").await;
    std::thread::spawn(move || drop(d)).join().expect("thread");
    let d = recv(&mut sub, "the delivery dropped on another thread").await;
    assert_eq!(d.redeliveries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_consumers_drain_concurrent_publishers() {
    use std::sync::Arc;
    const PER: usize = 5_000;
    let broker = Arc::new(MemoryBroker::new());
    let subs = [
        broker.subscribe("t", "g").await.expect("s"),
        broker.subscribe("t", "g").await.expect("s"),
    ];
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let broker = broker.clone();
            tokio::spawn(async move {
                for i in 0..PER {
                    broker
                        .publish("t", "k", Bytes::from(format!("{p}-{i}")))
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let consumers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            let total = total.clone();
            tokio::spawn(async move {
                while total.load(std::sync::atomic::Ordering::SeqCst) < 2 * PER {
                    if let Ok(d) = timeout(Duration::from_millis(50), sub.next()).await {
                        d.expect("next").ack().await.expect("ack");
                        total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for task in publishers.into_iter().chain(consumers) {
        timeout(Duration::from_secs(20), task)
            .await
            .expect("stuck")
            .expect("task panicked");
    }
    assert_eq!(total.load(std::sync::atomic::Ordering::SeqCst), 2 * PER);
}
