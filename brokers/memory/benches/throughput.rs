//! Throughput of [`MemoryBroker`]: publish + consume + ack of 1 KiB messages.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_main};
use weir_broker_memory::MemoryBroker;
use weir_core::broker::{Broker, Subscription};

/// Messages per iteration.
const BATCH: usize = 1_000;

/// One task publishes a batch, then consumes and acks it.
fn sequential(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let broker = MemoryBroker::new();
    let mut sub = rt
        .block_on(broker.subscribe("steps", "executor"))
        .expect("subscribe");
    let payload = Bytes::from(vec![7u8; 1024]);
    let mut group = c.benchmark_group("memory_broker");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("publish_then_consume_ack_1KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    broker
                        .publish("steps", "run-1", payload.clone())
                        .await
                        .expect("publish");
                }
                for _ in 0..BATCH {
                    sub.next().await.expect("next").ack().await.expect("ack");
                }
            })
        })
    });
    group.finish();
}

/// The main thread publishes; two competing consumer tasks on a two-thread runtime take and ack.
fn concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = MemoryBroker::new();
    let mut subs: Vec<Box<dyn Subscription>> = (0..2)
        .map(|_| {
            rt.block_on(broker.subscribe("steps", "executor"))
                .expect("subscribe")
        })
        .collect();
    let payload = Bytes::from(vec![7u8; 1024]);
    let mut group = c.benchmark_group("memory_broker");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("concurrent_publish_consume_ack_1KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = subs
                    .drain(..)
                    .map(|sub| tokio::spawn(consume(sub)))
                    .collect();
                for _ in 0..BATCH {
                    broker
                        .publish("steps", "run-1", payload.clone())
                        .await
                        .expect("publish");
                }
                // One empty "stop" message per consumer, behind the batch.
                for _ in 0..tasks.len() {
                    broker
                        .publish("steps", "stop", Bytes::new())
                        .await
                        .expect("publish");
                }
                for task in tasks {
                    subs.push(task.await.expect("consumer"));
                }
            })
        })
    });
    group.finish();
}

/// Takes and acks until an empty payload; gives the subscription back.
async fn consume(mut sub: Box<dyn Subscription>) -> Box<dyn Subscription> {
    loop {
        let d = sub.next().await.expect("next");
        let stop = d.payload.is_empty();
        d.ack().await.expect("ack");
        if stop {
            return sub;
        }
    }
}

/// Every benchmark of this file (what `criterion_group!` would generate, with a doc comment).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    sequential(&mut c);
    concurrent(&mut c);
}

criterion_main!(benches);
