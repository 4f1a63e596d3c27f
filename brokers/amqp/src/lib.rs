//! weir-broker-amqp: weir's [`Broker`] on RabbitMQ (AMQP 0-9-1, `amqp://…` / `amqps://…`).
//!
//! Each topic is a durable fanout exchange, `{prefix}.{topic}`; each weir consumer group is a
//! durable queue bound to it, `{prefix}.{topic}.{group}` (a quorum queue by default), so every
//! group gets every message and the subscriptions of one group compete for its queue. Publishes
//! wait for publisher confirms; deliveries are acked manually. A nack requeues (RabbitMQ counts
//! the redelivery); a nack with a delay goes through a per-delay-bucket queue whose messages
//! expire after the delay and dead-letter back to the group's queue. One connection per
//! broker, re-established with backoff when it drops; subscriptions restart their consumers on
//! it by themselves. See the README for the layout, the guarantees and the limits.
//!
//! ```no_run
//! # async fn demo() -> weir_core::Result<()> {
//! use std::sync::Arc;
//! use weir_broker_amqp::AmqpBroker;
//! use weir_core::broker::Broker;
//!
//! let broker: Arc<dyn Broker> = Arc::new(
//!     AmqpBroker::connect("amqp://guest:guest@127.0.0.1:5672/%2f?prefix=weir&prefetch=64").await?,
//! );
//! # Ok(()) }
//! ```

mod acker;
mod config;
mod error;
mod link;
mod message;
mod publish;
mod subscription;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use weir_core::broker::{Broker, BrokerCapabilities, Subscription};
use weir_core::{Error, ErrorKind, Result};

pub use config::{AMQP_MAX_MESSAGE_BYTES, AmqpBrokerConfig, DEFAULT_MAX_MESSAGE_BYTES, QueueType};

use crate::link::Connector;
use crate::message::properties;
use crate::publish::{Outgoing, Target, publish_confirmed};
use crate::subscription::AmqpSubscription;

/// The longest delay a nack accepts (`max_native_delay`): 30 days (a per-message expiration
/// must stay below 2³² ms). A longer delay is scheduled at 30 days and the nack returns an
/// `InvalidInput` error saying so.
pub const MAX_NATIVE_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest topic or group name. AMQP names are at most 255 bytes: the queue name
/// `{prefix}.{topic}.{group}` is checked as a whole by [`check_queue_name`] (a prefix of up to
/// 100 bytes with two names of 120 would exceed it).
const MAX_NAME_BYTES: usize = 120;

/// The longest exchange or queue name AMQP allows (a short string).
const MAX_AMQP_NAME_BYTES: usize = 255;

/// weir's broker on RabbitMQ.
///
/// Capabilities: native delay up to [`MAX_NATIVE_DELAY`]; payloads up to the configured
/// `max_message_bytes` (64 MiB by default); not ordered by key; redelivery on nack.
pub struct AmqpBroker {
    connector: Arc<Connector>,
}

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("config", &self.connector.config)
            .finish_non_exhaustive()
    }
}

impl AmqpBroker {
    /// Parses `url` (see [`AmqpBrokerConfig`]) and connects.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(AmqpBrokerConfig::from_url(url)?).await
    }

    /// Connects with `config` (its settings are checked again, in case a program changed
    /// them). Fails with [`ErrorKind::Unavailable`] (retryable) when RabbitMQ cannot be
    /// reached within `timeout`, [`ErrorKind::Config`] on bad settings, credentials or vhost.
    pub async fn with_config(config: AmqpBrokerConfig) -> Result<Self> {
        config.check()?;
        let deadline = tokio::time::Instant::now() + config.timeout;
        let connector = Arc::new(Connector::new(config)?);
        connector.link(Some(deadline)).await?;
        Ok(AmqpBroker { connector })
    }

    /// The configuration in use.
    pub fn config(&self) -> &AmqpBrokerConfig {
        &self.connector.config
    }

    /// How many connections this broker has opened so far: 1, plus one per reconnect.
    pub fn connections(&self) -> u64 {
        self.connector.connections()
    }

    fn check_size(&self, payload: &Bytes) -> Result<()> {
        let max = self.connector.config.max_message_bytes;
        if payload.len() > max {
            return Err(
                Error::new(ErrorKind::TooLarge, "message too large for the AMQP broker")
                    .permanent()
                    .with_context("bytes", payload.len())
                    .with_context("max_bytes", max),
            );
        }
        Ok(())
    }
}

