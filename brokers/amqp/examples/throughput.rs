//! Throughput of [`AmqpBroker`]: publish (with confirms) + consume + ack of 1 KiB messages,
//! against the RabbitMQ of `WEIR_TEST_AMQP_URL`. Prints its figures; asserts only that every
//! message arrived.
//!
//! ```text
//! WEIR_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!     cargo run --release -p weir-broker-amqp --example throughput [MESSAGES] [BATCH] [queue_type] [CONSUMERS]
//! ```

use std::time::Instant;

use bytes::Bytes;
use weir_broker_amqp::AmqpBroker;
use weir_core::broker::Broker;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> weir_core::Result<()> {
    let Ok(base) = std::env::var("WEIR_TEST_AMQP_URL") else {
        eprintln!("set WEIR_TEST_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)");
        std::process::exit(2);
    };
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let queue_type = args.next().unwrap_or_else(|| "quorum".into());
    let consumers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base}{sep}prefix=weir-bench&prefetch=500&queue_type={queue_type}&queue_expires=1m"
    );
    let broker = AmqpBroker::connect(&url).await?;
    let topic = format!("steps-{:016x}", rand::random::<u64>());
    // Competing subscriptions of one group, each receiving and acking one delivery at a time.
    let remaining = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(total));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let mut sub = broker.subscribe(&topic, "executor").await?;
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            while remaining.load(Ordering::SeqCst) > 0 {
                let Ok(next) =
                    tokio::time::timeout(std::time::Duration::from_millis(100), sub.next()).await
                else {
                    continue;
                };
                next?.ack().await?;
                remaining.fetch_sub(1, Ordering::SeqCst);
            }
            Ok::<_, weir_core::Error>(Instant::now())
        }));
    }
    let payload = Bytes::from(vec![7u8; 1024]);

    let started = Instant::now();
    let mut published = 0;
    while published < total {
        let n = batch.min(total - published);
        let messages = (0..n)
            .map(|i| (format!("k{}", published + i), payload.clone()))
            .collect();
        broker.publish_batch(&topic, messages).await?;
        published += n;
    }
    let publish_done = started.elapsed();
    let mut finished = started;
    for task in tasks {
        finished = finished.max(task.await.expect("consumer task")?);
    }
    let elapsed = finished - started;
    println!(
        "{total} x 1 KiB, publish_batch of {batch}, {queue_type} queue, {consumers} consumer(s): published+confirmed in {:.2} s ({:.0} msg/s), \
         published+confirmed+consumed+acked in {:.2} s => {:.0} msg/s",
        publish_done.as_secs_f64(),
        total as f64 / publish_done.as_secs_f64(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
