//! One consumer of a group: its blocking reader, its buffer, its lease heartbeat.
//!
//! [`Subscription::next`] is cancel-safe: all Redis work of a `next()` (maintenance and the
//! blocking `XREADGROUP`) runs in one future that the subscription keeps when `next()` is
//! cancelled, and resumes on the following call, so entries read from Redis always reach the
//! buffer. Entries stay buffered until handed out.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::time::Instant;
use tracing::{debug, warn};
use weir_core::broker::{Delivery, Subscription};
use weir_core::{Error, Result};
use weir_support_redis::has_code;

use crate::ack_batch::{AckBatcher, AckTarget};
use crate::acker::{RedisAcker, requeue};
use crate::config::RedisBrokerConfig;
use crate::error::redis_error;
use crate::keys::GroupKeys;
use crate::scripts::{ENSURE_GROUPS, FORGET_CONSUMER, PROMOTE, RENEW, TRIM};
use crate::stream::{Entry, Sel, array_of, entries_of, int_of, read_reply, text_of};

/// What a subscription and its deliveries share.
pub(crate) struct Shared {
    /// The broker's command connection (acks, nacks, renewals).
    pub(crate) conn: ConnectionManager,
    pub(crate) keys: GroupKeys,
    pub(crate) group: String,
    /// This subscription's consumer name, unique per subscription.
    pub(crate) consumer: String,
    pub(crate) lease: Duration,
    pub(crate) count: usize,
    /// Entries pending for this consumer that it still holds (buffered or handed out and not
    /// yet acked or nacked): the heartbeat renews their lease.
    held: Mutex<Held>,
    /// The subscription is gone (its deliveries may live on).
    closed: AtomicBool,
    /// Sends the acks of its deliveries, several per command when they come together.
    pub(crate) acks: AckBatcher,
}

#[derive(Default)]
struct Held {
    main: HashSet<String>,
    retry: HashSet<String>,
}

impl Held {
    fn of(&mut self, sel: Sel) -> &mut HashSet<String> {
        match sel {
            Sel::Main => &mut self.main,
            Sel::Retry => &mut self.retry,
        }
    }
}

impl Shared {
    /// The key of stream `sel`.
    pub(crate) fn stream(&self, sel: Sel) -> &str {
        match sel {
            Sel::Main => &self.keys.stream,
            Sel::Retry => &self.keys.retry,
        }
    }

    fn hold(&self, entries: &[Entry]) {
        let mut held = self.held.lock();
        for e in entries {
            held.of(e.sel).insert(e.id.clone());
        }
    }

    /// Stops renewing the lease of an entry (acked, nacked, handed back or given up).
    pub(crate) fn release(&self, sel: Sel, id: &str) {
        self.held.lock().of(sel).remove(id);
    }

    /// Runs `PROMOTE`: moves due delayed entries into the retry stream. Returns the time until
    /// the next one is due, if any.
    pub(crate) async fn promote(&self, conn: &mut ConnectionManager) -> Result<Option<Duration>> {
        let mut inv = PROMOTE.prepare_invoke();
        inv.key(&self.keys.delayed)
            .key(&self.keys.retry)
            .arg(self.count);
        let (_moved, wait): (i64, i64) = inv
            .invoke_async(conn)
            .await
            .map_err(|e| redis_error("moving due delayed messages", e))?;
        Ok(u64::try_from(wait).ok().map(Duration::from_millis))
    }
}

/// Creates the group on the topic stream and on its retry stream, if missing.
pub(crate) async fn ensure_groups(
    conn: &mut ConnectionManager,
    keys: &GroupKeys,
    group: &str,
) -> Result<()> {
    let mut inv = ENSURE_GROUPS.prepare_invoke();
    inv.key(&keys.stream).key(&keys.retry).arg(group);
    inv.invoke_async::<i64>(conn)
        .await
        .map_err(|e| redis_error("creating the consumer group", e).with_context("group", group))?;
    Ok(())
}

