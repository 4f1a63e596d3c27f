//! `StateStore` on Redis: run hashes changed by Lua scripts, timers in a sorted set; its jobs
//! capability is `crate::jobs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use weir_core::dead::{DeadLetter, DeadLetterPage};
use weir_core::event::now_ms;
use weir_core::pause::{Pause, PauseAnswer, PauseHit, PauseStatus};
use weir_core::run::{HistoryEntry, Run, RunFilter, RunStatus, RunSummary, StepState, StepStatus};
use weir_core::state::{
    AttemptOutcome, CancelRun, CreateRun, EdgeJoin, EdgeTally, JoinRule, RunOutline, RunRef,
    RunState, StartAttempt, StateStore, Timer, Transition,
};
use weir_core::{Error, ErrorKind, Event, Result};

use crate::config::RedisStateConfig;
use crate::conn::RedisConn;
use crate::jobs::RedisJobStore;
use crate::keys::Keys;
use crate::scripts;

/// Runs and timers in Redis, and jobs for outside workers ([`StateStore::jobs`]).
#[derive(Debug, Clone)]
pub struct RedisStateStore {
    conn: RedisConn,
    keys: Keys,
    jobs: Arc<RedisJobStore>,
    catalog: Arc<crate::catalog::RedisCatalog>,
}

/// The immutable header of a run, stored as the `meta` field.
#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    id: String,
    key: String,
    function_id: String,
    function_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fn_version: Option<u64>,
    created_at: i64,
}

fn entry_json(entry: &HistoryEntry) -> String {
    serde_json::to_string(entry).unwrap_or_default()
}

fn not_found(what: String) -> Error {
    Error::new(ErrorKind::NotFound, what)
}

fn corrupt(what: &str) -> Error {
    Error::internal(format!("corrupt run data in redis: {what}"))
}

