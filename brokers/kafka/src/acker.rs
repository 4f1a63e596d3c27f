//! Acknowledgement of one delivery: mark the offset acked (committed with the partition's
//! contiguous acked prefix), or republish the message for its group and then mark it acked.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};
use tracing::warn;
use weir_core::Result;
use weir_core::broker::Acker;

use crate::produce;
use crate::subscription::{HEADER_GROUP, HEADER_REDELIVERIES, Incoming, Shared};

/// The handle of one delivery.
pub(crate) struct KafkaAcker {
    shared: Arc<Shared>,
    partition: i32,
    epoch: u64,
    offset: i64,
    key: String,
    payload: Bytes,
    redeliveries: u32,
    /// Acked or nacked (or being so): dropping it then does nothing more.
    done: bool,
}

/// Counts one republish in flight until dropped (the subscription's last commit waits for it).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a republish needs, detached from the acker.
struct Republish {
    shared: Arc<Shared>,
    partition: i32,
    epoch: u64,
    offset: i64,
    key: String,
    payload: Bytes,
    redeliveries: u32,
}

impl Republish {
    /// Appends the message to its topic again (same key, so the same partition), for this
    /// group only, with its redelivery count; then marks the original acked. On failure the
    /// original stays uncommitted (the partition's next owner gets it).
    async fn run(self) -> Result<()> {
        let shared = &self.shared;
        let count = self.redeliveries.saturating_add(1).to_string();
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: HEADER_REDELIVERIES,
                value: Some(count.as_bytes()),
            })
            .insert(Header {
                key: HEADER_GROUP,
                value: Some(shared.kafka_group.as_bytes()),
            });
        let sent = produce(
            &shared.producer,
            &shared.kafka_topic,
            &self.key,
            &self.payload,
            Some(headers),
            shared.timeout,
        )
        .await;
        match sent {
            Ok(()) => {
                shared.ack(self.partition, self.epoch, self.offset);
                Ok(())
            }
            Err(e) => {
                shared.release(self.partition, self.epoch, self.offset);
                Err(e
                    .with_context("partition", self.partition)
                    .with_context("offset", self.offset))
            }
        }
    }
}

impl KafkaAcker {
    pub(crate) fn new(shared: Arc<Shared>, m: &Incoming) -> Self {
        KafkaAcker {
            shared,
            partition: m.partition,
            epoch: m.epoch,
            offset: m.offset,
            key: m.key.clone(),
            payload: m.payload.clone(),
            redeliveries: m.redeliveries,
            done: false,
        }
    }

    fn republish(&mut self) -> Republish {
        self.done = true;
        Republish {
            shared: self.shared.clone(),
            partition: self.partition,
            epoch: self.epoch,
            offset: self.offset,
            key: std::mem::take(&mut self.key),
            payload: std::mem::take(&mut self.payload),
            redeliveries: self.redeliveries,
        }
    }
}

#[async_trait]
impl Acker for KafkaAcker {
    /// Marks the offset acked; it is committed once every earlier offset of the partition is
    /// acked too (every `commit_interval`, on a rebalance and when the subscription is dropped).
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.done = true;
        self.shared.ack(self.partition, self.epoch, self.offset);
        Ok(())
    }

    /// Kafka cannot deliver one message again: the message is republished at the end of its
    /// topic (same key, same partition) with `redeliveries + 1` and a header naming this group
    /// (the topic's other groups skip it), and the original is marked acked once Kafka has the
    /// copy. With a delay (the broker announces no native delay), the republish waits for it
    /// in this process while the original stays uncommitted; `nack` returns at once then.
    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let job = self.republish();
        match delay.filter(|d| !d.is_zero()) {
            None => job.run().await,
            Some(delay) => {
                let in_flight = InFlight::new(job.shared.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Err(e) = job.run().await {
                        warn!(error = %e, "kafka broker: republishing a delayed nack failed; the partition's next owner gets the message again");
                    }
                    drop(in_flight);
                });
                Ok(())
            }
        }
    }
}

impl Drop for KafkaAcker {
    /// Dropped without ack or nack: republished as by `nack(None)` when a tokio runtime is
    /// there to do it; otherwise it stays uncommitted (the partition's next owner gets it).
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.done = true;
            self.shared.release(self.partition, self.epoch, self.offset);
            return;
        };
        let job = self.republish();
        let in_flight = InFlight::new(job.shared.clone());
        runtime.spawn(async move {
            if let Err(e) = job.run().await {
                warn!(error = %e, "kafka broker: republishing a dropped delivery failed; the partition's next owner gets it again");
            }
            drop(in_flight);
        });
    }
}
