//! `EventStore` on Redis: one string per event (expiring after the retention), sorted sets by
//! time, by name and by user key.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir_core::events::{EventFilter, EventStore};
use weir_core::{Event, Result};

use crate::config::RedisStateConfig;
use crate::conn::RedisConn;
use crate::keys::Keys;

/// Index entries of expired events dropped per append, at least (and twice the events
/// appended, so the indexes keep up with big batches)...
const TRIM_BATCH: usize = 500;
/// ...by runs of the script that drop this many at most: a run blocks Redis while it runs
/// (three or four calls per entry).
const TRIM_MAX: usize = 5_000;

/// How long a "yes, every event is in the by-user index" is believed before it is read again.
const USERS_INDEXED_KEPT_MS: i64 = 60_000;

/// How long an undo of an ingest request fences it, and how long an event found stored by an
/// append is kept from another request's undo: far longer than a request's deadline
/// (seconds), so that a command still in flight cannot outlive it.
const UNDO_FENCE: Duration = Duration::from_secs(3600);

/// The event JSON of a stored event: `#REQUEST\nJSON` when an ingest request stored it (the
/// request's id says who may take it back), else the JSON itself.
fn stored_json(raw: &str) -> &str {
    match raw.strip_prefix('#') {
        Some(rest) => rest.split_once('\n').map_or(rest, |(_, json)| json),
        None => raw,
    }
}

/// Accepted events in Redis.
#[derive(Debug, Clone)]
pub struct RedisEventStore {
    conn: RedisConn,
    keys: Keys,
    retention: Duration,
    /// Until when (epoch ms) the store is known to hold every stored event in the by-user
    /// index (see `every_user_indexed`).
    users_indexed_until: Arc<std::sync::atomic::AtomicI64>,
}

impl RedisEventStore {
    /// A store on `conn` with the layout and retention of `config`.
    pub fn new(conn: RedisConn, config: &RedisStateConfig) -> Self {
        RedisEventStore {
            conn,
            keys: Keys::new(&config.prefix),
            retention: config.event_retention,
            users_indexed_until: Arc::default(),
        }
    }

    /// Connects to the URL (see [`RedisStateConfig::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        let config = RedisStateConfig::from_url(url)?;
        Ok(Self::new(RedisConn::connect(&config).await?, &config))
    }
}

impl RedisEventStore {
    /// Whether every stored event is in the by-user index: the store was empty when a weir
    /// that indexes users first appended to it, or the events stored before have expired.
    async fn every_user_indexed(&self) -> Result<bool> {
        use std::sync::atomic::Ordering;
        // The answer "yes" is kept for a minute (an operator may move the mark back after a
        // rolling upgrade: see the README); "no" is asked again each time.
        let now = weir_core::event::now_ms();
        if self.users_indexed_until.load(Ordering::Relaxed) > now {
            return Ok(true);
        }
        let since: Option<i64> = self
            .conn
            .cmd(redis::cmd("GET").arg(self.keys.events_users_indexed_since()))
            .await?;
        let horizon = now - self.retention.as_millis() as i64;
        let indexed = since.is_some_and(|since| since < horizon);
        if indexed {
            self.users_indexed_until
                .store(now + USERS_INDEXED_KEPT_MS, Ordering::Relaxed);
        }
        Ok(indexed)
    }

    /// Appends `events` as the request `batch` (`""`: one no undo names) in one script, all or
    /// nothing, then trims the indexes in the same round trip.
    async fn append_as(&self, batch: &str, events: &[Arc<Event>]) -> Result<Vec<bool>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ttl_ms = self.retention.as_millis() as u64;
        let now = weir_core::event::now_ms();
        let mut append = crate::scripts::APPEND_EVENTS.prepare_invoke();
        append
            .key(self.keys.events())
            .key(self.keys.events_accepted())
            .key(self.keys.ingest_undone(batch))
            .key(self.keys.events_accepted_by_user())
            .key(self.keys.events_users_indexed_since())
            .arg(self.keys.event(""))
            .arg(self.keys.events_by_name_prefix())
            .arg(ttl_ms)
            .arg(now)
            .arg(self.keys.event_found_again_prefix())
            .arg(UNDO_FENCE.as_millis() as u64)
            .arg(batch)
            .arg(self.keys.events_by_user_prefix());
        for e in events {
            append
                .arg(&e.id)
                .arg(&e.name)
                .arg(e.ts)
                .arg(e.user_key().unwrap_or_default())
                .arg(serde_json::to_string(&**e)?);
        }
        // Forget the index entries of events accepted longer than the retention ago (their
        // keys have expired), by acceptance time: an event sent with an old `ts` stays listed
        // as long as it is stored. At least as many as were appended, so the indexes keep up.
        // Several runs of the script for a big batch, each bounded (it blocks Redis while it
        // runs), so that trimming keeps up with appending.
        // Twice that: an event with a user key has an entry in each acceptance index.
        let want = 2 * TRIM_BATCH.max(2 * events.len());
        let mut trim = crate::scripts::TRIM_EVENTS.prepare_invoke();
        trim.key(self.keys.events_accepted())
            .key(self.keys.events())
            .key(self.keys.events_accepted_by_user())
            .arg(now - ttl_ms as i64)
            .arg(self.keys.events_by_name_prefix())
            .arg(want.min(TRIM_MAX))
            .arg(self.keys.event(""))
            .arg(self.keys.events_by_user_prefix());
        let mut pipe = redis::pipe();
        pipe.invoke_script(&append);
        for _ in 0..want.div_ceil(TRIM_MAX) {
            pipe.invoke_script(&trim).ignore();
        }
        // Both scripts are loaded by the first call that finds one missing.
        let (answer,): (Vec<i64>,) = self
            .conn
            .pipe_with_scripts(&pipe, &[&append, &trim])
            .await?;
        if answer.first() != Some(&1) {
            // Taken back before it arrived: nothing was stored.
            return Err(weir_core::Error::internal(format!(
                "ingest request {batch} was taken back: none of its events was stored"
            )));
        }
        Ok(answer[1..].iter().map(|n| *n == 1).collect())
    }
}

