//! The broker's connection to RabbitMQ, re-established with backoff when it drops, and the
//! topology (exchanges, queues, bindings) declared on it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lapin::options::{
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use weir_core::{Error, ErrorKind, Result};

use crate::config::AmqpBrokerConfig;
use crate::error::amqp_error;

/// Header of the delay bucket a delayed message goes to (matched by the delay exchange).
pub(crate) const DELAY_HEADER: &str = "weir-delay";

/// Publishing channels per connection: RabbitMQ handles each channel in one process, so two
/// let a batch's routing use two cores.
pub(crate) const PUBLISH_CHANNELS: usize = 2;

/// Delay publishing channels per connection, each with one delayed copy in flight at a time
/// (opened as concurrent delayed nacks need them).
pub(crate) const DELAY_CHANNELS: usize = 4;

/// The first pause between reconnection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// A publishing channel (in confirm mode) behind its lock; `None` until opened, or after it
/// was discarded.
type Slot = tokio::sync::Mutex<Option<Channel>>;

/// A locked publishing channel: the lock is held while publishes are handed to lapin (lapin
/// numbers a publish for its confirm, then queues its frames, in two steps: publishes of
/// two tasks at once could be numbered in one order and sent in the other, and each confirm
/// credited to the other message).
pub(crate) struct Lane<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<Channel>>,
    /// The channel to publish on.
    pub(crate) channel: Channel,
}

impl Lane<'_> {
    /// Puts the channel back for the next publish (the delay channel is only put back once
    /// its publish was confirmed or returned, see [`Link::delayer`]).
    pub(crate) fn keep(mut self) {
        *self.slot = Some(self.channel.clone());
    }
}

/// One live connection and what was declared on it.
pub(crate) struct Link {
    pub(crate) conn: Connection,
    /// Counts connections made by this broker (1 for the first).
    pub(crate) generation: u64,
    /// The channels (in confirm mode) the topic publishes of this broker go through; each is
    /// replaced if it closes while the connection lives on.
    publishers: [Slot; PUBLISH_CHANNELS],
    /// The channels delayed redeliveries are published on, one at a time on each: they are
    /// `mandatory`, and lapin hands a returned message to whichever confirm of the channel
    /// completes next, so only one may be in flight per channel.
    delayers: [Slot; DELAY_CHANNELS],
    /// Exchanges and delay buckets declared on this connection (declared again after a
    /// reconnect, in case the server lost them).
    declared: Mutex<HashSet<String>>,
    /// Set when a call on the connection went unanswered (see [`Link::abandon`]): lapin may
    /// still think the connection is up.
    abandoned: AtomicBool,
}

impl Link {
    /// Whether the connection is usable: lapin thinks it is connected and nobody abandoned it.
    pub(crate) fn healthy(&self) -> bool {
        !self.abandoned.load(Ordering::SeqCst) && self.conn.status().connected()
    }

    /// Gives the connection up: a call on it went unanswered (the socket may be half-open,
    /// or lapin missed the server's close), so the next [`Connector::link`] connects anew.
    /// Closing it is tried in the background, bounded by `timeout` (no close-ok may come).
    pub(crate) fn abandon(self: &Arc<Self>, timeout: Duration, why: &str) {
        if self.abandoned.swap(true, Ordering::SeqCst) {
            return;
        }
        warn!(
            generation = self.generation,
            why, "amqp broker: giving the connection up; reconnecting"
        );
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let link = self.clone();
        runtime.spawn(async move {
            let close = link
                .conn
                .close(320, "weir: the connection stopped answering".into());
            let _ = tokio::time::timeout(timeout, close).await;
        });
    }