impl RedisStateStore {
    /// A store on `conn` with the layout of `config`.
    pub fn new(conn: RedisConn, config: &RedisStateConfig) -> Self {
        RedisStateStore {
            jobs: Arc::new(RedisJobStore::new(conn.clone(), config)),
            catalog: Arc::new(crate::catalog::RedisCatalog::new(conn.clone(), config)),
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

    /// The key layout.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    fn run_keys<'a, 's>(
        &self,
        inv: &'a mut redis::ScriptInvocation<'s>,
        run_id: &str,
    ) -> &'a mut redis::ScriptInvocation<'s> {
        inv.key(self.keys.run(run_id))
            .key(self.keys.hist(run_id))
            .key(self.keys.out(run_id))
    }

    /// Stores the run unless its hash exists, and files it in the listing indexes, in one
    /// round trip; answers whether it was created. The indexes live outside the run's slot, so
    /// they are written beside the script, not by it: the `ZADD`s are idempotent, and listings
    /// re-check each run's status, so filing an existing run again is harmless.
    async fn insert_run(&self, run: &Run) -> Result<bool> {
        let meta = Meta {
            id: run.id.clone(),
            key: run.key.clone(),
            function_id: run.function_id.clone(),
            function_version: run.function_version.clone(),
            fn_version: run.fn_version,
            created_at: run.created_at,
        };
        let mut fields: Vec<(String, String)> = vec![
            ("meta".into(), serde_json::to_string(&meta)?),
            ("event".into(), serde_json::to_string(&run.event)?),
            ("status".into(), run.status.as_str().into()),
            ("created_at".into(), run.created_at.to_string()),
            (
                "open".into(),
                run.steps
                    .values()
                    .filter(|s| !s.status.is_terminal())
                    .count()
                    .to_string(),
            ),
        ];
        let mut history = vec![entry_json(
            &HistoryEntry::now("run.created")
                .detail(format!("event {} ({})", run.event.id, run.event.name)),
        )];
        // Pauses a run starts with (its function's cancel rules).
        for (key, pause) in &run.pauses {
            fields.push((format!("pz:{key}"), serde_json::to_string(pause)?));
            fields.push((format!("pk:{key}"), crate::pauses::pause_meta(pause)));
            fields.push((format!("ps:{key}"), pause.status.as_str().into()));
        }
        for (id, step) in &run.steps {
            fields.push((format!("st:{id}"), step.status.as_str().into()));
            fields.push((format!("at:{id}"), step.attempts.to_string()));
            if step.status == StepStatus::Queued {
                history.push(entry_json(&HistoryEntry::now("step.queued").step(id)));
            }
        }
        let mut inv = scripts::CREATE_RUN.prepare_invoke();
        self.run_keys(&mut inv, &run.id).arg(fields.len());
        for (k, v) in &fields {
            inv.arg(k).arg(v);
        }
        for h in &history {
            inv.arg(h);
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        self.index_run(&mut pipe, run);
        let (created,): (i64,) = self.conn.pipe_with_script(&pipe, &inv).await?;
        Ok(created == 1)
    }

    /// Adds the commands filing `run` in the listing indexes: `ZADD NX`, so that a copy of
    /// an existing run (its event redelivered, made later) leaves the first filing's time,
    /// which is the stored run's `created_at`, where it is.
    fn index_run(&self, pipe: &mut redis::Pipeline, run: &Run) {
        let score = run.created_at;
        let mut file = |index: String| {
            pipe.cmd("ZADD")
                .arg(index)
                .arg("NX")
                .arg(score)
                .arg(&run.id)
                .ignore();
        };
        file(self.keys.runs());
        file(self.keys.runs_by("fn", &run.function_id));
        file(self.keys.runs_by("status", run.status.as_str()));
        if let Some(user) = run.event.user_key() {
            file(self.keys.runs_by("user", &user));
        }
    }

    /// Moves a finished run from the `running` status index to its final status's, and files
    /// it under its end time for the retention (the first filing's time is kept). Called
    /// after the script that finished it, and again on every later finish (idempotent), so a
    /// node dying in between leaves no run misfiled for long.
    /// The summaries of the runs `ids`, in that order, in one pipelined round trip (a run
    /// deleted meanwhile is left out).
    async fn summaries(&self, ids: &[String]) -> Result<Vec<RunSummary>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.keys.run(id))
                .arg(&["meta", "event", "status", "ended_at", "waits"][..]);
        }
        let rows: Vec<Vec<Option<String>>> = self.conn.pipe(&pipe).await?;
        // A running run with waiting pauses is shown `waiting` when no step is busy: read its
        // steps' statuses (only for such runs).
        let pausing: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, row)| {
                row.get(2).and_then(Option::as_deref) == Some("running")
                    && row
                        .get(4)
                        .and_then(Option::as_deref)
                        .and_then(|w| w.parse::<i64>().ok())
                        .is_some_and(|w| w > 0)
            })
            .map(|(i, _)| i)
            .collect();
        let mut busy = vec![false; rows.len()];
        if !pausing.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &pausing {
                pipe.hgetall(self.keys.run(&ids[i]));
            }
            let hashes: Vec<HashMap<String, String>> = self.conn.pipe(&pipe).await?;
            for (&i, hash) in pausing.iter().zip(&hashes) {
                busy[i] = hash.iter().any(|(k, v)| {
                    k.starts_with("st:") && matches!(v.as_str(), "queued" | "running" | "waiting")
                });
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for (i, mut row) in rows.into_iter().enumerate() {
            row.truncate(4);
            let [Some(meta), Some(event), Some(mut status), ended] =
                <[Option<String>; 4]>::try_from(row).map_err(|_| corrupt("row"))?
            else {
                continue;
            };
            if pausing.contains(&i) && !busy[i] {
                status = RunStatus::Waiting.as_str().to_string();
            }
            let meta: Meta = serde_json::from_str(&meta)?;
            let event: Event = serde_json::from_str(&event)?;
            let user = event.user_key();
            out.push(RunSummary {
                id: meta.id,
                function_id: meta.function_id,
                function_version: meta.function_version,
                fn_version: meta.fn_version,
                status: RunStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
                event_id: event.id,
                event_name: event.name,
                user,
                created_at: meta.created_at,
                ended_at: ended.and_then(|e| e.parse().ok()),
            });
        }
        Ok(out)
    }

    async fn file_finished(&self, run_id: &str, status: &str, created_at: i64) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(self.keys.runs_ended())
            .arg("NX")
            .arg(weir_core::event::now_ms())
            .arg(run_id)
            .ignore();
        pipe.zrem(
            self.keys.runs_by("status", RunStatus::Running.as_str()),
            run_id,
        )
        .ignore();
        pipe.zadd(self.keys.runs_by("status", status), run_id, created_at)
            .ignore();
        self.conn.pipe::<()>(&pipe).await
    }

    /// The answer of a script that may have finished the run: files the run under its final
    /// status when it did.
    async fn transition(
        &self,
        run_id: &str,
        applied: i64,
        open: i64,
        finished: &str,
        created_at: i64,
    ) -> Result<Transition> {
        let finished = if applied == 1 {
            RunStatus::parse(finished)
        } else {
            None
        };
        if let Some(status) = finished {
            self.file_finished(run_id, status.as_str(), created_at)
                .await?;
        }
        Ok(Transition {
            applied: applied == 1,
            open_steps: open.max(0) as usize,
            finished,
        })
    }

    /// Builds a run from its hash, outputs and timeline.
    fn decode_run(
        run_hash: HashMap<String, String>,
        outputs: HashMap<String, String>,
        history: Vec<String>,
    ) -> Result<Run> {
        let meta: Meta =
            serde_json::from_str(run_hash.get("meta").ok_or_else(|| corrupt("no meta"))?)?;
        let event: Event =
            serde_json::from_str(run_hash.get("event").ok_or_else(|| corrupt("no event"))?)?;
        let status = run_hash
            .get("status")
            .and_then(|s| RunStatus::parse(s))
            .ok_or_else(|| corrupt("status"))?;
        let mut steps: BTreeMap<String, StepState> = BTreeMap::new();
        for (field, value) in &run_hash {
            if let Some(id) = field.strip_prefix("st:") {
                let mut state = StepState::pending();
                state.status = StepStatus::parse(value).ok_or_else(|| corrupt("step status"))?;
                state.attempts = run_hash
                    .get(&format!("at:{id}"))
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0);
                // A cleared error, log or lease is stored as '' (one HSET instead of an HDEL).
                let field = |f: &str| run_hash.get(&format!("{f}:{id}")).filter(|v| !v.is_empty());
                state.error = field("er").cloned();
                state.log = field("lg").cloned();
                state.lease_until = run_hash
                    .get(&format!("ls:{id}"))
                    .and_then(|l| l.parse().ok());
                let output = outputs
                    .get(id)
                    .or_else(|| run_hash.get(&format!("fo:{id}")));
                state.output = output.map(|o| serde_json::from_str(o)).transpose()?;
                steps.insert(id.to_string(), state);
            }
        }
        for (field, value) in &run_hash {
            if let Some(rest) = field.strip_prefix("e:")
                && let Some((child, parent)) = rest.split_once(':')
                && let Some(step) = steps.get_mut(child)
            {
                step.edges.insert(parent.to_string(), value == "1");
            }
        }
        let history = history
            .iter()
            .map(|h| serde_json::from_str(h))
            .collect::<std::result::Result<_, _>>()?;
        let pauses = crate::pauses::decode_run_pauses(&run_hash)?;
        Ok(Run {
            id: meta.id,
            key: meta.key,
            function_id: meta.function_id,
            function_version: meta.function_version,
            fn_version: meta.fn_version,
            event,
            status,
            steps,
            created_at: meta.created_at,
            ended_at: run_hash.get("ended_at").and_then(|e| e.parse().ok()),
            history,
            pauses,
        })
    }
}