/// A consumer name unique per subscription: `{host}-{pid}-{random}` (readable in
/// `XINFO CONSUMERS`).
pub(crate) fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "weir".into());
    format!(
        "{host}-{}-{:012x}",
        std::process::id(),
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

type Fetch = Pin<Box<dyn Future<Output = (Box<Reader>, Result<Vec<Entry>>)> + Send>>;

enum ReadState {
    /// No read in progress.
    Idle(Box<Reader>),
    /// A fetch in progress, kept across cancelled `next()` calls.
    Reading(Fetch),
    /// Only while switching states, and after drop.
    Gone,
}

/// A consumer of one group ([`Subscription`]).
pub(crate) struct RedisSubscription {
    shared: Arc<Shared>,
    buffer: VecDeque<Entry>,
    state: ReadState,
    /// The longest a fetch may take to notice the subscription is gone (give-back on drop).
    drain_within: Duration,
}

impl RedisSubscription {
    /// A subscription reading with `read`, a connection of its own (blocking reads stall
    /// every other command of a multiplexed connection).
    pub(crate) fn new(
        shared: Arc<Shared>,
        read: ConnectionManager,
        config: &RedisBrokerConfig,
    ) -> Self {
        let now = Instant::now();
        let reader = Reader {
            shared: shared.clone(),
            conn: read,
            block: config.block,
            reclaim_every: (config.lease / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(5)),
            trim_every: config
                .lease
                .clamp(Duration::from_secs(1), Duration::from_secs(30)),
            idle_consumer_ms: config.lease.max(Duration::from_secs(10)).as_millis() * 3,
            next_promote: now,
            // Reclaim right away: a restarted node picks up what its predecessor left.
            next_reclaim: now,
            next_trim: now
                + config
                    .lease
                    .clamp(Duration::from_secs(1), Duration::from_secs(30)),
            cursors: ["0-0".into(), "0-0".into()],
            failures: 0,
        };
        RedisSubscription {
            shared,
            buffer: VecDeque::new(),
            state: ReadState::Idle(Box::new(reader)),
            drain_within: config.block + config.timeout,
        }
    }

    fn deliver(&self, entry: Entry) -> Delivery {
        let acker = RedisAcker::new(self.shared.clone(), &entry);
        Delivery::new(
            entry.payload,
            entry.key,
            entry.redeliveries,
            Box::new(acker),
        )
    }
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            if let Some(entry) = self.buffer.pop_front() {
                return Ok(self.deliver(entry));
            }
            if matches!(self.state, ReadState::Idle(_))
                && let ReadState::Idle(reader) = std::mem::replace(&mut self.state, ReadState::Gone)
            {
                self.state = ReadState::Reading(Box::pin(reader.fetch()));
            }
            let ReadState::Reading(fetch) = &mut self.state else {
                return Err(Error::internal("redis broker: subscription has no reader"));
            };
            // Cancel-safe: if this await is cancelled the fetch stays in `self.state`.
            let (reader, result) = fetch.await;
            self.state = ReadState::Idle(reader);
            self.buffer.extend(result?);
        }
    }
}

impl Drop for RedisSubscription {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let buffered: Vec<Entry> = self.buffer.drain(..).collect();
        let reading = match std::mem::replace(&mut self.state, ReadState::Gone) {
            ReadState::Reading(fetch) => Some(fetch),
            _ => None,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let shared = self.shared.clone();
                let within = self.drain_within;
                runtime.spawn(give_back(shared, buffered, reading, within));
            }
            // No runtime: the entries stay pending and are reclaimed after the lease.
            Err(_) => {
                for e in buffered {
                    self.shared.release(e.sel, &e.id);
                }
            }
        }
    }
}

/// Hands the entries a dropped subscription read but did not hand out back to its group
/// (through the retry stream, without counting a redelivery), then deletes its consumer when
/// it holds nothing more.
async fn give_back(
    shared: Arc<Shared>,
    mut entries: Vec<Entry>,
    reading: Option<Fetch>,
    within: Duration,
) {
    if let Some(fetch) = reading {
        // The reader sees `closed` after at most one blocking read and returns.
        match tokio::time::timeout(within, fetch).await {
            Ok((_, Ok(more))) => entries.extend(more),
            Ok((_, Err(e))) => {
                debug!(error = %e, "redis broker: last read of a closed subscription failed")
            }
            Err(_) => debug!("redis broker: last read of a closed subscription timed out"),
        }
    }
    for e in entries {
        if let Err(err) = requeue(&shared, e.sel, &e.id, &e.key, &e.payload, e.redeliveries).await {
            warn!(error = %err, id = %e.id, "redis broker: handing back a buffered message failed; it is redelivered after the lease");
        }
        shared.release(e.sel, &e.id);
    }
    let mut conn = shared.conn.clone();
    let mut inv = FORGET_CONSUMER.prepare_invoke();
    inv.key(&shared.keys.stream)
        .key(&shared.keys.retry)
        .arg(&shared.group)
        .arg(&shared.consumer);
    if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
        debug!(error = %e, "redis broker: deleting a closed consumer failed");
    }
}

