//! The Celery adapter's connection to RabbitMQ, opened again when it drops, and a publisher
//! on it that waits for RabbitMQ's confirm (for `rpc://` replies and for tasks handed on to
//! the Celery workers' queue).

use std::sync::Arc;
use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use weir_core::{Error, ErrorKind, Result};

/// How long a publish waits for RabbitMQ's confirm before it is taken as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a publish may take in all (waiting for its turn, opening a channel, sending,
/// the confirm) before it is taken as failed: a RabbitMQ that blocks publishers (a memory or
/// disk alarm) fails publishes instead of holding them.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(20);

/// How long connecting may take before it is given up (and tried again later).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An error of RabbitMQ (or of reaching it), with what was being done: connection trouble is
/// retryable, a refusal that retrying cannot cure (access refused, a queue declared with other
/// arguments, an unknown vhost) is not.
pub fn amqp_error(what: &str, e: lapin::Error) -> Error {
    let kind = weir_support_amqp::classify(&e);
    let error = Error::new(kind, format!("celery amqp: {what} failed: {e}"));
    if kind == ErrorKind::Unavailable {
        error
    } else {
        error.permanent()
    }
}

/// How a queue weir declares (when it does not exist yet) is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueShape {
    /// The exchange it is bound to.
    pub exchange: String,
    /// A topic exchange (else direct).
    pub topic: bool,
    /// The binding's routing key.
    pub routing_key: String,
    /// A quorum queue (else classic).
    pub quorum: bool,
}

impl QueueShape {
    /// What Celery declares for a queue of its `task_routes`: a classic queue bound with its
    /// own name to a direct exchange of its name.
    pub fn celery_default(queue: &str) -> Self {
        QueueShape {
            exchange: queue.to_string(),
            topic: false,
            routing_key: queue.to_string(),
            quorum: false,
        }
    }
}

/// A channel on which `queue` exists: as it is (quorum, `x-max-priority`, … whatever its
/// arguments), or, when there is none, declared durable as `shape` says.
pub async fn ensure_queue(link: &AmqpLink, queue: &str, shape: &QueueShape) -> Result<Channel> {
    let channel = link.channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(_) => return Ok(channel),
        Err(e) if weir_support_amqp::is_not_found(&e) => {}
        Err(e) => return Err(amqp_error(&format!("looking for queue {queue}"), e)),
    }
    // RabbitMQ closed that channel: declare on another.
    let channel = link.channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let kind = if shape.topic {
        lapin::ExchangeKind::Topic
    } else {
        lapin::ExchangeKind::Direct
    };
    let exchange = shape.exchange.as_str();
    channel
        .exchange_declare(exchange.into(), kind, durable, FieldTable::default())
        .await
        .map_err(|e| amqp_error(&format!("declaring exchange {exchange}"), e))?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut args = FieldTable::default();
    if shape.quorum {
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
    }
    channel
        .queue_declare(queue.into(), durable, args)
        .await
        .map_err(|e| amqp_error(&format!("declaring queue {queue}"), e))?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            shape.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_error(&format!("binding queue {queue}"), e))?;
    Ok(channel)
}

/// A connection to RabbitMQ at one URI; [`AmqpLink::channel`] opens a channel on it,
/// connecting again first when the connection dropped.
#[derive(Clone)]
pub struct AmqpLink {
    uri: Arc<str>,
    shown: Arc<str>,
    connection: Arc<tokio::sync::Mutex<Option<Connection>>>,
}

impl std::fmt::Debug for AmqpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpLink")
            .field("uri", &self.shown)
            .finish_non_exhaustive()
    }
}

impl AmqpLink {
    /// Connects to `uri` (`amqp://USER:PASS@HOST:PORT/VHOST`, or `amqps://`); fails when
    /// RabbitMQ cannot be reached or refuses the credentials, so that a wrong URL fails the
    /// start.
    pub async fn open(uri: &str) -> Result<Self> {
        let link = AmqpLink {
            uri: uri.into(),
            shown: weir_core::redact::redact_url(uri).into(),
            connection: Arc::new(tokio::sync::Mutex::new(None)),
        };
        link.channel().await?;
        Ok(link)
    }

    /// The URI with its password hidden, for logs.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A new channel on the live connection (connecting first when there is none).
    pub async fn channel(&self) -> Result<Channel> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.status().connected()
        {
            match connection.create_channel().await {
                Ok(channel) => return Ok(channel),
                Err(e) => {
                    tracing::debug!(error = %e, "celery amqp: opening a channel failed; connecting again");
                }
            }
        }
        *slot = None;
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("weir-adapter-celery/{}", std::process::id()).into());
        let connection =
            tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.uri, properties))
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!("celery amqp: connecting to {} timed out", self.shown),
                    )
                })?
                .map_err(|e| amqp_error(&format!("connecting to {}", self.shown), e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| amqp_error("opening a channel", e))?;
        *slot = Some(connection);
        Ok(channel)
    }
}