    /// Locks topic publishing channel `n` (modulo [`PUBLISH_CHANNELS`]), opened (in confirm
    /// mode) if missing or closed; the channel stays in its slot.
    pub(crate) async fn publisher(&self, n: usize) -> Result<Lane<'_>> {
        let mut slot = self.publishers[n % PUBLISH_CHANNELS].lock().await;
        let channel = self.live_or_open(&mut slot).await?;
        Ok(Lane { slot, channel })
    }

    /// Locks a delay publishing channel (a free one if any, else channel `n` modulo
    /// [`DELAY_CHANNELS`]), opened if missing or closed. The channel is taken out of its slot:
    /// [`Lane::keep`] puts it back once its publish completed, so a publish cancelled or failed
    /// before its confirm leaves the slot empty and the next one opens a fresh channel (no
    /// stale confirm or return can be credited to it).
    pub(crate) async fn delayer(&self, n: usize) -> Result<Lane<'_>> {
        let free = self.delayers.iter().find_map(|slot| slot.try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.delayers[n % DELAY_CHANNELS].lock().await,
        };
        let channel = self.live_or_open(&mut slot).await?;
        *slot = None;
        Ok(Lane { slot, channel })
    }

    async fn live_or_open(&self, slot: &mut Option<Channel>) -> Result<Channel> {
        if let Some(channel) = slot.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self
            .conn
            .create_channel()
            .await
            .map_err(|e| amqp_error("opening the publishing channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| amqp_error("enabling publisher confirms", e))?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Declares the durable fanout exchange `exchange` once per connection.
    pub(crate) async fn ensure_exchange(&self, exchange: &str) -> Result<()> {
        if self.declared.lock().contains(exchange) {
            return Ok(());
        }
        let channel = self.scratch_channel().await?;
        declare_exchange(&channel, exchange).await?;
        close(channel).await;
        self.declared.lock().insert(exchange.to_owned());
        Ok(())
    }

    /// Declares the delay exchange and the delay queue of bucket `ceiling_ms` (bound to it by
    /// the [`DELAY_HEADER`] header), once per connection.
    pub(crate) async fn ensure_delay_bucket(
        &self,
        config: &AmqpBrokerConfig,
        ceiling_ms: u64,
    ) -> Result<()> {
        let queue = config.delay_queue(ceiling_ms);
        if self.declared.lock().contains(&queue) {
            return Ok(());
        }
        let exchange = config.delay_exchange();
        let channel = self.scratch_channel().await?;
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Headers,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error("declaring the delay exchange", e))?;
        let mut args = FieldTable::default();
        // Expired messages go to the default exchange, with the routing key they were
        // published with: the name of the group queue they return to.
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("classic")),
        );
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .map_err(|e| amqp_error("declaring a delay queue", e).with_context("queue", &queue))?;
        let mut bind = FieldTable::default();
        bind.insert(
            "x-match".into(),
            AMQPValue::LongString(LongString::from("all")),
        );
        bind.insert(DELAY_HEADER.into(), delay_header_value(ceiling_ms));
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                bind,
            )
            .await
            .map_err(|e| amqp_error("binding a delay queue", e).with_context("queue", &queue))?;
        close(channel).await;
        self.declared.lock().insert(queue);
        Ok(())
    }

    /// Forgets that `name` was declared (it is declared again before its next use).
    pub(crate) fn undeclare(&self, name: &str) {
        self.declared.lock().remove(name);
    }

    /// A channel for declarations (a failed declaration closes its channel, so they do not
    /// share the publishing channel).
    async fn scratch_channel(&self) -> Result<Channel> {
        self.conn
            .create_channel()
            .await
            .map_err(|e| amqp_error("opening a channel", e))
    }
}

/// The value of [`DELAY_HEADER`] for bucket `ceiling_ms` (binding and message must agree).
pub(crate) fn delay_header_value(ceiling_ms: u64) -> AMQPValue {
    AMQPValue::LongString(LongString::from(ceiling_ms.to_string()))
}

/// Declares the durable fanout exchange of a topic on `channel`.
pub(crate) async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            amqp_error("declaring the topic exchange", e).with_context("exchange", exchange)
        })
}

/// Closes a channel, ignoring errors (it may be closed already).
pub(crate) async fn close(channel: Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
}

struct State {
    link: Option<Arc<Link>>,
    generation: u64,
    /// Failed attempts since the last success.
    failures: u32,
    /// When the next attempt may start.
    not_before: Option<Instant>,
}

/// Hands out the live connection, reconnecting (with backoff) when it is gone.
pub(crate) struct Connector {
    pub(crate) config: AmqpBrokerConfig,
    tls: OwnedTLSConfig,
    state: tokio::sync::Mutex<State>,
    /// Connections opened so far.
    opened: AtomicU64,
}

