//! Runs weir-core's broker conformance suite against a real Kafka-protocol broker process at
//! `WEIR_TEST_KAFKA_URL` (scripts/test.sh starts tansu, a Kafka-compatible broker, and sets
//! it). Unlike librdkafka's mock cluster, topics are created through the admin API here.

use std::sync::Arc;

use weir_broker_kafka::KafkaBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{nothing_within, recv_within, run_all};
use weir_core::testkit::service_url_with;

/// Short session timeout and commit interval, so that rebalances and commits in the suite's
/// crash cases take seconds, not the defaults' tens of seconds.
const PARAMS: &str =
    "commit_interval=100ms&session.timeout.ms=6000&heartbeat.interval.ms=500&partitions=4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_real_kafka_protocol_broker() {
    let prefix = format!("weir-real-{:08x}", rand::random::<u32>());
    let Some(url) = service_url_with("WEIR_TEST_KAFKA_URL", &format!("prefix={prefix}&{PARAMS}"))
    else {
        return;
    };
    // One broker for every test.
    let broker: Arc<dyn Broker> = Arc::new(KafkaBroker::connect(&url).await.expect("connect"));
    run_all(&move || std::future::ready(broker.clone())).await;
}

/// `publish_batch` keeps one key's records in order on a real broker too when librdkafka's
/// queue (5 messages here) fills up, and a later consumer of the group resumes from the
/// committed offsets: it gets nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_order_and_commits_on_a_real_kafka_protocol_broker() {
    use std::time::Duration;

    use bytes::Bytes;

    let prefix = format!("weir-real-{:08x}", rand::random::<u32>());
    let params = format!("prefix={prefix}&{PARAMS}&queue.buffering.max.messages=5");
    let Some(url) = service_url_with("WEIR_TEST_KAFKA_URL", &params) else {
        return;
    };
    let broker = KafkaBroker::connect(&url).await.expect("connect");
    let mut sub = broker.subscribe("batch", "g").await.expect("subscribe");
    let batch = (0..200)
        .map(|i| ("k".to_string(), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch("batch", batch).await.expect("publish");
    for i in 0..200 {
        let d = recv_within(&mut sub, Duration::from_secs(30), &format!("m{i}")).await;
        assert_eq!(String::from_utf8_lossy(&d.payload), format!("m{i}"));
        d.ack().await.expect("ack");
    }
    drop(sub);
    let mut again = broker.subscribe("batch", "g").await.expect("subscribe");
    let what = "the group's next consumer, after everything was acked and committed";
    nothing_within(&mut again, Duration::from_secs(8), what).await;
}
