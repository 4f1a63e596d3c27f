//! weir-broker-memory: the in-process [`Broker`] of the embedded engine.
//!
//! Each topic has one FIFO queue per consumer group; a publish appends the message to the queue
//! of every group of the topic, and the consumers of a group compete for its queue. Messages
//! published to a topic that has no group yet are kept and handed to the first group that
//! subscribes. Payloads are never copied (`Bytes` clones share the buffer), and no lock is held
//! across an `.await`.
//!
//! At-least-once within one process: a nacked delivery, or one dropped without ack or nack
//! (a consumer that died), is delivered again. Nothing survives a restart.

mod queue;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use weir_core::broker::{Broker, BrokerCapabilities, Subscription};
use weir_core::{Error, ErrorKind, Result};

use crate::queue::{MemorySubscription, Message, Queue};

/// The largest payload [`MemoryBroker`] accepts: 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// In-process broker: per topic, per consumer group a shared queue.
///
/// Its capabilities:
/// - native delay without limit (`max_native_delay` is `Duration::MAX`): a nack with a delay
///   requeues the message after it, with a Tokio timer;
/// - payloads up to [`MAX_MESSAGE_BYTES`];
/// - `ordered_by_key`: each group hands out messages in publish order (of all keys, so of each
///   key too). That order holds for deliveries that are not redelivered: a nacked message goes to
///   the back of the queue and a dropped one to the front, so a redelivery can overtake or be
///   overtaken. With several consumers in a group, hand-out order is publish order but the
///   consumers may finish in any order; concurrent publishes have no order between them;
/// - `redelivers_on_nack`.
pub struct MemoryBroker {
    topics: RwLock<HashMap<String, Topic>>,
    max_message_bytes: usize,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker {
            topics: RwLock::default(),
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

/// The groups of one topic, and what was published before the first of them.
#[derive(Default)]
struct Topic {
    groups: Vec<(String, Arc<Queue>)>,
    /// Messages published while the topic had no group; moved to the first group.
    orphans: parking_lot::Mutex<VecDeque<Message>>,
}

impl Topic {
    /// Appends `messages` to every group's queue (or to the orphans when there is no group).
    fn publish<I>(&self, messages: I)
    where
        I: ExactSizeIterator<Item = Message> + Clone,
    {
        let Some(((_, last), others)) = self.groups.split_last() else {
            self.orphans.lock().extend(messages);
            return;
        };
        for (_, queue) in others {
            queue.extend(messages.clone());
        }
        last.extend(messages);
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty broker accepting payloads up to `max` bytes (at most [`MAX_MESSAGE_BYTES`]):
    /// to try locally what a broker with a small limit (SQS: 256 KiB) does to large messages.
    pub fn with_max_message_bytes(max: usize) -> Self {
        MemoryBroker {
            max_message_bytes: max.min(MAX_MESSAGE_BYTES),
            ..Self::default()
        }
    }

    fn check_size(&self, payload: &Bytes) -> Result<()> {
        if payload.len() > self.max_message_bytes {
            return Err(Error::new(
                ErrorKind::TooLarge,
                "message too large for the memory broker",
            )
            .with_context("bytes", payload.len())
            .with_context("max_bytes", self.max_message_bytes));
        }
        Ok(())
    }

    fn publish_messages<I>(&self, topic: &str, messages: I)
    where
        I: ExactSizeIterator<Item = Message> + Clone,
    {
        if let Some(t) = self.topics.read().get(topic) {
            return t.publish(messages);
        }
        self.topics
            .write()
            .entry(topic.to_owned())
            .or_default()
            .publish(messages);
    }
}

fn message(key: &str, payload: Bytes) -> Message {
    Message {
        key: Arc::from(key),
        payload,
        redeliveries: 0,
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn capabilities(&self) -> BrokerCapabilities {
        BrokerCapabilities::new(Some(Duration::MAX), self.max_message_bytes, true, true)
    }

    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<()> {
        self.check_size(&payload)?;
        self.publish_messages(topic, std::iter::once(message(key, payload)));
        Ok(())
    }

    /// Publishes all or none: sizes are checked first, then every group gets the batch in order.
    async fn publish_batch(&self, topic: &str, messages: Vec<(String, Bytes)>) -> Result<()> {
        messages
            .iter()
            .try_for_each(|(_, payload)| self.check_size(payload))?;
        let messages: Vec<Message> = messages.into_iter().map(|(k, p)| message(&k, p)).collect();
        self.publish_messages(topic, messages.into_iter());
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        let mut topics = self.topics.write();
        let t = topics.entry(topic.to_owned()).or_default();
        let queue = match t.groups.iter().find(|(name, _)| name == group) {
            Some((_, queue)) => queue.clone(),
            None => {
                let queue = Arc::new(Queue::with(std::mem::take(&mut *t.orphans.lock())));
                t.groups.push((group.to_owned(), queue.clone()));
                queue
            }
        };
        Ok(Box::new(MemorySubscription { queue }))
    }
}
