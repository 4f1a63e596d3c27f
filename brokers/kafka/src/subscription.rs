//! One consumer of a group: a librdkafka consumer polled on a thread of its own, its
//! rebalance handling, its commits, and the [`Subscription`] handing its messages out.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use weir_core::broker::{Delivery, Subscription};
use weir_core::{Error, Result};

use crate::acker::KafkaAcker;
use crate::tracker::{Ranges, Received, Tracker, parse_metadata};

/// Header carrying how many times a republished message was delivered before.
pub(crate) const HEADER_REDELIVERIES: &str = "weir-redeliveries";
/// Header naming the consumer group a republished message is for (other groups skip it).
pub(crate) const HEADER_GROUP: &str = "weir-group";

/// Consumer errors (librdkafka retries by itself) and failing commits are logged at most
/// this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Consecutive failed offset commits after which they are logged as a warning (before: at
/// debug level, as a rebalance in progress refuses commits for a moment).
pub(crate) const COMMIT_WARN_AFTER: u32 = 5;

/// While `prefetch` messages wait, the consumer thread polls no more for this long; past it,
/// it pauses the assigned partitions and polls again.
const THROTTLED_POLL: Duration = Duration::from_secs(1);
/// How long the consumer thread sleeps between checks while throttled.
const THROTTLE_SLEEP: Duration = Duration::from_millis(5);

/// How long one `poll` of the consumer thread waits.
const POLL: Duration = Duration::from_millis(100);

/// What a subscription's thread, its `next()` and its ackers share.
pub(crate) struct Shared {
    pub(crate) tracker: Mutex<Tracker>,
    /// Signalled on every ack and release (a revocation waits for them).
    pub(crate) acked: Condvar,
    /// Woken when partitions start being revoked (rebalance, drop): republishes waiting
    /// (delayed nacks, dropped deliveries, retries) check whether their partition is still
    /// theirs.
    pub(crate) revoked: tokio::sync::Notify,
    /// Republishes (every nack and dropped delivery, from the nack until the copy is sent or
    /// given up) not finished yet: the last commit waits for them (up to `revoke_grace`).
    pub(crate) in_flight: AtomicUsize,
    /// Messages sent to `next()` and not taken yet.
    pub(crate) queued: AtomicUsize,
    /// The assigned partitions are paused (`prefetch` messages wait for `next()`).
    pub(crate) paused: AtomicBool,
    /// The subscription was dropped: the thread commits and leaves the group.
    pub(crate) stop: AtomicBool,
    /// Becomes true once the consumer thread committed and left the group.
    pub(crate) closed: tokio::sync::watch::Sender<bool>,
    /// A periodic commit is in flight (on the committer thread).
    pub(crate) committing: AtomicBool,
    /// Failed offset commits in a row, and when that was last logged as a warning.
    pub(crate) commit_failures: Mutex<(u32, Option<Instant>)>,
    pub(crate) producer: FutureProducer,
    pub(crate) kafka_topic: String,
    pub(crate) kafka_group: String,
    pub(crate) prefetch: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) revoke_grace: Duration,
    pub(crate) timeout: Duration,
    /// A `kafka+mock://` broker's cluster: kept running until this consumer has left.
    pub(crate) _mock: Option<Arc<crate::MockKafka>>,
}

impl Shared {
    pub(crate) fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `offset` acked (and wakes a revocation waiting for it).
    pub(crate) fn ack(&self, partition: i32, epoch: u64, offset: i64) {
        let fresh = self.tracker().ack(partition, epoch, offset);
        if !fresh {
            debug!(
                topic = %self.kafka_topic,
                partition,
                offset,
                "kafka broker: ack of a partition this consumer no longer holds; its new owner delivers the message again"
            );
        }
        self.acked.notify_all();
    }

    /// `offset` is no longer held by the handler but stays uncommitted.
    pub(crate) fn release(&self, partition: i32, epoch: u64, offset: i64) {
        self.tracker().release(partition, epoch, offset);
        self.acked.notify_all();
    }

    /// Stops handing out (and republishing) `partitions`; returns how many of their
    /// messages are held.
    fn begin_revoke(&self, partitions: &[i32]) -> usize {
        let held = self.tracker().begin_revoke(partitions);
        self.revoked.notify_waiters();
        held
    }

