//! One consumer group's queue, its subscriptions and its acknowledgement handles.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use weir_core::broker::{Acker, Delivery, Subscription};
use weir_core::{Error, Result};

/// A message as the broker keeps it: cheap to clone (`Arc` key, `Bytes` payload).
#[derive(Clone)]
pub(crate) struct Message {
    pub(crate) key: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) redeliveries: u32,
}

/// The FIFO queue of one group; its consumers compete for the messages.
#[derive(Default)]
pub(crate) struct Queue {
    messages: Mutex<VecDeque<Message>>,
    ready: Notify,
}

impl Queue {
    /// A queue holding `messages` already.
    pub(crate) fn with(messages: VecDeque<Message>) -> Self {
        Queue {
            messages: Mutex::new(messages),
            ready: Notify::new(),
        }
    }

    pub(crate) fn push_back(&self, message: Message) {
        self.messages.lock().push_back(message);
        self.ready.notify_one();
    }

    pub(crate) fn push_front(&self, message: Message) {
        self.messages.lock().push_front(message);
        self.ready.notify_one();
    }

    pub(crate) fn extend(&self, messages: impl ExactSizeIterator<Item = Message>) {
        let n = messages.len();
        self.messages.lock().extend(messages);
        // Each call wakes one waiting consumer or leaves one permit; both are cheap.
        for _ in 0..n {
            self.ready.notify_one();
        }
    }

    /// Waits for the next message. Cancel-safe: a message is taken only when returned.
    async fn pop(&self) -> Message {
        loop {
            if let Some(message) = self.messages.lock().pop_front() {
                return message;
            }
            let mut notified = pin!(self.ready.notified());
            // Register as a waiter before checking again, so a push in between is not missed.
            notified.as_mut().enable();
            if let Some(message) = self.messages.lock().pop_front() {
                return message;
            }
            notified.await;
        }
    }
}

/// A consumer of one group: [`Subscription::next`] takes from the group's shared queue.
pub(crate) struct MemorySubscription {
    pub(crate) queue: Arc<Queue>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Delivery> {
        let message = self.queue.pop().await;
        let acker = MemoryAcker {
            queue: self.queue.clone(),
            message: Some(message.clone()),
        };
        Ok(Delivery::new(
            message.payload,
            message.key.to_string(),
            message.redeliveries,
            Box::new(acker),
        ))
    }
}

/// Holds a delivered message until it is acked; requeues it on nack or when dropped.
struct MemoryAcker {
    queue: Arc<Queue>,
    /// `None` once acked or nacked.
    message: Option<Message>,
}

impl MemoryAcker {
    fn take_for_redelivery(&mut self) -> Option<Message> {
        let mut message = self.message.take()?;
        message.redeliveries = message.redeliveries.saturating_add(1);
        Some(message)
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.message = None;
        Ok(())
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        let Some(message) = self.take_for_redelivery() else {
            return Ok(());
        };
        let delay = delay.filter(|d| !d.is_zero());
        let Some(delay) = delay else {
            self.queue.push_back(message);
            return Ok(());
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Not lost: redelivered now, and the caller learns the delay was not honoured.
            self.queue.push_back(message);
            return Err(Error::internal("nack with a delay needs a Tokio runtime")
                .with_context("delay_ms", delay.as_millis()));
        };
        let queue = self.queue.clone();
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push_back(message);
        });
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // Neither acked nor nacked: the consumer gave up on it, so it keeps its place in line.
        if let Some(message) = self.take_for_redelivery() {
            self.queue.push_front(message);
        }
    }
}
