//! Acknowledgement of one delivery: batched delete on ack, visibility change on nack or drop.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use weir_core::broker::Acker;
use weir_core::{Error, Result};

use crate::MAX_NATIVE_DELAY;
use crate::ops;
use crate::subscription::{AckRequest, Shared};

/// The handle of one delivery.
pub(crate) struct SqsAcker {
    shared: Arc<Shared>,
    receipt: String,
    message_id: String,
    key: String,
    /// Acked or nacked (or being nacked): dropping it then does nothing more.
    done: bool,
    /// An ack was started: dropped before its outcome (a cancelled `ack()`), the delivery is
    /// settled as returned, so a FIFO key is not left busy.
    acking: bool,
}

impl SqsAcker {
    pub(crate) fn new(
        shared: Arc<Shared>,
        receipt: String,
        message_id: String,
        key: String,
    ) -> Self {
        SqsAcker {
            shared,
            receipt,
            message_id,
            key,
            done: false,
            acking: false,
        }
    }

    /// The receipt handle of the delivery.
    pub(crate) fn receipt(&self) -> &str {
        &self.receipt
    }

    /// The message goes back to the queue: no longer renewed, receivable here again, and (FIFO)
    /// its key's buffered messages go back with it.
    fn returning(&self) {
        self.shared.returning(&self.receipt, &self.message_id);
        self.shared.settle(&self.receipt, &self.key, true);
    }
}

#[async_trait]
impl Acker for SqsAcker {
    /// Hands the receipt to the subscription's ack batcher (one `DeleteMessageBatch` for up to
    /// 10 acks within `ack_linger`, each bounded to `visibility / 3` and tried twice) and waits
    /// for the outcome; the heartbeat keeps renewing the message until then. If the delete
    /// fails, the message comes back after the visibility timeout (no longer renewed).
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.acking = true;
        self.shared.acking(&self.receipt, &self.message_id);
        let (done, outcome) = oneshot::channel();
        let request = AckRequest {
            receipt: self.receipt.clone(),
            done,
            renewed_by: Some(Arc::downgrade(&self.shared)),
        };
        let outcome = if self.shared.acks.send(request).is_err() {
            Err(Error::internal("sqs broker: ack batcher stopped"))
        } else {
            outcome
                .await
                .unwrap_or_else(|_| Err(Error::unavailable("sqs broker: ack batcher stopped")))
        };
        self.done = true;
        self.shared.acked(&self.receipt);
        if outcome.is_err() {
            // It may come back: deliver it then, and keep its key's order.
            self.returning();
        } else {
            self.shared.settle(&self.receipt, &self.key, false);
        }
        outcome
    }

    /// `ChangeMessageVisibility` to the delay (rounded up to whole seconds; none: 0, visible
    /// at once), after any renewal in flight and within `visibility / 3` (else a retryable
    /// `Timeout`, and the message comes back after the visibility timeout at the latest). The
    /// message keeps its place (and, on a FIFO queue, blocks its key until it is delivered
    /// again, so the key's order holds).
    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        self.done = true;
        self.returning();
        let delay = delay.unwrap_or(Duration::ZERO);
        let clamped = delay > MAX_NATIVE_DELAY;
        let delay = delay.min(MAX_NATIVE_DELAY);
        {
            // Shared with other nacks; the heartbeat's renewal (which holds it exclusively)
            // is bounded too.
            let _no_renewal_in_flight = self.shared.renew_lock.read().await;
            let call = ops::change_visibility(
                &self.shared.client,
                &self.shared.queue_url,
                &self.receipt,
                delay,
            );
            ops::within(self.shared.call_limit(), "ChangeMessageVisibility", call).await?;
        }
        if clamped {
            return Err(Error::invalid(
                "nack delay exceeds the SQS broker's max_native_delay; the message comes back after the maximum",
            )
            .with_context("max_native_delay_s", MAX_NATIVE_DELAY.as_secs()));
        }
        Ok(())
    }
}

impl Drop for SqsAcker {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.acking {
            // A cancelled ack: the delete goes on without us (the message renewed until it is
            // answered), its outcome unknown here. Settle as returned: a FIFO key's buffered
            // messages go back rather than wait behind a delivery nobody settles.
            self.shared.settle_key(&self.key, true);
            return;
        }
        // Dropped without ack or nack: visible again at once (after any renewal in flight)
        // when a runtime is there to do it; otherwise it comes back after the visibility
        // timeout.
        self.returning();
        self.shared
            .make_visible(vec![std::mem::take(&mut self.receipt)]);
    }
}
