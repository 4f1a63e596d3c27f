//! One consumer of a group queue: its long poll, its buffer, its ack batcher, its visibility
//! heartbeat and its holding-queue mover.
//!
//! [`Subscription::next`] is cancel-safe: the `ReceiveMessage` future of a `next()` is kept by
//! the subscription when `next()` is cancelled and resumed on the following call, so a
//! received message always reaches the buffer. (Dropping the subscription drops the poll; a
//! message SQS handed to that dropped poll comes back after the visibility timeout.)

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use weir_core::broker::{Delivery, Subscription};
use weir_core::{Error, ErrorKind, Result};

use crate::acker::SqsAcker;
use crate::ops;
use crate::tracker::Seen;
use crate::wire::Received;
use crate::{InFlight, Inner};

/// One ack waiting for its `DeleteMessageBatch`.
pub(crate) struct AckRequest {
    pub(crate) receipt: String,
    pub(crate) done: oneshot::Sender<Result<()>>,
}

/// What a subscription and its deliveries share.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) queue_url: String,
    pub(crate) visibility: Duration,
    /// Receipt handles held (buffered, or handed out and not yet acked or nacked): the
    /// heartbeat extends their visibility timeout.
    held: Mutex<HashSet<String>>,
    /// Ids of the messages of this queue held or just acked by this process.
    in_flight: InFlight,
    /// Held by the heartbeat while it renews, taken by a nack before it changes the
    /// visibility, so a renewal in flight cannot undo a nack.
    pub(crate) renew_lock: tokio::sync::Mutex<()>,
    /// To the ack batcher.
    pub(crate) acks: mpsc::UnboundedSender<AckRequest>,
    /// FIFO queue: a key whose message went back is handed back by the subscription too.
    pub(crate) fifo: bool,
    /// FIFO: keys of messages nacked or dropped since the last poll.
    pub(crate) returned_keys: Mutex<HashSet<String>>,
    /// `DeleteMessageBatch` calls made by the ack batcher (for tests and debugging).
    pub(crate) delete_calls: Arc<AtomicUsize>,
}

impl Shared {
    fn hold(&self, receipt: &str) {
        self.held.lock().insert(receipt.to_owned());
    }

    /// Stops extending the visibility of a message that goes back to the queue (nacked or
    /// handed back) and lets this process receive it again.
    pub(crate) fn release(&self, receipt: &str, message_id: &str) {
        self.held.lock().remove(receipt);
        self.in_flight.lock().release(message_id);
    }

    /// Stops extending the visibility of a message being acked; copies of it received
    /// meanwhile are stale.
    pub(crate) fn acking(&self, receipt: &str, message_id: &str) {
        self.held.lock().remove(receipt);
        self.in_flight.lock().acked(message_id);
    }

    /// The delete of an ack failed: the message may come back and is then delivered.
    pub(crate) fn ack_failed(&self, message_id: &str) {
        self.in_flight.lock().release(message_id);
    }
}

/// A long poll running as a task of its own, so it finishes (and releases the queue's poll
/// lock) even while nobody awaits `next()`.
type Fetch = tokio::task::JoinHandle<Result<Vec<Received>>>;

/// A consumer of one group queue ([`Subscription`]).
pub(crate) struct SqsSubscription {
    shared: Arc<Shared>,
    inner: Arc<Inner>,
    queue_name: String,
    buffer: VecDeque<Received>,
    /// The long poll in progress, kept across cancelled `next()` calls.
    fetch: Option<Fetch>,
    /// Consecutive failed polls.
    failures: u32,
    /// Set on drop: stops the holding-queue mover.
    closed: Arc<AtomicBool>,
}

impl SqsSubscription {
    /// Starts the ack batcher, the heartbeat and the holding-queue mover of a subscription to
    /// queue `url`.
    pub(crate) fn start(inner: Arc<Inner>, topic: &str, queue_name: String, url: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client: inner.client.clone(),
            queue_url: url.clone(),
            visibility: inner.config.visibility,
            held: Mutex::new(HashSet::new()),
            in_flight: inner.in_flight(&url),
            renew_lock: tokio::sync::Mutex::new(()),
            acks: tx,
            delete_calls: Arc::new(AtomicUsize::new(0)),
            fifo: inner.config.fifo,
            returned_keys: Mutex::new(HashSet::new()),
        });
        tokio::spawn(ack_batcher(
            inner.client.clone(),
            url,
            rx,
            inner.config.ack_linger,
            shared.delete_calls.clone(),
        ));
        tokio::spawn(heartbeat(Arc::downgrade(&shared)));
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(mover(
            Arc::downgrade(&inner),
            topic.to_owned(),
            closed.clone(),
        ));
        SqsSubscription {
            shared,
            inner,
            queue_name,
            buffer: VecDeque::new(),
            fetch: None,
            failures: 0,
            closed,
        }
    }

    /// Starts a long poll.
    fn poll(&self) -> Fetch {
        let client = self.shared.client.clone();
        let url = self.shared.queue_url.clone();
        let (wait, visibility) = (self.inner.config.wait, self.inner.config.visibility);
        tokio::spawn(async move { ops::receive(&client, &url, wait, visibility).await })
    }
}

