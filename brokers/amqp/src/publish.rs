//! Publishing with publisher confirms, retried through reconnects until the broker's timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use tokio::time::{Instant, timeout_at};
use tracing::debug;
use weir_core::{Error, Result};

use crate::error::amqp_error;
use crate::link::{Connector, Link, PUBLISH_CHANNELS};

/// Round-robin over the publishing channels.
static NEXT_CHANNEL: AtomicUsize = AtomicUsize::new(0);

/// Where messages go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The fanout exchange of a topic (declared first if needed).
    Topic(&'a str),
    /// The delay exchange, to the queue of bucket `ceiling_ms` (declared first if needed).
    Delay {
        /// The bucket.
        ceiling_ms: u64,
    },
}

/// One message to publish.
pub(crate) struct Outgoing<'a> {
    pub(crate) routing_key: &'a str,
    pub(crate) properties: BasicProperties,
    pub(crate) payload: &'a [u8],
}

/// Publishes every message and waits for all their confirms. Messages not confirmed (the
/// connection dropped, the server nacked) are published again on the next connection, until
/// the configured `timeout` has passed; then the last error is returned (retryable when it was
/// connection trouble). So a message may be stored twice, never lost once this returns `Ok`.
pub(crate) async fn publish_confirmed(
    connector: &Connector,
    target: Target<'_>,
    messages: &[Outgoing<'_>],
) -> Result<()> {
    let deadline = Instant::now() + connector.config.timeout;
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut failures = 0u32;
    while !pending.is_empty() {
        let link = connector.link(Some(deadline)).await?;
        let (left, error) = attempt(connector, &link, target, messages, &pending, deadline).await;
        pending = left;
        let Some(error) = error else { continue };
        if !error.is_retryable() || Instant::now() >= deadline {
            return Err(error.with_context("unconfirmed", pending.len()));
        }
        debug!(error = %error, unconfirmed = pending.len(), "amqp broker: publishing again");
        connector.forget(&link).await;
        failures = failures.saturating_add(1);
        let pause = crate::link::backoff(failures.saturating_sub(1), Duration::from_secs(1));
        tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
    }
    Ok(())
}

/// One try on `link`: publishes the `pending` messages, awaits their confirms; returns those
/// still unconfirmed and the error that stopped it.
async fn attempt(
    connector: &Connector,
    link: &Arc<Link>,
    target: Target<'_>,
    messages: &[Outgoing<'_>],
    pending: &[usize],
    deadline: Instant,
) -> (Vec<usize>, Option<Error>) {
    let config = &connector.config;
    let (exchange, mandatory) = match target {
        Target::Topic(exchange) => {
            if let Err(e) = link.ensure_exchange(exchange).await {
                return (pending.to_vec(), Some(e));
            }
            (exchange.to_owned(), false)
        }
        Target::Delay { ceiling_ms } => {
            if let Err(e) = link.ensure_delay_bucket(config, ceiling_ms).await {
                return (pending.to_vec(), Some(e));
            }
            (config.delay_exchange(), true)
        }
    };
    // A batch is spread over the publishing channels; a single message takes the next one.
    let first = NEXT_CHANNEL.fetch_add(1, Ordering::Relaxed);
    let lanes = PUBLISH_CHANNELS.min(pending.len());
    let mut channels = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        match link.publisher(first + lane).await {
            Ok(channel) => channels.push(channel),
            Err(e) => return (pending.to_vec(), Some(e)),
        }
    }
    // All publishes at once: each one's frames are queued when it is first polled, and
    // awaiting them one by one would wait for the socket write of each in turn.
    let publishes = pending.iter().enumerate().map(|(n, &i)| {
        let m = &messages[i];
        // Contiguous runs per channel.
        let channel = &channels[n * lanes / pending.len()];
        channel.basic_publish(
            exchange.as_str().into(),
            m.routing_key.into(),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            m.payload,
            m.properties.clone(),
        )
    });
    let Ok(results) = timeout_at(deadline, join_all(publishes)).await else {
        return (pending.to_vec(), Some(timed_out()));
    };
    let mut sent: Vec<(usize, PublisherConfirm)> = Vec::with_capacity(pending.len());
    let mut error = None;
    let mut unsent: Vec<usize> = Vec::new();
    for (&i, result) in pending.iter().zip(results) {
        match result {
            Ok(confirm) => sent.push((i, confirm)),
            Err(e) => {
                error.get_or_insert_with(|| amqp_error("publish", e));
                unsent.push(i);
            }
        }
    }
    let mut left = Vec::new();
    for (i, confirm) in sent {
        let failure = match timeout_at(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => continue,
            Ok(Ok(Confirmation::Ack(Some(_)))) => {
                // Returned as unroutable: the delay queue or its binding is gone (declared
                // again below).
                Error::unavailable("amqp broker: a delayed message was unroutable")
            }
            Ok(Ok(Confirmation::Nack(_))) => {
                Error::unavailable("amqp broker: RabbitMQ refused a message (publisher nack)")
            }
            Ok(Err(e)) => amqp_error("publish confirm", e),
            Err(_) => timed_out(),
        };
        error.get_or_insert(failure);
        left.push(i);
    }
    left.extend(unsent);
    if error.is_some() {
        // Declare again before the next try, in case the exchange or queue was deleted.
        link.undeclare(&exchange);
        if let Target::Delay { ceiling_ms } = target {
            link.undeclare(&config.delay_queue(ceiling_ms));
        }
    }
    (left, error)
}

fn timed_out() -> Error {
    Error::unavailable("amqp broker: no publisher confirm within the timeout")
}