/// Renews the lease of every held entry every `lease / 3`, until the subscription is gone
/// and holds nothing.
pub(crate) async fn heartbeat(shared: Arc<Shared>) {
    let every = shared.lease / 3;
    let mut conn = shared.conn.clone();
    loop {
        tokio::time::sleep(every).await;
        let (main, retry) = {
            let held = shared.held.lock();
            (
                held.main.iter().cloned().collect::<Vec<_>>(),
                held.retry.iter().cloned().collect::<Vec<_>>(),
            )
        };
        if main.is_empty() && retry.is_empty() {
            if shared.closed.load(Ordering::SeqCst) {
                return;
            }
            continue;
        }
        for (sel, ids) in [(Sel::Main, main), (Sel::Retry, retry)] {
            if ids.is_empty() {
                continue;
            }
            let mut inv = RENEW.prepare_invoke();
            inv.key(shared.stream(sel))
                .arg(&shared.group)
                .arg(&shared.consumer)
                .arg(&ids);
            if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
                warn!(error = %e, held = ids.len(), "redis broker: renewing leases failed");
            }
        }
    }
}

/// The Redis side of a subscription: owned by the fetch future while one runs.
struct Reader {
    shared: Arc<Shared>,
    /// Dedicated to this subscription.
    conn: ConnectionManager,
    block: Duration,
    reclaim_every: Duration,
    trim_every: Duration,
    idle_consumer_ms: u128,
    next_promote: Instant,
    next_reclaim: Instant,
    next_trim: Instant,
    /// `XAUTOCLAIM` cursors of the topic and retry streams.
    cursors: [String; 2],
    /// Consecutive failed fetches (backoff before the next one).
    failures: u32,
}

impl Reader {
    async fn fetch(mut self: Box<Self>) -> (Box<Self>, Result<Vec<Entry>>) {
        let result = self.fetch_inner().await;
        match &result {
            Ok(entries) => {
                self.failures = 0;
                self.shared.hold(entries);
            }
            Err(_) => self.failures = self.failures.saturating_add(1),
        }
        (self, result)
    }