    /// Waits (up to `grace`) until the handler holds nothing of `partitions`.
    fn wait_held(&self, partitions: &[i32], grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut tracker = self.tracker();
        while tracker.held(partitions) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                debug!(
                    topic = %self.kafka_topic,
                    held = tracker.held(partitions),
                    "kafka broker: messages still held after the revoke grace; they are delivered again by the partitions' next owner"
                );
                return;
            }
            tracker = match self.acked.wait_timeout(tracker, left) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Waits (up to `grace`) until no republish is in flight.
    fn wait_republishes(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The commit `partitions` (all when `None`) need: the partitions and the list with
    /// offsets and metadata (highest offset handed out, offsets done above the committed
    /// one), recorded as sent. `force`: even if unchanged since the last one sent.
    fn prepare_commit(
        &self,
        partitions: Option<&[i32]>,
        force: bool,
    ) -> Option<(Vec<i32>, TopicPartitionList)> {
        let points = self.tracker().commit_points(partitions, force);
        if points.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::with_capacity(points.len());
        for c in &points {
            let mut elem = tpl.add_partition(&self.kafka_topic, c.partition);
            if let Err(e) = elem.set_offset(Offset::Offset(c.offset)) {
                warn!(error = %e, "kafka broker: bad commit offset");
                return None;
            }
            elem.set_metadata(c.metadata.clone());
        }
        // Recorded before the result is known; a failure clears it again, so the next
        // interval sends it again.
        self.tracker().committed(&points);
        Some((points.iter().map(|c| c.partition).collect(), tpl))
    }

    /// Commits what `partitions` (all when `None`) need before they go, even if unchanged
    /// since the last commit sent (that one may yet fail), and waits for the result; a
    /// periodic commit in flight is waited for first (up to `timeout`), so this one lands
    /// last.
    fn commit_final<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: Option<&[i32]>,
    ) {
        let deadline = Instant::now() + self.timeout;
        while self.committing.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some((partitions, tpl)) = self.prepare_commit(partitions, true) {
            let result = consumer.commit(&tpl, CommitMode::Sync);
            self.commit_result(&partitions, result.as_ref().map(|_| ()));
        }
    }

    /// Books the outcome of a commit of `partitions`: a failure makes the next interval
    /// send them again and counts; after [`COMMIT_WARN_AFTER`] failures in a row (a cause that
    /// does not go away: no `Read` permission on the group, metadata too large…) they are
    /// warned about, at most every [`WARN_EVERY`].
    fn commit_result(&self, partitions: &[i32], result: std::result::Result<(), &KafkaError>) {
        let mut failures = self
            .commit_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Err(error) = result else {
            if failures.0 >= COMMIT_WARN_AFTER {
                info!(topic = %self.kafka_topic, group = %self.kafka_group, failed = failures.0, "kafka broker: offset commits succeed again");
            }
            *failures = (0, None);
            return;
        };
        self.tracker().uncommitted(partitions);
        failures.0 = failures.0.saturating_add(1);
        let (count, last) = *failures;
        if count >= COMMIT_WARN_AFTER && last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            failures.1 = Some(Instant::now());
            warn!(
                topic = %self.kafka_topic,
                group = %self.kafka_group,
                error = %error,
                ?partitions,
                failures = count,
                "kafka broker: offset commits keep failing; nothing is committed meanwhile (after a restart or rebalance the acked messages are delivered again)"
            );
        } else {
            debug!(
                topic = %self.kafka_topic,
                group = %self.kafka_group,
                error = %error,
                ?partitions,
                failures = count,
                "kafka broker: offset commit failed; retried at the next interval"
            );
        }
    }

    /// Pauses (`pause`) or resumes the assigned partitions (fetching stops and restarts at
    /// the next offset not taken).
    fn set_paused<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, pause: bool) {
        self.paused.store(pause, Ordering::SeqCst);
        match consumer.assignment() {
            Ok(tpl) if tpl.count() > 0 => {
                let done = if pause {
                    consumer.pause(&tpl)
                } else {
                    consumer.resume(&tpl)
                };
                if let Err(e) = done {
                    debug!(error = %e, pause, topic = %self.kafka_topic, "kafka broker: pausing or resuming the partitions failed");
                }
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, topic = %self.kafka_topic, "kafka broker: reading the assignment failed");
            }
        }
    }
}

