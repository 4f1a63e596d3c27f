//! The Celery adapter on RabbitMQ:
//! `celery+amqp://USER:PASS@HOST:PORT/VHOST?queue=weir&results=…`.
//!
//! It consumes one Celery queue (an existing one as it is — quorum, `x-max-priority`, … — or,
//! when there is none yet, declared as Celery declares it: durable, bound to a direct exchange
//! of the same name), with a prefetch. Each message is decided on ([`intake::decide`]): its
//! event is ingested (to run now, or at its `eta`), or it is published unchanged to the Celery
//! workers' queue (`unhandled=requeue:Q`), or the task gets its FAILURE/REVOKED result. A
//! message is acked only after that is done: after its event is stored, after RabbitMQ
//! confirmed the hand-on, after its result is written. Messages that arrive together are
//! ingested in one batch. When the connection drops, the unacked messages go back to the
//! queue (RabbitMQ's doing) and the adapter connects again; a message taken twice starts one
//! run (its event id is the task id).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::{Semaphore, oneshot};
use weir_core::adapter::{Adapter, Shutdown};
use weir_core::engine::Engine;
use weir_core::event::now_ms;
use weir_core::{Error, Event, Result};

use crate::amqp_link::{AmqpLink, Publisher, QueueShape, amqp_error, ensure_queue};
use crate::amqp_message;
use crate::chain::Routes;
use crate::finished::{self, Answerers, FollowUps, Results, Sender, task_id_of};
use crate::intake::{self, Ingested, Intake, Unhandled};
use crate::message::Refused;
use crate::results::{DEFAULT_RESULT_EXPIRES, RedisResults};
use crate::rpc_results::RpcResults;
use crate::settings::{ResultsSetting, Settings, Transport};

/// Messages RabbitMQ sends ahead of their acks, by default.
pub const DEFAULT_PREFETCH: u16 = 256;

/// Batches handled at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// The adapter of `celery+amqp://` (and `celery+amqps://`) URLs.
#[derive(Debug, Clone)]
pub struct CeleryAmqpAdapter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    link: AmqpLink,
    publisher: Publisher,
    queue: String,
    shape: QueueShape,
    prefetch: u16,
    results: Option<Results>,
    unhandled: Unhandled,
    routes: Routes,
    track_started: bool,
}

impl CeleryAmqpAdapter {
    /// Opens the adapter of `url`: `celery+amqp://[USER:PASS@]HOST[:PORT][/VHOST]?queue=Q` with
    /// `results=redis://…` (percent-encoded), `results=rpc` (replies to each task's
    /// `reply_to`) or `results=none`; `unhandled=fail|requeue:<queue>`; `routes=task:queue,…`;
    /// `prefetch=256`; `delayed_delivery=true` with `exchange=` and `routing_key=` (Celery
    /// 5.5's native delayed delivery, for quorum queues bound to a topic exchange).
    /// Connects once, so that a wrong host or password fails the start.
    pub async fn open(url: &str) -> Result<Self> {
        let mut prefetch = DEFAULT_PREFETCH;
        let (mut exchange, mut routing_key, mut delayed_delivery) = (None, None, false);
        let transport = Transport {
            schemes: &["amqp", "amqps"],
            example: "celery+amqp://USER:PASS@HOST[:PORT][/VHOST]?queue=…",
            params: &["prefetch", "exchange", "routing_key", "delayed_delivery"],
            rpc: true,
        };
        let settings = Settings::parse(url, &transport, |param| {
            match param.name() {
                "exchange" => exchange = Some(param.value()?),
                "routing_key" => routing_key = Some(param.value()?),
                "delayed_delivery" => delayed_delivery = param.bool()?,
                _ => {
                    prefetch = param.number::<u16>()?;
                    if prefetch == 0 {
                        return Err(param.invalid("must be at least 1"));
                    }
                }
            }
            Ok(())
        })?;
        let Settings {
            broker,
            queue,
            results,
            unhandled,
            routes,
            track_started,
        } = settings;
        // `…:5672/` names the vhost `/` for kombu; for lapin it would be the vhost "".
        let broker = vhost_slash_as_root(broker);
        let link = AmqpLink::open(&broker).await?;
        if let Unhandled::Requeue(queue) = &unhandled {
            // Tasks handed on wait there for the Celery workers, even before they start.
            ensure_queue(&link, queue, &QueueShape::celery_default(queue)).await?;
        }
        // With native delayed delivery, the queue Celery declares is a quorum queue bound to a
        // topic exchange; weir declares the same when it is missing, and the delay levels.
        let shape = QueueShape {
            exchange: exchange.unwrap_or_else(|| queue.clone()),
            topic: delayed_delivery,
            routing_key: routing_key.unwrap_or_else(|| queue.clone()),
            quorum: delayed_delivery,
        };
        if delayed_delivery {
            ensure_queue(&link, &queue, &shape).await?;
            crate::delayed_delivery::set_up(&link, &queue, &shape.exchange, &shape.routing_key)
                .await?;
        }
        let publisher = Publisher::new(link.clone());
        let results = match results {
            ResultsSetting::None => None,
            ResultsSetting::Rpc => Some(Results::Rpc(RpcResults::new(publisher.clone()))),
            ResultsSetting::Redis(url) => Some(Results::Redis(
                RedisResults::connect(&url, DEFAULT_RESULT_EXPIRES).await?,
            )),
        };
        Ok(CeleryAmqpAdapter {
            inner: Arc::new(Inner {
                link,
                publisher,
                queue,
                shape,
                prefetch,
                results,
                unhandled,
                routes,
                track_started,
            }),
        })
    }
}

