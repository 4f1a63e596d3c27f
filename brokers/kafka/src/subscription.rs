//! One consumer of a group: a librdkafka consumer polled on a thread of its own, its
//! rebalance handling, its commits, and the [`Subscription`] handing its messages out.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use weir_core::broker::{Delivery, Subscription};
use weir_core::{Error, Result};

use crate::acker::KafkaAcker;
use crate::tracker::{CommitPoint, Received, Tracker, metadata, parse_metadata};

/// Header carrying how many times a republished message was delivered before.
pub(crate) const HEADER_REDELIVERIES: &str = "weir-redeliveries";
/// Header naming the consumer group a republished message is for (other groups skip it).
pub(crate) const HEADER_GROUP: &str = "weir-group";

/// Consumer errors (librdkafka retries by itself) are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// While `prefetch` messages wait, the consumer thread still polls this often (one message
/// more each time at most), so librdkafka's callbacks and `max.poll.interval.ms` are served.
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
    /// Republishes (nacks, dropped deliveries) not finished yet: the last commit waits for them.
    pub(crate) in_flight: AtomicUsize,
    /// Messages sent to `next()` and not taken yet.
    pub(crate) queued: AtomicUsize,
    /// The subscription was dropped: the thread commits and leaves the group.
    pub(crate) stop: AtomicBool,
    /// Becomes true once the consumer thread committed and left the group.
    pub(crate) closed: tokio::sync::watch::Sender<bool>,
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

    /// Commits what `partitions` (all when `None`) need, with the highest offset handed out
    /// as metadata.
    fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: Option<&[i32]>,
        mode: CommitMode,
    ) {
        let points = self.tracker().commit_points(partitions);
        if points.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(points.len());
        for c in &points {
            let mut elem = tpl.add_partition(&self.kafka_topic, c.partition);
            if let Err(e) = elem.set_offset(Offset::Offset(c.offset)) {
                warn!(error = %e, "kafka broker: bad commit offset");
                return;
            }
            elem.set_metadata(metadata(c.handed, &c.acked));
        }
        // Recorded before the result is known (an async commit reports later); a failure
        // clears it again, so the next interval sends it again.
        self.tracker().committed(&points);
        if let Err(e) = consumer.commit(&tpl, mode) {
            self.commit_failed(&points, &e.to_string());
        }
    }

    fn commit_failed(&self, points: &[CommitPoint], error: &str) {
        let partitions: Vec<i32> = points.iter().map(|c| c.partition).collect();
        self.tracker().uncommitted(&partitions);
        debug!(
            topic = %self.kafka_topic,
            group = %self.kafka_group,
            error,
            ?partitions,
            "kafka broker: offset commit failed; retried at the next interval"
        );
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
        let held = self.shared.tracker().begin_revoke(&partitions);
        if held > 0 && !consumer.assignment_lost() {
            self.shared.wait_held(&partitions, self.shared.revoke_grace);
        }
        if !consumer.assignment_lost() {
            self.shared
                .commit(consumer, Some(&partitions), CommitMode::Sync);
        }
        self.shared.tracker().remove(&partitions);
    }

    /// After partitions came: read the commit metadata their previous owner left (which
    /// offsets it had handed out), start tracking them.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = partitions_of(tpl, &self.shared.kafka_topic);
                let mut marks: Vec<(i32, (i64, BTreeSet<i64>))> = partitions
                    .iter()
                    .map(|&p| (p, (-1, BTreeSet::new())))
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
            }
            Rebalance::Error(e) => {
                warn!(error = %e, group = %self.shared.kafka_group, "kafka broker: rebalance failed");
            }
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            let partitions = partitions_of(offsets, &self.shared.kafka_topic);
            self.shared.tracker().uncommitted(&partitions);
            debug!(error = %e, ?partitions, "kafka broker: offset commit failed; retried at the next interval");
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
/// `prefetch` messages wait, commits every `commit_interval`; when the
/// subscription is dropped, waits for republishes and held messages (up to `revoke_grace`),
/// commits and leaves the group.
pub(crate) fn run(
    consumer: BaseConsumer<Context>,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    let mut last_commit = Instant::now();
    let mut last_warning: Option<Instant> = None;
    let mut last_poll = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if last_commit.elapsed() >= shared.commit_interval {
            shared.commit(&consumer, None, CommitMode::Async);
            last_commit = Instant::now();
        }
        // Flow control: while `prefetch` messages wait for `next()`, take no more from
        // librdkafka (which buffers up to `queued.max.messages.kbytes` itself), but still poll
        // once a second so rebalances and commit results are served.
        if shared.queued.load(Ordering::SeqCst) >= shared.prefetch
            && last_poll.elapsed() < THROTTLED_POLL
        {
            std::thread::sleep(THROTTLE_SLEEP);
            continue;
        }
        last_poll = Instant::now();
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                if let Some(incoming) = receive(&shared, &message) {
                    shared.queued.fetch_add(1, Ordering::SeqCst);
                    if tx.send(incoming).is_err() {
                        break;
                    }
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
    // Dropped: nothing more is handed out; let the handler finish what it holds, then commit
    // and leave (closing the consumer revokes its partitions, which commits nothing new).
    drop(tx);
    let partitions = shared.tracker().partitions();
    let held = shared.tracker().begin_revoke(&partitions);
    let grace = shared.revoke_grace;
    if held > 0 {
        shared.wait_held(&partitions, grace);
    }
    shared.wait_republishes(grace);
    shared.commit(&consumer, None, CommitMode::Sync);
    drop(consumer);
    shared.closed.send_replace(true);
    debug!(topic = %shared.kafka_topic, group = %shared.kafka_group, "kafka broker: consumer closed");
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
