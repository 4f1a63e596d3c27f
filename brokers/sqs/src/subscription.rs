//! One consumer of a group queue: its long poll, its buffer, its ack batcher, its visibility
//! heartbeat and its holding-queue mover.
//!
//! What a subscription holds lives in [`Shared`], not in the subscription: the long poll runs
//! as a task of its own and puts what it received into the shared buffer when it completes,
//! whether or not a `next()` still waits for it. So [`Subscription::next`] is cancel-safe (the
//! following call finds the messages in the buffer), buffered messages age and are handed back
//! like any other, and a dropped subscription hands back what it buffered, including what a
//! poll still running receives after the drop.
//!
//! Leases: a message handed out (a delivery) has its visibility extended by the heartbeat until
//! it is acked, nacked or dropped. A buffered message is renewed too while the consumer wants
//! messages (a `next()` is running, or one ran within `visibility / 2`): it is on its way out.
//! When the consumer asks for nothing (all its workers busy), buffered messages older than
//! `visibility / 2` are handed back (visibility 0) for any consumer to take, so a busy node does
//! not sit on received work — but a consumer draining its buffer slowly (a slow endpoint) keeps
//! it, rather than bouncing messages between consumers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
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
    /// The subscription renewing the message until the delete is answered (none for a stale
    /// copy deleted on receipt): told when it is ([`Shared::acked`]), even if the `ack()`
    /// that asked was cancelled meanwhile.
    pub(crate) renewed_by: Option<Weak<Shared>>,
}

/// A message received and not handed out yet.
struct Buffered {
    message: Received,
    /// When its visibility timeout was last set: the poll that received it completed, or the
    /// heartbeat renewed it.
    since: Instant,
}

/// What the poll, `next()`, the heartbeat and the deliveries of one subscription change.
#[derive(Default)]
struct State {
    /// Received, not handed out, oldest first. Renewed while the consumer wants messages,
    /// else handed back once older than `visibility / 2`.
    buffer: VecDeque<Buffered>,
    /// `next()` calls in progress (a cancelled one counts until it is dropped).
    wanting: usize,
    /// When a `next()` last started or ended.
    last_wanted: Option<Instant>,
    /// Receipt handles handed out and not yet acked, nacked or dropped: the heartbeat extends
    /// their visibility.
    out: HashSet<String>,
    /// Receipt handles being acked (their delete not answered yet): renewed too, so a slow
    /// delete does not let the lease of finished work lapse; a failed renewal is ignored.
    acking: HashSet<String>,
    /// FIFO: keys with a delivery handed out and not settled; the key's next buffered message
    /// waits until it is.
    busy: HashMap<String, usize>,
    /// The subscription was dropped: what a poll still running receives is handed back.
    closed: bool,
}

impl State {
    /// Whether the consumer wants messages: a `next()` runs or ran within `recent`.
    fn wants(&self, recent: Duration) -> bool {
        self.wanting > 0 || self.last_wanted.is_some_and(|t| t.elapsed() < recent)
    }

    /// Removes the buffered messages that waited longer than `limit` (on a FIFO queue also
    /// every buffered message of their keys, which must not overtake them).
    fn expire(&mut self, limit: Duration, fifo: bool) -> Vec<Received> {
        let aged = |b: &Buffered| b.since.elapsed() > limit;
        if !self.buffer.iter().any(aged) {
            return Vec::new();
        }
        let keys: HashSet<String> = if fifo {
            self.buffer
                .iter()
                .filter(|b| aged(b))
                .map(|b| b.message.key.clone())
                .collect()
        } else {
            HashSet::new()
        };
        let (expired, kept): (Vec<Buffered>, Vec<Buffered>) = self
            .buffer
            .drain(..)
            .partition(|b| aged(b) || keys.contains(&b.message.key));
        self.buffer = kept.into();
        expired.into_iter().map(|b| b.message).collect()
    }

    /// Removes the buffered messages of `key`.
    fn take_key(&mut self, key: &str) -> Vec<Received> {
        let (taken, kept): (Vec<Buffered>, Vec<Buffered>) =
            self.buffer.drain(..).partition(|b| b.message.key == key);
        self.buffer = kept.into();
        taken.into_iter().map(|b| b.message).collect()
    }
}

