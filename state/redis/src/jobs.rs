//! `JobStore` on Redis (see `weir_core::jobs`): every job key shares the hash tag `{jobs}`, and
//! every move of a job is one Lua script (or one `MULTI`), so a job is always in exactly one
//! place whichever node moves it.
//!
//! A job is stored as `LEN:ID` `LEN:QUEUE` `RESERVE_MS:` then its payload (lengths in bytes),
//! so any payload bytes survive; a timed job is `MS:` then a job: an entry of a set with its
//! time, a reservation with the time it was reserved at (its expiry is that plus the job's
//! `reserve_ms`, computed here exactly: Lua numbers and sorted-set scores are doubles, which
//! serve only to order the expiries).

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use weir_core::jobs::{JobCounts, JobSet, JobStore, Move, Place, QueuedJob, Reservation};
use weir_core::{Error, Result};

use crate::config::RedisStateConfig;
use crate::conn::RedisConn;
use crate::keys::Keys;
use crate::scripts;

/// Ids moved by one script call of `move_from_set`.
const MOVE_CHUNK: usize = 1_000;

/// Jobs for outside workers in Redis: what [`crate::RedisStateStore`] hands out as its
/// [`JobStore`] (`StateStore::jobs`).
#[derive(Debug, Clone)]
pub struct RedisJobStore {
    conn: RedisConn,
    keys: Keys,
}

fn corrupt(what: &str) -> Error {
    Error::internal(format!("corrupt job data in redis: {what}"))
}

