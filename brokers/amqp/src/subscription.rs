//! One consumer of a group: a channel of its own with `basic.qos`, a `basic.consume` on the
//! group's queue, re-opened after the connection drops.
//!
//! [`Subscription::next`] is cancel-safe: a delivery stays in lapin's consumer buffer until
//! `next()` takes it, and opening the channel and consumer is finished in one step (a
//! cancelled open drops a half-made channel, whose deliveries RabbitMQ requeues).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Consumer};
use tokio::time::Instant;
use tracing::{debug, warn};
use weir_core::broker::{Delivery, Subscription};
use weir_core::{Error, Result};

use crate::QueueType;
use crate::acker::{AmqpAcker, requeue};
use crate::error::amqp_error;
use crate::link::{Connector, Link, backoff, declare_exchange};
use crate::message::{key_of, redeliveries_of};

/// The channel and consumer of a subscription while connected.
struct Active {
    /// The connection the channel is on.
    link: Arc<Link>,
    channel: Channel,
    consumer: Consumer,
    tag: String,
}

/// A consumer of one group ([`Subscription`]).
pub(crate) struct AmqpSubscription {
    connector: Arc<Connector>,
    topic: String,
    group: String,
    queue: Arc<str>,
    active: Option<Active>,
    /// Failed re-opens since the last success.
    failures: u32,
}

impl AmqpSubscription {
    /// Declares the topology and starts consuming; fails (retryable) if RabbitMQ cannot be
    /// reached within the configured timeout.
    pub(crate) async fn open(connector: Arc<Connector>, topic: &str, group: &str) -> Result<Self> {
        let deadline = Instant::now() + connector.config.timeout;
        let mut sub = AmqpSubscription {
            queue: connector.config.queue(topic, group).into(),
            connector,
            topic: topic.to_owned(),
            group: group.to_owned(),
            active: None,
            failures: 0,
        };
        sub.restart(Some(deadline)).await?;
        Ok(sub)
    }

    /// Starts the consumer ([`start`](Self::start)), again after a retryable failure, until
    /// `deadline` (forever without one); fails at once on a permanent error. Connection
    /// failures are paced by [`Connector::link`]'s own backoff; this one paces failures on a
    /// live connection (a declaration or `basic.consume` refused for a while). Cancel-safe:
    /// `active` is set only once the consumer runs.
    async fn restart(&mut self, deadline: Option<Instant>) -> Result<()> {
        loop {
            let error = match self.start(deadline).await {
                Ok(active) => {
                    self.failures = 0;
                    self.active = Some(active);
                    return Ok(());
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            let pause = backoff(self.failures, self.connector.config.reconnect_max);
            self.failures = self.failures.saturating_add(1);
            let at = Instant::now() + pause;
            if deadline.is_some_and(|d| at >= d) {
                return Err(error);
            }
            warn!(error = %error, retry_in = ?pause, queue = %self.queue, "amqp broker: starting the consumer failed");
            tokio::time::sleep_until(at).await;
        }
    }

    /// Opens a channel, declares the exchange, the group's queue and its binding, sets the
    /// prefetch and starts a consumer, within `timeout`: a connection that does not answer
    /// that (lapin may think a dead one connected) is given up ([`Link::abandon`]), and the
    /// error is retryable.
    async fn start(&self, deadline: Option<Instant>) -> Result<Active> {
        let config = &self.connector.config;
        let link = self.connector.link(deadline).await?;
        let opening = async {
            let channel = link
                .conn
                .create_channel()
                .await
                .map_err(|e| amqp_error("opening a consumer channel", e))?;
            let exchange = config.exchange(&self.topic);
            declare_exchange(&channel, &exchange).await?;
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from(config.queue_type.as_str())),
            );
            if config.queue_type == QueueType::Quorum {
                // No practical redelivery limit: weir counts attempts itself, and RabbitMQ 4's
                // default limit (20) would drop a message requeued that often.
                args.insert("x-delivery-limit".into(), AMQPValue::LongInt(i32::MAX));
            }
            if let Some(expires) = config.queue_expires {
                let ms = u32::try_from(expires.as_millis()).unwrap_or(u32::MAX);
                args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
            }
            channel
                .queue_declare(
                    (*self.queue).into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    args,
                )
                .await
                .map_err(|e| {
                    amqp_error("declaring the group queue", e)
                        .with_context("queue", &self.queue)
                        .with_context("queue_type", config.queue_type.as_str())
                })?;
            channel
                .queue_bind(
                    (*self.queue).into(),
                    exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| amqp_error("binding the group queue", e))?;
            channel
                .basic_qos(config.prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| amqp_error("setting the prefetch (basic.qos)", e))?;
            let tag = consumer_tag();
            let consumer = channel
                .basic_consume(
                    (*self.queue).into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| amqp_error("starting the consumer", e))?;
            Ok(Active {
                link: link.clone(),
                channel,
                consumer,
                tag,
            })
        };
        match tokio::time::timeout(config.timeout, opening).await {
            Ok(result) => result.map_err(|e: Error| e.with_context("group", &self.group)),
            Err(_) => {
                let why = format!(
                    "starting a consumer got no answer within {:?}",
                    config.timeout
                );
                link.abandon(config.timeout, &why);
                Err(Error::unavailable(format!("amqp broker: {why}"))
                    .with_context("queue", &self.queue)
                    .with_context("group", &self.group))
            }
        }
    }

