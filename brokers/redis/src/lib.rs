//! weir-broker-redis: weir's [`Broker`] on Redis Streams with consumer groups (`redis://…`).
//!
//! Each topic is one stream, `{prefix}:stream:{topic}`; each weir consumer group is a Redis
//! consumer group on it, and each [`Subscription`] a consumer of that group (a name of its
//! own). Redeliveries of a group (nacks, dropped deliveries) go through a stream only that
//! group reads, `{prefix}:retry:{topic}:{group}`, and delayed nacks wait in a sorted set,
//! `{prefix}:delayed:{topic}:{group}`. A consumer that dies leaves its entries pending; after
//! the lease another consumer of the group takes them over with `XAUTOCLAIM`. A live consumer
//! renews the lease of what it holds, so a slow step is not taken from it. See the README for
//! the key layout, the guarantees and the limits.
//!
//! ```no_run
//! # async fn demo() -> weir_core::Result<()> {
//! use std::sync::Arc;
//! use weir_broker_redis::RedisBroker;
//! use weir_core::broker::Broker;
//!
//! let broker: Arc<dyn Broker> =
//!     Arc::new(RedisBroker::connect("redis://127.0.0.1:6379/0?prefix=weir&lease=30s").await?);
//! # Ok(()) }
//! ```

mod ack_batch;
mod acker;
mod config;
mod error;
mod keys;
mod scripts;
mod stream;
mod subscription;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use weir_core::broker::{Broker, BrokerCapabilities, Subscription};
use weir_core::{Error, ErrorKind, Result};

pub use config::{DEFAULT_MAX_MESSAGE_BYTES, REDIS_MAX_BULK_BYTES, RedisBrokerConfig};

use crate::error::redis_error;
use crate::keys::{GroupKeys, check_name};
use crate::subscription::{RedisSubscription, Shared, ensure_groups, heartbeat};

/// The longest delay a nack accepts (`max_native_delay`): 30 days. A longer delay is
/// scheduled at 30 days and the nack returns an `InvalidInput` error saying so.
pub const MAX_NATIVE_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// weir's broker on Redis Streams.
///
/// One [`ConnectionManager`] (multiplexed, reconnecting) carries publishes, acks, nacks and
/// lease renewals; each subscription opens one more connection for its blocking
/// `XREADGROUP`, since a blocking command on a multiplexed connection would stall every other
/// command queued behind it.
///
/// Capabilities: native delay up to [`MAX_NATIVE_DELAY`]; payloads up to the configured
/// `max_message_bytes` (64 MiB by default); not ordered by key; redelivery on nack.
pub struct RedisBroker {
    config: RedisBrokerConfig,
    client: redis::Client,
    conn: ConnectionManager,
    /// Ack commands its subscriptions have sent.
    ack_commands: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Parses `url` (see [`RedisBrokerConfig`]) and connects.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(RedisBrokerConfig::from_url(url)?).await
    }

    /// Connects with `config`. Fails with [`ErrorKind::Unavailable`] (retryable) when Redis
    /// cannot be reached, [`ErrorKind::Config`] on bad settings or credentials.
    pub async fn with_config(config: RedisBrokerConfig) -> Result<Self> {
        let client = config.client()?;
        let conn = connection(&client, &config, config.timeout).await?;
        Ok(RedisBroker {
            config,
            client,
            conn,
            ack_commands: Arc::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RedisBrokerConfig {
        &self.config
    }

    /// How many ack commands (`XACK`, or `XACK` + `XDEL` for the retry stream) this broker's
    /// subscriptions have sent: acks made together share one (see the crate's README).
    pub fn ack_commands(&self) -> u64 {
        self.ack_commands.load(Ordering::Relaxed)
    }

    fn check_size(&self, payload: &Bytes) -> Result<()> {
        if payload.len() > self.config.max_message_bytes {
            return Err(Error::new(
                ErrorKind::TooLarge,
                "message too large for the Redis broker",
            )
            .with_context("bytes", payload.len())
            .with_context("max_bytes", self.config.max_message_bytes));
        }
        Ok(())
    }

    /// `XADD {stream} [MAXLEN ~ n] * k {key} p {payload}`.
    fn xadd(&self, stream: &str, key: &str, payload: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream);
        if let Some(maxlen) = self.config.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(maxlen);
        }
        cmd.arg("*").arg("k").arg(key).arg("p").arg(payload);
        cmd
    }
}

/// A reconnecting connection whose commands time out after `response_timeout`.
async fn connection(
    client: &redis::Client,
    config: &RedisBrokerConfig,
    response_timeout: Duration,
) -> Result<ConnectionManager> {
    let manager = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(config.timeout))
        .set_number_of_retries(4)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_with_config(client.clone(), manager)
        .await
        .map_err(|e| redis_error("connecting", e).with_context("url", config.redacted_url()))
}

#[async_trait]
impl Broker for RedisBroker {
    fn capabilities(&self) -> BrokerCapabilities {
        BrokerCapabilities::new(
            Some(MAX_NATIVE_DELAY),
            self.config.max_message_bytes,
            false,
            true,
        )
    }

    /// One `XADD`; durable as the Redis server's persistence settings make it.
    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<()> {
        check_name("topic", topic)?;
        self.check_size(&payload)?;
        let stream = keys::stream(&self.config.prefix, topic);
        self.xadd(&stream, key, &payload)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| redis_error("publish", e).with_context("topic", topic))
    }

    /// All `XADD`s in one `MULTI`/`EXEC`, one round trip: all or none are added. Sizes are
    /// checked before anything is sent.
    async fn publish_batch(&self, topic: &str, messages: Vec<(String, Bytes)>) -> Result<()> {
        check_name("topic", topic)?;
        messages
            .iter()
            .try_for_each(|(_, payload)| self.check_size(payload))?;
        if messages.is_empty() {
            return Ok(());
        }
        let stream = keys::stream(&self.config.prefix, topic);
        if let [(key, payload)] = &messages[..] {
            // One message needs no MULTI/EXEC around it.
            return self
                .xadd(&stream, key, payload)
                .query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(|e| redis_error("publish_batch", e).with_context("topic", topic));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, payload) in &messages {
            pipe.add_command(self.xadd(&stream, key, payload)).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| {
                redis_error("publish_batch", e)
                    .with_context("topic", topic)
                    .with_context("messages", messages.len())
            })
    }

    /// Creates the group (at id `0`, so it gets what the stream still holds) on the topic
    /// stream and on the group's retry stream, opens the subscription's reading connection and
    /// starts its lease heartbeat.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        check_name("topic", topic)?;
        check_name("group", group)?;
        let keys = GroupKeys::new(&self.config.prefix, topic, group);
        let mut conn = self.conn.clone();
        ensure_groups(&mut conn, &keys, group).await?;
        let read = connection(
            &self.client,
            &self.config,
            self.config.block + self.config.timeout,
        )
        .await?;
        let shared = Arc::new(Shared::new(
            conn,
            keys,
            group,
            &self.config,
            self.ack_commands.clone(),
        ));
        tokio::spawn(heartbeat(shared.clone()));
        Ok(Box::new(RedisSubscription::new(shared, read, &self.config)))
    }
}