/// `amqp://u:p@h:5672/` names the vhost `/` for kombu, and the vhost "" for lapin: the bare
/// `/` becomes `/%2f`. The path starts after the credentials, which may hold a `/`.
fn vhost_slash_as_root(broker: String) -> String {
    let Some((scheme, rest)) = broker.split_once("://") else {
        return broker;
    };
    let host_at = rest.rfind('@').map_or(0, |at| at + 1);
    match rest[host_at..].split_once('/') {
        Some((host, "")) => format!("{scheme}://{}{host}/%2f", &rest[..host_at]),
        _ => broker,
    }
}

impl Inner {
    /// A channel with the prefetch set, on which the queue exists (see [`ensure_queue`]).
    async fn open_queue(&self) -> Result<Channel> {
        let channel = ensure_queue(&self.link, &self.queue, &self.shape).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp_error("setting the prefetch (basic.qos)", e))?;
        Ok(channel)
    }

    /// Consumes until shutdown (`Ok`) or until the channel or connection fails (`Err`). The
    /// batches still being handled are finished either way.
    async fn consume(self: &Arc<Self>, engine: &Engine, shutdown: &mut Shutdown) -> Result<()> {
        let channel = self.open_queue().await?;
        let tag = format!("weir-{}", ulid::Ulid::new());
        let mut consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error("starting the consumer", e))?;
        tracing::info!(queue = %self.queue, broker = %self.link.shown(), "celery adapter: consuming");
        let batches = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
        // Each batch acks after the one before it (see `Acks`).
        let mut previous: Option<oneshot::Receiver<()>> = None;
        let outcome = loop {
            let first = tokio::select! {
                _ = shutdown.raised() => break Ok(()),
                next = consumer.next() => next,
            };
            let first = match first {
                // Its channel closed while it waited in lapin's buffer: RabbitMQ has put it
                // back, and it comes again through the next consumer.
                Some(Ok(delivery)) if !delivery.acker.usable() => continue,
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => break Err(amqp_error("consuming", e)),
                None => {
                    break Err(Error::unavailable(
                        "celery amqp: the consumer was cancelled (the queue deleted, or the channel closed)",
                    ));
                }
            };
            let mut batch = vec![first];
            while batch.len() < usize::from(self.prefetch) {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(delivery))) if delivery.acker.usable() => batch.push(delivery),
                    Some(Some(Ok(_))) => {}
                    Some(Some(Err(e))) => {
                        tracing::debug!(error = %e, "celery adapter: the consumer failed; its next turn says why");
                        break;
                    }
                    _ => break,
                }
            }
            let Ok(permit) = batches.clone().acquire_owned().await else {
                break Ok(());
            };
            let (inner, engine, shutdown) = (self.clone(), engine.clone(), shutdown.clone());
            let (acked, next) = oneshot::channel();
            let earlier = previous.replace(next);
            tokio::spawn(async move {
                let _permit = permit;
                inner.handle_batch(&engine, batch, &shutdown, earlier).await;
                let _ = acked.send(());
            });
        };
        // Let the batches in hand finish (their messages acked or handed back), then leave:
        // what lapin buffered unacked goes back to the queue when the channel closes.
        let _ = batches.acquire_many(BATCHES_IN_FLIGHT as u32).await;
        let _ = channel
            .close(200, "weir celery adapter stopping".into())
            .await;
        outcome
    }

    /// Decides on each message of a batch and does it; the events to run at once are ingested
    /// together.
    async fn handle_batch(
        &self,
        engine: &Engine,
        batch: Vec<Delivery>,
        shutdown: &Shutdown,
        earlier: Option<oneshot::Receiver<()>>,
    ) {
        let acks = Acks::default();
        let max = engine.config().max_event_bytes;
        let now = now_ms();
        let mut at_once: Vec<(Delivery, Event)> = Vec::with_capacity(batch.len());
        for delivery in batch {
            let decoded = amqp_message::decode(&delivery.properties, &delivery.data);
            match intake::decide(engine, decoded, &self.queue, &self.unhandled, max, now) {
                Intake::Run {
                    event,
                    due_ms: None,
                } => at_once.push((delivery, event)),
                Intake::Run {
                    event,
                    due_ms: Some(due),
                } => {
                    self.ingest(engine, vec![(delivery, event)], Some(due), shutdown, &acks)
                        .await;
                }
                Intake::Requeue { task_id, queue } => {
                    self.requeue(&delivery, &task_id, &queue, &acks).await;
                }
                answer @ Intake::Answer { .. } => {
                    let reply_to = delivery.properties.reply_to().as_ref();
                    let reply_to = reply_to.map(|r| r.as_str().to_string());
                    self.answer(&delivery, answer, reply_to.as_deref(), &acks)
                        .await;
                }
            }
        }
        if !at_once.is_empty() {
            self.ingest(engine, at_once, None, shutdown, &acks).await;
        }
        // One ack for the batch, once the batches before it acked theirs.
        if let Some(earlier) = earlier {
            let _ = earlier.await;
        }
        acks.flush().await;
    }

    /// Ingests the events of `deliveries` (at `due_ms` when given; see [`intake::ingest`])
    /// and acks their messages; at shutdown, with the engine still failing, they go back to
    /// the queue. When the batch is refused for an event's own fault, each event is tried
    /// alone, and one refused for good gets a FAILURE.
    async fn ingest(
        &self,
        engine: &Engine,
        deliveries: Vec<(Delivery, Event)>,
        due_ms: Option<i64>,
        shutdown: &Shutdown,
        acks: &Acks,
    ) {
        let events: Vec<Event> = deliveries.iter().map(|(_, e)| e.clone()).collect();
        let error = match intake::ingest(engine, &events, due_ms, shutdown).await {
            Ingested::Stored => {
                for (delivery, _) in &deliveries {
                    acks.add(delivery);
                }
                return;
            }
            Ingested::Refused(error) => error,
            Ingested::Stopping => {
                for (delivery, _) in &deliveries {
                    hand_back(delivery).await;
                }
                return;
            }
        };
        if deliveries.len() > 1 {
            // One event may be the cause: each goes alone.
            for one in deliveries {
                Box::pin(self.ingest(engine, vec![one], due_ms, shutdown, acks)).await;
            }
            return;
        }
        for (delivery, event) in deliveries {
            let task_id = task_id_of(&event);
            let reason = format!("weir did not accept the task's event: {error}");
            let reply_to = event.data["reply_to"].as_str().map(str::to_string);
            let answer = Intake::refused(Refused {
                task_id: Some(task_id.clone()),
                task: None,
                reason,
            });
            self.answer(&delivery, answer, reply_to.as_deref(), acks)
                .await;
        }
    }

    /// Writes the result of a task weir does not run (when results are written), then acks
    /// its message; a result that cannot be written leaves the message to be taken again.
    async fn answer(
        &self,
        delivery: &Delivery,
        answer: Intake,
        reply_to: Option<&str>,
        acks: &Acks,
    ) {
        let Intake::Answer {
            task_id,
            state,
            reason,
        } = answer
        else {
            return;
        };
        tracing::warn!(task_id, reason, "celery task not run");
        if let (Some(results), Some(task_id)) = (&self.results, &task_id)
            && !finished::store(results, task_id, reply_to, &state).await
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            hand_back(delivery).await;
            return;
        }
        acks.add(delivery);
    }

    /// Publishes the message unchanged to `queue` through the default exchange (RabbitMQ
    /// confirms it), then acks it; when the publish fails, the message goes back to weir's
    /// queue, to be tried again.
    async fn requeue(&self, delivery: &Delivery, task_id: &str, queue: &str, acks: &Acks) {
        // A delivery of a closed channel is back on weir's queue already: handing it on too
        // would make the task run twice.
        if !delivery.acker.usable() {
            return;
        }
        match self
            .publisher
            .publish("", queue, &delivery.data, delivery.properties.clone(), true)
            .await
        {
            Ok(()) => {
                tracing::debug!(
                    task_id,
                    queue,
                    "celery adapter: no weir function handles the task; moved to the Celery workers' queue"
                );
                acks.add(delivery);
            }
            Err(e) => {
                tracing::warn!(error = %e, task_id, queue, "celery adapter: cannot move the task to the Celery workers' queue; it goes back to weir's");
                tokio::time::sleep(Duration::from_millis(500)).await;
                hand_back(delivery).await;
            }
        }
    }
}