#[async_trait]
impl Subscription for SqsSubscription {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            if let Some(m) = self.buffer.pop_front() {
                if self.shared.fifo && self.shared.returned_keys.lock().contains(&m.key) {
                    // A message of this key received before it went back (nack or drop):
                    // hand it back too, so SQS delivers the key in order again.
                    self.hand_back(vec![m]);
                    continue;
                }
                let acker =
                    SqsAcker::new(self.shared.clone(), m.receipt, m.message_id, m.key.clone());
                return Ok(Delivery::new(
                    m.payload,
                    m.key,
                    m.redeliveries,
                    Box::new(acker),
                ));
            }
            if self.fetch.is_none() {
                // A new poll: SQS only returns a key's messages when none is in flight.
                self.shared.returned_keys.lock().clear();
                self.fetch = Some(self.poll());
            }
            let Some(fetch) = self.fetch.as_mut() else {
                continue;
            };
            let result = match fetch.await {
                Ok(result) => result,
                Err(e) => Err(Error::internal("sqs broker: the poll task failed").with_source(e)),
            };
            self.fetch = None;
            match result {
                Ok(messages) => {
                    self.failures = 0;
                    for m in messages {
                        match self.shared.in_flight.lock().receive(&m.message_id) {
                            Seen::New => {}
                            Seen::Held => {
                                // Handed to two receivers at once: the other one has it.
                                debug!(id = %m.message_id, "sqs broker: received a message held here already; skipped");
                                continue;
                            }
                            Seen::Done => {
                                // A stale copy of a message acked here moments ago.
                                debug!(id = %m.message_id, "sqs broker: received a message acked here already; deleting the copy");
                                let (done, _) = oneshot::channel();
                                let _ = self.shared.acks.send(AckRequest {
                                    receipt: m.receipt,
                                    done,
                                });
                                continue;
                            }
                        }
                        self.shared.hold(&m.receipt);
                        self.buffer.push_back(m);
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound && self.failures < 3 => {
                    // The queue was deleted under us: create it again.
                    self.failures += 1;
                    warn!(queue = %self.queue_name, "sqs broker: group queue missing; recreating it");
                    ops::ensure_queue(
                        &self.shared.client,
                        &self.queue_name,
                        self.inner.config.fifo,
                    )
                    .await?;
                }
                Err(e) if e.is_retryable() && self.failures < 5 => {
                    self.failures += 1;
                    let backoff = Duration::from_millis(100 << self.failures.min(5));
                    debug!(error = %e, ?backoff, "sqs broker: receive failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => {
                    self.failures = 0;
                    return Err(e);
                }
            }
        }
    }
}

impl Drop for SqsSubscription {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(fetch) = self.fetch.take() {
            // What SQS handed to an unfinished poll comes back after the visibility timeout.
            fetch.abort();
        }
        // Buffered, never handed out: make them visible again at once.
        let buffered: Vec<Received> = self.buffer.drain(..).collect();
        self.hand_back(buffered);
    }
}

impl SqsSubscription {
    /// Makes received, never-handed-out messages visible again at once.
    fn hand_back(&self, buffered: Vec<Received>) {
        if buffered.is_empty() {
            return;
        }
        for m in &buffered {
            self.shared.release(&m.receipt, &m.message_id);
        }
        let receipts: Vec<String> = buffered.into_iter().map(|m| m.receipt).collect();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            runtime.spawn(async move {
                if let Err(e) = ops::change_visibility_all(
                    &shared.client,
                    &shared.queue_url,
                    &receipts,
                    Duration::ZERO,
                )
                .await
                {
                    debug!(error = %e, "sqs broker: handing back buffered messages failed; they come back after the visibility timeout");
                }
            });
        }
    }
}

