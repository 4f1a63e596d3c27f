//! Acknowledgement of one delivery: batched delete on ack, visibility change on nack or drop.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use tracing::debug;
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
    /// Acked or nacked (or being so): dropping it then does nothing more.
    done: bool,
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
        }
    }

    /// FIFO: the message goes back, so the subscription hands back the messages of its key
    /// received together with it (they must not overtake it).
    fn returned(&self) {
        if self.shared.fifo {
            self.shared.returned_keys.lock().insert(self.key.clone());
        }
    }
}

#[async_trait]
impl Acker for SqsAcker {
    /// Hands the receipt to the subscription's ack batcher (one `DeleteMessageBatch` for up to
    /// 10 acks within `ack_linger`) and waits for the outcome. If the delete fails, the
    /// message comes back after the visibility timeout (the heartbeat no longer extends it).
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.done = true;
        self.shared.acking(&self.receipt, &self.message_id);
        let (done, outcome) = oneshot::channel();
        let request = AckRequest {
            receipt: self.receipt.clone(),
            done,
        };
        if self.shared.acks.send(request).is_err() {
            return Err(Error::internal("sqs broker: ack batcher stopped"));
        }
        let outcome = outcome
            .await
            .unwrap_or_else(|_| Err(Error::unavailable("sqs broker: ack batcher stopped")));
        if outcome.is_err() {
            self.shared.ack_failed(&self.message_id);
        }
        outcome
    }

    /// `ChangeMessageVisibility` to the delay (rounded up to whole seconds; none: 0, visible
    /// at once). The message keeps its place (and, on a FIFO queue, blocks its key until it is
    /// delivered again, so the key's order holds).
    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        self.done = true;
        self.returned();
        self.shared.release(&self.receipt, &self.message_id);
        let delay = delay.unwrap_or(Duration::ZERO);
        let clamped = delay > MAX_NATIVE_DELAY;
        let delay = delay.min(MAX_NATIVE_DELAY);
        {
            let _no_renewal_in_flight = self.shared.renew_lock.lock().await;
            ops::change_visibility(
                &self.shared.client,
                &self.shared.queue_url,
                &self.receipt,
                delay,
            )
            .await?;
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
        // Dropped without ack or nack: make it visible again at once when a runtime is there
        // to do it; otherwise it comes back after the visibility timeout.
        self.returned();
        self.shared.release(&self.receipt, &self.message_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            let receipt = std::mem::take(&mut self.receipt);
            runtime.spawn(async move {
                if let Err(e) =
                    ops::change_visibility(&shared.client, &shared.queue_url, &receipt, Duration::ZERO)
                        .await
                {
                    debug!(error = %e, "sqs broker: handing back a dropped delivery failed; it comes back after the visibility timeout");
                }
            });
        }
    }
}
