//! What the server does for each command once a client said HELLO. One [`Server`] serves
//! every connection of the adapter.
//!
//! A job whose type a weir function handles (it is triggered by `faktory/<jobtype>`) becomes
//! that event and runs as a weir run. Keeping the other jobs for Faktory workers (queues,
//! reservations, retries, the dead set) is not built yet: such a PUSH is refused with a
//! message that says so, FETCH finds no job, and FAIL knows no reservation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use weir_core::adapter::Shutdown;
use weir_core::engine::Engine;
use weir_core::event::now_ms;

use crate::job::{Job, rfc3339, valid_queue_name};
use crate::resp::Reply;
use crate::settings::Settings;

/// How long FETCH waits for a job before it answers that there is none (as Faktory: a
/// worker fetches again at once, so answering sooner would make it spin).
pub const FETCH_WAIT: Duration = Duration::from_secs(2);

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
    /// Commands served.
    pub commands: AtomicU64,
    /// Connections open (after HELLO).
    pub connections: AtomicU64,
}

/// A worker process, known by the `wid` of its HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    Running,
}

/// The state every connection of one adapter shares.
pub struct Server {
    engine: Engine,
    settings: Settings,
    /// Counters for INFO.
    pub stats: Stats,
    workers: Mutex<HashMap<String, WorkerState>>,
    started: Instant,
}

impl Server {
    /// A server for `engine`.
    pub fn new(engine: Engine, settings: Settings) -> Server {
        Server {
            engine,
            settings,
            stats: Stats::default(),
            workers: Mutex::default(),
            started: Instant::now(),
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
                .or_insert(WorkerState::Running);
        }
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
    /// its `at`, durably, when that is later).
    async fn accept(&self, job: &mut Job) -> Result<(), String> {
        let now = now_ms();
        let due = job.validate(now)?;
        job.enqueued_at = rfc3339(now);
        let event = job
            .to_event()
            .map_err(|e| format!("weir cannot take the job: {e}"))?;
        if self.engine.functions().matching(&event).is_empty() {
            return Err(format!(
                "no weir function handles job type {} (trigger faktory/{}), and this weir does not keep jobs for Faktory workers yet",
                job.jobtype, job.jobtype
            ));
        }
        let ingested = match due {
            Some(due) => self.engine.ingest_at(vec![event], due).await,
            None => self.engine.ingest(vec![event]).await,
        };
        ingested.map_err(|e| format!("weir could not store the job: {e}"))?;
        self.stats.pushed.fetch_add(1, Ordering::Relaxed);
        self.stats.to_weir.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// `FETCH q1 q2 …`: no job is kept for workers yet, so after [`FETCH_WAIT`] (or at
    /// shutdown) the answer is that there is none.
    pub async fn fetch(&self, queues: &[&str], shutdown: &mut Shutdown) -> Reply {
        if queues.is_empty() {
            return Reply::error("must call fetch with at least one queue");
        }
        if let Some(bad) = queues.iter().find(|q| !valid_queue_name(q)) {
            return Reply::error(format!(
                "cannot get {bad:?} queue: queue names must match \\A[a-zA-Z0-9._-]+\\z"
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(FETCH_WAIT) => {}
            _ = shutdown.raised() => {}
        }
        Reply::Null
    }

    /// `ACK {"jid": …}`: an unknown jid is fine (as Faktory: the Rust worker stops on an error
    /// here).
    pub fn ack(&self, payload: &[u8]) -> Reply {
        match jid_of(payload) {
            Some(_) => Reply::Ok,
            None => Reply::error(format!("invalid ACK {}", shown(payload))),
        }
    }

    /// `FAIL {"jid": …}`: no job is reserved by a worker yet.
    pub fn fail(&self, payload: &[u8]) -> Reply {
        #[derive(Deserialize)]
        struct Failure {
            #[serde(default)]
            jid: String,
        }
        match serde_json::from_slice::<Failure>(payload) {
            Err(_) => Reply::error(format!("invalid FAIL {}", shown(payload))),
            Ok(f) if f.jid.is_empty() => Reply::error("missing JID"),
            Ok(f) => Reply::error(format!("Job not found {}", f.jid)),
        }
    }

    /// `BEAT {"wid": …}`: `+OK` while the worker may go on.
    pub fn beat(&self, payload: &[u8]) -> Reply {
        #[derive(Deserialize)]
        struct Beat {
            #[serde(default)]
            wid: String,
        }
        let Ok(beat) = serde_json::from_slice::<Beat>(payload) else {
            return Reply::error(format!("invalid BEAT {}", shown(payload)));
        };
        let known = self
            .workers
            .lock()
            .map(|w| w.get(&beat.wid).copied())
            .unwrap_or(None);
        match known {
            Some(WorkerState::Running) => Reply::Ok,
            None => Reply::error(format!("unknown worker {}", beat.wid)),
        }
    }

    /// `INFO`: the server's state, in Faktory's shape.
    pub fn info(&self) -> Reply {
        let now = now_ms();
        let stats = &self.stats;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let info = json!({
            "now": rfc3339(now),
            "server_utc_time": chrono::DateTime::from_timestamp_millis(now)
                .unwrap_or_default()
                .format("%H:%M:%S UTC")
                .to_string(),
            "faktory": {
                "total_failures": load(&stats.failed),
                "total_processed": load(&stats.acked) + load(&stats.failed),
                "total_enqueued": 0,
                "total_queues": 0,
                "queues": {},
                "tasks": {},
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
            },
        });
        Reply::Bulk(info.to_string().into_bytes())
    }

    /// `QUEUE PAUSE|RESUME|REMOVE q…`: no queue is kept yet, so there is nothing to change.
    pub fn queue(&self, op: &str, names: &[&str]) -> Reply {
        if !matches!(op, "PAUSE" | "RESUME" | "REMOVE") {
            return Reply::error(format!("QUEUE takes PAUSE, RESUME or REMOVE, not {op:?}"));
        }
        if names.is_empty() {
            return Reply::error(format!("QUEUE {op} needs queue names, or *"));
        }
        Reply::Ok
    }

    /// `MUTATE {…}`: checked as Faktory checks it; no retry, scheduled or dead job is kept
    /// yet, so there is nothing to change.
    pub fn mutate(&self, payload: &[u8]) -> Reply {
        #[derive(Deserialize)]
        struct Mutation {
            cmd: String,
            target: String,
        }
        match serde_json::from_slice::<Mutation>(payload) {
            Err(e) => Reply::error(e),
            Ok(m) if !matches!(m.cmd.as_str(), "kill" | "requeue" | "discard" | "clear") => {
                Reply::error("unknown mutate operation")
            }
            Ok(m) if !matches!(m.target.as_str(), "retries" | "scheduled" | "dead") => {
                Reply::error("invalid target for mutation command")
            }
            Ok(_) => Reply::Ok,
        }
    }
}

/// The `jid` of an `{"jid": …}` payload.
fn jid_of(payload: &[u8]) -> Option<String> {
    let value: HashMap<String, Value> = serde_json::from_slice(payload).ok()?;
    value.get("jid")?.as_str().map(str::to_string)
}

/// A payload as shown in an error: at most 200 characters of it.
fn shown(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).chars().take(200).collect()
}
