//! Acknowledgement of one delivery: `basic.ack`, `basic.nack` with requeue, delayed nacks
//! through the delay queues.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tracing::{debug, warn};
use weir_core::broker::Acker;
use weir_core::{Error, Result};

use crate::MAX_NATIVE_DELAY;
use crate::error::{amqp_error, gone};
use crate::link::Connector;
use crate::message::{bucket_ceiling, delay_ms, delayed_properties};
use crate::publish::{Outgoing, Target, publish_confirmed};

/// The handle of one delivery.
pub(crate) struct AmqpAcker {
    connector: Arc<Connector>,
    /// Keeps the delivery's channel open while the delivery lives (an ack must go through the
    /// channel that received it), even after its subscription is dropped.
    channel: Option<Channel>,
    acker: lapin::Acker,
    /// The group's queue: where a delayed redelivery returns.
    queue: Arc<str>,
    key: String,
    payload: Bytes,
    redeliveries: u32,
    /// Acked or nacked (or being so): dropping it then does nothing.
    done: bool,
}

impl AmqpAcker {
    pub(crate) fn new(
        connector: Arc<Connector>,
        channel: Channel,
        acker: lapin::Acker,
        queue: Arc<str>,
        key: String,
        payload: Bytes,
        redeliveries: u32,
    ) -> Self {
        AmqpAcker {
            connector,
            channel: Some(channel),
            acker,
            queue,
            key,
            payload,
            redeliveries,
            done: false,
        }
    }

    /// `basic.nack` with requeue: RabbitMQ delivers it again at once to a consumer of the
    /// group, counting the redelivery.
    async fn requeue(&self) -> Result<()> {
        let options = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        match self.acker.nack(options).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(gone("nack").with_context(
                "note",
                "RabbitMQ redelivers the message when it notices the channel is gone",
            )),
            Err(e) => Err(amqp_error("nack", e)),
        }
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    /// `basic.ack` on the channel the delivery came through. If that channel is gone (the
    /// connection dropped), the ack fails with a retryable error and RabbitMQ redelivers the
    /// message (it requeued it when the channel closed).
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.done = true;
        match self.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(gone("ack")
                .with_context("note", "the message is redelivered (RabbitMQ requeued it)")),
            Err(e) => Err(amqp_error("ack", e)),
        }
    }

    /// Without a delay: `basic.nack` with requeue. With one: the message is published (with
    /// confirm) to the delay queue of its bucket with a per-message expiration of the delay,
    /// which dead-letters it back to the group's queue when due; then the original is acked.
    /// If that publish fails, the original is requeued at once instead and the error returned.
    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        self.done = true;
        let Some(delay) = delay.filter(|d| !d.is_zero()) else {
            return self.requeue().await;
        };
        let clamped = delay > MAX_NATIVE_DELAY;
        let ms = delay_ms(delay.min(MAX_NATIVE_DELAY));
        let ceiling_ms = bucket_ceiling(ms);
        let message = Outgoing {
            routing_key: &self.queue,
            properties: delayed_properties(
                &self.key,
                self.redeliveries.saturating_add(1),
                ceiling_ms,
                ms,
            ),
            payload: &self.payload,
        };
        let published =
            publish_confirmed(&self.connector, Target::Delay { ceiling_ms }, &[message]).await;
        if let Err(e) = published {
            if let Err(requeue) = self.requeue().await {
                debug!(error = %requeue, "amqp broker: requeueing after a failed delayed nack failed");
            }
            return Err(e.with_context("delay_ms", ms));
        }
        if let Err(e) = self.acker.ack(BasicAckOptions::default()).await {
            // The delayed copy is stored; the original comes back too (a duplicate).
            debug!(error = %e, "amqp broker: acking a message nacked with delay failed");
        }
        if clamped {
            return Err(Error::invalid(
                "nack delay exceeds the AMQP broker's max_native_delay; the message was scheduled at the maximum",
            )
            .with_context("max_native_delay_s", MAX_NATIVE_DELAY.as_secs()));
        }
        Ok(())
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped without ack or nack: requeue it now (as a nack) when a runtime is there to
        // send it; otherwise RabbitMQ requeues it when the channel closes.
        let channel = self.channel.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let acker = self.acker.clone();
            runtime.spawn(async move {
                let options = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                if let Err(e) = acker.nack(options).await {
                    warn!(error = %e, "amqp broker: requeueing a dropped delivery failed; RabbitMQ requeues it when the channel closes");
                }
                drop(channel);
            });
        }
    }
}
