//! Runs weir-core's broker conformance suite against a real Kafka-protocol broker process at
//! `WEIR_TEST_KAFKA_URL` (scripts/test.sh starts tansu, a Kafka-compatible broker, and sets
//! it). Unlike librdkafka's mock cluster, topics are created through the admin API here.

use std::sync::Arc;

use async_trait::async_trait;
use weir_broker_kafka::KafkaBroker;
use weir_core::broker::Broker;
use weir_core::testkit::broker::{BrokerFactory, run_all};

/// Short session timeout and commit interval, so that rebalances and commits in the suite's
/// crash cases take seconds, not the defaults' tens of seconds.
const PARAMS: &str =
    "commit_interval=100ms&session.timeout.ms=6000&heartbeat.interval.ms=500&partitions=4";

/// One broker for every test.
struct Shared(Arc<KafkaBroker>);

#[async_trait]
impl BrokerFactory for Shared {
    async fn broker(&self) -> Arc<dyn Broker> {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_real_kafka_protocol_broker() {
    let Some(base) = weir_core::testkit::service_url("WEIR_TEST_KAFKA_URL") else {
        return;
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let prefix = format!("weir-real-{:08x}", rand::random::<u32>());
    let url = format!("{base}{sep}prefix={prefix}&{PARAMS}");
    let broker = KafkaBroker::connect(&url).await.expect("connect");
    run_all(&Shared(Arc::new(broker))).await;
}

/// `publish_batch` keeps one key's records in order on a real broker too when librdkafka's
/// queue (5 messages here) fills up, and a later consumer of the group resumes from the
/// committed offsets: it gets nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_order_and_commits_on_a_real_kafka_protocol_broker() {
    use std::time::Duration;

    use bytes::Bytes;

    let Some(base) = weir_core::testkit::service_url("WEIR_TEST_KAFKA_URL") else {
        return;
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let prefix = format!("weir-real-{:08x}", rand::random::<u32>());
    let url = format!("{base}{sep}prefix={prefix}&{PARAMS}&queue.buffering.max.messages=5");
    let broker = KafkaBroker::connect(&url).await.expect("connect");
    let mut sub = broker.subscribe("batch", "g").await.expect("subscribe");
    let batch = (0..200)
        .map(|i| ("k".to_string(), Bytes::from(format!("m{i}"))))
        .collect();
    broker.publish_batch("batch", batch).await.expect("publish");
    for i in 0..200 {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("in time")
            .expect("next");
        assert_eq!(String::from_utf8_lossy(&d.payload), format!("m{i}"));
        d.ack().await.expect("ack");
    }
    drop(sub);
    let mut again = broker.subscribe("batch", "g").await.expect("subscribe");
    if let Ok(d) = tokio::time::timeout(Duration::from_secs(8), again.next()).await {
        panic!("everything was acked and committed, yet got {d:?}");
    }
}