/// The messages of one batch to ack, acked together at the batch's end with one `basic.ack`
/// of the highest delivery tag (`multiple`), after every earlier batch acked its own: delivery
/// tags grow along a channel, so that ack covers this batch's messages and nothing later (the
/// ones handed back were settled by their nack). When the channel is gone, RabbitMQ has put
/// the messages back already (their event ids keep them from starting second runs).
#[derive(Default)]
struct Acks {
    highest: std::sync::Mutex<Option<(u64, lapin::Acker)>>,
}

impl Acks {
    /// `delivery` is done with: it is acked with the batch.
    fn add(&self, delivery: &Delivery) {
        if let Ok(mut highest) = self.highest.lock()
            && highest
                .as_ref()
                .is_none_or(|(tag, _)| delivery.delivery_tag > *tag)
        {
            *highest = Some((delivery.delivery_tag, delivery.acker.clone()));
        }
    }

    /// Acks every message added.
    async fn flush(&self) {
        let highest = self.highest.lock().ok().and_then(|mut h| h.take());
        let Some((_, acker)) = highest else {
            return;
        };
        let multiple = BasicAckOptions { multiple: true };
        match acker.ack(multiple).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(
                    "celery adapter: a batch's channel closed before its ack; RabbitMQ delivers its messages again"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "celery adapter: cannot ack a batch; RabbitMQ delivers its messages again");
            }
        }
    }
}