    /// Waits for entries: periodic work when due, else a blocking read. Returns nothing once
    /// the subscription is gone.
    async fn fetch_inner(&mut self) -> Result<Vec<Entry>> {
        if self.failures > 0 {
            let exp = self.failures.min(6) - 1;
            tokio::time::sleep(Duration::from_millis(50 << exp).min(Duration::from_secs(2))).await;
        }
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                return Ok(Vec::new());
            }
            let now = Instant::now();
            if now >= self.next_promote {
                let next_due = self.shared.promote(&mut self.conn).await?;
                let wait = next_due.map_or(self.block, |due| due.min(self.block));
                self.next_promote = Instant::now() + wait;
            }
            if now >= self.next_reclaim {
                let claimed = self.reclaim().await?;
                self.next_reclaim = Instant::now() + self.reclaim_every;
                if !claimed.is_empty() {
                    return Ok(claimed);
                }
            }
            if now >= self.next_trim {
                self.trim().await;
                self.next_trim = Instant::now() + self.trim_every;
            }
            let until = self
                .next_promote
                .min(self.next_reclaim)
                .saturating_duration_since(Instant::now());
            let wait = until.min(self.block).max(Duration::from_millis(1));
            let entries = self.read(wait).await?;
            if !entries.is_empty() {
                return Ok(entries);
            }
        }
    }

    /// `XREADGROUP … BLOCK wait … STREAMS retry topic > >`; recreates the groups on `NOGROUP`
    /// (a Redis that restarted without persistence).
    async fn read(&mut self, wait: Duration) -> Result<Vec<Entry>> {
        let s = &self.shared;
        let reply: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&s.group)
            .arg(&s.consumer)
            .arg("COUNT")
            .arg(s.count)
            .arg("BLOCK")
            .arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg("STREAMS")
            .arg(&s.keys.retry)
            .arg(&s.keys.stream)
            .arg(">")
            .arg(">")
            .query_async(&mut self.conn)
            .await;
        match reply {
            Ok(value) => Ok(read_reply(&s.keys.stream, value)),
            Err(e) if has_code(&e, "NOGROUP") => {
                debug!(group = %s.group, "redis broker: consumer group missing; recreating it");
                ensure_groups(&mut self.conn, &s.keys, &s.group).await?;
                Ok(Vec::new())
            }
            Err(e) => Err(redis_error("reading", e).with_context("stream", &s.keys.stream)),
        }
    }

    /// `XAUTOCLAIM`s entries idle longer than the lease (their consumer died) on both streams,
    /// then asks `XPENDING` how often each was delivered.
    async fn reclaim(&mut self) -> Result<Vec<Entry>> {
        let s = self.shared.clone();
        let min_idle = u64::try_from(s.lease.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        for (sel, cursor) in [
            (Sel::Main, &self.cursors[0]),
            (Sel::Retry, &self.cursors[1]),
        ] {
            pipe.cmd("XAUTOCLAIM")
                .arg(s.stream(sel))
                .arg(&s.group)
                .arg(&s.consumer)
                .arg(min_idle)
                .arg(cursor)
                .arg("COUNT")
                .arg(s.count);
        }
        let replies: Vec<Value> = match pipe.query_async(&mut self.conn).await {
            Ok(replies) => replies,
            Err(e) if has_code(&e, "NOGROUP") => {
                ensure_groups(&mut self.conn, &s.keys, &s.group).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(redis_error("reclaiming idle messages", e)),
        };
        let mut claimed = Vec::new();
        for (i, (sel, reply)) in [Sel::Main, Sel::Retry].into_iter().zip(replies).enumerate() {
            let mut parts = array_of(reply).into_iter();
            if let Some(cursor) = parts.next().and_then(text_of) {
                self.cursors[i] = cursor;
            }
            if let Some(entries) = parts.next() {
                claimed.extend(entries_of(sel, entries));
            }
        }
        if claimed.is_empty() {
            return Ok(claimed);
        }
        debug!(count = claimed.len(), group = %s.group, "redis broker: reclaimed messages of a dead consumer");
        // How many times Redis delivered each (XAUTOCLAIM counted this delivery too).
        let mut pipe = redis::pipe();
        for e in &claimed {
            pipe.cmd("XPENDING")
                .arg(s.stream(e.sel))
                .arg(&s.group)
                .arg(&e.id)
                .arg(&e.id)
                .arg(1);
        }
        let counts: Vec<Value> = pipe.query_async(&mut self.conn).await.unwrap_or_default();
        for (i, e) in claimed.iter_mut().enumerate() {
            let delivered = counts
                .get(i)
                .cloned()
                .map(array_of)
                .and_then(|rows| rows.into_iter().next())
                .map(array_of)
                .and_then(|row| row.get(3).and_then(int_of))
                .unwrap_or(2);
            let extra = u32::try_from(delivered.saturating_sub(1))
                .unwrap_or(u32::MAX)
                .max(1);
            e.redeliveries = e.redeliveries.saturating_add(extra);
        }
        Ok(claimed)
    }

    /// Runs `TRIM` (safe trimming of the topic stream, forgetting idle empty consumers).
    /// Failures are logged only: trimming is housekeeping.
    async fn trim(&mut self) {
        let s = &self.shared;
        let mut inv = TRIM.prepare_invoke();
        inv.key(&s.keys.stream)
            .key(&s.keys.retry)
            .arg(&s.group)
            .arg(u64::try_from(self.idle_consumer_ms).unwrap_or(u64::MAX));
        match inv.invoke_async::<i64>(&mut self.conn).await {
            Ok(0) => {}
            Ok(n) => {
                debug!(trimmed = n, stream = %s.keys.stream, "redis broker: trimmed acked entries")
            }
            Err(e) => warn!(error = %e, stream = %s.keys.stream, "redis broker: trimming failed"),
        }
    }
}

impl Shared {
    /// Shared state of a new subscription (its ack sender starts on the current runtime).
    pub(crate) fn new(
        conn: ConnectionManager,
        keys: GroupKeys,
        group: &str,
        config: &RedisBrokerConfig,
        ack_commands: Arc<AtomicU64>,
    ) -> Self {
        let acks = AckBatcher::start(AckTarget {
            conn: conn.clone(),
            stream: keys.stream.clone(),
            retry: keys.retry.clone(),
            group: group.to_owned(),
            sent: ack_commands,
        });
        Shared {
            conn,
            keys,
            group: group.to_owned(),
            consumer: consumer_name(),
            lease: config.lease,
            count: config.count,
            held: Mutex::new(Held::default()),
            closed: AtomicBool::new(false),
            acks,
        }
    }
}