/// Checks a topic or group name: 1..=120 bytes, no `.` or `:` (they separate the parts of
/// exchange and queue names), no whitespace or control characters.
fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name
            .chars()
            .any(|c| c == '.' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "invalid {what} name {name:?} for the AMQP broker: 1..={MAX_NAME_BYTES} bytes, without '.', ':', whitespace or control characters"
    ))
    .permanent())
}

/// Checks that the group queue's name, `{prefix}.{topic}.{group}` (also the routing key of its
/// delayed redeliveries), fits AMQP's 255 bytes. The other names are shorter: the exchange
/// `{prefix}.{topic}` (at most 221 bytes) and the delay queues `{prefix}:delay:{ms}` (at most
/// 127).
fn check_queue_name(config: &AmqpBrokerConfig, topic: &str, group: &str) -> Result<()> {
    let queue = config.queue(topic, group);
    if queue.len() <= MAX_AMQP_NAME_BYTES {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "topic and group names too long for the AMQP broker: the queue name {{prefix}}.{{topic}}.{{group}} is {} bytes, at most {MAX_AMQP_NAME_BYTES}",
        queue.len()
    ))
    .permanent()
    .with_context("topic", topic)
    .with_context("group", group))
}

#[async_trait]
impl Broker for AmqpBroker {
    fn capabilities(&self) -> BrokerCapabilities {
        BrokerCapabilities::new(
            Some(MAX_NATIVE_DELAY),
            self.connector.config.max_message_bytes,
            false,
            true,
        )
    }

    /// One persistent `basic.publish` to the topic's exchange; returns once RabbitMQ confirmed
    /// it (stored in every group queue bound then). Retried across reconnects for up to
    /// `timeout`.
    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<()> {
        check_name("topic", topic)?;
        self.check_size(&payload)?;
        let exchange = self.connector.config.exchange(topic);
        let message = Outgoing {
            routing_key: "",
            properties: properties(key, 0),
            payload: &payload,
        };
        publish_confirmed(&self.connector, Target::Topic(&exchange), &[message])
            .await
            .map_err(|e| e.with_context("topic", topic))
    }

    /// Publishes every message, then waits for all their confirms (one round trip's latency
    /// for the batch). Sizes are checked before anything is sent. Not atomic: on an error some
    /// messages may be stored (and, after a retry, stored twice).
    async fn publish_batch(&self, topic: &str, messages: Vec<(String, Bytes)>) -> Result<()> {
        check_name("topic", topic)?;
        messages
            .iter()
            .try_for_each(|(_, payload)| self.check_size(payload))?;
        if messages.is_empty() {
            return Ok(());
        }
        let exchange = self.connector.config.exchange(topic);
        let outgoing: Vec<Outgoing<'_>> = messages
            .iter()
            .map(|(key, payload)| Outgoing {
                routing_key: "",
                properties: properties(key, 0),
                payload,
            })
            .collect();
        publish_confirmed(&self.connector, Target::Topic(&exchange), &outgoing)
            .await
            .map_err(|e| {
                e.with_context("topic", topic)
                    .with_context("messages", messages.len())
            })
    }

    /// Declares the topic's exchange and the group's queue (bound to it), then starts a
    /// consumer on a channel of its own with the configured prefetch.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        check_name("topic", topic)?;
        check_name("group", group)?;
        check_queue_name(&self.connector.config, topic, group)?;
        let sub = AmqpSubscription::open(self.connector.clone(), topic, group).await?;
        Ok(Box::new(sub))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["events", "steps", "weir-conf-ack-0123", "a_b"] {
            check_name("topic", good).expect(good);
        }
        for bad in ["", "a.b", "a:b", "a b", "a\nb", &"x".repeat(121)] {
            let err = check_name("topic", bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn queue_names_fit_255_bytes() {
        let prefix = "p".repeat(100);
        let config =
            AmqpBrokerConfig::from_url(&format!("amqp://h?prefix={prefix}")).expect("parse");
        let (topic, group) = ("t".repeat(120), "g".repeat(120));
        check_name("topic", &topic).expect("a 120-byte topic");
        check_name("group", &group).expect("a 120-byte group");
        let err = check_queue_name(&config, &topic, &group).expect_err("342 bytes");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("342 bytes"), "{err}");
        // 100 + 1 + 120 + 1 + 33 = 255: accepted.
        check_queue_name(&config, &topic, &"g".repeat(33)).expect("255 bytes");
        check_queue_name(&config, &topic, &"g".repeat(34)).expect_err("256 bytes");
        // The other names stay below 255 bytes at the limits.
        assert!(config.exchange(&topic).len() <= MAX_AMQP_NAME_BYTES);
        assert!(config.delay_queue(u64::MAX).len() <= MAX_AMQP_NAME_BYTES);
    }
}