/// What a subscription and its deliveries share.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) queue_url: String,
    pub(crate) visibility: Duration,
    /// FIFO queue: one delivery per key at a time; a key whose message goes back takes its
    /// buffered messages back with it.
    pub(crate) fifo: bool,
    state: Mutex<State>,
    /// Ids of the messages of this queue held or just acked by this process.
    in_flight: InFlight,
    /// Taken for reading by every call that returns a message (nack, a dropped delivery,
    /// hand-backs) and for writing by the heartbeat while it renews, so a renewal in flight
    /// cannot undo them; returning calls run side by side. Every holder is bounded by
    /// [`Shared::call_limit`].
    pub(crate) renew_lock: tokio::sync::RwLock<()>,
    /// To the ack batcher.
    pub(crate) acks: mpsc::UnboundedSender<AckRequest>,
    /// FIFO: a key was settled, so a buffered message may be deliverable now.
    wake: Notify,
    /// `DeleteMessageBatch` calls made by the ack batcher (for tests and debugging).
    pub(crate) delete_calls: Arc<AtomicUsize>,
}

impl Shared {
    /// The bound of one call that keeps or returns a message: `visibility / 3`, the heartbeat's
    /// period, so a hung call (a pooled connection that died silently) costs one renewal round,
    /// not the lease.
    pub(crate) fn call_limit(&self) -> Duration {
        self.visibility / 3
    }

    /// Buffers what a poll received (or hands it back when the subscription is gone). A
    /// message another subscription of this process holds is skipped; a copy of one acked here
    /// is deleted.
    fn admit(self: &Arc<Self>, messages: Vec<Received>) {
        let mut fresh = Vec::with_capacity(messages.len());
        for m in messages {
            match self.in_flight.lock().receive(&m.message_id) {
                Seen::New => fresh.push(m),
                Seen::Held => {
                    // Handed to two receivers at once: the other one has it.
                    debug!(id = %m.message_id, "sqs broker: received a message held here already; skipped");
                }
                Seen::Done => {
                    // A stale copy of a message acked here moments ago.
                    debug!(id = %m.message_id, "sqs broker: received a message acked here already; deleting the copy");
                    let (done, _) = oneshot::channel();
                    let _ = self.acks.send(AckRequest {
                        receipt: m.receipt,
                        done,
                        renewed_by: None,
                    });
                }
            }
        }
        let back = {
            let mut state = self.state.lock();
            if state.closed {
                fresh
            } else {
                let since = Instant::now();
                state
                    .buffer
                    .extend(fresh.into_iter().map(|message| Buffered { message, since }));
                Vec::new()
            }
        };
        self.hand_back(back);
    }

    /// The next deliverable buffered message, now handed out (renewed from now on), with when
    /// its lease was last set. A message whose lease may lapse before the next renewal (set
    /// more than `2/3 visibility` ago) is handed back instead; on a FIFO queue a key with a
    /// delivery out is skipped.
    fn take(self: &Arc<Self>) -> Option<(Received, Instant)> {
        let (found, aged) = {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let aged = state.expire(self.visibility * 2 / 3, self.fifo);
            let position = if self.fifo {
                let busy = &state.busy;
                state
                    .buffer
                    .iter()
                    .position(|b| !busy.contains_key(&b.message.key))
            } else if state.buffer.is_empty() {
                None
            } else {
                Some(0)
            };
            let found = position
                .and_then(|i| state.buffer.remove(i))
                .map(|b| (b.message, b.since));
            if let Some((m, _)) = &found {
                state.out.insert(m.receipt.clone());
                if self.fifo {
                    *state.busy.entry(m.key.clone()).or_default() += 1;
                }
            }
            (found, aged)
        };
        self.hand_back(aged);
        found
    }

    /// A delivery is being acked: renewed (errors ignored) until [`acked`](Self::acked);
    /// copies of it received meanwhile are stale.
    pub(crate) fn acking(&self, receipt: &str, message_id: &str) {
        {
            let mut state = self.state.lock();
            state.out.remove(receipt);
            state.acking.insert(receipt.to_owned());
        }
        self.in_flight.lock().acked(message_id);
    }

    /// The ack of a delivery was answered (or abandoned): no longer renewed.
    pub(crate) fn acked(&self, receipt: &str) {
        self.state.lock().acking.remove(receipt);
    }

    /// Stops extending the visibility of a delivery that goes back to the queue (nacked,
    /// dropped, or its ack failed) and lets this process receive it again.
    pub(crate) fn returning(&self, receipt: &str, message_id: &str) {
        self.state.lock().out.remove(receipt);
        self.in_flight.lock().release(message_id);
    }

