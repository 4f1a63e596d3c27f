//! Acknowledgement of one delivery: `basic.ack`, `basic.nack` with requeue, delayed nacks
//! through the delay queues.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tracing::debug;
use weir_core::broker::Acker;
use weir_core::{Error, Result};

use crate::MAX_NATIVE_DELAY;
use crate::error::{gone, settle_error};
use crate::link::Connector;
use crate::message::{bucket_ceiling, delay_ms, delayed_properties};
use crate::publish::{Outgoing, Target, publish_confirmed};

/// `basic.nack` with requeue: RabbitMQ delivers the message again at once to a consumer of
/// the group, counting the redelivery. Fails (retryable) when the channel is gone: RabbitMQ
/// requeued the message then. The frame is queued on the first poll, so polling this once
/// (without a runtime, in a `Drop`) is enough to send it.
pub(crate) async fn requeue(acker: &lapin::Acker) -> Result<()> {
    let options = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    match acker.nack(options).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(gone("nack").with_context(
            "note",
            "RabbitMQ redelivers the message when it notices the channel is gone",
        )),
        Err(e) => Err(settle_error("nack", e)),
    }
}

/// The handle of one delivery.
pub(crate) struct AmqpAcker {
    connector: Arc<Connector>,
    /// Keeps the delivery's channel open while the delivery lives (an ack must go through the
    /// channel that received it), even after its subscription is dropped. Dropped after
    /// [`Drop::drop`] ran, so after its requeue was queued.
    _channel: Channel,
    /// Usable until an ack or nack was sent (lapin marks it used then) or its channel closed.
    acker: lapin::Acker,
    /// The group's queue: where a delayed redelivery returns.
    queue: Arc<str>,
    key: String,
    payload: Bytes,
    redeliveries: u32,
}

impl AmqpAcker {
    /// `settle` within the broker's `timeout`: lapin can leave an ack pending for good when
    /// the server closes the connection under it (amqp-rs/lapin#409); RabbitMQ redelivers the
    /// message once it sees the channel gone, so a timeout is the channel being [`gone`].
    async fn bounded<T>(&self, what: &str, settle: impl Future<Output = T>) -> Result<T> {
        tokio::time::timeout(self.connector.config.timeout, settle)
            .await
            .map_err(|_| {
                gone(what).with_context(
                    "note",
                    "no answer within the timeout; the message is redelivered",
                )
            })
    }

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
            _channel: channel,
            acker,
            queue,
            key,
            payload,
            redeliveries,
        }
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    /// `basic.ack` on the channel the delivery came through. If that channel is gone (the
    /// connection dropped, `consumer_timeout` closed it), the ack fails with a retryable error
    /// and RabbitMQ redelivers the message (it requeued it when the channel closed).
    async fn ack(self: Box<Self>) -> Result<()> {
        let acked = self.bounded("ack", self.acker.ack(BasicAckOptions::default()));
        match acked.await? {
            Ok(true) => Ok(()),
            Ok(false) => Err(gone("ack")
                .with_context("note", "the message is redelivered (RabbitMQ requeued it)")),
            Err(e) => Err(settle_error("ack", e)),
        }
    }

    /// Without a delay: `basic.nack` with requeue. With one: the message is published (with
    /// confirm) to the delay queue of its bucket with a per-message expiration of the delay,
    /// which dead-letters it back to the group's queue when due; then the original is acked.
    /// If that publish fails, the original is requeued at once instead and the error returned.
    /// If the delivery's channel is gone already, nothing is published (RabbitMQ requeued the
    /// original) and the nack fails with a retryable error.
    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let Some(delay) = delay.filter(|d| !d.is_zero()) else {
            return self.bounded("nack", requeue(&self.acker)).await?;
        };
        if !self.acker.usable() {
            return Err(gone("nack").with_context(
                "note",
                "nothing was scheduled; the message is redelivered (RabbitMQ requeued it)",
            ));
        }
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
        // Cancelled while publishing: the acker is still usable, so Drop requeues the original.
        let published =
            publish_confirmed(&self.connector, Target::Delay { ceiling_ms }, &[message]).await;
        if let Err(e) = published {
            if let Err(requeue) = self
                .bounded("nack", requeue(&self.acker))
                .await
                .and_then(|requeued| requeued)
            {
                debug!(error = %requeue, "amqp broker: requeueing after a failed delayed nack failed");
            }
            return Err(e.with_context("delay_ms", ms));
        }
        let acked = self.bounded("ack", self.acker.ack(BasicAckOptions::default()));
        let failed = match acked.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(settle_error("ack", e)),
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
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
    /// Dropped without ack or nack (or while one was under way but not sent yet, e.g. a
    /// cancelled delayed nack): requeue it now. The nack is queued on lapin's connection
    /// synchronously, so this works outside a tokio runtime too; if the channel is gone,
    /// RabbitMQ requeued the message already.
    fn drop(&mut self) {
        if !self.acker.usable() {
            return;
        }
        let _ = requeue(&self.acker).now_or_never();
    }
}