/// The consumer's context: rebalances commit what the lost partitions' handlers acked.
pub(crate) struct Context {
    pub(crate) shared: Arc<Shared>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    /// Before partitions go: stop handing them out, wait (up to `revoke_grace`) for the
    /// handler to ack what it holds of them, commit, forget them.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions = partitions_of(tpl, &self.shared.kafka_topic);
        let held = self.shared.begin_revoke(&partitions);
        if held > 0 && !consumer.assignment_lost() {
            self.shared.wait_held(&partitions, self.shared.revoke_grace);
        }
        if !consumer.assignment_lost() {
            self.shared.commit_final(consumer, Some(&partitions));
        }
        self.shared.tracker().remove(&partitions);
    }

    /// After partitions came: read the commit metadata their previous owner left (which
    /// offsets it had handed out, which are done), start tracking them; pause them while
    /// the subscription is throttled.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = partitions_of(tpl, &self.shared.kafka_topic);
                let mut marks: Vec<(i32, (i64, Ranges))> = partitions
                    .iter()
                    .map(|&p| (p, (-1, Ranges::default())))
                    .collect();
                if !partitions.is_empty() {
                    match consumer.committed_offsets((*tpl).clone(), self.shared.timeout) {
                        Ok(committed) => {
                            for elem in committed.elements() {
                                if let Some(mark) =
                                    marks.iter_mut().find(|(p, _)| *p == elem.partition())
                                {
                                    mark.1 = parse_metadata(elem.metadata());
                                }
                            }
                        }
                        Err(e) => warn!(
                            error = %e,
                            group = %self.shared.kafka_group,
                            "kafka broker: reading committed offsets failed; redeliveries of the previous owner's messages count 0"
                        ),
                    }
                }
                let mut tracker = self.shared.tracker();
                for (p, (mark, skip)) in marks {
                    tracker.assign(p, mark, skip);
                }
                drop(tracker);
                // Paused while the subscription is throttled; else resumed, in case librdkafka
                // kept a pause from an earlier assignment of theirs (a no-op otherwise).
                if tpl.count() > 0 {
                    let paused = self.shared.paused.load(Ordering::SeqCst);
                    let done = if paused {
                        consumer.pause(tpl)
                    } else {
                        consumer.resume(tpl)
                    };
                    if let Err(e) = done {
                        debug!(error = %e, paused, "kafka broker: pausing or resuming newly assigned partitions failed");
                    }
                }
            }
            Rebalance::Error(e) => {
                warn!(error = %e, group = %self.shared.kafka_group, "kafka broker: rebalance failed");
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// A message on its way from the consumer thread to `next()`.
pub(crate) struct Incoming {
    pub(crate) partition: i32,
    pub(crate) epoch: u64,
    pub(crate) offset: i64,
    pub(crate) key: String,
    pub(crate) payload: Bytes,
    pub(crate) redeliveries: u32,
}

/// The consumer thread: polls, hands messages to `next()` through `tx`, takes no more while
/// `prefetch` messages wait (and pauses the assigned partitions when that lasts; resumes
/// below half of `prefetch`), commits every `commit_interval` (on a thread of its own, see
/// [`Committer`]); when the subscription is dropped, waits for republishes and held messages
/// (up to `revoke_grace`), commits and leaves the group.
pub(crate) fn run(
    consumer: BaseConsumer<Context>,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    let consumer = Arc::new(consumer);
    let committer = Committer::start(&consumer, &shared);
    let mut last_commit = Instant::now();
    let mut last_warning: Option<Instant> = None;
    let mut paused = false;
    let mut throttled_since: Option<Instant> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        if last_commit.elapsed() >= shared.commit_interval {
            committer.commit(&consumer, &shared);
            last_commit = Instant::now();
        }
        // Flow control: while `prefetch` messages wait for `next()`, take no more from
        // librdkafka; past THROTTLED_POLL of that, pause the assigned partitions (librdkafka
        // stops fetching them and drops what it buffered of them) and poll again, serving
        // rebalances, commit results and `max.poll.interval.ms`. Resume below half of
        // `prefetch` (fetching restarts at the next offset not taken; that costs a round trip
        // or more, hence no pause for short waits).
        let queued = shared.queued.load(Ordering::SeqCst);
        if paused {
            if queued <= shared.prefetch / 2 {
                shared.set_paused(&consumer, false);
                paused = false;
                throttled_since = None;
            }
        } else if queued >= shared.prefetch {
            let since = *throttled_since.get_or_insert_with(Instant::now);
            if since.elapsed() < THROTTLED_POLL {
                std::thread::sleep(THROTTLE_SLEEP);
                continue;
            }
            shared.set_paused(&consumer, true);
            paused = true;
        } else {
            throttled_since = None;
        }
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                if let Some(incoming) = receive(&shared, &message) {
                    shared.queued.fetch_add(1, Ordering::SeqCst);
                    if tx.send(incoming).is_err() {
                        break;
                    }
                }
                if paused {
                    // Fetched before the pause took hold, or a partition assigned since:
                    // pause again (what is paused already stays so).
                    drop(message);
                    shared.set_paused(&consumer, true);
                }
            }
            Some(Err(e)) if last_warning.is_none_or(|at| at.elapsed() > WARN_EVERY) => {
                warn!(error = %e, topic = %shared.kafka_topic, group = %shared.kafka_group, "kafka broker: consumer error (librdkafka retries)");
                last_warning = Some(Instant::now());
            }
            Some(Err(_)) => {}
            None => {}
        }
    }
    // Dropped: nothing more is handed out or republished; let the handler finish what it
    // holds, then commit, forget the partitions (closing the consumer revokes them, which
    // then waits for and commits nothing) and leave.
    drop(tx);
    let partitions = shared.tracker().partitions();
    let held = shared.begin_revoke(&partitions);
    let grace = shared.revoke_grace;
    if held > 0 {
        shared.wait_held(&partitions, grace);
    }
    shared.wait_republishes(grace);
    committer.stop();
    shared.commit_final(&consumer, None);
    shared.tracker().remove(&partitions);
    drop(consumer);
    shared.closed.send_replace(true);
    debug!(topic = %shared.kafka_topic, group = %shared.kafka_group, "kafka broker: consumer closed");
}