    /// A delivery of `key` is settled. When it `returned` to the queue (nack, drop, failed
    /// ack) on a FIFO queue, the key's buffered messages are handed back too, so they cannot
    /// overtake it; SQS then delivers the key in order again.
    pub(crate) fn settle(self: &Arc<Self>, receipt: &str, key: &str, returned: bool) {
        {
            let mut state = self.state.lock();
            state.out.remove(receipt);
            state.acking.remove(receipt);
        }
        self.settle_key(key, returned);
    }

    /// FIFO: a delivery of `key` is settled ([`settle`](Self::settle) without touching its
    /// receipt, for a cancelled ack whose message stays renewed until its delete is answered).
    pub(crate) fn settle_key(self: &Arc<Self>, key: &str, returned: bool) {
        if !self.fifo {
            return;
        }
        let back = {
            let mut state = self.state.lock();
            if let Some(count) = state.busy.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.busy.remove(key);
                }
            }
            if returned {
                state.take_key(key)
            } else {
                Vec::new()
            }
        };
        self.hand_back(back);
        self.wake.notify_one();
    }

    /// Extends the visibility of `receipt` to `visibility` now, within
    /// [`call_limit`](Self::call_limit): for a buffered message about to be handed out whose
    /// lease was set a while ago (the heartbeat renews it next only up to `visibility / 3`
    /// later, and a failed round would leave it too little).
    async fn renew_now(&self, receipt: &str) -> Result<()> {
        let call = ops::change_visibility(&self.client, &self.queue_url, receipt, self.visibility);
        ops::within(self.call_limit(), "ChangeMessageVisibility", call).await
    }

    /// Makes received, never-handed-out messages visible again at once (when a tokio runtime
    /// is there to do it; otherwise they come back after the visibility timeout).
    fn hand_back(self: &Arc<Self>, messages: Vec<Received>) {
        if messages.is_empty() {
            return;
        }
        {
            let mut in_flight = self.in_flight.lock();
            for m in &messages {
                in_flight.release(&m.message_id);
            }
        }
        let receipts: Vec<String> = messages.into_iter().map(|m| m.receipt).collect();
        self.make_visible(receipts);
    }

    /// Sets the visibility of `receipts` to 0 in a task of its own, after any renewal in
    /// flight, within [`Shared::call_limit`].
    pub(crate) fn make_visible(self: &Arc<Self>, receipts: Vec<String>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.clone();
        runtime.spawn(async move {
            let _no_renewal_in_flight = shared.renew_lock.read().await;
            let outcomes = ops::change_visibility_all(
                &shared.client,
                &shared.queue_url,
                &receipts,
                Duration::ZERO,
                shared.call_limit(),
            )
            .await;
            let failed: Vec<Error> = outcomes.into_iter().filter_map(Result::err).collect();
            if let Some(first) = failed.first() {
                warn!(failed = failed.len(), error = %first, queue = %shared.queue_url, "sqs broker: handing messages back failed; they come back after the visibility timeout");
            }
        });
    }
}

/// A `next()` in progress: counted in [`State::wanting`] until it returns or is dropped.
struct Wanting<'a>(&'a Shared);

impl<'a> Wanting<'a> {
    fn start(shared: &'a Shared) -> Self {
        let mut state = shared.state.lock();
        state.wanting += 1;
        state.last_wanted = Some(Instant::now());
        Wanting(shared)
    }
}

impl Drop for Wanting<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.wanting -= 1;
        state.last_wanted = Some(Instant::now());
    }
}

/// The long poll in progress: a task that puts what it receives into [`Shared`] itself.
type Fetch = tokio::task::JoinHandle<Result<()>>;

/// A consumer of one group queue ([`Subscription`]).
pub(crate) struct SqsSubscription {
    shared: Arc<Shared>,
    inner: Arc<Inner>,
    topic: String,
    queue_name: String,
    /// The long poll in progress, kept across cancelled `next()` calls.
    fetch: Option<Fetch>,
    /// Consecutive failed polls.
    failures: u32,
    /// Set on drop: stops the holding-queue mover.
    closed: Arc<AtomicBool>,
}

