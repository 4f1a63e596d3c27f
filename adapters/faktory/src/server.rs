//! What the server does for each command once a client said HELLO. One [`Server`] serves
//! every connection of the adapter.
//!
//! A job whose type a weir function handles (it is triggered by `faktory/<jobtype>`) becomes
//! that event and runs as a weir run. The other jobs are kept for Faktory workers in the state
//! store's job store ([`crate::legacy`]); a state store that keeps no jobs refuses them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use weir_core::adapter::Shutdown;
use weir_core::engine::Engine;
use weir_core::event::now_ms;

use weir_core::jobs::{JobSet, JobStore, WorkerOrder, worker_order};

use crate::job::{Job, rfc3339, valid_queue_name};
use crate::legacy::{self, FailReport, Failed};
use crate::resp::Reply;
use crate::settings::Settings;

/// How long FETCH waits for a job before it answers that there is none (as Faktory: a
/// worker fetches again at once, so answering sooner would make it spin).
pub const FETCH_WAIT: Duration = Duration::from_secs(2);

/// How often a FETCH with nothing to take looks again (jobs pushed on this node wake it at
/// once; this is for jobs pushed on other nodes and jobs that came due).
const FETCH_POLL: Duration = Duration::from_millis(100);

/// The most queues one FETCH may name.
const MAX_FETCH_QUEUES: usize = 100;

/// The server's version in INFO (the Rust client wants a semantic version).
const FAKTORY_VERSION: &str = "1.9.1";

/// Counters since the adapter started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs pushed and accepted.
    pub pushed: AtomicU64,
    /// Of those, jobs that became weir events.
    pub to_weir: AtomicU64,
    /// Jobs handed to workers by FETCH.
    pub fetched: AtomicU64,
    /// Jobs acknowledged.
    pub acked: AtomicU64,
    /// Jobs failed (FAIL, or a reservation that ran out).
    pub failed: AtomicU64,
    /// Of those, jobs that went to the dead set.
    pub dead: AtomicU64,
    /// Commands served.
    pub commands: AtomicU64,
    /// Connections open (after HELLO).
    pub connections: AtomicU64,
}

/// A worker process, known by the `wid` of its HELLO, while it has connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WorkerState {
    /// Its connections open.
    connections: usize,
    /// What an operator told it, as its last heartbeat heard.
    order: Option<WorkerOrder>,
}

/// The state every connection of one adapter shares.
pub struct Server {
    engine: Engine,
    settings: Settings,
    /// Where jobs for Faktory workers are kept (`None`: the state store keeps none).
    jobs: Option<Arc<dyn JobStore>>,
    /// Woken when a job is kept on this node.
    kept: tokio::sync::Notify,
    /// Counters for INFO.
    pub stats: Stats,
    workers: Mutex<HashMap<String, WorkerState>>,
    started: Instant,
}

impl Server {
    /// A server for `engine`.
    pub fn new(engine: Engine, settings: Settings) -> Server {
        Server {
            jobs: engine.state().jobs(),
            kept: tokio::sync::Notify::new(),
            engine,
            settings,
            stats: Stats::default(),
            workers: Mutex::default(),
            started: Instant::now(),
        }
    }

    /// The job store for Faktory workers, if the state store keeps jobs.
    pub fn jobs(&self) -> Option<&Arc<dyn JobStore>> {
        self.jobs.as_ref()
    }

    /// Counts one job ending in `outcome`, here (INFO) and in the engine's metrics
    /// (`weir_adapter_jobs_total{adapter="faktory"}`).
    fn count(&self, outcome: &'static str, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.engine.metrics().adapter_jobs("faktory", outcome, 1);
    }

    /// Counts a job that failed (and died, when it did).
    pub fn failed(&self, outcome: Failed) {
        self.count("failed", &self.stats.failed);
        if outcome == Failed::Dead {
            self.count("dead", &self.stats.dead);
        }
    }

    /// The adapter's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Registers the worker `wid` (a HELLO with a `wid`); several connections may share one.
    pub fn worker_joined(&self, wid: &str) {
        if let Ok(mut workers) = self.workers.lock() {
            workers
                .entry(wid.to_string())
                .or_insert(WorkerState {
                    connections: 0,
                    order: None,
                })
                .connections += 1;
        }
    }