impl Connector {
    /// Connections opened so far (1 plus one per reconnect).
    pub(crate) fn connections(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// A connector for `config` (reads `ca_file`; does not connect).
    pub(crate) fn new(config: AmqpBrokerConfig) -> Result<Self> {
        let cert_chain = match &config.ca_file {
            None => None,
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("cannot read ca_file {}: {e}", path.display()),
                )
                .permanent()
                .with_context("url", config.redacted_url())
            })?),
        };
        Ok(Connector {
            config,
            tls: OwnedTLSConfig {
                identity: None,
                cert_chain,
            },
            state: tokio::sync::Mutex::new(State {
                link: None,
                generation: 0,
                failures: 0,
                not_before: None,
            }),
            opened: AtomicU64::new(0),
        })
    }

    /// The live connection; connects if there is none, retrying with backoff on retryable
    /// failures until `deadline` (forever without one). A `Config` error (bad credentials, a
    /// vhost the user may not use) is returned at once.
    pub(crate) async fn link(&self, deadline: Option<Instant>) -> Result<Arc<Link>> {
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                if let Some(link) = &state.link
                    && link.healthy()
                {
                    return Ok(link.clone());
                }
                match state.not_before {
                    Some(at) if at > Instant::now() => at,
                    _ => match self.connect(state.generation + 1).await {
                        Ok(link) => {
                            let link = Arc::new(link);
                            if state.generation > 0 {
                                info!(generation = link.generation, url = %self.config.redacted_url(), "amqp broker: reconnected");
                            }
                            state.generation = link.generation;
                            self.opened.fetch_add(1, Ordering::Relaxed);
                            state.link = Some(link.clone());
                            state.failures = 0;
                            state.not_before = None;
                            return Ok(link);
                        }
                        Err(e) if !e.is_retryable() => return Err(e),
                        Err(e) => {
                            let pause = backoff(state.failures, self.config.reconnect_max);
                            state.failures = state.failures.saturating_add(1);
                            state.link = None;
                            let at = Instant::now() + pause;
                            state.not_before = Some(at);
                            if deadline.is_some_and(|d| d <= at) {
                                return Err(e);
                            }
                            warn!(error = %e, retry_in = ?pause, url = %self.config.redacted_url(), "amqp broker: connecting failed");
                            at
                        }
                    },
                }
            };
            if let Some(deadline) = deadline
                && deadline <= wait
            {
                return Err(
                    Error::unavailable("amqp broker: RabbitMQ unreachable (reconnecting)")
                        .with_context("url", self.config.redacted_url()),
                );
            }
            tokio::time::sleep_until(wait).await;
        }
    }

    async fn connect(&self, generation: u64) -> Result<Link> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("weir-broker-amqp/{}", std::process::id()).into());
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| amqp_error("finding the tokio runtime", e))?;
        let connect = Connection::connect_uri_with_config(
            self.config.amqp_uri(),
            properties,
            self.tls.clone(),
            runtime,
        );
        let conn = match tokio::time::timeout(self.config.timeout, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(
                    amqp_error("connecting", e).with_context("url", self.config.redacted_url())
                );
            }
            Err(_) => {
                return Err(Error::unavailable("amqp broker: connecting timed out")
                    .with_context("url", self.config.redacted_url())
                    .with_context("timeout", format!("{:?}", self.config.timeout)));
            }
        };
        debug!(generation, url = %self.config.redacted_url(), "amqp broker: connected");
        Ok(Link {
            conn,
            generation,
            publishers: std::array::from_fn(|_| tokio::sync::Mutex::new(None)),
            delayers: std::array::from_fn(|_| tokio::sync::Mutex::new(None)),
            declared: Mutex::new(HashSet::new()),
            abandoned: AtomicBool::new(false),
        })
    }
}

/// The pause after `failures` failed attempts: 100 ms doubling, at most `max` (any
/// `reconnect_max` up to [`MAX_RECONNECT`](crate::config::MAX_RECONNECT) is reached: 100 ms × 2¹³ > 10 min).
pub(crate) fn backoff(failures: u32, max: Duration) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << failures.min(13))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_RECONNECT;

    #[test]
    fn backoff_doubles_up_to_any_allowed_maximum() {
        assert_eq!(backoff(0, MAX_RECONNECT), Duration::from_millis(100));
        assert_eq!(backoff(3, MAX_RECONNECT), Duration::from_millis(800));
        assert_eq!(
            backoff(3, Duration::from_millis(500)),
            Duration::from_millis(500)
        );
        assert_eq!(backoff(13, MAX_RECONNECT), MAX_RECONNECT);
        assert_eq!(backoff(u32::MAX, MAX_RECONNECT), MAX_RECONNECT);
        assert!(backoff(12, MAX_RECONNECT) < MAX_RECONNECT);
    }
}