/// Publishes confirmed messages (channels opened again after an error). `mandatory` messages
/// go one at a time on a channel of their own: lapin hands a message RabbitMQ returned to the
/// next confirm of its channel, so with several in flight a bounced hand-on could be taken for
/// another's. The others (`rpc://` replies, never returned) wait for their confirms side by
/// side on a second channel.
#[derive(Clone, Debug)]
pub struct Publisher {
    link: AmqpLink,
    /// Held across each mandatory publish and its confirm.
    mandatory: Arc<tokio::sync::Mutex<Slot>>,
    /// Held only to pick the channel.
    free: Arc<tokio::sync::Mutex<Slot>>,
}

/// A publishing channel, and how many were opened in its place before (so that a failure on
/// an old channel does not drop its successor, which may reuse its channel id).
#[derive(Debug, Default)]
struct Slot {
    channel: Option<Channel>,
    generation: u64,
}

impl Slot {
    /// The open confirm channel and its generation, opened (again) when there is none or it
    /// closed.
    async fn channel(&mut self, link: &AmqpLink) -> Result<(Channel, u64)> {
        if let Some(channel) = self.channel.as_ref().filter(|c| c.status().connected()) {
            return Ok((channel.clone(), self.generation));
        }
        let channel = link.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| amqp_error("enabling publisher confirms", e))?;
        self.generation += 1;
        self.channel = Some(channel.clone());
        Ok((channel, self.generation))
    }

    /// Drops the channel of `generation` if it is still the one in use, so that the next
    /// publish opens another.
    fn forget(&mut self, generation: u64) {
        if self.generation == generation {
            self.channel = None;
        }
    }
}

impl Publisher {
    /// A publisher on `link`; its channels are opened at the first publish.
    pub fn new(link: AmqpLink) -> Self {
        Publisher {
            link,
            mandatory: Arc::default(),
            free: Arc::default(),
        }
    }

    /// Publishes `body` to `exchange` (`""`: the default exchange, which routes to the queue
    /// named `routing_key`) and waits for RabbitMQ's confirm. A message no queue takes is an
    /// error when `mandatory` (a task handed on must reach its queue); otherwise RabbitMQ
    /// drops it (a reply whose client is gone, as it does for a Celery worker).
    /// Fails after [`PUBLISH_DEADLINE`] in all.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<()> {
        let publish = self.publish_now(exchange, routing_key, body, properties, mandatory);
        match tokio::time::timeout(PUBLISH_DEADLINE, publish).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // The channel may be stuck: the next publish opens another.
                let slot = if mandatory {
                    &self.mandatory
                } else {
                    &self.free
                };
                if let Ok(mut slot) = slot.try_lock() {
                    slot.channel = None;
                }
                Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "celery amqp: the publish to {routing_key} took over {PUBLISH_DEADLINE:?}"
                    ),
                ))
            }
        }
    }

    /// [`Publisher::publish`] without the deadline.
    async fn publish_now(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<()> {
        if mandatory {
            let mut slot = self.mandatory.lock().await;
            let (channel, generation) = slot.channel(&self.link).await?;
            let (outcome, channel_ok) =
                publish_on(&channel, exchange, routing_key, body, properties, true).await;
            if !channel_ok || !channel.status().connected() {
                slot.forget(generation);
            }
            return outcome;
        }
        let (channel, generation) = self.free.lock().await.channel(&self.link).await?;
        let (outcome, channel_ok) =
            publish_on(&channel, exchange, routing_key, body, properties, false).await;
        if !channel_ok || !channel.status().connected() {
            self.free.lock().await.forget(generation);
        }
        outcome
    }
}

/// Publishes on `channel` and waits for the confirm; the second value says whether the
/// channel is still of use (a refused or unroutable message leaves it as it was; a closed
/// channel or a confirm that never came does not).
async fn publish_on(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> (Result<()>, bool) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await;
    let confirm = match confirm {
        Ok(confirm) => confirm,
        Err(e) => return (Err(amqp_error("publishing", e)), false),
    };
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Ok(Ok(Confirmation::Nack(_))) => (
            Err(Error::new(
                ErrorKind::Unavailable,
                "celery amqp: RabbitMQ refused the message (publisher nack)",
            )),
            true,
        ),
        Ok(Ok(Confirmation::Ack(Some(_)))) => (
            Err(Error::new(
                ErrorKind::Unavailable,
                format!("celery amqp: no queue took the message (is there a queue {routing_key}?)"),
            )),
            true,
        ),
        Ok(Ok(_)) => (Ok(()), true),
        Ok(Err(e)) => (Err(amqp_error("waiting for the publish confirm", e)), false),
        Err(_) => (
            Err(Error::new(
                ErrorKind::Unavailable,
                format!("celery amqp: no publish confirm within {CONFIRM_TIMEOUT:?}"),
            )),
            false,
        ),
    }
}