/// Collects acks for up to `linger` (or 10 of them) and deletes them with one
/// `DeleteMessageBatch`; ends when every sender (subscription and deliveries) is gone.
async fn ack_batcher(
    client: Client,
    url: String,
    mut rx: mpsc::UnboundedReceiver<AckRequest>,
    linger: Duration,
    calls: Arc<AtomicUsize>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < ops::BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(request)) => batch.push(request),
                    _ => break,
                },
            }
        }
        let receipts: Vec<String> = batch.iter().map(|r| r.receipt.clone()).collect();
        calls.fetch_add(1, Ordering::Relaxed);
        match ops::delete_batch(&client, &url, &receipts).await {
            Ok(outcomes) => {
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.done.send(outcome);
                }
            }
            Err(e) => {
                let (kind, message) = (e.kind(), e.to_string());
                for request in batch {
                    let _ = request
                        .done
                        .send(Err(weir_core::Error::new(kind, message.clone())));
                }
            }
        }
    }
}

/// Every `visibility / 3`, extends the visibility timeout of every held message to
/// `visibility` (`ChangeMessageVisibilityBatch`, 10 per call). Ends when the subscription and
/// all its deliveries are gone.
async fn heartbeat(shared: Weak<Shared>) {
    let every = match shared.upgrade() {
        Some(s) => (s.visibility / 3).max(Duration::from_millis(300)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(s) = shared.upgrade() else { return };
        if s.held.lock().is_empty() {
            continue;
        }
        let _renewing = s.renew_lock.lock().await;
        let receipts: Vec<String> = s.held.lock().iter().cloned().collect();
        match ops::change_visibility_all(&s.client, &s.queue_url, &receipts, s.visibility).await {
            Ok(outcomes) => {
                let failed = outcomes.iter().filter(|o| o.is_err()).count();
                if failed > 0 {
                    // Also the harmless race of an ack deleting a message being renewed.
                    debug!(
                        failed,
                        queue = %s.queue_url,
                        "sqs broker: extending the visibility of held messages failed for some; they may be redelivered"
                    );
                }
            }
            Err(e) => {
                warn!(error = %e, "sqs broker: extending the visibility of held messages failed; retrying")
            }
        }
    }
}

/// Every `refresh`, moves what waits in the topic's holding queue into its group queues
/// (first right away). Ends when the subscription is dropped.
async fn mover(inner: Weak<Inner>, topic: String, closed: Arc<AtomicBool>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        if closed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = i.drain_holding(&topic).await {
            debug!(error = %e, topic = %topic, "sqs broker: moving held messages failed; retrying");
        }
        let every = i.config.refresh;
        drop(i);
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use weir_core::broker::Broker;

    use super::*;
    use crate::SqsBroker;

    /// 25 acks made at once go out in a few `DeleteMessageBatch` calls, not 25.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_are_deleted_in_batches() {
        let Some(base) = weir_core::testkit::service_url("WEIR_TEST_SQS_URL") else {
            return;
        };
        let rest = base.strip_prefix("sqs://").expect("sqs:// URL");
        let query = rest.split_once('?').map_or("", |(_, q)| q);
        let prefix = format!("wu-{:08x}", rand::random::<u32>());
        let url = format!("sqs://{prefix}?{query}&ack_linger=50ms&visibility=10s&wait=2s");
        let broker = SqsBroker::connect(&url).await.expect("connect");
        let inner = broker.inner.clone();
        let name = inner.names("acks").group("g");
        let queue = ops::ensure_queue(&inner.client, &name, inner.config.fifo)
            .await
            .expect("queue");
        inner.remember("acks", &queue);
        let mut sub = SqsSubscription::start(inner.clone(), "acks", name, queue);
        let batch = (0..25)
            .map(|i| (format!("k{i}"), Bytes::from(format!("m{i}"))))
            .collect();
        broker.publish_batch("acks", batch).await.expect("publish");
        let mut deliveries = Vec::new();
        for _ in 0..25 {
            let next = tokio::time::timeout(Duration::from_secs(10), sub.next());
            deliveries.push(next.await.expect("in time").expect("next"));
        }
        let calls = sub.shared.delete_calls.clone();
        let acks: Vec<_> = deliveries
            .into_iter()
            .map(|d| tokio::spawn(d.ack()))
            .collect();
        for ack in acks {
            ack.await.expect("join").expect("ack");
        }
        let calls = calls.load(Ordering::Relaxed);
        assert!(
            (3..25).contains(&calls),
            "{calls} DeleteMessageBatch calls for 25 acks"
        );
    }
}