    /// Checks, after `idle_probe` without a delivery, that the consumer's channel still
    /// answers: a `basic.qos` (the prefetch set again, a no-op) within `timeout`. An error:
    /// the channel is gone. No answer twice in a row: the connection is given up
    /// ([`Link::abandon`]); every delivery out on it is lost with it, so one slow answer is
    /// not enough, and a connection RabbitMQ blocked (a memory or disk alarm: it stops reading
    /// from publishers) is not probed at all. `true` when the consumer must be restarted.
    async fn probe_failed(&self, active: &Active) -> bool {
        let config = &self.connector.config;
        if active.link.conn.status().blocked() {
            return false;
        }
        for tries in 1..=2 {
            let qos = active
                .channel
                .basic_qos(config.prefetch, BasicQosOptions::default());
            match tokio::time::timeout(config.timeout, qos).await {
                Ok(Ok(())) => return false,
                Ok(Err(e)) => {
                    debug!(error = %e, queue = %self.queue, "amqp broker: the idle consumer's channel failed its probe; restarting it");
                    return true;
                }
                Err(_) if tries < 2 => {
                    debug!(queue = %self.queue, "amqp broker: an idle consumer's probe got no answer; probing again");
                }
                Err(_) => {}
            }
        }
        active.link.abandon(
            config.timeout,
            &format!(
                "an idle consumer's probe (basic.qos) got no answer twice within {:?} each",
                config.timeout
            ),
        );
        true
    }

    fn deliver(&self, active: &Active, d: lapin::message::Delivery) -> Delivery {
        let key = key_of(&d.properties);
        let redeliveries = redeliveries_of(&d.properties, d.redelivered);
        let payload = Bytes::from(d.data);
        let acker = AmqpAcker::new(
            self.connector.clone(),
            active.channel.clone(),
            d.acker,
            self.queue.clone(),
            key.clone(),
            payload.clone(),
            redeliveries,
        );
        Delivery::new(payload, key, redeliveries, Box::new(acker))
    }
}

#[async_trait]
impl Subscription for AmqpSubscription {
    /// The next delivery; while the connection is down, waits (reconnecting with backoff)
    /// rather than failing. Fails only on a permanent error (e.g. the group queue exists with
    /// another queue type, or the credentials stopped working). Deliveries whose channel closed
    /// while they waited in lapin's buffer are skipped: they can no longer be acked, and
    /// RabbitMQ requeued them (they come again through the restarted consumer). After
    /// `idle_probe` without a delivery it checks that the channel still answers and restarts
    /// the consumer (reconnecting) when it does not: a consumer that silently stopped
    /// receiving does not stop consumption for good.
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            let Some(active) = self.active.as_mut() else {
                self.restart(None).await?;
                debug!(queue = %self.queue, "amqp broker: consumer (re)started");
                continue;
            };
            let idle_probe = self.connector.config.idle_probe;
            // Cancel-safe: a delivery stays in lapin's consumer until polled out.
            let Ok(next) = tokio::time::timeout(idle_probe, active.consumer.next()).await else {
                let Some(active) = self.active.as_ref() else {
                    continue;
                };
                if self.probe_failed(active).await {
                    self.active = None;
                }
                continue;
            };
            match next {
                Some(Ok(d)) if !d.acker.usable() => {
                    debug!(queue = %self.queue, "amqp broker: skipping a delivery of a closed channel (requeued by RabbitMQ)");
                }
                Some(Ok(d)) => {
                    let Some(active) = self.active.as_ref() else {
                        continue;
                    };
                    return Ok(self.deliver(active, d));
                }
                Some(Err(e)) => {
                    debug!(error = %e, queue = %self.queue, "amqp broker: consumer failed; restarting it");
                    self.active = None;
                }
                None => {
                    debug!(queue = %self.queue, "amqp broker: consumer ended; restarting it");
                    self.active = None;
                }
            }
        }
    }
}

impl Drop for AmqpSubscription {
    /// Cancels the consumer and requeues what RabbitMQ sent ahead that was never handed out.
    /// Deliveries handed out live on: they hold the channel open, and their acks still work.
    fn drop(&mut self) {
        let Some(active) = self.active.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let Active {
                link: _,
                channel,
                mut consumer,
                tag,
            } = active;
            // Bounded: on a half-open connection without heartbeats no reply would come, and
            // the task and channel would leak.
            let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
            match tokio::time::timeout(CLEANUP_TIMEOUT, cancel).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "amqp broker: cancelling a consumer failed"),
                Err(_) => debug!("amqp broker: no cancel-ok within 5 s"),
            }
            // After cancel-ok nothing more arrives: hand back what is buffered.
            while let Ok(Some(Ok(d))) = tokio::time::timeout(CLEANUP_TIMEOUT, consumer.next()).await
            {
                let _ = requeue(&d.acker).await;
            }
            // The channel closes when the last delivery holding it is gone.
            drop(consumer);
            drop(channel);
        });
    }
}

/// How long a dropped subscription's cleanup waits for each reply (cancel-ok, a buffered
/// delivery).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A consumer tag unique per consumer: `weir-{host}-{pid}-{random}` (shown by
/// `rabbitmqctl list_consumers`).
fn consumer_tag() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "weir".into());
    format!(
        "weir-{host}-{}-{:012x}",
        std::process::id(),
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}
