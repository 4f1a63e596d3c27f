//! Claim check: a payload too large for the broker travels through the state store.
//!
//! [`ClaimCheck`] wraps any [`Broker`]. A payload over the broker's `max_message_bytes` is
//! stored as a blob in the [`StateStore`] (for [`BLOB_TTL`]) and the message carries only a
//! reference; a subscription swaps the reference back for the payload before handing the
//! delivery out. The engine wraps its broker in one, so it never sees the difference.
//!
//! A reference is [`MARKER`] followed by the blob id. weir's topics carry JSON, which cannot
//! start with a NUL byte, so a reference is never mistaken for a payload.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tracing::error;

use crate::broker::{Broker, BrokerCapabilities, Delivery, Subscription};
use crate::error::{Error, ErrorKind, Result};
use crate::state::StateStore;

/// How a reference starts.
pub const MARKER: &[u8] = b"\0weir-claim-check:";

/// How long a claim-checked payload is kept: longer than any message waits in a broker.
pub const BLOB_TTL: Duration = Duration::from_secs(7 * 86_400);

/// The largest payload a claim check accepts, whatever the broker's limit.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// A broker whose large payloads go through the state store.
pub struct ClaimCheck {
    inner: Arc<dyn Broker>,
    blobs: Arc<dyn StateStore>,
    /// Payloads above this go through the state store.
    limit: usize,
}

impl ClaimCheck {
    /// Wraps `inner`, keeping payloads over its `max_message_bytes` in `blobs`.
    pub fn new(inner: Arc<dyn Broker>, blobs: Arc<dyn StateStore>) -> ClaimCheck {
        let limit = inner.capabilities().max_message_bytes;
        ClaimCheck {
            inner,
            blobs,
            limit,
        }
    }

    /// The payload to publish: itself, or a reference to it once stored.
    async fn check_in(&self, payload: Bytes) -> Result<Bytes> {
        if payload.len() <= self.limit {
            return Ok(payload);
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::new(ErrorKind::TooLarge, "message too large")
                .with_context("bytes", payload.len())
                .with_context("max_bytes", MAX_PAYLOAD_BYTES));
        }
        let id = ulid::Ulid::new().to_string();
        self.blobs.put_blob(&id, payload, BLOB_TTL).await?;
        let mut reference = BytesMut::with_capacity(MARKER.len() + id.len());
        reference.extend_from_slice(MARKER);
        reference.extend_from_slice(id.as_bytes());
        Ok(reference.freeze())
    }
}

#[async_trait]
impl Broker for ClaimCheck {
    /// The wrapped broker's, with payloads up to [`MAX_PAYLOAD_BYTES`].
    fn capabilities(&self) -> BrokerCapabilities {
        let mut caps = self.inner.capabilities();
        caps.max_message_bytes = caps.max_message_bytes.max(MAX_PAYLOAD_BYTES);
        caps
    }

    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<()> {
        let payload = self.check_in(payload).await?;
        self.inner.publish(topic, key, payload).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<(String, Bytes)>) -> Result<()> {
        let mut checked = Vec::with_capacity(messages.len());
        for (key, payload) in messages {
            checked.push((key, self.check_in(payload).await?));
        }
        self.inner.publish_batch(topic, checked).await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(CheckedOut {
            inner: self.inner.subscribe(topic, group).await?,
            blobs: self.blobs.clone(),
        }))
    }
}

/// A subscription that swaps references for their payloads.
struct CheckedOut {
    inner: Box<dyn Subscription>,
    blobs: Arc<dyn StateStore>,
}

#[async_trait]
impl Subscription for CheckedOut {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            let delivery = self.inner.next().await?;
            let Some(id) = delivery.payload.strip_prefix(MARKER) else {
                return Ok(delivery);
            };
            let id = String::from_utf8_lossy(id).into_owned();
            // A store error drops the delivery unacked: the broker delivers it again later.
            match self.blobs.get_blob(&id).await? {
                Some(payload) => return Ok(delivery.with_payload(payload)),
                None => {
                    error!(blob = %id, key = %delivery.key, "claim check: the payload of a message expired or was lost; dropping the message");
                    let _ = delivery.ack().await;
                }
            }
        }
    }
}
