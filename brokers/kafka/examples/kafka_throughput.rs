//! Publish + consume + ack throughput of 1 KiB messages on a librdkafka mock cluster started
//! in-process (one broker, 4 partitions per topic). Prints the rates; asserts nothing.
//!
//! ```text
//! cargo run -p weir-broker-kafka --release --example kafka_throughput [-- MESSAGES]
//! ```
//!
//! The consumer stops after 3 s without a message and prints how many it got: librdkafka's
//! mock cluster keeps at most 5 MiB per partition (it deletes the oldest records beyond), so
//! above about 16,000 messages (4 partitions) the publisher outruns the consumer and the
//! oldest records are gone before they are read. The default, 10,000, fits.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::mocking::MockCluster;
use weir_broker_kafka::KafkaBroker;
use weir_core::broker::Broker;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> weir_core::Result<()> {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let cluster = MockCluster::new(1).expect("mock cluster");
    let url = format!(
        "kafka://{}?prefix=bench&topic_creation=auto&session.timeout.ms=2500&heartbeat.interval.ms=250",
        cluster.bootstrap_servers()
    );
    let broker = KafkaBroker::connect(&url).await?;
    let topic = format!("tp-{}", std::process::id());
    let mut sub = broker.subscribe(&topic, "g").await?;
    // Wait until the group is joined, so the rate below is not the join's 3 s.
    broker
        .publish(&topic, "warm", Bytes::from_static(b"up"))
        .await?;
    sub.next().await?.ack().await?;

    let payload = Bytes::from(vec![b'x'; 1024]);
    let started = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut got = 0usize;
        let mut last = Instant::now();
        while got < total {
            match tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
                Ok(d) => {
                    d?.ack().await?;
                    got += 1;
                    last = Instant::now();
                }
                Err(_) => break,
            }
        }
        Ok::<_, weir_core::Error>((got, last))
    });
    for chunk in 0..total.div_ceil(500) {
        let n = 500.min(total - chunk * 500);
        let batch = (0..n)
            .map(|i| (format!("run-{}", (chunk * 500 + i) % 256), payload.clone()))
            .collect();
        broker.publish_batch(&topic, batch).await?;
    }
    let published = started.elapsed();
    let (got, last) = consumer.await.expect("consumer task")?;
    let done = last - started;
    println!(
        "{total} messages of 1 KiB: published in {published:.2?} ({:.0}/s); {got} consumed + acked by {done:.2?} after the start ({:.0}/s)",
        total as f64 / published.as_secs_f64(),
        got as f64 / done.as_secs_f64()
    );
    Ok(())
}