/// A count for Redis (`LIMIT`, ranks): Redis takes signed 64-bit integers.
fn redis_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `job` as stored: `LEN:ID` `LEN:QUEUE` `RESERVE_MS:` then the payload.
fn encode_job(job: &QueuedJob) -> Vec<u8> {
    let mut out = Vec::with_capacity(job.id.len() + job.queue.len() + job.payload.len() + 40);
    for field in [&job.id, &job.queue] {
        out.extend_from_slice(field.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(job.reserve_ms.to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(&job.payload);
    out
}

/// The text before the first `:` of `raw`, and what follows it.
fn split_colon(raw: &[u8]) -> Result<(&str, &[u8])> {
    let colon = raw
        .iter()
        .position(|b| *b == b':')
        .ok_or_else(|| corrupt("no ':'"))?;
    let head = std::str::from_utf8(&raw[..colon]).map_err(|_| corrupt("number"))?;
    Ok((head, &raw[colon + 1..]))
}

/// A `LEN:VALUE` field at the start of `raw`, and what follows it.
fn take_field(raw: &[u8]) -> Result<(String, &[u8])> {
    let (len, rest) = split_colon(raw)?;
    let len: usize = len.parse().map_err(|_| corrupt("length"))?;
    if rest.len() < len {
        return Err(corrupt("short field"));
    }
    let (value, rest) = rest.split_at(len);
    let value = String::from_utf8(value.to_vec()).map_err(|_| corrupt("field not UTF-8"))?;
    Ok((value, rest))
}

/// A job as stored (see [`encode_job`]).
fn decode_job(raw: &[u8]) -> Result<QueuedJob> {
    let (id, rest) = take_field(raw)?;
    let (queue, rest) = take_field(rest)?;
    let (reserve_ms, payload) = split_colon(rest)?;
    Ok(QueuedJob {
        id,
        queue,
        reserve_ms: reserve_ms.parse().map_err(|_| corrupt("reserve_ms"))?,
        payload: Bytes::copy_from_slice(payload),
    })
}

/// A timed job as stored: `MS:` then a job.
fn decode_timed(raw: &[u8]) -> Result<(i64, QueuedJob)> {
    let (ms, job) = split_colon(raw)?;
    let ms = ms.parse().map_err(|_| corrupt("time"))?;
    Ok((ms, decode_job(job)?))
}

/// A reservation as stored: the time it was made at, then the job; it runs out `reserve_ms`
/// later (saturating, as the memory store's).
fn decode_reservation(raw: &[u8]) -> Result<Reservation> {
    let (reserved_at, job) = decode_timed(raw)?;
    let length = i64::try_from(job.reserve_ms).unwrap_or(i64::MAX);
    Ok(Reservation {
        expires_ms: reserved_at.saturating_add(length),
        job,
    })
}

impl RedisJobStore {
    /// A job store on `conn` under the key prefix of `config`.
    pub fn new(conn: RedisConn, config: &RedisStateConfig) -> Self {
        RedisJobStore {
            conn,
            keys: Keys::new(&config.prefix),
        }
    }

    /// Connects to the URL (see [`RedisStateConfig::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        let config = RedisStateConfig::from_url(url)?;
        Ok(Self::new(RedisConn::connect(&config).await?, &config))
    }

    /// The connection (its round-trip counter, for benchmarks).
    pub fn conn(&self) -> &RedisConn {
        &self.conn
    }

    /// Adds the keys of `set` (zset, data hash) to a script invocation.
    fn set_keys<'a, 's>(
        &self,
        inv: &'a mut redis::ScriptInvocation<'s>,
        set: JobSet,
    ) -> &'a mut redis::ScriptInvocation<'s> {
        inv.key(self.keys.jobs_set(set))
            .key(self.keys.jobs_set_data(set))
    }

    /// Moves the jobs `ids` (at most [`MOVE_CHUNK`]) of `set` to `to`, in one script.
    async fn move_chunk(&self, set: JobSet, ids: &[String], to: Move) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut inv = scripts::JOBS_MOVE_FROM_SET.prepare_invoke();
        self.set_keys(&mut inv, set)
            .key(self.keys.jobs_known_queues());
        match to {
            Move::ToQueue => {
                inv.arg("queue").arg(0);
            }
            Move::ToSet(target, at_ms) => {
                self.set_keys(&mut inv, target).arg("set").arg(at_ms);
            }
            Move::Delete => {
                inv.arg("delete").arg(0);
            }
        }
        inv.arg(self.keys.jobs_queue_prefix()).arg(ids);
        self.conn.script("jobs_move_from_set", &inv).await
    }
}

#[async_trait]
impl JobStore for RedisJobStore {
    async fn enqueue(&self, job: &QueuedJob) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(self.keys.jobs_queue(&job.queue), encode_job(job))
            .ignore()
            .sadd(self.keys.jobs_known_queues(), &job.queue)
            .ignore();
        self.conn.pipe::<()>(&pipe).await
    }

    async fn add_to_set(&self, set: JobSet, job: &QueuedJob, at_ms: i64) -> Result<()> {
        let mut timed = format!("{at_ms}:").into_bytes();
        timed.extend_from_slice(&encode_job(job));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(self.keys.jobs_set(set), &job.id, at_ms)
            .ignore()
            .hset(self.keys.jobs_set_data(set), &job.id, timed)
            .ignore();
        self.conn.pipe::<()>(&pipe).await
    }

    async fn reserve(&self, queues: &[String], now_ms: i64) -> Result<Option<QueuedJob>> {
        if queues.is_empty() {
            return Ok(None);
        }
        let mut inv = scripts::JOBS_RESERVE.prepare_invoke();
        inv.key(self.keys.jobs_paused())
            .key(self.keys.jobs_reserved())
            .key(self.keys.jobs_expiring())
            .arg(now_ms);
        for queue in queues {
            inv.key(self.keys.jobs_queue(queue)).arg(queue);
        }
        let job: Option<Vec<u8>> = self.conn.script("jobs_reserve", &inv).await?;
        job.as_deref().map(decode_job).transpose()
    }

    async fn reservation(&self, id: &str) -> Result<Option<Reservation>> {
        let raw: Option<Vec<u8>> = self
            .conn
            .cmd(redis::cmd("HGET").arg(self.keys.jobs_reserved()).arg(id))
            .await?;
        raw.as_deref().map(decode_reservation).transpose()
    }

    async fn queue_jobs(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<QueuedJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let last = offset.saturating_add(limit - 1);
        let raw: Vec<Vec<u8>> = self
            .conn
            .cmd(
                redis::cmd("LRANGE")
                    .arg(self.keys.jobs_queue(queue))
                    .arg(redis_count(offset))
                    .arg(redis_count(last)),
            )
            .await?;
        raw.iter().map(|r| decode_job(r)).collect()
    }

    async fn reservations(&self, offset: usize, limit: usize) -> Result<Vec<Reservation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let last = offset.saturating_add(limit - 1);
        // The set-listing script over the expiry zset and the reservations' hash: the same
        // shape (`TIME:` then the job).
        let mut inv = scripts::JOBS_SET_JOBS.prepare_invoke();
        inv.key(self.keys.jobs_expiring())
            .key(self.keys.jobs_reserved())
            .arg(redis_count(offset))
            .arg(redis_count(last));
        let raw: Vec<Vec<u8>> = self.conn.script("jobs_set_jobs", &inv).await?;
        raw.iter().map(|r| decode_reservation(r)).collect()
    }

    async fn settle(&self, id: &str, then: Place) -> Result<bool> {
        let mut inv = scripts::JOBS_SETTLE.prepare_invoke();
        inv.key(self.keys.jobs_reserved())
            .key(self.keys.jobs_expiring())
            .key(self.keys.jobs_known_queues())
            .arg(id);
        match &then {
            Place::Queue(payload) => {
                inv.arg("queue").arg(&payload[..]).arg(0);
            }
            Place::Set(set, at_ms, payload) => {
                self.set_keys(&mut inv, *set);
                inv.arg("set").arg(&payload[..]).arg(*at_ms);
            }
            Place::Gone => {
                inv.arg("gone").arg("").arg(0);
            }
        }
        inv.arg(self.keys.jobs_queue_prefix());
        Ok(self.conn.script::<i64>("jobs_settle", &inv).await? == 1)
    }

    async fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<Reservation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = scripts::JOBS_EXPIRED.prepare_invoke();
        inv.key(self.keys.jobs_expiring())
            .key(self.keys.jobs_reserved())
            .arg(now_ms)
            .arg(redis_count(limit));
        let raw: Vec<Vec<u8>> = self.conn.script("jobs_expired", &inv).await?;
        raw.iter().map(|r| decode_reservation(r)).collect()
    }

    async fn promote_due(&self, set: JobSet, now_ms: i64, limit: usize) -> Result<usize> {
        if limit == 0 {
            return Ok(0);
        }
        let mode = match set {
            JobSet::Dead => "delete",
            JobSet::Scheduled | JobSet::Retries => "queue",
        };
        let mut inv = scripts::JOBS_PROMOTE_DUE.prepare_invoke();
        self.set_keys(&mut inv, set)
            .key(self.keys.jobs_known_queues())
            .arg(now_ms)
            .arg(redis_count(limit))
            .arg(mode)
            .arg(self.keys.jobs_queue_prefix());
        self.conn.script("jobs_promote_due", &inv).await
    }

    async fn set_jobs(
        &self,
        set: JobSet,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(QueuedJob, i64)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let last = offset.saturating_add(limit - 1);
        let mut inv = scripts::JOBS_SET_JOBS.prepare_invoke();
        self.set_keys(&mut inv, set)
            .arg(redis_count(offset))
            .arg(redis_count(last));
        let raw: Vec<Vec<u8>> = self.conn.script("jobs_set_jobs", &inv).await?;
        raw.iter()
            .map(|r| decode_timed(r).map(|(at, job)| (job, at)))
            .collect()
    }

    async fn move_from_set(&self, set: JobSet, ids: &[String], to: Move) -> Result<usize> {
        // A script call per 1,000 ids: one call for a million would hold Redis for seconds.
        let mut moved = 0;
        for chunk in ids.chunks(MOVE_CHUNK) {
            moved += self.move_chunk(set, chunk, to).await?;
        }
        Ok(moved)
    }

    async fn clear_set(&self, set: JobSet) -> Result<()> {
        self.conn
            .cmd::<()>(
                redis::cmd("UNLINK")
                    .arg(self.keys.jobs_set(set))
                    .arg(self.keys.jobs_set_data(set)),
            )
            .await
    }

    async fn pause(&self, queue: &str, paused: bool) -> Result<()> {
        let command = if paused { "SADD" } else { "SREM" };
        self.conn
            .cmd::<()>(redis::cmd(command).arg(self.keys.jobs_paused()).arg(queue))
            .await
    }

    async fn remove_queue(&self, queue: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("UNLINK")
            .arg(self.keys.jobs_queue(queue))
            .ignore()
            .srem(self.keys.jobs_known_queues(), queue)
            .ignore()
            .srem(self.keys.jobs_paused(), queue)
            .ignore();
        self.conn.pipe::<()>(&pipe).await
    }

    async fn counts(&self) -> Result<JobCounts> {
        let mut inv = scripts::JOBS_COUNTS.prepare_invoke();
        inv.key(self.keys.jobs_known_queues())
            .key(self.keys.jobs_paused())
            .key(self.keys.jobs_reserved())
            .key(self.keys.jobs_totals());
        for set in JobSet::ALL {
            inv.key(self.keys.jobs_set(set));
        }
        inv.arg(self.keys.jobs_queue_prefix());
        let (names, lens, mut paused, reserved, sizes, processed, failures): (
            Vec<String>,
            Vec<u64>,
            Vec<String>,
            u64,
            Vec<u64>,
            i64,
            i64,
        ) = self.conn.script("jobs_counts", &inv).await?;
        if names.len() != lens.len() || sizes.len() != JobSet::ALL.len() {
            return Err(corrupt("counts"));
        }
        paused.sort();
        Ok(JobCounts {
            queues: names.into_iter().zip(lens).collect::<BTreeMap<_, _>>(),
            sets: JobSet::ALL.into_iter().zip(sizes).collect(),
            reserved,
            paused,
            processed: processed.max(0) as u64,
            failures: failures.max(0) as u64,
        })
    }

    async fn record(&self, processed: u64, failures: u64) -> Result<()> {
        if processed == 0 && failures == 0 {
            return Ok(());
        }
        let totals = self.keys.jobs_totals();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (field, n) in [("processed", processed), ("failures", failures)] {
            if n > 0 {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                pipe.hincr(&totals, field, n).ignore();
            }
        }
        self.conn.pipe::<()>(&pipe).await
    }

    async fn flush(&self) -> Result<()> {
        let mut inv = scripts::JOBS_FLUSH.prepare_invoke();
        for key in self.keys.jobs_fixed() {
            inv.key(key);
        }
        inv.arg(self.keys.jobs_queue_prefix());
        self.conn.script::<i64>("jobs_flush", &inv).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_comes_back_byte_for_byte() {
        let job = QueuedJob {
            id: "j:1 é".into(),
            queue: "q:{x}\n5:".into(),
            reserve_ms: u64::MAX,
            payload: Bytes::from_static(b"3:abc\0\xff\n:"),
        };
        let raw = encode_job(&job);
        assert!(raw.starts_with(b"6:j:1 \xc3\xa9"));
        assert_eq!(decode_job(&raw).expect("decode"), job);
        let mut timed = b"-5:".to_vec();
        timed.extend_from_slice(&raw);
        assert_eq!(decode_timed(&timed).expect("decode"), (-5, job));
        let empty = QueuedJob {
            id: String::new(),
            queue: String::new(),
            reserve_ms: 0,
            payload: Bytes::new(),
        };
        assert_eq!(decode_job(&encode_job(&empty)).expect("decode"), empty);
    }

    #[test]
    fn a_reservation_runs_out_its_jobs_length_after_it_was_made() {
        let job = |reserve_ms| QueuedJob {
            id: "j".into(),
            queue: "q".into(),
            reserve_ms,
            payload: Bytes::from_static(b"{}"),
        };
        let stored = |at: i64, reserve_ms| {
            let mut raw = format!("{at}:").into_bytes();
            raw.extend_from_slice(&encode_job(&job(reserve_ms)));
            decode_reservation(&raw).expect("decode")
        };
        let r = stored(1_700_000_000_123, 60_000);
        assert_eq!((r.expires_ms, r.job), (1_700_000_060_123, job(60_000)));
        assert_eq!(stored(5, u64::MAX).expires_ms, i64::MAX, "saturates");
    }

    #[test]
    fn corrupt_data_is_an_error() {
        for raw in [
            &b""[..],
            b"x:",
            b"9:abc",
            b"1:a",
            b"1:a\xff",
            b"1:a1:q",
            b"1:a1:q-1:",
        ] {
            assert!(decode_job(raw).is_err(), "{raw:?}");
        }
        assert!(decode_timed(b"soon:1:a1:q0:").is_err());
        assert!(decode_timed(b"7:1:a1:q0:").is_ok());
    }
}