/// Hands a message back to its queue.
async fn hand_back(delivery: &Delivery) {
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(e) = delivery.acker.nack(requeue).await {
        tracing::warn!(error = %e, "celery adapter: cannot hand a message back; RabbitMQ does when the channel closes");
    }
}

#[async_trait]
impl Adapter for CeleryAmqpAdapter {
    fn name(&self) -> &str {
        "celery"
    }

    async fn run(&self, engine: Engine, mut shutdown: Shutdown) -> Result<()> {
        let follow_ups = FollowUps {
            queue: self.inner.queue.clone(),
            sender: Sender::Amqp(finished::AmqpSender::new(
                self.inner.link.clone(),
                self.inner.publisher.clone(),
            )),
            routes: self.inner.routes.clone(),
        };
        let answerers = Answerers::start(
            &engine,
            self.inner.results.clone(),
            follow_ups,
            self.inner.track_started,
            &shutdown,
        );
        let mut failures: u32 = 0;
        while !shutdown.is_raised() {
            let started = tokio::time::Instant::now();
            match self.inner.consume(&engine, &mut shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    // A consumer that ran a while starts over from a short wait.
                    if started.elapsed() > Duration::from_secs(30) {
                        failures = 0;
                    }
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tracing::warn!(error = %e, retry_in = ?wait, "celery adapter: RabbitMQ consumer stopped; starting it again");
                    tokio::select! {
                        _ = shutdown.raised() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        answerers.join().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::vhost_slash_as_root;

    #[test]
    fn a_bare_slash_is_the_root_vhost_and_other_paths_stay() {
        let root = |url: &str| vhost_slash_as_root(url.to_string());
        assert_eq!(root("amqp://h/"), "amqp://h/%2f");
        assert_eq!(root("amqp://u:p@h:5672/"), "amqp://u:p@h:5672/%2f");
        assert_eq!(root("amqp://u:a/b@h/"), "amqp://u:a/b@h/%2f");
        assert_eq!(root("amqp://u:a/b@h"), "amqp://u:a/b@h");
        assert_eq!(root("amqp://h/vh/"), "amqp://h/vh/");
        assert_eq!(root("amqp://h/%2f"), "amqp://h/%2f");
        assert_eq!(root("amqp://h"), "amqp://h");
    }
}
