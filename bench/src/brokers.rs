//! `weir-bench brokers`: publish + consume + ack throughput of each broker, as a table.
//!
//! For each broker URL: one consumer group with `--consumers` competing subscriptions acking
//! everything they get (each delivery before the next, or with `--handlers N` up to N at once,
//! each in a task of its own), while the publisher sends `--messages` payloads of `--size` bytes in
//! `publish_batch` calls of `--batch`, with up to `--in-flight` batches outstanding. The
//! figure is messages acked per second from the first publish to the last ack; the publish
//! phase alone is also printed. Topics and groups are fresh per run.
//!
//! Before the clock starts, every consumer must have received a warm-up message: joining a
//! consumer group takes seconds on some brokers (Kafka rebalances), which is not throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_core::broker::Broker;
use weir_core::{Error, ErrorKind, Result};

use super::BrokersArgs;

/// One row of the table.
struct Row {
    broker: String,
    publish_per_s: f64,
    acked_per_s: f64,
    acked: u64,
}

pub(super) async fn brokers(args: BrokersArgs) -> Result<i32> {
    let mut rows = Vec::new();
    let app = weir::App::default();
    for url in &args.broker {
        let broker = app.registry().open_broker(url).await?;
        rows.push(measure(url, broker, &args).await?);
    }
    println!(
        "weir-bench brokers: {} messages of {} bytes, batches of {}, {} in flight, {} consumer(s), {} handler(s) each",
        args.messages, args.size, args.batch, args.in_flight, args.consumers, args.handlers
    );
    println!(
        "{:<40} {:>14} {:>22}",
        "broker", "publish msg/s", "publish+consume+ack/s"
    );
    for r in &rows {
        println!(
            "{:<40} {:>14.0} {:>22.0}{}",
            r.broker,
            r.publish_per_s,
            r.acked_per_s,
            if r.acked < args.messages {
                format!("  (only {} acked)", r.acked)
            } else {
                String::new()
            }
        );
    }
    Ok(if rows.iter().all(|r| r.acked >= args.messages) {
        0
    } else {
        1
    })
}

/// The URL without its query (and so without secrets), for the table.
fn shown(url: &str) -> String {
    weir::core::redact::redact_url(url.split('?').next().unwrap_or(url))
}

/// The payload of warm-up messages (bench messages are all `x`).
const WARM_UP: &[u8] = b"warm-up";

/// Publishes a warm-up message every 20 ms (a new key each time, so that keyed brokers spread
/// them) until every consumer has acked one.
async fn warm_up(
    broker: &dyn Broker,
    topic: &str,
    warmed: &[Arc<AtomicU64>],
    timeout_secs: f64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_secs);
    let mut sent = 0u64;
    while warmed.iter().any(|w| w.load(Ordering::Relaxed) == 0) {
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "bench: not every consumer received a warm-up message within {timeout_secs} s \
                     ({sent} sent)"
                ),
            ));
        }
        broker
            .publish(topic, &format!("warm-{sent}"), Bytes::from_static(WARM_UP))
            .await?;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn measure(url: &str, broker: Arc<dyn Broker>, args: &BrokersArgs) -> Result<Row> {
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let topic = format!("bench-{run}");
    let group = "bench";
    let acked = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    let mut warmed = Vec::new();
    let handlers_are_tasks = args.handlers > 1;
    for _ in 0..args.consumers.max(1) {
        let mut sub = broker.subscribe(&topic, group).await?;
        let acked = acked.clone();
        let warm = Arc::new(AtomicU64::new(0));
        warmed.push(warm.clone());
        let handlers = Arc::new(tokio::sync::Semaphore::new(args.handlers.max(1) as usize));
        consumers.push(tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                let Ok(permit) = handlers.clone().acquire_owned().await else {
                    break;
                };
                let Ok(d) = sub.next().await else {
                    break;
                };
                let (acked, warm) = (acked.clone(), warm.clone());
                let handle = async move {
                    let _permit = permit;
                    let is_warm_up = d.payload.starts_with(WARM_UP);
                    if d.ack().await.is_ok() {
                        if is_warm_up {
                            warm.fetch_add(1, Ordering::Relaxed);
                        } else {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                };
                if handlers_are_tasks {
                    tasks.spawn(handle);
                    while tasks.try_join_next().is_some() {}
                } else {
                    handle.await;
                }
            }
        }));
    }
    warm_up(&*broker, &topic, &warmed, args.timeout_secs).await?;
    let payload = Bytes::from(vec![b'x'; args.size]);
    let started = Instant::now();
    let batches = args.messages.div_ceil(args.batch as u64);
    let permits = Arc::new(tokio::sync::Semaphore::new(args.in_flight.max(1)));
    let mut publishes = tokio::task::JoinSet::new();
    for b in 0..batches {
        let n = (args.messages - b * args.batch as u64).min(args.batch as u64);
        let messages: Vec<(String, Bytes)> = (0..n)
            .map(|i| {
                (
                    format!("k{}", (b * args.batch as u64 + i) % 64),
                    payload.clone(),
                )
            })
            .collect();
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::new(ErrorKind::Internal, "bench: publish permits closed"))?;
        let broker = broker.clone();
        let topic = topic.clone();
        publishes.spawn(async move {
            let _permit = permit;
            broker.publish_batch(&topic, messages).await
        });
    }
    while let Some(done) = publishes.join_next().await {
        done.map_err(|e| Error::new(ErrorKind::Internal, format!("bench: publisher: {e}")))??;
    }
    let published_in = started.elapsed();
    let deadline = started + Duration::from_secs_f64(args.timeout_secs);
    while acked.load(Ordering::Relaxed) < args.messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total = started.elapsed();
    for c in consumers {
        c.abort();
    }
    let acked = acked.load(Ordering::Relaxed);
    Ok(Row {
        broker: shown(url),
        publish_per_s: args.messages as f64 / published_in.as_secs_f64(),
        acked_per_s: acked as f64 / total.as_secs_f64(),
        acked,
    })
}
