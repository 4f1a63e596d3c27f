//! Taking Celery messages from kombu's Redis lists without losing one when a node dies.
//!
//! kombu keeps a queue's messages in Redis lists ([`crate::redis_envelope::lists_in_order`]),
//! pushed on the left and served from the right, priority 0 first. A consumer here moves each
//! message it takes, atomically, into a processing list of its own
//! (`weir-celery:processing:<queue>:<consumer>`) and removes it from there once its event is
//! stored ([`RedisQueue::ack`]). Each consumer is listed in its queue's set
//! (`weir-celery:consumers:<queue>`) and keeps a heartbeat key alive
//! (`weir-celery:consumer:<consumer>`) while it runs ([`RedisQueue::heartbeat`], before its
//! first take); [`RedisQueue::recover`] hands the messages of the queue's consumers whose
//! heartbeat lapsed back to the serving end of the list of their priority, to be taken next.
//! A message is thus taken again after a crash (at least once); its event id is the task id,
//! so a second take starts no second run. Needs Redis 6.2 or later (`LMOVE`); not Redis
//! Cluster (the scripts span a queue's lists).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use weir_core::{Error, ErrorKind, Result};

use crate::redis_envelope::lists_in_order;

/// Moves the first message of the first non-empty list (KEYS[1..4], in priority order) to the
/// processing list (KEYS[5]); returns it, or nil.
const TAKE: &str = r#"
for i = 1, 4 do
  local entry = redis.call('LMOVE', KEYS[i], KEYS[5], 'RIGHT', 'LEFT')
  if entry then return entry end
end
return false
"#;

/// The keys of the hand-back scripts: KEYS[1] a processing list, KEYS[2] its consumer's
/// heartbeat, KEYS[3..6] the queue's lists by kombu's priority steps 0, 3, 6, 9; and
/// `push_back(entry)`, which puts a message back at the right (serving) end of the list of its
/// priority. Shared by [`HAND_BACK`] and [`RELEASE`].
const PUSH_BACK: &str = r#"
local function push_back(entry)
  local priority = 0
  local ok, message = pcall(cjson.decode, entry)
  if ok and type(message) == 'table' and type(message['properties']) == 'table' then
    priority = tonumber(message['properties']['priority']) or 0
  end
  local list = KEYS[3]
  if priority >= 9 then list = KEYS[6]
  elseif priority >= 6 then list = KEYS[5]
  elseif priority >= 3 then list = KEYS[4] end
  redis.call('RPUSH', list, entry)
end
"#;

/// Hands the newest message of a dead consumer's processing list back ([`PUSH_BACK`]), unless
/// the consumer's heartbeat is alive again; returns it, or nil when there is nothing to move.
/// Newest first, so that the oldest ends up served first. One script per message, so two
/// consumers recovering the same list never move a message twice.
const HAND_BACK: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local entry = redis.call('LPOP', KEYS[1])
if not entry then return false end
push_back(entry)
return entry
"#;

/// Hands one taken message (ARGV[1]) of a processing list back ([`PUSH_BACK`]); returns 1, or
/// 0 when it was not held any more.
const RELEASE: &str = r#"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
push_back(ARGV[1])
return 1
"#;

/// Moves a taken message (ARGV[1]) out of the processing list (KEYS[1]) onto another queue's
/// list (KEYS[2]) as ARGV[2], as a producer pushes it; returns 1, or 0 when it was not held any
/// more.
const REQUEUE: &str = r#"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"#;

/// A consumer of one Celery queue on Redis.
#[derive(Clone)]
pub struct RedisQueue {
    conn: MultiplexedConnection,
    queue: String,
    lists: [String; 4],
    consumer: String,
    take: redis::Script,
    hand_back: redis::Script,
    release: redis::Script,
    requeue: redis::Script,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("queue", &self.queue)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// A message taken from the queue, held in the consumer's processing list until acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The list entry, as kombu wrote it.
    pub entry: Vec<u8>,
}

fn unavailable(what: &str, e: redis::RedisError) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("celery redis queue: {what} failed"),
    )
    .with_source(e)
}

/// The processing list of `consumer` of `queue`.
fn processing_list(queue: &str, consumer: &str) -> String {
    format!("weir-celery:processing:{queue}:{consumer}")
}