impl RedisStateStore {
    /// One `START_ATTEMPT` script: starts the attempt and, `with_state`, reads the run state;
    /// `None` when the run does not exist.
    async fn start(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        now_ms: i64,
        lease_ms: i64,
        with_state: bool,
    ) -> Result<Option<(StartAttempt, Option<RunState>)>> {
        let entry = HistoryEntry::now("step.started")
            .step(step_id)
            .attempt(attempt);
        let takeover = entry
            .clone()
            .detail("taken over: the lease of the previous holder expired");
        let mut inv = scripts::START_ATTEMPT.prepare_invoke();
        self.run_keys(&mut inv, run_id)
            .arg(step_id)
            .arg(attempt)
            .arg(now_ms)
            .arg(lease_ms)
            .arg(entry_json(&entry))
            .arg(entry_json(&takeover))
            .arg(if with_state { "1" } else { "0" });
        let (answer, left, head, outputs): (i64, i64, Vec<Option<String>>, Vec<String>) =
            self.conn.script("start_attempt", &inv).await?;
        match answer {
            -2 => return Ok(None),
            -1 => return Err(not_found(format!("run {run_id:?} has no step {step_id:?}"))),
            _ => {}
        }
        let started = match answer {
            1 => StartAttempt::Started,
            2 => StartAttempt::Busy {
                lease_left_ms: left,
            },
            _ => StartAttempt::Stale,
        };
        if !with_state {
            return Ok(Some((started, None)));
        }
        match Self::decode_run_state(head, outputs) {
            Ok(state) => Ok(Some((started, Some(state)))),
            Err(e) => {
                // A start whose run cannot be read holds no lease: once the run is repaired,
                // its message starts the attempt at once.
                if started == StartAttempt::Started {
                    let _ = self
                        .renew_attempt(run_id, step_id, attempt, now_ms - 1)
                        .await;
                }
                Err(e.with_context("run", run_id))
            }
        }
    }