#[async_trait]
impl EventStore for RedisEventStore {
    async fn append(&self, events: &[Arc<Event>]) -> Result<Vec<bool>> {
        self.append_as("", events).await
    }

    async fn append_batch(&self, batch: &str, events: &[Arc<Event>]) -> Result<Vec<bool>> {
        self.append_as(batch, events).await
    }

    async fn undo_append(&self, batch: &str, events: &[Arc<Event>]) -> Result<usize> {
        if batch.is_empty() {
            return Err(weir_core::Error::invalid(
                "undo_append needs the request's id that append_batch was given",
            ));
        }
        let mut undo = crate::scripts::UNDO_APPEND.prepare_invoke();
        undo.key(self.keys.events())
            .key(self.keys.ingest_undone(batch))
            .arg(self.keys.event(""))
            .arg(self.keys.events_by_name_prefix())
            .arg(self.keys.event_found_again_prefix())
            .arg(UNDO_FENCE.as_millis() as u64)
            .arg(batch)
            .arg(self.keys.ingest_undone(""))
            .arg(self.keys.events_by_user_prefix());
        for e in events {
            undo.arg(&e.id)
                .arg(&e.name)
                .arg(e.user_key().unwrap_or_default())
                .arg(serde_json::to_string(&**e)?);
        }
        self.conn.script("undo_append", &undo).await
    }

    async fn get(&self, id: &str) -> Result<Option<Event>> {
        let raw: Option<String> = self
            .conn
            .cmd(redis::cmd("GET").arg(self.keys.event(id)))
            .await?;
        raw.map(|r| Ok(serde_json::from_str(stored_json(&r))?))
            .transpose()
    }

    async fn scan(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let index = match (&filter.user, &filter.name) {
            // A user's events are few: their index, when it holds every stored event's.
            (Some(user), _) if self.every_user_indexed().await? => self.keys.events_by_user(user),
            (_, Some(name)) => self.keys.events_by_name(name),
            _ => self.keys.events(),
        };
        let min = filter.from_ms.map_or("-inf".to_string(), |f| f.to_string());
        let max = filter.to_ms.map_or("+inf".to_string(), |t| format!("({t}"));
        let limit = filter.limit();
        let page = 500usize;
        let mut out = Vec::new();
        // Pages go by offset while events are appended and trimmed: an event moved across a
        // page boundary would come twice. (One can also be skipped: see the README's limits.)
        let mut seen = std::collections::HashSet::new();
        let mut offset = 0usize;
        while out.len() < limit {
            // ZREVRANGEBYSCORE takes the bounds the other way round.
            let (command, first, second) = if filter.newest_first {
                ("ZREVRANGEBYSCORE", &max, &min)
            } else {
                ("ZRANGEBYSCORE", &min, &max)
            };
            let ids: Vec<String> = self
                .conn
                .cmd(
                    redis::cmd(command)
                        .arg(&index)
                        .arg(first)
                        .arg(second)
                        .arg("LIMIT")
                        .arg(offset)
                        .arg(page),
                )
                .await?;
            if ids.is_empty() {
                break;
            }
            let keys: Vec<String> = ids.iter().map(|id| self.keys.event(id)).collect();
            let raws: Vec<Option<String>> = self.conn.cmd(redis::cmd("MGET").arg(&keys)).await?;
            for raw in raws.into_iter().flatten() {
                let event: Event = serde_json::from_str(stored_json(&raw))?;
                if filter.matches(&event) && out.len() < limit && seen.insert(event.id.clone()) {
                    out.push(event);
                }
            }
            offset += page;
        }
        Ok(out)
    }
}
