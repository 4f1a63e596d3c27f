//! Celery 5.5's native delayed delivery on RabbitMQ, which a worker sets up at startup and weir
//! must set up when it replaces the worker for a queue.
//!
//! With quorum queues (which cannot hold a message back until its eta), a Celery producer
//! sends a `countdown`/`eta` task whose queue is bound to a topic exchange not to the queue but
//! to the exchange `celery_delayed_27`, with a routing key of 28 binary digits (the delay in
//! seconds) before the queue's own: `0.0.….1.0.weir`. 28 levels of queues, `celery_delayed_N`
//! holding a message 2^N seconds, pass it down by dead-lettering until it reaches the exchange
//! `celery_delayed_delivery`, which must be bound to the queue's exchange (and the queue to
//! its exchange) with `#.<routing key>`. Without those bindings the task is lost. This module
//! declares what kombu's `native_delayed_delivery` declares, the same way (levels that exist
//! already are used as they are).

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use weir_core::Result;

use crate::amqp_link::{AmqpLink, amqp_error};

/// The levels: delays up to 2^28 - 1 seconds.
const LEVELS: u32 = 28;

/// The exchange the last level dead-letters to.
pub const DELIVERY_EXCHANGE: &str = "celery_delayed_delivery";

/// The name of level `level`.
pub fn level_name(level: u32) -> String {
    format!("celery_delayed_{level}")
}

/// Declares the levels and the delivery exchange (quorum queues, as a worker with quorum
/// queues does), then binds `exchange` (a topic exchange, bound to `queue` with
/// `routing_key`) to the delivery exchange and `queue` to `exchange`, with
/// `#.<routing_key>`.
pub async fn set_up(link: &AmqpLink, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
    let mut channel = link.channel().await?;
    let mut key = "1.#".to_string();
    for level in (0..LEVELS).rev() {
        let name = level_name(level);
        declare_topic(&channel, &name).await?;
        let dead_letter = if level > 0 {
            level_name(level - 1)
        } else {
            DELIVERY_EXCHANGE.to_string()
        };
        channel = declare_level_queue(link, channel, &name, level, &dead_letter).await?;
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error(&format!("binding {name}"), e))?;
        key = format!("*.{key}");
    }
    let mut key = "0.#".to_string();
    for level in (1..LEVELS).rev() {
        bind_exchange(&channel, &level_name(level - 1), &level_name(level), &key).await?;
        key = format!("*.{key}");
    }
    declare_topic(&channel, DELIVERY_EXCHANGE).await?;
    bind_exchange(&channel, DELIVERY_EXCHANGE, &level_name(0), &key).await?;
    let pattern = if routing_key.starts_with('#') {
        routing_key.to_string()
    } else {
        format!("#.{routing_key}")
    };
    bind_exchange(&channel, exchange, DELIVERY_EXCHANGE, &pattern).await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            pattern.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_error(&format!("binding {queue} to {exchange}"), e))?;
    Ok(())
}

async fn declare_topic(channel: &Channel, name: &str) -> Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_error(&format!("declaring exchange {name}"), e))
}

async fn bind_exchange(
    channel: &Channel,
    destination: &str,
    source: &str,
    key: &str,
) -> Result<()> {
    channel
        .exchange_bind(
            destination.into(),
            source.into(),
            key.into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_error(&format!("binding {destination} to {source}"), e))
}

/// Declares the queue of a level as kombu does, unless it exists (then it is used as it is);
/// returns a usable channel (a failed passive declare closes the one it was on).
async fn declare_level_queue(
    link: &AmqpLink,
    channel: Channel,
    name: &str,
    level: u32,
    dead_letter: &str,
) -> Result<Channel> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
    {
        Ok(_) => return Ok(channel),
        Err(e) if weir_support_amqp::is_not_found(&e) => {}
        Err(e) => return Err(amqp_error(&format!("looking for queue {name}"), e)),
    }
    let channel = link.channel().await?;
    let mut args = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert("x-overflow".into(), text("reject-publish"));
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(2i64.pow(level) * 1000),
    );
    args.insert("x-dead-letter-exchange".into(), text(dead_letter));
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), durable, args)
        .await
        .map_err(|e| amqp_error(&format!("declaring queue {name}"), e))?;
    Ok(channel)
}
