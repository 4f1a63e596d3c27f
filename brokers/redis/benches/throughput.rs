//! Throughput of [`RedisBroker`]: publish + consume + ack of 1 KiB messages, against the
//! Redis of `WEIR_TEST_REDIS_URL` (skipped when it is not set).

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_main};
use weir_broker_redis::RedisBroker;
use weir_core::broker::{Broker, Subscription};

/// Messages per iteration.
const BATCH: usize = 1_000;

fn url() -> Option<String> {
    let base = std::env::var("WEIR_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let Some(base) = base else {
        eprintln!("skipping the Redis broker bench: WEIR_TEST_REDIS_URL is not set");
        return None;
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}prefix=weir-bench&count=64"))
}

fn topic() -> String {
    format!("steps-{:016x}", rand::random::<u64>())
}

/// Deletes the keys of `topic` (group `executor`) left by a bench.
async fn cleanup(url: &str, topic: &str) {
    let keys = [
        format!("weir-bench:stream:{topic}"),
        format!("weir-bench:retry:{topic}:executor"),
        format!("weir-bench:delayed:{topic}:executor"),
    ];
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    if let Ok(mut con) = client.get_multiplexed_async_connection().await {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query_async(&mut con).await;
    }
}

/// One task publishes a batch (one `XADD` each), then consumes and acks it.
fn sequential(c: &mut Criterion, url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let broker = rt.block_on(RedisBroker::connect(url)).expect("connect");
    let topic = topic();
    let mut sub = rt
        .block_on(broker.subscribe(&topic, "executor"))
        .expect("subscribe");
    let payload = Bytes::from(vec![7u8; 1024]);
    let mut group = c.benchmark_group("redis_broker");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("publish_then_consume_ack_1KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    broker
                        .publish(&topic, "run-1", payload.clone())
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
    drop(sub);
    rt.block_on(cleanup(url, &topic));
}

/// Publishers and two competing consumers on a two-thread runtime, as an executor runs:
/// publishes from 8 tasks, acks from many tasks at once (each ack its own round trip, all
/// multiplexed on one connection).
fn concurrent(c: &mut Criterion, url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = std::sync::Arc::new(rt.block_on(RedisBroker::connect(url)).expect("connect"));
    let topic = topic();
    let mut subs: Vec<Box<dyn Subscription>> = (0..2)
        .map(|_| {
            rt.block_on(broker.subscribe(&topic, "executor"))
                .expect("subscribe")
        })
        .collect();
    let payload = Bytes::from(vec![7u8; 1024]);
    let mut group = c.benchmark_group("redis_broker");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("concurrent_publish_consume_ack_1KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let consumers: Vec<_> = subs.drain(..).map(|s| tokio::spawn(consume(s))).collect();
                let publishers: Vec<_> = (0..8)
                    .map(|_| {
                        let (broker, topic, payload) =
                            (broker.clone(), topic.clone(), payload.clone());
                        tokio::spawn(async move {
                            for _ in 0..BATCH / 8 {
                                broker
                                    .publish(&topic, "run-1", payload.clone())
                                    .await
                                    .expect("publish");
                            }
                        })
                    })
                    .collect();
                for p in publishers {
                    p.await.expect("publisher");
                }
                for _ in 0..consumers.len() {
                    broker
                        .publish(&topic, "stop", Bytes::new())
                        .await
                        .expect("publish");
                }
                for task in consumers {
                    subs.push(task.await.expect("consumer"));
                }
            })
        })
    });
    group.finish();
    drop(subs);
    rt.block_on(cleanup(url, &topic));
}

/// Takes messages and acks each in a task of its own until an empty payload; gives the
/// subscription back.
async fn consume(mut sub: Box<dyn Subscription>) -> Box<dyn Subscription> {
    let mut acks = tokio::task::JoinSet::new();
    loop {
        let d = sub.next().await.expect("next");
        let stop = d.payload.is_empty();
        acks.spawn(async move { d.ack().await.expect("ack") });
        if stop {
            while acks.join_next().await.is_some() {}
            return sub;
        }
    }
}

/// Every benchmark of this file (what `criterion_group!` would generate, with a doc comment).
fn benches() {
    let Some(url) = url() else { return };
    let mut c = Criterion::default().configure_from_args();
    sequential(&mut c, &url);
    concurrent(&mut c, &url);
}

criterion_main!(benches);
