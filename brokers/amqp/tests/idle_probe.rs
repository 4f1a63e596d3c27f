//! A consumer whose connection is cut off without it hearing (the server closed it, the close
//! never arrived; heartbeats off, so lapin cannot notice) probes its channel after
//! `idle_probe` without deliveries, gives the dead connection up and consumes again.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::url_with;
use weir_broker_amqp::AmqpBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::recv_within;
use weir_core::testkit::stall::StallProxy;
use weir_core::testkit::unique;

const PARAMS: &str =
    "prefix=weir-test-probe&queue_expires=2m&heartbeat=0&idle_probe=1s&timeout=2s&reconnect_max=1s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_cut_off_silently_consumes_again_after_its_idle_probe() {
    let Some(url) = url_with(PARAMS) else { return };
    let (proxy, proxied) = StallProxy::in_front_of(&url).await;
    let consumer = AmqpBroker::connect(&proxied)
        .await
        .expect("connect through the proxy");
    let producer = AmqpBroker::connect(&url).await.expect("connect");
    let (topic, group) = (unique("probe"), unique("g"));
    let mut sub = consumer.subscribe(&topic, &group).await.expect("subscribe");

    producer
        .publish(&topic, "k", Bytes::from_static(b"before"))
        .await
        .expect("publish");
    let d = recv_within(&mut sub, Duration::from_secs(10), "before the cut").await;
    assert_eq!(&d.payload[..], b"before");
    d.ack().await.expect("ack");

    // RabbitMQ sees the consumer's connection closed and requeues; the consumer hears nothing.
    proxy.cut();
    producer
        .publish(&topic, "k", Bytes::from_static(b"after"))
        .await
        .expect("publish");
    // Probe after 1 s idle, no answer within 2 s twice, reconnect: well within 30 s. The ack
    // of "before" may not have reached RabbitMQ before the cut: then "before" comes again
    // first (at-least-once).
    let d = loop {
        let d = recv_within(&mut sub, Duration::from_secs(30), "after the cut").await;
        if &d.payload[..] == b"after" {
            break d;
        }
        assert_eq!(&d.payload[..], b"before");
        d.ack()
            .await
            .expect("ack of a redelivery after reconnecting");
    };
    d.ack().await.expect("ack after reconnecting");
    assert_eq!(consumer.connections(), 2, "the consumer reconnected once");
}