    /// A connection of the worker `wid` closed; the worker is forgotten with its last one.
    pub fn worker_left(&self, wid: &str) {
        if let Ok(mut workers) = self.workers.lock()
            && let Some(worker) = workers.get_mut(wid)
        {
            worker.connections = worker.connections.saturating_sub(1);
            if worker.connections == 0 {
                workers.remove(wid);
            }
        }
    }

    /// Reads the order of the worker `wid` from the state store (within a second) into this
    /// node's view of it, and answers it. An order taken back (`running`) clears it; a store
    /// that does not answer leaves the order as last heard.
    pub async fn read_order(&self, wid: &str) -> Option<WorkerOrder> {
        let state = self.engine.state();
        let read =
            tokio::time::timeout(Duration::from_secs(1), worker_order(state.as_ref(), wid)).await;
        let Ok(mut workers) = self.workers.lock() else {
            return None;
        };
        let worker = workers.get_mut(wid)?;
        match read {
            Ok(Ok(order)) => worker.order = order,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, wid, "faktory adapter: cannot read a worker's order");
            }
            Err(_) => tracing::debug!(wid, "faktory adapter: reading a worker's order timed out"),
        }
        worker.order
    }

    /// Whether the worker `wid` was told to stop taking jobs (quiet or terminate).
    fn told_to_stop(&self, wid: Option<&str>) -> bool {
        let Some(wid) = wid else {
            return false;
        };
        self.workers
            .lock()
            .ok()
            .and_then(|w| w.get(wid).and_then(|w| w.order))
            .is_some()
    }

    /// `PUSH {job}`.
    pub async fn push(&self, payload: &[u8]) -> Reply {
        let mut job = match Job::parse(payload) {
            Ok(job) => job,
            Err(e) => return Reply::error(e),
        };
        match self.accept(&mut job).await {
            Ok(()) => Reply::Ok,
            Err(e) => Reply::error(e),
        }
    }

    /// `PUSHB [job, …]`: a bulk reply mapping each refused job's jid to why (`{}` when every
    /// job was taken).
    pub async fn push_bulk(&self, payload: &[u8]) -> Reply {
        let jobs: Vec<Value> = match serde_json::from_slice(payload) {
            Ok(jobs) => jobs,
            Err(e) => return Reply::error(format!("invalid JSON: {e}")),
        };
        let mut refused = BTreeMap::new();
        for value in jobs {
            let jid = value["jid"].as_str().unwrap_or_default().to_string();
            let outcome = match serde_json::from_value::<Job>(value) {
                Ok(mut job) => self.accept(&mut job).await,
                Err(e) => Err(format!("invalid JSON: {e}")),
            };
            if let Err(why) = outcome {
                refused.insert(jid, why);
            }
        }
        Reply::Bulk(serde_json::to_vec(&refused).unwrap_or_else(|_| b"{}".to_vec()))
    }

    /// Checks `job` and takes it: a job a weir function handles is ingested as its event (at
    /// its `at`, durably, when that is later); any other is kept for the Faktory workers.
    async fn accept(&self, job: &mut Job) -> Result<(), String> {
        let now = now_ms();
        let due = job.validate(now)?;
        job.enqueued_at = rfc3339(now);
        let event = job
            .to_event()
            .map_err(|e| format!("weir cannot take the job: {e}"))?;
        if self.engine.functions().matching(&event).is_empty() {
            let Some(jobs) = &self.jobs else {
                return Err(format!(
                    "no weir function handles job type {} (trigger faktory/{}), and this weir's state store keeps no jobs for Faktory workers",
                    job.jobtype, job.jobtype
                ));
            };
            legacy::keep(jobs.as_ref(), job, due)
                .await
                .map_err(|e| format!("weir could not store the job: {e}"))?;
            self.kept.notify_waiters();
            self.count("pushed", &self.stats.pushed);
            return Ok(());
        }
        let ingested = match due {
            Some(due) => self.engine.ingest_at(vec![event], due).await,
            None => self.engine.ingest(vec![event]).await,
        };
        ingested.map_err(|e| format!("weir could not store the job: {e}"))?;
        self.count("pushed", &self.stats.pushed);
        self.count("to_weir", &self.stats.to_weir);
        Ok(())
    }

    /// `FETCH q1 q2 …`: the first job of the first of those queues that has one, reserved
    /// for the worker; after [`FETCH_WAIT`] with none, the null reply. Nothing is handed out
    /// once shutdown is raised (the wait still holds, so that a worker does not spin), to a
    /// worker `wid` told to be quiet, nor once `gone` says the client left.
    pub async fn fetch(
        &self,
        queues: &[&str],
        wid: Option<&str>,
        shutdown: &mut Shutdown,
        gone: impl std::future::Future<Output = ()>,
    ) -> Reply {
        if queues.is_empty() {
            return Reply::error("must call fetch with at least one queue");
        }
        if queues.len() > MAX_FETCH_QUEUES {
            return Reply::error(format!("FETCH takes at most {MAX_FETCH_QUEUES} queues"));
        }
        if let Some(bad) = queues.iter().find(|q| !valid_queue_name(q)) {
            return Reply::error(format!(
                "cannot get {bad:?} queue: queue names must match \\A[a-zA-Z0-9._-]+\\z"
            ));
        }
        let deadline = tokio::time::Instant::now() + FETCH_WAIT;
        tokio::pin!(gone);
        let jobs = match &self.jobs {
            // A worker told to be quiet (or to stop) takes no more jobs.
            Some(jobs) if !shutdown.is_raised() && !self.told_to_stop(wid) => jobs,
            _ => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = &mut gone => {}
                }
                return Reply::Null;
            }
        };
        let mut names: Vec<String> = Vec::with_capacity(queues.len());
        for q in queues {
            if !names.iter().any(|n| n == q) {
                names.push(q.to_string());
            }
        }
        loop {
            // Registered before looking, so that a job kept meanwhile wakes this fetch.
            let kept = self.kept.notified();
            // A client that left is handed nothing, even when a job woke this fetch.
            tokio::select! {
                biased;
                _ = &mut gone => return Reply::Null,
                _ = std::future::ready(()) => {}
            }
            match jobs.reserve(&names, now_ms()).await {
                Ok(Some(job)) => {
                    self.count("fetched", &self.stats.fetched);
                    return Reply::Bulk(job.payload.to_vec());
                }
                Ok(None) => {}
                Err(e) => {
                    // Answered at the end of the wait, so that workers do not spin on a
                    // store that is down.
                    tokio::time::sleep_until(deadline).await;
                    return Reply::error(format!("weir could not fetch: {e}"));
                }
            }
            let next = (tokio::time::Instant::now() + FETCH_POLL).min(deadline);
            tokio::select! {
                biased;
                _ = &mut gone => return Reply::Null,
                _ = shutdown.raised() => return Reply::Null,
                _ = kept => {}
                _ = tokio::time::sleep_until(next) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Reply::Null;
            }
        }
    }

    /// Puts back a job FETCH reserved but could not hand to its client (the connection
    /// failed): it goes to the end of its queue.
    pub async fn unfetch(&self, job: &[u8]) {
        let (Some(jobs), Some(jid)) = (&self.jobs, jid_of_job(job)) else {
            return;
        };
        let payload = bytes::Bytes::copy_from_slice(job);
        match jobs
            .settle(&jid, weir_core::jobs::Place::Queue(payload))
            .await
        {
            Ok(_) => tracing::debug!(jid, "faktory adapter: a fetched job went back to its queue"),
            Err(e) => {
                tracing::warn!(error = %e, jid, "faktory adapter: cannot put back a job whose worker left; it comes back when its reservation runs out")
            }
        }
    }

    /// `ACK {"jid": …}`: the job is done. An unknown jid is fine (as Faktory: the Rust worker
    /// stops on an error here).
    pub async fn ack(&self, payload: &[u8]) -> Reply {
        let Some(jid) = jid_of(payload) else {
            return Reply::error(format!("invalid ACK {}", shown(payload)));
        };
        let Some(jobs) = &self.jobs else {
            return Reply::Ok;
        };
        match jobs.settle(&jid, weir_core::jobs::Place::Gone).await {
            Ok(true) => {
                self.count("acked", &self.stats.acked);
                if let Err(e) = jobs.record(1, 0).await {
                    tracing::debug!(error = %e, "faktory adapter: cannot count an ACK");
                }
                Reply::Ok
            }
            Ok(false) => Reply::Ok,
            Err(e) => Reply::error(format!("weir could not acknowledge {jid}: {e}")),
        }
    }

    /// `FAIL {"jid", "errtype", "message", "backtrace"}`: retried after Faktory's backoff,
    /// dead, or dropped (see [`legacy::fail`]).
    pub async fn fail(&self, payload: &[u8]) -> Reply {
        let report = match serde_json::from_slice::<FailReport>(payload) {
            Ok(report) => report,
            Err(_) => return Reply::error(format!("invalid FAIL {}", shown(payload))),
        };
        if report.jid.is_empty() {
            return Reply::error("missing JID");
        }
        let jid = report.jid.clone();
        let Some(jobs) = &self.jobs else {
            return Reply::error(format!("Job not found {jid}"));
        };
        match legacy::fail(jobs.as_ref(), report, now_ms()).await {
            Ok(Failed::NotFound) => Reply::error(format!("Job not found {jid}")),
            Ok(outcome) => {
                self.failed(outcome);
                Reply::Ok
            }
            Err(e) => Reply::error(format!("weir could not fail {jid}: {e}")),
        }
    }

    /// `BEAT {"wid": …}`: `+OK` while the worker may go on, else the order an operator gave it
    /// (`{"state":"quiet"}` or `{"state":"terminate"}`, see [`weir_core::jobs::order_worker`]),
    /// read from the state store so that any node passes it on.
    pub async fn beat(&self, payload: &[u8]) -> Reply {
        #[derive(Deserialize)]
        struct Beat {
            #[serde(default, deserialize_with = "crate::job::null_as_default")]
            wid: String,
        }
        let Ok(beat) = serde_json::from_slice::<Beat>(payload) else {
            return Reply::error(format!("invalid BEAT {}", shown(payload)));
        };
        let known = self
            .workers
            .lock()
            .map(|w| w.contains_key(&beat.wid))
            .unwrap_or(false);
        if !known {
            return Reply::error(format!("unknown worker {}", beat.wid));
        }
        let order = self.read_order(&beat.wid).await;
        if let Some(order) = order {
            // Heard: kept a day more, so that a quiet worker alive for days stays quiet.
            let state = self.engine.state();
            if let Err(e) =
                weir_core::jobs::keep_worker_order(state.as_ref(), &beat.wid, order).await
            {
                tracing::debug!(error = %e, "faktory adapter: cannot keep a worker's order");
            }
        }
        match order {
            None => Reply::Ok,
            Some(order) => Reply::Bulk(format!(r#"{{"state":"{}"}}"#, order.as_str()).into_bytes()),
        }
    }

    /// `INFO`: the server's state, in Faktory's shape, with the job store's counts.
    pub async fn info(&self) -> Reply {
        let now = now_ms();
        let counts = match &self.jobs {
            Some(jobs) => match jobs.counts().await {
                Ok(counts) => counts,
                Err(e) => return Reply::error(format!("weir could not count the jobs: {e}")),
            },
            None => Default::default(),
        };
        let stats = &self.stats;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let set_size = |set: JobSet| counts.sets.get(&set).copied().unwrap_or(0);
        let info = json!({
            "now": rfc3339(now),
            "server_utc_time": chrono::DateTime::from_timestamp_millis(now)
                .unwrap_or_default()
                .format("%H:%M:%S UTC")
                .to_string(),
            "faktory": {
                "total_failures": counts.failures,
                "total_processed": counts.processed,
                "total_enqueued": counts.queues.values().sum::<u64>(),
                "total_queues": counts.queues.len(),
                "queues": counts.queues,
                "tasks": {
                    "Scheduled": {"size": set_size(JobSet::Scheduled)},
                    "Retries": {"size": set_size(JobSet::Retries)},
                    "Dead": {"size": set_size(JobSet::Dead)},
                    "Busy": {"size": counts.reserved},
                },
            },
            "server": {
                "description": "weir (Faktory protocol)",
                "faktory_version": FAKTORY_VERSION,
                "uptime": self.started.elapsed().as_secs(),
                "connections": load(&stats.connections),
                "command_count": load(&stats.commands),
                "used_memory_mb": 0,
            },
            "weir": {
                "pushed": load(&stats.pushed),
                "to_weir_runs": load(&stats.to_weir),
                "fetched": load(&stats.fetched),
                "acked": load(&stats.acked),
                "failed": load(&stats.failed),
                "dead": load(&stats.dead),
                "paused": counts.paused,
            },
        });
        Reply::Bulk(info.to_string().into_bytes())
    }

    /// `QUEUE PAUSE|RESUME|REMOVE q… | *` (`*`: every queue known).
    pub async fn queue(&self, op: &str, names: &[&str]) -> Reply {
        if !matches!(op, "PAUSE" | "RESUME" | "REMOVE") {
            return Reply::error(format!("QUEUE takes PAUSE, RESUME or REMOVE, not {op:?}"));
        }
        if names.is_empty() {
            return Reply::error(format!("QUEUE {op} needs queue names, or *"));
        }
        let Some(jobs) = &self.jobs else {
            return Reply::Ok;
        };
        let names: Vec<String> = if names == ["*"] {
            match jobs.counts().await {
                Ok(counts) => counts.queues.into_keys().collect(),
                Err(e) => return Reply::error(format!("weir could not list the queues: {e}")),
            }
        } else {
            names.iter().map(|n| n.to_string()).collect()
        };
        for name in &names {
            let done = match op {
                "PAUSE" => jobs.pause(name, true).await,
                "RESUME" => jobs.pause(name, false).await,
                _ => jobs.remove_queue(name).await,
            };
            if let Err(e) = done {
                return Reply::error(format!("weir could not change queue {name}: {e}"));
            }
        }
        Reply::Ok
    }

    /// `MUTATE {"cmd", "target", "filter"}`: `clear`, `discard`, `kill` or `requeue` the jobs
    /// of the retries, scheduled or dead set that the filter (`jobtype`, `jids`, `regexp`: a
    /// glob over the job's JSON) picks.
    pub async fn mutate(&self, payload: &[u8]) -> Reply {
        let mutation = match serde_json::from_slice::<crate::mutate::Mutation>(payload) {
            Ok(m) => m,
            Err(e) => return Reply::error(e),
        };
        let (set, action) = match mutation.parse() {
            Ok(parsed) => parsed,
            Err(e) => return Reply::error(e),
        };
        let Some(jobs) = &self.jobs else {
            return Reply::Ok;
        };
        match crate::mutate::apply(jobs.as_ref(), set, action, &mutation.filter, now_ms()).await {
            Ok(_) => Reply::Ok,
            Err(e) => Reply::error(format!("weir could not mutate: {e}")),
        }
    }

    /// `FLUSH`: every job kept for workers, and the totals, deleted.
    pub async fn flush(&self) -> Reply {
        match &self.jobs {
            Some(jobs) => match jobs.flush().await {
                Ok(()) => Reply::Ok,
                Err(e) => Reply::error(format!("weir could not flush: {e}")),
            },
            None => Reply::Ok,
        }
    }
}

/// The `jid` of an `{"jid": …}` payload.
fn jid_of(payload: &[u8]) -> Option<String> {
    let value: HashMap<String, Value> = serde_json::from_slice(payload).ok()?;
    value.get("jid")?.as_str().map(str::to_string)
}

/// The `jid` of a job's JSON.
fn jid_of_job(job: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Jid {
        jid: String,
    }
    serde_json::from_slice::<Jid>(job).ok().map(|j| j.jid)
}

/// A payload as shown in an error: at most 200 characters of it.
fn shown(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).chars().take(200).collect()
}
