//! Publishing with publisher confirms, retried through reconnects until the broker's timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation, PublisherConfirm};
use tokio::time::error::Elapsed;
use tokio::time::{Instant, timeout_at};
use tracing::debug;
use weir_core::{Error, Result};

use crate::error::amqp_error;
use crate::link::{Connector, Link, PUBLISH_CHANNELS, backoff};

/// Round-robin over the publishing channels.
static NEXT_CHANNEL: AtomicUsize = AtomicUsize::new(0);

/// The longest pause between two publish attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

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
    pub(crate) properties: lapin::BasicProperties,
    pub(crate) payload: &'a [u8],
}

/// Publishes every message and waits for all their confirms. Messages not confirmed (the
/// connection dropped, the server nacked) are published again on the next connection, until
/// the configured `timeout` has passed; then the last error is returned (retryable when it was
/// connection trouble). No attempt starts at or after that deadline. So a message may be
/// stored twice, never lost once this returns `Ok`.
pub(crate) async fn publish_confirmed(
    connector: &Connector,
    target: Target<'_>,
    messages: &[Outgoing<'_>],
) -> Result<()> {
    let deadline = Instant::now() + connector.config.timeout;
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut failures = 0u32;
    loop {
        let link = connector.link(Some(deadline)).await?;
        // Bounded as a whole: besides the publishes and confirms, a try opens channels and
        // declares exchanges, and lapin can leave such a call pending for good when the
        // server closes the connection under it (amqp-rs/lapin#409).
        let tried = timeout_at(
            deadline,
            attempt(connector, &link, target, messages, &pending, deadline),
        )
        .await;
        let (left, error) = tried.unwrap_or_else(|_| (pending.clone(), Some(try_timed_out())));
        pending = left;
        let Some(error) = error else {
            debug_assert!(pending.is_empty());
            return Ok(());
        };
        let next = Instant::now() + backoff(failures, MAX_RETRY_PAUSE);
        failures = failures.saturating_add(1);
        // A try started at the deadline would time out while its frames are queued: the
        // messages may be stored and the caller retries them (duplicates).
        if !error.is_retryable() || next >= deadline {
            return Err(error.with_context("unconfirmed", pending.len()));
        }
        debug!(error = %error, unconfirmed = pending.len(), "amqp broker: publishing again");
        tokio::time::sleep_until(next).await;
    }
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
    let (left, error) = match target {
        Target::Topic(exchange) => match link.ensure_exchange(exchange).await {
            Ok(()) => publish_topic(link, exchange, messages, pending, deadline).await,
            Err(e) => (pending.to_vec(), Some(e)),
        },
        Target::Delay { ceiling_ms } => match link.ensure_delay_bucket(config, ceiling_ms).await {
            Ok(()) => {
                publish_delayed(link, &config.delay_exchange(), messages, pending, deadline).await
            }
            Err(e) => (pending.to_vec(), Some(e)),
        },
    };
    if error.is_some() {
        // Declare again before the next try, in case the exchange or queue was deleted.
        match target {
            Target::Topic(exchange) => link.undeclare(exchange),
            Target::Delay { ceiling_ms } => {
                link.undeclare(&config.delay_exchange());
                link.undeclare(&config.delay_queue(ceiling_ms));
            }
        }
    }
    (left, error)
}

/// Topic messages: spread over the publishing channels (a single message takes the next
/// one), all published at once, then all confirms awaited. Not `mandatory`, so no message
/// comes back returned, and any confirm order is right.
async fn publish_topic(
    link: &Link,
    exchange: &str,
    messages: &[Outgoing<'_>],
    pending: &[usize],
    deadline: Instant,
) -> (Vec<usize>, Option<Error>) {
    let first = NEXT_CHANNEL.fetch_add(1, Ordering::Relaxed);
    let count = PUBLISH_CHANNELS.min(pending.len());
    let mut which: Vec<usize> = (0..count).map(|n| (first + n) % PUBLISH_CHANNELS).collect();
    // Locked in one order: two tasks each taking both channels cannot wait for each other.
    which.sort_unstable();
    let mut lanes = Vec::with_capacity(count);
    for n in which {
        match link.publisher(n).await {
            Ok(lane) => lanes.push(lane),
            Err(e) => return (pending.to_vec(), Some(e)),
        }
    }
    // All publishes at once: each one's frames are queued when it is first polled, and
    // awaiting them one by one would wait for the socket write of each in turn. The channels
    // stay locked until then, so no other task's publish is numbered in between.
    let publishes = pending.iter().enumerate().map(|(n, &i)| {
        // Contiguous runs per channel.
        let channel = &lanes[n * count / pending.len()].channel;
        publish(channel, exchange, &messages[i], false)
    });
    let published = timeout_at(deadline, join_all(publishes)).await;
    drop(lanes);
    let Ok(results) = published else {
        return (pending.to_vec(), Some(timed_out()));
    };
    let mut sent: Vec<(usize, PublisherConfirm)> = Vec::with_capacity(pending.len());
    let mut error = None;
    let mut left: Vec<usize> = Vec::new();
    for (&i, result) in pending.iter().zip(results) {
        match result {
            Ok(confirm) => sent.push((i, confirm)),
            Err(e) => {
                error.get_or_insert_with(|| amqp_error("publish", e));
                left.push(i);
            }
        }
    }
    for (i, confirm) in sent {
        if let Some(failure) = check_confirm(timeout_at(deadline, confirm).await) {
            error.get_or_insert(failure);
            left.push(i);
        }
    }
    (left, error)
}

/// Delayed redeliveries: `mandatory` (an unroutable one, its delay queue or binding gone, is
/// returned), so one at a time on a delay channel, its lock held until the confirm (lapin
/// hands a returned message to whichever confirm of the channel completes next).
async fn publish_delayed(
    link: &Link,
    exchange: &str,
    messages: &[Outgoing<'_>],
    pending: &[usize],
    deadline: Instant,
) -> (Vec<usize>, Option<Error>) {
    let lane = match link
        .delayer(NEXT_CHANNEL.fetch_add(1, Ordering::Relaxed))
        .await
    {
        Ok(lane) => lane,
        Err(e) => return (pending.to_vec(), Some(e)),
    };
    for (n, &i) in pending.iter().enumerate() {
        let confirmed = timeout_at(deadline, async {
            let confirm = publish(&lane.channel, exchange, &messages[i], true).await?;
            confirm.await
        })
        .await;
        if let Some(error) = check_confirm(confirmed) {
            // The lane is dropped without being kept: the next publish opens a new channel.
            return (pending[n..].to_vec(), Some(error));
        }
    }
    lane.keep();
    (Vec::new(), None)
}

fn publish<'a>(
    channel: &'a Channel,
    exchange: &'a str,
    message: &'a Outgoing<'_>,
    mandatory: bool,
) -> impl Future<Output = lapin::Result<PublisherConfirm>> + 'a {
    channel.basic_publish(
        exchange.into(),
        message.routing_key.into(),
        BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        },
        message.payload,
        message.properties.clone(),
    )
}