impl SqsSubscription {
    /// Starts the ack batcher, the heartbeat and the holding-queue mover of a subscription to
    /// queue `url` (which the caller registered with [`Inner::remember`]).
    pub(crate) fn start(inner: Arc<Inner>, topic: &str, queue_name: String, url: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client: inner.client.clone(),
            queue_url: url.clone(),
            visibility: inner.config.visibility,
            fifo: inner.config.fifo,
            state: Mutex::new(State::default()),
            in_flight: inner.in_flight(&url),
            renew_lock: tokio::sync::RwLock::new(()),
            acks: tx,
            wake: Notify::new(),
            delete_calls: Arc::new(AtomicUsize::new(0)),
        });
        tokio::spawn(ack_batcher(
            inner.client.clone(),
            url,
            rx,
            inner.config.ack_linger,
            shared.delete_calls.clone(),
            shared.call_limit(),
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
            topic: topic.to_owned(),
            queue_name,
            fetch: None,
            failures: 0,
            closed,
        }
    }

    /// Starts a long poll.
    fn poll(&self) -> Fetch {
        let shared = self.shared.clone();
        let wait = self.inner.config.wait;
        tokio::spawn(async move {
            let messages =
                ops::receive(&shared.client, &shared.queue_url, wait, shared.visibility).await?;
            shared.admit(messages);
            Ok(())
        })
    }
}

#[async_trait]
impl Subscription for SqsSubscription {
    async fn next(&mut self) -> Result<Delivery> {
        let shared = self.shared.clone();
        let _wanting = Wanting::start(&shared);
        loop {
            if let Some((m, since)) = self.shared.take() {
                // Made first: if this `next()` is cancelled below, dropping the acker hands
                // the message back.
                let acker =
                    SqsAcker::new(self.shared.clone(), m.receipt, m.message_id, m.key.clone());
                if since.elapsed() > self.shared.visibility / 3
                    && let Err(e) = self.shared.renew_now(acker.receipt()).await
                {
                    // Its lease may lapse before the heartbeat's next renewal: hand it back
                    // (dropping the acker) rather than hand it out.
                    debug!(error = %e, queue = %self.queue_name, "sqs broker: renewing a buffered message before handing it out failed; handed back");
                    drop(acker);
                    continue;
                }
                return Ok(Delivery::new(
                    m.payload,
                    m.key,
                    m.redeliveries,
                    Box::new(acker),
                ));
            }
            if self.fetch.is_none() {
                self.fetch = Some(self.poll());
            }
            let Some(fetch) = self.fetch.as_mut() else {
                continue;
            };
            let joined = tokio::select! {
                joined = fetch => joined,
                // FIFO: a key was settled; its next buffered message may go out now.
                () = self.shared.wake.notified() => continue,
            };
            self.fetch = None;
            let result = joined.unwrap_or_else(|e| {
                Err(Error::internal("sqs broker: the poll task failed").with_source(e))
            });
            match result {
                Ok(()) => self.failures = 0,
                Err(e) if e.kind() == ErrorKind::NotFound && self.failures < 3 => {
                    // The queue was deleted under us: create it again.
                    self.failures += 1;
                    warn!(queue = %self.queue_name, "sqs broker: group queue missing; recreating it");
                    let url = ops::ensure_queue(
                        &self.shared.client,
                        &self.queue_name,
                        self.inner.config.fifo,
                    )
                    .await?;
                    self.inner.rejoin(&self.topic, &url);
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
        // Buffered, never handed out: visible again at once. A poll still running does the
        // same with what it receives (`State::closed`); it is left to finish rather than
        // aborted, since SQS may already have handed it messages.
        let buffered: Vec<Received> = {
            let mut state = self.shared.state.lock();
            state.closed = true;
            state.buffer.drain(..).map(|b| b.message).collect()
        };
        self.shared.hand_back(buffered);
        drop(self.fetch.take());
        self.inner.unremember(&self.topic, &self.shared.queue_url);
    }
}

/// `DeleteMessageBatch` calls of one subscription in flight at once: a hung call holds up
/// only its own acks.
const DELETE_CALLS: usize = 8;

/// Collects acks for up to `linger` (or 10 of them) and deletes them with one
/// `DeleteMessageBatch` ([`delete_within`]), up to [`DELETE_CALLS`] calls at once; ends when
/// every sender (subscription and deliveries) is gone.
async fn ack_batcher(
    client: Client,
    url: String,
    mut rx: mpsc::UnboundedReceiver<AckRequest>,
    linger: Duration,
    calls: Arc<AtomicUsize>,
    limit: Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(DELETE_CALLS));
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
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, url, calls) = (client.clone(), url.clone(), calls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let receipts: Vec<String> = batch.iter().map(|r| r.receipt.clone()).collect();
            let answered = |request: &AckRequest| {
                if let Some(shared) = request.renewed_by.as_ref().and_then(Weak::upgrade) {
                    shared.acked(&request.receipt);
                }
            };
            match delete_within(&client, &url, &receipts, limit, &calls).await {
                Ok(outcomes) => {
                    for (request, outcome) in batch.into_iter().zip(outcomes) {
                        answered(&request);
                        let _ = request.done.send(outcome);
                    }
                }
                Err(e) => {
                    for request in batch {
                        answered(&request);
                        let _ = request.done.send(Err(ops::copy_error(&e)));
                    }
                }
            }
        });
    }
}

