//! Acknowledgement of one delivery: mark the offset acked (committed with the partition's
//! contiguous acked prefix), or republish the message for its group and then mark it acked.
//!
//! A republish runs as a task of its own: it claims its offset (only while the partition's
//! assignment is current), sends the copy, marks the original acked; when the send fails it
//! tries again with a growing backoff, the offset released meanwhile, until it succeeds or the
//! partition moves on (then its next owner delivers the original, and no copy is made).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};
use tokio::sync::oneshot;
use tracing::{debug, warn};
use weir_core::broker::Acker;
use weir_core::{Error, Result};

use crate::produce;
use crate::subscription::{HEADER_GROUP, HEADER_REDELIVERIES, Incoming, Shared};

/// The first wait before a republish is tried again, and before a message dropped a second
/// time is republished; doubled each time.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest such wait.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `BACKOFF_FIRST · 2ⁿ`, at most `BACKOFF_MAX`.
pub(crate) fn backoff(n: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_MAX)
}

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

/// What a republish needs, detached from the acker. Dropped unfinished (a task cancelled,
/// a runtime shutting down), it releases its offset: the original stays uncommitted and
/// nothing waits for it.
struct Republish {
    shared: Arc<Shared>,
    partition: i32,
    epoch: u64,
    offset: i64,
    key: String,
    payload: Bytes,
    redeliveries: u32,
    _in_flight: InFlight,
}

/// How one attempt went.
enum Sent {
    /// The copy is in Kafka; the original is acked.
    Done,
    /// The partition was revoked or reassigned (or the original acked): nothing was sent.
    Stale,
    Failed(Error),
}

impl Republish {
    /// Sends the copy (same key, so the same partition) for this group only, with its
    /// redelivery count, if the offset is still this assignment's; then marks the original
    /// acked. On failure the offset is released (it stays uncommitted).
    async fn send(&self) -> Sent {
        let shared = &self.shared;
        if !shared
            .tracker()
            .claim(self.partition, self.epoch, self.offset)
        {
            return Sent::Stale;
        }
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
                Sent::Done
            }
            Err(e) => {
                shared.release(self.partition, self.epoch, self.offset);
                Sent::Failed(
                    e.with_context("partition", self.partition)
                        .with_context("offset", self.offset),
                )
            }
        }
    }

    /// Waits `delay` (the offset released); false as soon as the partition is being revoked
    /// or reassigned, or the original was acked: the republish must not happen then.
    async fn wait(&self, delay: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            let revoked = self.shared.revoked.notified();
            tokio::pin!(revoked);
            revoked.as_mut().enable();
            if !self
                .shared
                .tracker()
                .current(self.partition, self.epoch, self.offset)
            {
                return false;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return true,
                () = revoked => {}
            }
        }
    }

    /// Republishes after `delay` (if any, with the offset released meanwhile), retrying
    /// failed sends with backoff for as long as the partition is this assignment's. The
    /// first attempt's outcome goes to `first` (`Ok` too when stale: the partition's next
    /// owner delivers the original).
    async fn run(self, delay: Option<Duration>, mut first: Option<oneshot::Sender<Result<()>>>) {
        let mut report = |result: Result<()>| {
            if let Some(tx) = first.take() {
                let _ = tx.send(result);
            }
        };
        if let Some(delay) = delay {
            self.shared.release(self.partition, self.epoch, self.offset);
            if !self.wait(delay).await {
                debug!(
                    topic = %self.shared.kafka_topic,
                    partition = self.partition,
                    offset = self.offset,
                    "kafka broker: the partition moved on before a delayed republish; its next owner delivers the message again"
                );
                report(Ok(()));
                return;
            }
        }
        let mut failures = 0u32;
        loop {
            match self.send().await {
                Sent::Done => {
                    if failures > 0 {
                        debug!(topic = %self.shared.kafka_topic, partition = self.partition, offset = self.offset, failures, "kafka broker: republished after retrying");
                    }
                    report(Ok(()));
                    return;
                }
                Sent::Stale => {
                    debug!(
                        topic = %self.shared.kafka_topic,
                        partition = self.partition,
                        offset = self.offset,
                        "kafka broker: republish skipped: the partition moved on; its next owner delivers the message again"
                    );
                    report(Ok(()));
                    return;
                }
                Sent::Failed(e) => {
                    let pause = backoff(failures);
                    if failures == 0 {
                        warn!(error = %e, retry_in = ?pause, "kafka broker: republishing a message failed; retrying in the background (the original stays uncommitted meanwhile)");
                    } else {
                        debug!(error = %e, retry_in = ?pause, failures, "kafka broker: republishing a message failed again");
                    }
                    report(Err(e));
                    failures = failures.saturating_add(1);
                    if !self.wait(pause).await {
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for Republish {
    fn drop(&mut self) {
        // Finished: a no-op (acked, or released already). Unfinished: the offset is held no
        // more, so no revocation or close waits for it.
        self.shared.release(self.partition, self.epoch, self.offset);
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
            _in_flight: InFlight::new(self.shared.clone()),
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
    /// copy. The republish is a task of its own (cancelling `nack` does not stop it); `nack`
    /// returns the outcome of its first attempt. A failed attempt is retried in the
    /// background with a backoff (1 s doubling up to 30 s) while the partition stays this
    /// consumer's; if the partition moves on first, no copy is made and its next owner
    /// delivers the original again.
    ///
    /// With a delay (the broker announces no native delay), the republish waits for it in
    /// this process, the original uncommitted but not held (a revocation does not wait for
    /// it: the partition's next owner delivers it instead), and `nack` returns at once.
    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let job = self.republish();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(job);
            return Err(Error::unavailable(
                "kafka broker: nack needs a tokio runtime to republish; the partition's next owner gets the message again",
            ));
        };
        match delay.filter(|d| !d.is_zero()) {
            None => {
                let (tx, rx) = oneshot::channel();
                runtime.spawn(job.run(None, Some(tx)));
                rx.await.unwrap_or_else(|_| {
                    Err(Error::unavailable(
                        "kafka broker: the republish was stopped (runtime shutting down); the partition's next owner gets the message again",
                    ))
                })
            }
            Some(delay) => {
                runtime.spawn(job.run(Some(delay), None));
                Ok(())
            }
        }
    }
}

impl Drop for KafkaAcker {
    /// Dropped without ack or nack: republished as by `nack`, when a tokio runtime is there
    /// to do it (otherwise it stays uncommitted: the partition's next owner gets it). The
    /// first time a message is dropped at once; a message delivered again and dropped again
    /// after a backoff growing with its redeliveries (1 s · 2ⁿ⁻¹, at most 30 s; the offset
    /// not held meanwhile), so a handler that keeps dropping it (the engine does when it
    /// cannot store a redelivery timer) does not loop hot, copying it over and over.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let delay = self.redeliveries.checked_sub(1).map(backoff);
        let job = self.republish();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(job.run(delay, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let secs: Vec<u64> = [0, 1, 2, 3, 4, 5, 6, 40, u32::MAX]
            .map(|n| backoff(n).as_secs())
            .into();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
    }
}