/// Sends the periodic commits from a thread of its own, one at a time, each waited for
/// (synchronous): rust-rdkafka never reports the result of an asynchronous commit
/// (`ConsumerContext::commit_callback` is not called for `CommitMode::Async`), and a
/// synchronous one on the consumer thread would stop its polling while the group coordinator
/// is unreachable.
struct Committer {
    requests: Option<std::sync::mpsc::Sender<(Vec<i32>, TopicPartitionList)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn start(consumer: &Arc<BaseConsumer<Context>>, shared: &Arc<Shared>) -> Self {
        let (requests, commits) = std::sync::mpsc::channel::<(Vec<i32>, TopicPartitionList)>();
        let (consumer, thread_shared) = (consumer.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("weir-kafka-commit".into())
            .spawn(move || {
                for (partitions, tpl) in commits {
                    let result = consumer.commit(&tpl, CommitMode::Sync);
                    thread_shared.commit_result(&partitions, result.as_ref().map(|_| ()));
                    thread_shared.committing.store(false, Ordering::SeqCst);
                }
            });
        match thread {
            Ok(thread) => Committer {
                requests: Some(requests),
                thread: Some(thread),
            },
            Err(e) => {
                warn!(error = %e, "kafka broker: cannot start the commit thread; committing on the consumer thread");
                Committer {
                    requests: None,
                    thread: None,
                }
            }
        }
    }

    /// Sends what changed since the last commit, unless a commit is still in flight.
    fn commit(&self, consumer: &BaseConsumer<Context>, shared: &Shared) {
        if shared.committing.load(Ordering::SeqCst) {
            return;
        }
        let Some((partitions, tpl)) = shared.prepare_commit(None, false) else {
            return;
        };
        let Some(requests) = &self.requests else {
            let result = consumer.commit(&tpl, CommitMode::Sync);
            shared.commit_result(&partitions, result.as_ref().map(|_| ()));
            return;
        };
        shared.committing.store(true, Ordering::SeqCst);
        if let Err(back) = requests.send((partitions, tpl)) {
            shared.committing.store(false, Ordering::SeqCst);
            shared.tracker().uncommitted(&back.0.0);
        }
    }

    /// Lets the commit in flight finish and ends the thread.
    fn stop(mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Books a message in the tracker; `None` for one meant for another group (counted acked).
fn receive(shared: &Shared, message: &BorrowedMessage<'_>) -> Option<Incoming> {
    let (mut group, mut republished) = (None, 0u32);
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            match header.key {
                HEADER_GROUP => group = header.value,
                HEADER_REDELIVERIES => {
                    republished = header
                        .value
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    let ours = group.is_none_or(|g| g == shared.kafka_group.as_bytes());
    let (partition, offset) = (message.partition(), message.offset());
    let Received::Deliver(epoch, handed_before) =
        shared.tracker().received(partition, offset, ours)
    else {
        return None;
    };
    Some(Incoming {
        partition,
        epoch,
        offset,
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        redeliveries: republished.saturating_add(u32::from(handed_before)),
    })
}

/// A consumer of one group of one topic.
pub(crate) struct KafkaSubscription {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Incoming>,
}

impl KafkaSubscription {
    pub(crate) fn new(shared: Arc<Shared>, rx: mpsc::UnboundedReceiver<Incoming>) -> Self {
        KafkaSubscription { shared, rx }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    /// The next message of the partitions this consumer holds. Cancel-safe: a message is
    /// taken from the channel and handed out in one step without an await between.
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            let Some(m) = self.rx.recv().await else {
                return Err(Error::unavailable(
                    "kafka broker: the subscription's consumer thread stopped",
                )
                .with_context("topic", &self.shared.kafka_topic));
            };
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            if !self
                .shared
                .tracker()
                .hand_out(m.partition, m.epoch, m.offset)
            {
                // Its partition was revoked meanwhile: its new owner delivers it.
                continue;
            }
            let acker = KafkaAcker::new(self.shared.clone(), &m);
            return Ok(Delivery::new(
                m.payload,
                m.key,
                m.redeliveries,
                Box::new(acker),
            ));
        }
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}