/// The set of the consumers of `queue`.
fn consumers_set(queue: &str) -> String {
    format!("weir-celery:consumers:{queue}")
}

/// The heartbeat key of `consumer`.
fn heartbeat_key(consumer: &str) -> String {
    format!("weir-celery:consumer:{consumer}")
}

impl RedisQueue {
    /// A consumer named `consumer` (unique per process) of `queue` on the Redis at `url`.
    pub async fn connect(url: &str, queue: &str, consumer: &str) -> Result<Self> {
        let shown = weir_core::redact::redact_url(url);
        let client = redis::Client::open(url).map_err(|e| {
            Error::config(format!("celery redis queue: invalid URL {shown}")).with_source(e)
        })?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&crate::redis_config())
            .await
            .map_err(|e| unavailable("connecting", e))?;
        // Listed from the start: should it die before its first heartbeat, what it took is
        // still found.
        let _: i64 = redis::cmd("SADD")
            .arg(consumers_set(queue))
            .arg(consumer)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("registering the consumer", e))?;
        Ok(RedisQueue {
            conn,
            queue: queue.to_string(),
            lists: lists_in_order(queue),
            consumer: consumer.to_string(),
            take: redis::Script::new(TAKE),
            hand_back: redis::Script::new(&format!("{PUSH_BACK}{HAND_BACK}")),
            release: redis::Script::new(&format!("{PUSH_BACK}{RELEASE}")),
            requeue: redis::Script::new(REQUEUE),
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.queue
    }

    /// Says this consumer is alive for `lease` (call it before the first take, then every
    /// third of the lease), and lists it among the queue's consumers.
    pub async fn heartbeat(&self, lease: Duration) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("SET")
            .arg(heartbeat_key(&self.consumer))
            .arg(1)
            .arg("PX")
            .arg(lease.as_millis().max(1) as u64)
            .ignore()
            .cmd("SADD")
            .arg(consumers_set(&self.queue))
            .arg(&self.consumer)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| unavailable("heartbeat", e))
    }

    /// Takes the next message (priority 0 first), moving it to this consumer's processing
    /// list; `None` when the queue stays empty for `wait`. The lists are looked at every
    /// 100 ms while empty.
    pub async fn take(&self, wait: Duration) -> Result<Option<Taken>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut conn = self.conn.clone();
        loop {
            let mut call = self.take.prepare_invoke();
            for list in &self.lists {
                call.key(list);
            }
            call.key(processing_list(&self.queue, &self.consumer));
            let entry: Option<Vec<u8>> = call
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable("taking a message", e))?;
            if let Some(entry) = entry {
                return Ok(Some(Taken { entry }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The message is done with (its event stored, or its refusal reported): it leaves the
    /// processing list. False when it was not there any more: this consumer's heartbeat had
    /// lapsed and another one handed the message back (it will be taken again; its event id
    /// keeps it from starting a second run).
    pub async fn ack(&self, taken: &Taken) -> Result<bool> {
        let mut conn = self.conn.clone();
        redis::cmd("LREM")
            .arg(processing_list(&self.queue, &self.consumer))
            .arg(1)
            .arg(&taken.entry)
            .query_async::<i64>(&mut conn)
            .await
            .map(|removed| removed > 0)
            .map_err(|e| unavailable("acking a message", e))
    }

    /// Hands a taken message back to the queue, to be taken again (by any consumer) now; false
    /// when it was not held any more.
    pub async fn release(&self, taken: &Taken) -> Result<bool> {
        let mut conn = self.conn.clone();
        let released: i64 = self
            .back_keys(&self.release, &self.consumer)
            .arg(&taken.entry)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("handing a message back", e))?;
        Ok(released == 1)
    }

    /// Moves a taken message to `queue` (consumed by Celery workers), atomically: the entry as
    /// kombu wrote it, with its `delivery_info` pointing at `queue` through the default
    /// exchange (a worker's `task.retry()` then sends it back there, not here), on the list
    /// of its priority. False
    /// when it was not held any more.
    pub async fn requeue(&self, taken: &Taken, queue: &str) -> Result<bool> {
        let (entry, priority) = match serde_json::from_slice::<serde_json::Value>(&taken.entry) {
            Ok(mut envelope) => {
                let priority = envelope
                    .pointer("/properties/priority")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
                    .min(255) as u8;
                if let Some(info) = envelope
                    .pointer_mut("/properties/delivery_info")
                    .and_then(serde_json::Value::as_object_mut)
                {
                    // The default exchange with the queue as routing key: a worker's
                    // `task.retry()` sends the task there (weir's exchange has no binding to
                    // the workers' queue).
                    info.insert("exchange".into(), "".into());
                    info.insert("routing_key".into(), queue.into());
                }
                (envelope.to_string().into_bytes(), priority)
            }
            Err(_) => (taken.entry.clone(), 0),
        };
        let mut conn = self.conn.clone();
        let moved: i64 = self
            .requeue
            .key(processing_list(&self.queue, &self.consumer))
            .key(crate::redis_envelope::priority_list(queue, priority))
            .arg(&taken.entry)
            .arg(entry)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("moving a message to another queue", e))?;
        Ok(moved == 1)
    }

    /// Publishes a task message to `outgoing.queue` as a kombu producer does (LPUSH of its
    /// envelope onto the queue's list).
    pub async fn publish(&self, outgoing: &crate::chain::Outgoing) -> Result<()> {
        let entry = crate::redis_envelope::encode(outgoing, outgoing.priority);
        let mut conn = self.conn.clone();
        redis::cmd("LPUSH")
            .arg(crate::redis_envelope::priority_list(
                &outgoing.queue,
                outgoing.priority,
            ))
            .arg(entry)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| unavailable("publishing a task", e))
    }

    /// `script` with the keys of the hand-back scripts for `consumer` ([`PUSH_BACK`]).
    fn back_keys<'s>(
        &self,
        script: &'s redis::Script,
        consumer: &str,
    ) -> redis::ScriptInvocation<'s> {
        let mut call = script.key(processing_list(&self.queue, consumer));
        call.key(heartbeat_key(consumer));
        for list in &self.lists {
            call.key(list);
        }
        call
    }

    /// Hands every message `consumer` holds back, as long as its heartbeat is not alive;
    /// returns how many.
    async fn hand_back_all(
        &self,
        conn: &mut MultiplexedConnection,
        consumer: &str,
    ) -> Result<usize> {
        let mut moved = 0;
        loop {
            let entry: Option<Vec<u8>> = self
                .back_keys(&self.hand_back, consumer)
                .invoke_async(conn)
                .await
                .map_err(|e| unavailable("handing a message back", e))?;
            if entry.is_none() {
                return Ok(moved);
            }
            moved += 1;
        }
    }

    /// Leaves the queue: the heartbeat ends, everything still held goes back to the queue, and
    /// the consumer is struck off. Returns how many messages went back.
    pub async fn release_all(&self) -> Result<usize> {
        let mut conn = self.conn.clone();
        let heartbeat = heartbeat_key(&self.consumer);
        let _: i64 = redis::cmd("DEL")
            .arg(&heartbeat)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("ending the heartbeat", e))?;
        let moved = self.hand_back_all(&mut conn, &self.consumer).await?;
        let _: i64 = redis::cmd("SREM")
            .arg(consumers_set(&self.queue))
            .arg(&self.consumer)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("striking the consumer off", e))?;
        Ok(moved)
    }

    /// Hands the messages of this queue's consumers whose heartbeat lapsed back to the lists
    /// of their priority, to be taken next; returns how many. A consumer with nothing left is
    /// struck off the queue's set.
    pub async fn recover(&self) -> Result<usize> {
        let mut conn = self.conn.clone();
        let consumers: Vec<String> = redis::cmd("SMEMBERS")
            .arg(consumers_set(&self.queue))
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("listing consumers", e))?;
        let mut moved = 0;
        for consumer in consumers {
            moved += self.hand_back_all(&mut conn, &consumer).await?;
            let (list, heartbeat) = (
                processing_list(&self.queue, &consumer),
                heartbeat_key(&consumer),
            );
            let (alive, left): (bool, i64) = redis::pipe()
                .cmd("EXISTS")
                .arg(&heartbeat)
                .cmd("LLEN")
                .arg(&list)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable("reading a consumer", e))?;
            if !alive && left == 0 {
                let _: i64 = redis::cmd("SREM")
                    .arg(consumers_set(&self.queue))
                    .arg(&consumer)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| unavailable("striking a consumer off", e))?;
            }
        }
        Ok(moved)
    }
}