    /// The run state `START_ATTEMPT` read: the run's `meta`, `event` and `status`, and its
    /// outputs as field/value pairs.
    fn decode_run_state(head: Vec<Option<String>>, outputs: Vec<String>) -> Result<RunState> {
        let [Some(meta), Some(event), Some(status)] =
            <[Option<String>; 3]>::try_from(head).map_err(|_| corrupt("head"))?
        else {
            return Err(corrupt("run head"));
        };
        let meta: Meta = serde_json::from_str(&meta)
            .map_err(|e| corrupt(&format!("meta is not valid JSON: {e}")))?;
        let outputs: HashMap<String, String> = outputs
            .chunks_exact(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect();
        Ok(RunState {
            id: meta.id,
            function_id: meta.function_id,
            function_version: meta.function_version,
            status: RunStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            event: serde_json::from_str(&event)
                .map_err(|e| corrupt(&format!("event is not valid JSON: {e}")))?,
            outputs: decode_outputs(outputs)?,
        })
    }
}

fn decode_outputs(outputs: HashMap<String, String>) -> Result<serde_json::Map<String, Value>> {
    outputs
        .into_iter()
        .map(|(k, v)| Ok((k, serde_json::from_str(&v)?)))
        .collect()
}

#[async_trait]
impl StateStore for RedisStateStore {
    async fn create_run(&self, run: &Run) -> Result<CreateRun> {
        // Run ids derive from idempotency keys (`Run::id_for_key`): the run's own hash is the
        // idempotency record, so creating is one script in the run's slot, with no key to
        // claim first (and none left behind).
        if self.insert_run(run).await? {
            return Ok(CreateRun::Created);
        }
        let found = self
            .get_run(&run.id)
            .await?
            .ok_or_else(|| corrupt("run vanished"))?;
        if found.key != run.key {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "run id {} of key {:?} is taken by key {:?} (run ids must come from Run::id_for_key)",
                    run.id, run.key, found.key
                ),
            ));
        }
        if found.status != RunStatus::Running {
            // The pipeline filed it as running again: put it back under its final status.
            self.file_finished(&found.id, found.status.as_str(), found.created_at)
                .await?;
        }
        Ok(CreateRun::Exists(Box::new(found)))
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<Run>> {
        let mut pipe = redis::pipe();
        pipe.hgetall(self.keys.run(run_id))
            .hgetall(self.keys.out(run_id))
            .lrange(self.keys.hist(run_id), 0, -1);
        let (run_hash, outputs, history): (
            HashMap<String, String>,
            HashMap<String, String>,
            Vec<String>,
        ) = self.conn.pipe(&pipe).await?;
        if run_hash.is_empty() {
            return Ok(None);
        }
        Self::decode_run(run_hash, outputs, history).map(Some)
    }

    async fn get_run_state(&self, run_id: &str) -> Result<Option<RunState>> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.keys.run(run_id))
            .arg(&["meta", "event", "status"][..])
            .hgetall(self.keys.out(run_id));
        let (fields, outputs): (Vec<Option<String>>, HashMap<String, String>) =
            self.conn.pipe(&pipe).await?;
        let [Some(meta), Some(event), Some(status)] =
            <[Option<String>; 3]>::try_from(fields).map_err(|_| corrupt("fields"))?
        else {
            return Ok(None);
        };
        let meta: Meta = serde_json::from_str(&meta)?;
        Ok(Some(RunState {
            id: meta.id,
            function_id: meta.function_id,
            function_version: meta.function_version,
            status: RunStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            event: serde_json::from_str(&event)?,
            outputs: decode_outputs(outputs)?,
        }))
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let index = if let Some(f) = &filter.function_id {
            self.keys.runs_by("fn", f)
        } else if let Some(u) = &filter.user {
            self.keys.runs_by("user", u)
        } else if let Some(s) = filter.status {
            // A waiting run is running, as stored.
            let stored = if s == RunStatus::Waiting {
                RunStatus::Running
            } else {
                s
            };
            self.keys.runs_by("status", stored.as_str())
        } else {
            self.keys.runs()
        };
        // Scores are creation times (ms): the cursor's time and `to` bound them from above.
        let below_to = filter.to_ms.map(|to| to.saturating_sub(1));
        let max = match (filter.before.as_ref().map(|c| c.created_at), below_to) {
            (Some(a), Some(b)) => a.min(b).to_string(),
            (Some(a), None) | (None, Some(a)) => a.to_string(),
            (None, None) => "+inf".to_string(),
        };
        let min = filter
            .from_ms
            .map_or("-inf".to_string(), |from| from.to_string());
        let limit = filter.limit();
        // A page of runs is read per round: as many as asked for (at least 10, at most 200),
        // more rounds when the filter drops some. Each round goes on from the last entry read
        // (its score, and how many entries of that score were read), not from an offset into
        // the whole range: runs created or deleted meanwhile do not shift it.
        let page = limit.clamp(10, 200);
        let mut out = Vec::new();
        let mut max = max;
        let mut last: Option<(i64, String)> = None;
        let mut read_at_last = 0usize;
        while out.len() < limit {
            // Newest first; runs of one millisecond by id, descending (as RunCursor orders).
            let entries: Vec<(String, i64)> = self
                .conn
                .cmd(
                    redis::cmd("ZREVRANGEBYSCORE")
                        .arg(&index)
                        .arg(&max)
                        .arg(&min)
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(read_at_last)
                        .arg(page),
                )
                .await?;
            if entries.is_empty() {
                break;
            }
            let fetched = entries.len();
            // An entry at or above the last one read (one added meanwhile) was listed, or is
            // newer than this listing.
            let ids: Vec<String> = entries
                .iter()
                .filter(|(id, score)| {
                    last.as_ref()
                        .is_none_or(|(s, l)| (*score, id.as_str()) < (*s, l.as_str()))
                })
                .map(|(id, _)| id.clone())
                .collect();
            let (last_id, last_score) = entries[fetched - 1].clone();
            read_at_last = match &last {
                Some((s, _)) if *s == last_score => read_at_last + fetched,
                _ => entries.iter().filter(|(_, s)| *s == last_score).count(),
            };
            last = Some((last_score, last_id));
            max = last_score.to_string();
            for summary in self.summaries(&ids).await? {
                if filter.matches(&summary) && out.len() < limit {
                    out.push(summary);
                }
            }
            if fetched < page {
                break;
            }
        }
        Ok(out)
    }

    async fn count_runs(&self, filter: &RunFilter) -> Result<weir_core::run::RunCounts> {
        use weir_core::run::{MAX_COUNTED_RUNS, RunCounts};
        let min = filter
            .from_ms
            .map_or("-inf".to_string(), |from| from.to_string());
        let max = filter
            .to_ms
            .map_or("+inf".to_string(), |to| format!("({to}"));
        // As stored: a waiting run is running.
        let statuses = [
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ];
        let status_keys: Vec<String> = statuses
            .iter()
            .map(|s| self.keys.runs_by("status", s.as_str()))
            .collect();
        let mut counts = RunCounts::default();
        let (primary, also_in) = match (&filter.user, &filter.function_id) {
            (None, None) => {
                // Every run: one ZCOUNT per status index.
                let mut pipe = redis::pipe();
                for key in &status_keys {
                    pipe.cmd("ZCOUNT").arg(key).arg(&min).arg(&max);
                }
                let found: Vec<u64> = self.conn.pipe(&pipe).await?;
                counts.running = found[0];
                counts.completed = found[1];
                counts.failed = found[2];
                counts.cancelled = found[3];
                return Ok(counts);
            }
            (Some(user), function) => (
                self.keys.runs_by("user", user),
                function.as_ref().map(|f| self.keys.runs_by("fn", f)),
            ),
            (None, Some(function)) => (self.keys.runs_by("fn", function), None),
        };
        // The user's (or function's) runs in the range, then in one round trip which of them
        // are in each status index (and the function's).
        // The newest ones, when there are more than can be counted (as the memory store).
        let mut ids: Vec<String> = self
            .conn
            .cmd(
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(&primary)
                    .arg(&max)
                    .arg(&min)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(MAX_COUNTED_RUNS + 1),
            )
            .await?;
        counts.capped = ids.len() > MAX_COUNTED_RUNS;
        ids.truncate(MAX_COUNTED_RUNS);
        if ids.is_empty() {
            return Ok(counts);
        }
        let mut pipe = redis::pipe();
        if let Some(key) = &also_in {
            pipe.cmd("ZMSCORE").arg(key).arg(&ids);
        }
        for key in &status_keys {
            pipe.cmd("ZMSCORE").arg(key).arg(&ids);
        }
        let found: Vec<Vec<Option<f64>>> = self.conn.pipe(&pipe).await?;
        let (in_function, by_status) = match also_in {
            Some(_) => (Some(&found[0]), &found[1..]),
            None => (None, &found[..]),
        };
        for i in 0..ids.len() {
            if in_function.is_some_and(|f| f[i].is_none()) {
                continue;
            }
            if let Some(s) = by_status.iter().position(|scores| scores[i].is_some()) {
                counts.add(statuses[s]);
            }
        }
        Ok(counts)
    }

    async fn list_ended(&self, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<RunSummary>> {
        let ids: Vec<String> = self
            .conn
            .cmd(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.keys.runs_ended())
                    .arg(from_ms)
                    .arg(to_ms)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.summaries(&ids).await
    }

    async fn start_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<StartAttempt> {
        match self
            .start(run_id, step_id, attempt, now_ms, lease_ms, false)
            .await?
        {
            Some((started, _)) => Ok(started),
            None => Err(not_found(format!("no run {run_id:?}"))),
        }
    }

    async fn start_attempt_with_state(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<(StartAttempt, Option<RunState>)> {
        let started = self
            .start(run_id, step_id, attempt, now_ms, lease_ms, true)
            .await?;
        Ok(started.unwrap_or((StartAttempt::Stale, None)))
    }

    async fn renew_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        until_ms: i64,
    ) -> Result<bool> {
        let mut inv = scripts::RENEW_ATTEMPT.prepare_invoke();
        inv.key(self.keys.run(run_id))
            .arg(step_id)
            .arg(attempt)
            .arg(until_ms);
        Ok(self.conn.script::<i64>("renew_attempt", &inv).await? == 1)
    }

    async fn finish_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
    ) -> Result<Transition> {
        self.finish_attempt_with_pauses(run_id, step_id, attempt, outcome, &[])
            .await
    }

    async fn finish_attempt_with_pauses(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        pauses: &[Pause],
    ) -> Result<Transition> {
        let (status, output, error, log, entry) = match outcome {
            AttemptOutcome::Completed { output, log } => (
                "completed",
                serde_json::to_string(output)?,
                String::new(),
                log.clone().unwrap_or_default(),
                {
                    let mut entry = HistoryEntry::now("step.completed")
                        .step(step_id)
                        .attempt(attempt);
                    // The pauses' waits count from the completion: one time for both.
                    if let Some(p) = pauses.first() {
                        entry.at = p.registered_ms;
                    }
                    entry
                },
            ),
            AttemptOutcome::Failed { error, output, log } => (
                "failed",
                output
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()?
                    .unwrap_or_default(),
                error.clone(),
                log.clone().unwrap_or_default(),
                HistoryEntry::now("step.failed")
                    .step(step_id)
                    .attempt(attempt)
                    .detail(error),
            ),
        };
        let mut inv = scripts::FINISH_ATTEMPT.prepare_invoke();
        self.run_keys(&mut inv, run_id)
            .arg(step_id)
            .arg(attempt)
            .arg(status)
            .arg(output)
            .arg(error)
            .arg(log)
            .arg(entry_json(&entry))
            .arg(entry.at)
            .arg(pauses.len());
        for pause in pauses {
            inv.arg(pause.key())
                .arg(serde_json::to_string(pause)?)
                .arg(crate::pauses::pause_meta(pause))
                .arg(entry_json(&pause.history_entry(None)));
        }
        let (applied, open, finished, created_at): (i64, i64, String, i64) =
            self.conn.script("finish_attempt", &inv).await?;
        if applied == -1 {
            return Err(not_found(format!("run {run_id:?} has no step {step_id:?}")));
        }
        self.transition(run_id, applied, open, &finished, created_at)
            .await
    }

    async fn retry_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &str,
        log: Option<&str>,
        timer: &Timer,
    ) -> Result<bool> {
        // The timer goes first (another slot): if the transition then does not apply, the
        // timer's step message finds the attempt not waiting and is dropped by start_attempt.
        self.schedule_timer(timer).await?;
        let entry = HistoryEntry::now("step.retry_scheduled")
            .step(step_id)
            .attempt(attempt)
            .detail(format!(
                "{error}; attempt {} at {}",
                attempt + 1,
                timer.due_ms
            ));
        let mut inv = scripts::RETRY_ATTEMPT.prepare_invoke();
        self.run_keys(&mut inv, run_id)
            .arg(step_id)
            .arg(attempt)
            .arg(error)
            .arg(log.unwrap_or(""))
            .arg(entry_json(&entry));
        match self.conn.script::<i64>("retry_attempt", &inv).await? {
            -1 => Err(not_found(format!("run {run_id:?} has no step {step_id:?}"))),
            n => Ok(n == 1),
        }
    }

    async fn transition_step(
        &self,
        run_id: &str,
        step_id: &str,
        from: StepStatus,
        to: StepStatus,
        detail: Option<&str>,
    ) -> Result<Transition> {
        let kind = to.history_kind();
        let mut entry = HistoryEntry::now(kind).step(step_id);
        if let Some(d) = detail {
            entry = entry.detail(d);
        }
        let mut inv = scripts::TRANSITION.prepare_invoke();
        self.run_keys(&mut inv, run_id)
            .arg(step_id)
            .arg(from.as_str())
            .arg(to.as_str())
            .arg(detail.unwrap_or(""))
            .arg(if to.is_terminal() { "1" } else { "0" })
            .arg(entry_json(&entry))
            .arg(entry.at);
        let (applied, open, finished, created_at): (i64, i64, String, i64) =
            self.conn.script("transition", &inv).await?;
        if applied == -1 {
            return Err(not_found(format!("run {run_id:?} has no step {step_id:?}")));
        }
        self.transition(run_id, applied, open, &finished, created_at)
            .await
    }

    async fn resolve_edge(
        &self,
        run_id: &str,
        child: &str,
        parent: &str,
        taken: bool,
    ) -> Result<EdgeTally> {
        let mut inv = scripts::RESOLVE_EDGE.prepare_invoke();
        inv.key(self.keys.run(run_id))
            .arg(child)
            .arg(parent)
            .arg(if taken { "1" } else { "0" });
        let (recorded, t, n): (i64, i64, i64) = self.conn.script("resolve_edge", &inv).await?;
        if recorded == -1 {
            return Err(not_found(format!("run {run_id:?} has no step {child:?}")));
        }
        Ok(EdgeTally {
            recorded: recorded == 1,
            taken: t.max(0) as usize,
            not_taken: n.max(0) as usize,
        })
    }

    async fn resolve_edge_and_join(
        &self,
        run_id: &str,
        child: &str,
        parent: &str,
        taken: bool,
        rule: JoinRule,
        skip_reason: &str,
    ) -> Result<EdgeJoin> {
        let queued = entry_json(&HistoryEntry::now("step.queued").step(child));
        let skipped = entry_json(
            &HistoryEntry::now("step.skipped")
                .step(child)
                .detail(skip_reason),
        );
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut inv = scripts::RESOLVE_JOIN.prepare_invoke();
        self.run_keys(&mut inv, run_id)
            .arg(child)
            .arg(parent)
            .arg(flag(taken))
            .arg(rule.parents)
            .arg(flag(rule.any))
            .arg(flag(rule.recovering))
            .arg(skip_reason)
            .arg(queued)
            .arg(skipped)
            .arg(now_ms());
        let (recorded, t, n, decision, applied, open, finished, created_at): (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            String,
            i64,
        ) = self.conn.script("resolve_join", &inv).await?;
        if recorded == -1 {
            return Err(not_found(format!("run {run_id:?} has no step {child:?}")));
        }
        let tally = EdgeTally {
            recorded: recorded == 1,
            taken: t.max(0) as usize,
            not_taken: n.max(0) as usize,
        };
        let decision = match decision {
            1 => Some(true),
            0 => Some(false),
            _ => None,
        };
        let transition = match decision {
            Some(_) => Some(
                self.transition(run_id, applied, open, &finished, created_at)
                    .await?,
            ),
            None => None,
        };
        Ok(EdgeJoin {
            tally,
            decision,
            transition,
        })
    }

    async fn finish_run(&self, run_id: &str, status: RunStatus) -> Result<bool> {
        if status == RunStatus::Running {
            return Ok(false);
        }
        let kind = if status == RunStatus::Completed {
            "run.completed"
        } else {
            "run.failed"
        };
        let entry = HistoryEntry::now(kind);
        let mut inv = scripts::FINISH_RUN.prepare_invoke();
        self.run_keys(&mut inv, run_id)
            .arg(status.as_str())
            .arg(entry.at)
            .arg(entry_json(&entry));
        let (applied, created_at, final_status): (i64, i64, String) =
            self.conn.script("finish_run", &inv).await?;
        if applied == -1 {
            return Err(not_found(format!("no run {run_id:?}")));
        }
        self.file_finished(run_id, &final_status, created_at)
            .await?;
        Ok(applied == 1)
    }

    async fn delete_finished_runs(&self, ended_before_ms: i64, limit: usize) -> Result<usize> {
        let ended = self.keys.runs_ended();
        let ids: Vec<String> = self
            .conn
            .cmd(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&ended)
                    .arg("-inf")
                    .arg(format!("({ended_before_ms}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        let Some(first) = ids.first() else {
            return Ok(0);
        };
        // Each run's keys go in a script that checks, in the run's slot, that it is not
        // running: a run created again under a deleted id (its event redelivered) is kept.
        let mut pipe = redis::pipe();
        let mut first_inv = scripts::DELETE_FINISHED_RUN.prepare_invoke();
        self.run_keys(&mut first_inv, first);
        for id in &ids {
            let mut inv = scripts::DELETE_FINISHED_RUN.prepare_invoke();
            self.run_keys(&mut inv, id);
            pipe.invoke_script(&inv);
        }
        let answers: Vec<(i64, Option<String>, Option<String>)> =
            self.conn.pipe_with_script(&pipe, &first_inv).await?;
        // Then the deleted runs' index entries, and every id's `ended` entry last. A node dying
        // in between leaves the deleted runs' index entries behind for good (listings skip
        // runs that are gone; ids only), never a run that escapes deletion.
        let mut unfile = redis::pipe();
        for (id, (deleted, meta, event)) in ids.iter().zip(answers) {
            if deleted != 1 {
                continue;
            }
            unfile.zrem(self.keys.runs(), id).ignore();
            for status in [
                RunStatus::Completed,
                RunStatus::Failed,
                RunStatus::Cancelled,
                RunStatus::Running,
            ] {
                unfile
                    .zrem(self.keys.runs_by("status", status.as_str()), id)
                    .ignore();
            }
            match meta.as_deref().map(serde_json::from_str::<Meta>) {
                Some(Ok(meta)) => {
                    unfile
                        .zrem(self.keys.runs_by("fn", &meta.function_id), id)
                        .ignore();
                }
                _ => {
                    tracing::warn!(run = %id, "deleted a run without readable meta; its function index entry stays")
                }
            }
            if let Some(user) = event
                .as_deref()
                .and_then(|e| serde_json::from_str::<Event>(e).ok())
                .and_then(|e| e.user_key())
            {
                unfile.zrem(self.keys.runs_by("user", &user), id).ignore();
            }
        }
        unfile.zrem(&ended, &ids).ignore();
        self.conn.pipe::<()>(&unfile).await?;
        Ok(ids.len())
    }

    async fn schedule_timer(&self, timer: &Timer) -> Result<()> {
        let mut inv = scripts::SCHEDULE_TIMER.prepare_invoke();
        inv.key(self.keys.timers_due())
            .key(self.keys.timers_data())
            .arg(&timer.id)
            .arg(timer.due_ms)
            .arg(serde_json::to_string(timer)?);
        self.conn.script::<i64>("schedule_timer", &inv).await?;
        Ok(())
    }

    async fn claim_due_timers(
        &self,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<Timer>> {
        let mut inv = scripts::CLAIM_TIMERS.prepare_invoke();
        inv.key(self.keys.timers_due())
            .key(self.keys.timers_data())
            .arg(now_ms)
            .arg(limit)
            .arg(lease_ms);
        let raw: Vec<String> = self.conn.script("claim_timers", &inv).await?;
        let mut timers = Vec::with_capacity(raw.len());
        let mut unreadable = Vec::new();
        for t in &raw {
            match readable_timer(t) {
                Ok(timer) => timers.push(timer),
                Err(Some(id)) => unreadable.push(id),
                Err(None) => {}
            }
        }
        if !unreadable.is_empty() {
            // Claimed again after a minute, not after every lease: a node that cannot read
            // them (an older one) does not spin on them.
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.keys.timers_due()).arg("XX");
            for id in &unreadable {
                cmd.arg(now_ms + UNREADABLE_TIMER_BACKOFF_MS).arg(id);
            }
            if let Err(e) = self.conn.cmd::<i64>(&cmd).await {
                tracing::warn!(error = %e, "redis state: could not put unreadable timers back for a minute");
            }
        }
        Ok(timers)
    }

    async fn put_blob(&self, id: &str, data: bytes::Bytes, ttl: std::time::Duration) -> Result<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.blob(id))
            .arg(&data[..])
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.conn.cmd::<()>(&cmd).await
    }

    async fn claim_blob(
        &self,
        id: &str,
        data: bytes::Bytes,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.blob(id))
            .arg(&data[..])
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        // `SET … NX` answers OK when it stored the value, nil when the key exists.
        let stored: Option<String> = self.conn.cmd(&cmd).await?;
        Ok(stored.is_some())
    }

    async fn get_blob(&self, id: &str) -> Result<Option<bytes::Bytes>> {
        let data: Option<Vec<u8>> = self
            .conn
            .cmd(redis::cmd("GET").arg(self.keys.blob(id)))
            .await?;
        Ok(data.map(bytes::Bytes::from))
    }

    fn jobs(&self) -> Option<Arc<dyn weir_core::jobs::JobStore>> {
        Some(self.jobs.clone())
    }

    fn catalog(&self) -> Option<Arc<dyn weir_core::catalog::Catalog>> {
        Some(self.catalog.clone())
    }

    async fn watch_pauses(&self, pauses: &[Pause]) -> Result<()> {
        self.watch(pauses).await
    }

    async fn find_pauses(&self, name: &str, keys: &[String]) -> Result<Vec<PauseHit>> {
        self.find(name, keys).await
    }

    async fn resume_pause(
        &self,
        run_id: &str,
        key: &str,
        spec: usize,
        event: &Event,
        now_ms: i64,
    ) -> Result<PauseAnswer> {
        self.resume(run_id, key, spec, event, now_ms).await
    }

    async fn expire_pause(&self, run_id: &str, key: &str, now_ms: i64) -> Result<PauseAnswer> {
        self.end(run_id, key, PauseStatus::TimedOut, now_ms).await
    }

    async fn unwatch_pause(&self, pause: &Pause) -> Result<()> {
        self.unwatch(pause).await
    }

    async fn get_pause(&self, run_id: &str, key: &str) -> Result<Option<Pause>> {
        self.read(run_id, key).await
    }

    async fn running_runs(
        &self,
        created_before_ms: i64,
        after: Option<&RunRef>,
        limit: usize,
    ) -> Result<Vec<RunRef>> {
        self.running(created_before_ms, after, limit).await
    }

    async fn append_timeline(&self, run_id: &str, entry: &HistoryEntry) -> Result<bool> {
        let mut inv = scripts::APPEND_TIMELINE.prepare_invoke();
        inv.key(self.keys.run(run_id))
            .key(self.keys.hist(run_id))
            .arg(entry_json(entry));
        Ok(self.conn.script::<i64>("append_timeline", &inv).await? == 1)
    }

    async fn get_run_outline(&self, run_id: &str) -> Result<Option<RunOutline>> {
        self.outline(run_id).await
    }

    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<()> {
        self.put_dead(dead).await
    }

    async fn list_dead_letters(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage> {
        self.list_dead(before, limit).await
    }

    async fn get_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
        self.get_dead(id).await
    }

    async fn delete_dead_letter(&self, id: &str) -> Result<bool> {
        self.delete_dead(id).await
    }

    async fn count_failure(&self, key: &str, ttl: std::time::Duration) -> Result<u32> {
        self.count_failure_of(key, ttl).await
    }

    async fn fail_run(&self, run_id: &str, detail: &str, now_ms: i64) -> Result<bool> {
        self.move_run(run_id, None, detail, now_ms).await
    }

    async fn reopen_run(
        &self,
        run_id: &str,
        failed_by: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool> {
        self.move_run(run_id, Some(failed_by), detail, now_ms).await
    }

    async fn cancel_run(&self, run_id: &str, detail: &str, now_ms: i64) -> Result<CancelRun> {
        let mut entry = HistoryEntry::now("run.cancelled").detail(detail);
        entry.at = now_ms;
        let mut inv = scripts::CANCEL_RUN.prepare_invoke();
        self.run_keys(&mut inv, run_id)
            .arg(now_ms)
            .arg(entry_json(&entry));
        let (applied, status, created_at, pauses): (i64, String, i64, Vec<String>) =
            self.conn.script("cancel_run", &inv).await?;
        if applied == -1 {
            return Ok(CancelRun {
                applied: false,
                status: None,
                pauses: Vec::new(),
            });
        }
        let status = RunStatus::parse(&status).ok_or_else(|| corrupt("status"))?;
        if status == RunStatus::Cancelled {
            // Filed under `cancelled` (again, when repeating a cancel whose node died).
            self.file_finished(run_id, status.as_str(), created_at)
                .await?;
        }
        Ok(CancelRun {
            applied: applied == 1,
            status: Some(status),
            pauses: pauses
                .iter()
                .map(|p| serde_json::from_str(p))
                .collect::<std::result::Result<_, _>>()?,
        })
    }

    async fn complete_timer(&self, timer_id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.zrem(self.keys.timers_due(), timer_id).ignore();
        pipe.hdel(self.keys.timers_data(), timer_id).ignore();
        self.conn.pipe::<()>(&pipe).await
    }
}

/// How long a claimed timer this node cannot read waits before it is claimed again.
const UNREADABLE_TIMER_BACKOFF_MS: i64 = 60_000;

/// A claimed timer, or (with a warning) the id of one this version cannot read: written by a
/// newer weir during a rolling upgrade (an action this one does not know), or corrupt (`None`
/// when even its id cannot be read). It is skipped, not an error: an error would fail the
/// whole claim, and the timers claimed with it would wait a lease for nothing. The skipped
/// timer is claimed again a minute later, by a node that can read it.
fn readable_timer(raw: &str) -> std::result::Result<Timer, Option<String>> {
    match serde_json::from_str(raw) {
        Ok(timer) => Ok(timer),
        Err(e) => {
            let id = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
            tracing::warn!(timer = ?id, error = %e, "redis state: skipped a timer this version cannot read (written by a newer weir, or corrupt); claimed again in a minute");
            Err(id)
        }
    }
}
