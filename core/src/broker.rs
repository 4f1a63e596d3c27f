//! The `Broker` trait: at-least-once topics with consumer groups.
//!
//! Two topics carry weir's work: [`TOPIC_EVENTS`] (ingest → router) and [`TOPIC_STEPS`]
//! (router / executor / scheduler → executor). Every consumer group of a topic gets every
//! message; consumers of one group compete. A delivery is acked or nacked; one dropped
//! without either is redelivered.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// The topic of accepted events.
pub const TOPIC_EVENTS: &str = "events";
/// The topic of step attempts to execute.
pub const TOPIC_STEPS: &str = "steps";

/// What a broker can do, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerCapabilities {
    /// `nack` with a delay is honoured natively; the longest delay it accepts.
    pub max_native_delay: Option<Duration>,
    /// The largest payload accepted.
    pub max_message_bytes: usize,
    /// Messages with the same key are delivered in publish order.
    pub ordered_by_key: bool,
    /// A nacked message is redelivered (Kafka-like brokers cannot).
    pub redelivers_on_nack: bool,
}

impl BrokerCapabilities {
    /// Capabilities with the given limits (the struct is non-exhaustive).
    pub fn new(
        max_native_delay: Option<Duration>,
        max_message_bytes: usize,
        ordered_by_key: bool,
        redelivers_on_nack: bool,
    ) -> Self {
        BrokerCapabilities {
            max_native_delay,
            max_message_bytes,
            ordered_by_key,
            redelivers_on_nack,
        }
    }
}

/// A message handed to a consumer.
pub struct Delivery {
    /// The payload as published.
    pub payload: Bytes,
    /// The key as published.
    pub key: String,
    /// How many times it was delivered before (0 on first delivery).
    pub redeliveries: u32,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("key", &self.key)
            .field("bytes", &self.payload.len())
            .field("redeliveries", &self.redeliveries)
            .finish()
    }
}

impl Delivery {
    /// Wraps a payload with the driver's acknowledgement handle.
    pub fn new(payload: Bytes, key: String, redeliveries: u32, acker: Box<dyn Acker>) -> Self {
        Delivery {
            payload,
            key,
            redeliveries,
            acker,
        }
    }

    /// The same delivery with another payload (acking it acks the original).
    pub fn with_payload(self, payload: Bytes) -> Delivery {
        Delivery { payload, ..self }
    }

    /// The message was handled: it will not be delivered again.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// The message was not handled: deliver it again (after `delay`, if given).
    pub async fn nack(self, delay: Option<Duration>) -> Result<()> {
        self.acker.nack(delay).await
    }
}

/// A driver's acknowledgement handle for one delivery.
///
/// Contract: dropping it without calling either method must lead to redelivery (after the
/// broker's lease or visibility timeout, or when the consumer's connection closes). An `Err`
/// from `ack` means the message may come again (the engine's handling is idempotent); an
/// error the driver can recover from by reconnecting is [`ErrorKind::Unavailable`]
/// (retryable).
///
/// [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable
#[async_trait]
pub trait Acker: Send + Sync {
    /// Acknowledge.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Negative-acknowledge, redelivering after `delay`.
    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<()>;
}

/// A consumer's stream of deliveries.
///
/// Contract: [`next`](Subscription::next) must be **cancel-safe**. The engine drops a pending
/// `next()` when it stops, and the conformance suite does whenever it waits for "nothing
/// more"; a message the driver had taken from the broker but not yet returned must then stay
/// available (returned by the next call, or redelivered), never lost. A driver that prefetches
/// keeps what it fetched in the subscription, not in the future. An `Err` is logged by the
/// engine and `next` called again after a pause: return [`ErrorKind::Unavailable`] while the
/// broker is unreachable and reconnect inside the subscription.
///
/// [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable
#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next delivery. Cancel-safe.
    async fn next(&mut self) -> Result<Delivery>;
}

/// At-least-once transport with consumer groups.
///
/// Contract (checked by the conformance suite, `testkit::broker`):
/// - every consumer group of a topic gets every message published after the group was
///   subscribed; the consumers of one group compete (each message goes to one of them);
/// - a message is delivered until it is acked: a nack redelivers it (after the delay, if the
///   broker honours delays natively: [`BrokerCapabilities::max_native_delay`]), and so does
///   a consumer that dies or drops the delivery;
/// - `publish` returns once the message is durable as the broker defines it; the engine never
///   publishes a payload over [`BrokerCapabilities::max_message_bytes`] (it sends those
///   through the state store: `claim_check`), and a broker refusing one anyway answers
///   [`ErrorKind::TooLarge`];
/// - errors are weir [`Error`]s: connection trouble is [`ErrorKind::Unavailable`] (the engine
///   retries soon), a refusal that retrying cannot cure is permanent (the engine holds the
///   message and logs an error until someone fixes the cause).
///
/// What a broker cannot do is said by its [`BrokerCapabilities`], not by failing: the engine
/// adapts (a broker that cannot redeliver on nack gets a timer in the state store).
///
/// [`Error`]: crate::Error
/// [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable
/// [`ErrorKind::TooLarge`]: crate::ErrorKind::TooLarge
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// What this broker can do.
    fn capabilities(&self) -> BrokerCapabilities;

    /// Publishes one message; durable (as the broker defines it) when this returns.
    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<()>;

    /// Publishes several messages; the default publishes them one by one.
    async fn publish_batch(&self, topic: &str, messages: Vec<(String, Bytes)>) -> Result<()> {
        for (key, payload) in messages {
            self.publish(topic, &key, payload).await?;
        }
        Ok(())
    }

    /// Joins consumer group `group` of `topic`.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>>;
}