/// The error of a confirm that is not a plain ack, if any.
fn check_confirm(
    confirm: std::result::Result<lapin::Result<Confirmation>, Elapsed>,
) -> Option<Error> {
    match confirm {
        Ok(Ok(Confirmation::Ack(None))) => None,
        Ok(Ok(Confirmation::Ack(Some(_)))) => Some(Error::unavailable(
            "amqp broker: a delayed message was unroutable (its delay queue or binding is gone; declared again)",
        )),
        Ok(Ok(Confirmation::Nack(_))) => Some(Error::unavailable(
            "amqp broker: RabbitMQ refused a message (publisher nack)",
        )),
        // Never expected: every publishing channel is put in confirm mode when opened.
        Ok(Ok(Confirmation::NotRequested)) => Some(Error::internal(
            "amqp broker: the publishing channel is not in confirm mode",
        )),
        Ok(Err(e)) => Some(amqp_error("publish confirm", e)),
        Err(_) => Some(timed_out()),
    }
}

fn timed_out() -> Error {
    Error::unavailable("amqp broker: no publisher confirm within the timeout")
}

fn try_timed_out() -> Error {
    Error::unavailable(
        "amqp broker: publishing did not complete within the timeout (opening a channel, declaring, publishing or awaiting confirms)",
    )
}