/// `DeleteMessageBatch` bounded to `limit`, once more on a fresh call if it timed out (a
/// pooled connection that died silently would otherwise hold the acks for the SDK's attempt
/// timeout, three times); then a retryable `Timeout`.
async fn delete_within(
    client: &Client,
    url: &str,
    receipts: &[String],
    limit: Duration,
    calls: &AtomicUsize,
) -> Result<ops::Outcomes> {
    let mut tries = 0;
    loop {
        tries += 1;
        calls.fetch_add(1, Ordering::Relaxed);
        let call = ops::delete_batch(client, url, receipts);
        match ops::within(limit, "DeleteMessageBatch", call).await {
            Err(e) if e.kind() == ErrorKind::Timeout && tries < 2 => {
                debug!(error = %e, queue = %url, "sqs broker: a delete got no answer in time; trying again");
            }
            other => return other,
        }
    }
}

/// Every `visibility / 3`: extends the visibility timeout of every delivery out, and of the
/// buffered messages while the consumer wants messages, to `visibility`
/// (`ChangeMessageVisibilityBatch`, 10 per call), within `visibility / 3`; a renewal is
/// therefore attempted twice more before a lease runs out. While the consumer wants nothing,
/// buffered messages older than `visibility / 2` are handed back instead. Ends when the
/// subscription and all its deliveries are gone.
async fn heartbeat(shared: Weak<Shared>) {
    let every = match shared.upgrade() {
        Some(s) => s.visibility / 3,
        None => return,
    };
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(s) = shared.upgrade() else { return };
        let aged = {
            let mut state = s.state.lock();
            if state.wants(s.visibility / 2) {
                Vec::new()
            } else {
                state.expire(s.visibility / 2, s.fifo)
            }
        };
        if !aged.is_empty() {
            debug!(count = aged.len(), queue = %s.queue_url, "sqs broker: handing back buffered messages nobody took");
            s.hand_back(aged);
        }
        {
            let state = s.state.lock();
            if state.out.is_empty() && state.acking.is_empty() && state.buffer.is_empty() {
                continue;
            }
        }
        let _renewing = s.renew_lock.write().await;
        let renewed_at = Instant::now();
        // Deliveries out, then deliveries being acked, then (while wanted) buffered messages.
        let (receipts, acking, buffered) = {
            let state = s.state.lock();
            let mut receipts: Vec<String> = state.out.iter().cloned().collect();
            let acking = state.acking.len();
            receipts.extend(state.acking.iter().cloned());
            let buffered = if state.wants(s.visibility / 2) {
                state.buffer.len()
            } else {
                0
            };
            receipts.extend(
                state
                    .buffer
                    .iter()
                    .take(buffered)
                    .map(|b| b.message.receipt.clone()),
            );
            (receipts, acking, buffered)
        };
        if receipts.is_empty() {
            continue;
        }
        let outcomes = ops::change_visibility_all(
            &s.client,
            &s.queue_url,
            &receipts,
            s.visibility,
            s.call_limit(),
        )
        .await;
        let mut failed = Vec::new();
        {
            let mut guard = s.state.lock();
            let state = &mut *guard;
            let first_buffered = receipts.len() - buffered;
            let first_acking = first_buffered - acking;
            for (i, (receipt, outcome)) in receipts.iter().zip(outcomes).enumerate() {
                if i >= first_buffered {
                    // Still buffered: its lease runs from the renewal now.
                    if outcome.is_ok()
                        && let Some(b) = state
                            .buffer
                            .iter_mut()
                            .find(|b| &b.message.receipt == receipt)
                    {
                        b.since = renewed_at;
                    }
                    continue;
                }
                if i >= first_acking {
                    // Being acked: the delete decides; a failed renewal changes nothing.
                    continue;
                }
                // Not out any more: acked or returned meanwhile (a harmless race).
                if let Err(e) = outcome
                    && state.out.contains(receipt)
                {
                    if !e.is_retryable() {
                        // Refused for good (say SQS's 12-hour limit): warn once.
                        state.out.remove(receipt);
                    }
                    failed.push(e);
                }
            }
        }
        if let Some(first) = failed.first() {
            warn!(
                failed = failed.len(),
                error = %first,
                queue = %s.queue_url,
                "sqs broker: extending the visibility of deliveries failed for some (tried again at the next beat unless SQS refused the entry); they may be delivered again"
            );
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
