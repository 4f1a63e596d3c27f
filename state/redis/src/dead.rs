//! Dead letters on Redis: ids in a sorted set (all scores 0, so ordered by id: ULIDs sort by
//! time), the letters as JSON in a hash; failure counts as expiring counters; and the two run
//! moves a dead letter makes (fail, reopen), done by scripts on the run's hash that read
//! nothing else of it, so that they work on a run whose state does not decode.

use std::time::Duration;

use weir_core::dead::{DeadLetter, DeadLetterPage, MAX_DEAD_LETTERS};
use weir_core::run::{HistoryEntry, RunStatus};
use weir_core::state::{RunOutline, RunRef};
use weir_core::{Error, ErrorKind, Result};

use crate::scripts;
use crate::state::RedisStateStore;

impl RedisStateStore {
    /// Running runs created before `created_before_ms`, oldest first, after `after`.
    pub(crate) async fn running(
        &self,
        created_before_ms: i64,
        after: Option<&RunRef>,
        limit: usize,
    ) -> Result<Vec<RunRef>> {
        let index = self.keys().runs_by("status", RunStatus::Running.as_str());
        let mut out = Vec::with_capacity(limit);
        // From `after`'s score on; members of one score come in id order, and those up to
        // `after` are skipped.
        let min = after.map_or("-inf".to_owned(), |a| a.created_at.to_string());
        let page = limit.clamp(1, 1000);
        let mut offset = 0usize;
        while out.len() < limit {
            let found: Vec<(String, i64)> = self
                .conn()
                .cmd(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&index)
                        .arg(&min)
                        .arg(format!("({created_before_ms}"))
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(offset)
                        .arg(page),
                )
                .await?;
            let exhausted = found.len() < page;
            for (id, created_at) in found {
                let run = RunRef { created_at, id };
                if after.is_none_or(|a| &run > a) && out.len() < limit {
                    out.push(run);
                }
            }
            if exhausted {
                break;
            }
            offset += page;
        }
        Ok(out)
    }

    /// What can be read of a run whose state may not decode.
    pub(crate) async fn outline(&self, run_id: &str) -> Result<Option<RunOutline>> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.keys().run(run_id))
            .arg(&["status", "created_at", "ended_at"][..])
            .lrange(self.keys().hist(run_id), 0, -1);
        let (fields, history): (Vec<Option<String>>, Vec<String>) = self.conn().pipe(&pipe).await?;
        let [status, created_at, ended_at] =
            <[Option<String>; 3]>::try_from(fields).unwrap_or_default();
        let Some(status) = status else {
            return Ok(None);
        };
        Ok(Some(RunOutline {
            status: RunStatus::parse(&status),
            created_at: created_at.and_then(|t| t.parse().ok()),
            ended_at: ended_at.and_then(|t| t.parse().ok()),
            history: history
                .iter()
                .filter_map(|e| serde_json::from_str(e).ok())
                .collect(),
        }))
    }

    pub(crate) async fn put_dead(&self, dead: &DeadLetter) -> Result<()> {
        let mut inv = scripts::PUT_DEAD_LETTER.prepare_invoke();
        inv.key(self.keys().dead())
            .key(self.keys().dead_data())
            .arg(&dead.id)
            .arg(serde_json::to_string(dead)?)
            .arg(MAX_DEAD_LETTERS);
        self.conn()
            .script::<i64>("put_dead_letter", &inv)
            .await
            .map(|_| ())
    }

    pub(crate) async fn list_dead(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage> {
        let max = before.map_or("+".to_owned(), |id| format!("({id}"));
        let ids: Vec<String> = self
            .conn()
            .cmd(
                redis::cmd("ZREVRANGEBYLEX")
                    .arg(self.keys().dead())
                    .arg(max)
                    .arg("-")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit + 1),
            )
            .await?;
        let shown = &ids[..ids.len().min(limit)];
        let mut items = Vec::with_capacity(shown.len());
        if !shown.is_empty() {
            let raw: Vec<Option<String>> = self
                .conn()
                .cmd(redis::cmd("HMGET").arg(self.keys().dead_data()).arg(shown))
                .await?;
            // An id whose letter was dropped between the two reads is skipped.
            for json in raw.into_iter().flatten() {
                items.push(serde_json::from_str(&json)?);
            }
        }
        let next = (ids.len() > limit).then(|| shown.last().cloned()).flatten();
        Ok(DeadLetterPage { items, next })
    }

    pub(crate) async fn get_dead(&self, id: &str) -> Result<Option<DeadLetter>> {
        let raw: Option<String> = self
            .conn()
            .cmd(redis::cmd("HGET").arg(self.keys().dead_data()).arg(id))
            .await?;
        raw.map(|r| Ok(serde_json::from_str(&r)?)).transpose()
    }

    pub(crate) async fn delete_dead(&self, id: &str) -> Result<bool> {
        let mut pipe = redis::pipe();
        pipe.zrem(self.keys().dead(), id).ignore();
        pipe.hdel(self.keys().dead_data(), id);
        let (deleted,): (i64,) = self.conn().pipe(&pipe).await?;
        Ok(deleted == 1)
    }

    pub(crate) async fn count_failure_of(&self, key: &str, ttl: Duration) -> Result<u32> {
        let counter = self.keys().failures(key);
        let mut pipe = redis::pipe();
        pipe.incr(&counter, 1);
        pipe.pexpire(&counter, ttl.as_millis().max(1) as i64)
            .ignore();
        let (count,): (u32,) = self.conn().pipe(&pipe).await?;
        Ok(count)
    }

    /// Fails a run, or (`reopen`: the text its failing entry names) reopens it, and files it
    /// under its new status.
    pub(crate) async fn move_run(
        &self,
        run_id: &str,
        reopen_failed_by: Option<&str>,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let reopen = reopen_failed_by.is_some();
        let kind = if reopen { "run.reopened" } else { "run.failed" };
        let mut entry = HistoryEntry::now(kind).detail(detail);
        entry.at = now_ms;
        let entry = serde_json::to_string(&entry)?;
        let mut inv = if reopen {
            scripts::REOPEN_RUN.prepare_invoke()
        } else {
            scripts::FAIL_RUN.prepare_invoke()
        };
        inv.key(self.keys().run(run_id))
            .key(self.keys().hist(run_id));
        match reopen_failed_by {
            Some(failed_by) => inv.arg(failed_by),
            None => inv.arg(now_ms),
        };
        inv.arg(entry);
        let (applied, created_at, status): (i64, i64, String) = self
            .conn()
            .script(if reopen { "reopen_run" } else { "fail_run" }, &inv)
            .await?;
        if applied == -1 {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no run {run_id:?}"),
            ));
        }
        // Filed under the status it has now, every time: a call whose filing failed half-way
        // is repaired by the next (the moves are idempotent).
        let mut pipe = redis::pipe();
        let failed = self.keys().runs_by("status", RunStatus::Failed.as_str());
        let running = self.keys().runs_by("status", RunStatus::Running.as_str());
        match RunStatus::parse(&status) {
            Some(RunStatus::Failed) => {
                pipe.cmd("ZADD")
                    .arg(self.keys().runs_ended())
                    .arg("NX")
                    .arg(now_ms)
                    .arg(run_id)
                    .ignore();
                pipe.zrem(&running, run_id).ignore();
                pipe.zadd(&failed, run_id, created_at).ignore();
            }
            Some(RunStatus::Running) if reopen => {
                pipe.zrem(self.keys().runs_ended(), run_id).ignore();
                pipe.zrem(&failed, run_id).ignore();
                pipe.zadd(&running, run_id, created_at).ignore();
            }
            _ => {}
        }
        if pipe.cmd_iter().next().is_some() {
            self.conn().pipe::<()>(&pipe).await?;
        }
        Ok(applied == 1)
    }
}
