//! The Celery adapter on kombu's Redis transport: `celery+redis://HOST:PORT/DB?queue=weir&results=…`.
//!
//! It takes the tasks of one queue ([`RedisQueue`]), turns each into its event and ingests it,
//! and acks the message once the event is stored; a message it cannot take (pickle, protocol 1,
//! …) gets a FAILURE result naming why and is acked. When a run of a `celery/…` event finishes
//! in this process, its result is written to the Redis result backend ([`RedisResults`]), so
//! the client's `AsyncResult.get()` returns it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use weir_core::adapter::{Adapter, Shutdown};
use weir_core::engine::Engine;
use weir_core::run::{Run, RunStatus, StepStatus};
use weir_core::url_query::QueryParams;
use weir_core::{Error, Result};

use crate::message::Refused;
use crate::redis_envelope;
use crate::redis_queue::{RedisQueue, Taken};
use crate::results::{DEFAULT_RESULT_EXPIRES, RedisResults, TaskState};

/// How long a consumer's heartbeat lasts: a node that died holding messages has them handed
/// back this long after its last beat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The shortest lease accepted: a heartbeat every second.
pub const MIN_LEASE: Duration = Duration::from_secs(3);

/// How often a failed Redis write (an ack, a result) is tried before it is left.
const WRITE_TRIES: u32 = 3;

/// The adapter of `celery+redis://` (and `celery+rediss://`) URLs.
#[derive(Debug)]
pub struct CeleryRedisAdapter {
    queue: RedisQueue,
    results: Option<RedisResults>,
    lease: Duration,
}

impl CeleryRedisAdapter {
    /// Opens the adapter of `url`: `celery+redis://[:PASSWORD@]HOST[:PORT][/DB]?queue=Q` with
    /// `results=redis://…` (percent-encoded; the Redis result backend the clients read) or
    /// `results=none`, and `lease=30s`.
    pub async fn open(url: &str) -> Result<Self> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("celery+redis://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("celery+rediss://") {
            ("rediss", rest)
        } else {
            return Err(Error::config(
                "the Celery adapter takes celery+redis:// and celery+rediss:// URLs",
            ));
        };
        let rest = rest.split_once('#').map_or(rest, |(rest, _)| rest);
        let (base, _) = rest.split_once('?').unwrap_or((rest, ""));
        if base.is_empty() || base.starts_with('/') {
            return Err(Error::config(
                "the Celery adapter URL has no host (celery+redis://HOST[:PORT][/DB]?queue=…)",
            ));
        }
        let broker = format!("{scheme}://{base}");
        let (mut queue, mut results, mut lease) = (None, None, DEFAULT_LEASE);
        let params = QueryParams::parse("celery adapter", url, &["queue", "results", "lease"]);
        for param in &params {
            match param.name() {
                "queue" => queue = Some(param.value()?),
                "results" => results = Some(param.value()?),
                "lease" => {
                    lease = param.duration()?;
                    if lease < MIN_LEASE {
                        return Err(param.invalid(format_args!(
                            "must be at least {MIN_LEASE:?}: a node beats every third of it"
                        )));
                    }
                }
                _ => return Err(param.unknown()),
            }
        }
        let queue = queue.ok_or_else(|| {
            params.error("queue is required: the Celery queue weir consumes (?queue=weir)")
        })?;
        let results = match results.as_deref() {
            None => {
                return Err(params.error(
                    "results is required: results=redis://… (the result backend the clients read) or results=none",
                ));
            }
            Some("none") => None,
            Some(results) => Some(RedisResults::connect(results, DEFAULT_RESULT_EXPIRES).await?),
        };
        let consumer = format!("weir-{}", ulid::Ulid::new());
        Ok(CeleryRedisAdapter {
            queue: RedisQueue::connect(&broker, &queue, &consumer).await?,
            results,
            lease,
        })
    }

    /// Ingests the task of `taken` and acks it; a task weir cannot take gets a FAILURE result
    /// and is acked; one whose ingest keeps failing (the state store or the broker down) goes
    /// back to the queue. Never leaves a message held.
    async fn handle(&self, engine: &Engine, taken: &Taken, shutdown: &Shutdown) {
        let decoded = redis_envelope::decode(&taken.entry)
            .and_then(|m| m.to_event())
            .and_then(|event| {
                let bytes = serde_json::to_vec(&event).map_or(0, |b| b.len());
                let max = engine.config().max_event_bytes;
                if bytes > max {
                    return Err(Refused {
                        task_id: Some(event.id.clone()),
                        reason: format!(
                            "the task's event is {bytes} bytes, over the {max} bytes weir takes"
                        ),
                    });
                }
                Ok(event)
            });
        let event = match decoded {
            Ok(event) => event,
            Err(refused) => {
                self.refuse(&refused).await;
                self.ack(taken, refused.task_id.as_deref()).await;
                return;
            }
        };
        // Stored and published before the ack: a crash in between takes the task again, and
        // its event id (the task id) starts no second run.
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match engine.ingest(vec![event.clone()]).await {
                Ok(_) => {
                    self.ack(taken, Some(&event.id)).await;
                    return;
                }
                Err(e) => e,
            };
            if !error.is_retryable() {
                let refused = Refused {
                    task_id: Some(event.id.clone()),
                    reason: format!("weir did not accept the task's event: {error}"),
                };
                self.refuse(&refused).await;
                self.ack(taken, Some(&event.id)).await;
                return;
            }
            if tries >= 8 || shutdown.is_raised() {
                tracing::warn!(error = %error, task_id = event.id, "celery adapter: ingest still failing; the task goes back to the queue");
                if let Err(e) = self.queue.release(taken).await {
                    tracing::warn!(error = %e, task_id = event.id, "celery adapter: cannot hand the task back; it returns when this node's lease lapses");
                }
                return;
            }
            tracing::warn!(error = %error, task_id = event.id, "celery adapter: ingest failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Reports a task weir does not run: a FAILURE result when the task id is known and
    /// results are written, a warning in any case.
    async fn refuse(&self, refused: &Refused) {
        tracing::warn!(task_id = ?refused.task_id, reason = %refused.reason, "celery task refused");
        if let (Some(results), Some(task_id)) = (&self.results, &refused.task_id) {
            let state = TaskState::Failure {
                exc_type: "RefusedByWeir".into(),
                exc_module: None,
                message: refused.reason.clone(),
            };
            store(results, task_id, &state).await;
        }
    }

    /// Acks `taken`, trying again on errors; a message it cannot ack is handed back when this
    /// node's lease lapses (its event id keeps it from starting a second run).
    async fn ack(&self, taken: &Taken, task_id: Option<&str>) {
        for tries in 1..=WRITE_TRIES {
            match self.queue.ack(taken).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        task_id,
                        "celery adapter: the task was handed back before its ack (this node's lease had lapsed); it will be taken again"
                    );
                    return;
                }
                Err(e) if tries < WRITE_TRIES => {
                    tracing::debug!(error = %e, task_id, "celery adapter: ack failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, task_id, "celery adapter: cannot ack the task");
                }
            }
        }
    }
}

/// Stores a result, trying again on errors.
async fn store(results: &RedisResults, task_id: &str, state: &TaskState) {
    for tries in 1..=WRITE_TRIES {
        match results.store(task_id, state).await {
            Ok(_) => return,
            Err(e) if tries < WRITE_TRIES => {
                tracing::debug!(error = %e, task_id, "celery adapter: storing a result failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, task_id, "celery adapter: cannot store the task's result");
            }
        }
    }
}

/// Beats every third of the lease and hands back dead consumers' tasks once per lease, until
/// shutdown; a failure is logged and tried again at the next beat.
async fn keep_alive(queue: RedisQueue, lease: Duration, mut shutdown: Shutdown) {
    let mut beats = tokio::time::interval(lease / 3);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut count: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.raised() => return,
            _ = beats.tick() => {}
        }
        if let Err(e) = queue.heartbeat(lease).await {
            tracing::warn!(error = %e, "celery adapter: heartbeat failed");
        }
        if count.is_multiple_of(3)
            && let Err(e) = queue.recover().await
        {
            tracing::warn!(error = %e, "celery adapter: handing back dead consumers' tasks failed");
        }
        count += 1;
    }
}

/// The result of a finished run of a Celery task: the output of its last step (an object of
/// the outputs by step id when it has several last steps), or a failure naming the step.
pub fn run_result(engine: &Engine, run: &Run) -> TaskState {
    let failed = match run.status {
        RunStatus::Completed => false,
        RunStatus::Failed | RunStatus::Running => true,
    };
    if failed {
        let failed = run
            .steps
            .iter()
            .find(|(_, s)| s.status == StepStatus::Failed);
        let message = match failed {
            Some((id, step)) => format!(
                "step {id} failed: {}",
                step.error.as_deref().unwrap_or("no error recorded")
            ),
            None => format!("the run ended {:?}", run.status),
        };
        return TaskState::Failure {
            exc_type: "StepFailed".into(),
            exc_module: None,
            message,
        };
    }
    let leaves: Vec<String> = match engine
        .functions()
        .get(&run.function_id, &run.function_version)
    {
        Some(function) => function
            .steps
            .iter()
            .enumerate()
            .filter(|(i, _)| !function.edges.iter().any(|e| e.parent == *i))
            .map(|(_, s)| s.id.clone())
            .collect(),
        None => run.steps.keys().cloned().collect(),
    };
    // A leaf skipped by a condition is null, so the shape depends on the function alone.
    let output_of = |id: &String| {
        run.steps
            .get(id)
            .filter(|s| s.status == StepStatus::Completed)
            .and_then(|s| s.output.clone())
            .unwrap_or(Value::Null)
    };
    match leaves.as_slice() {
        [only] => TaskState::Success(output_of(only)),
        _ => TaskState::Success(Value::Object(
            leaves
                .iter()
                .map(|id| (id.clone(), output_of(id)))
                .collect::<Map<String, Value>>(),
        )),
    }
}

/// Whether a run of `function_id` may have been triggered by a `celery/…` event: a trigger of
/// the function's live version can match one (a function no longer loaded: maybe).
fn may_be_celery(engine: &Engine, function_id: &str) -> bool {
    let Some(function) = engine.functions().live(function_id) else {
        return true;
    };
    function
        .trigger_names()
        .any(|pattern| match pattern.split_once('*') {
            Some((prefix, _)) => "celery/".starts_with(prefix) || prefix.starts_with("celery/"),
            None => pattern.starts_with("celery/"),
        })
}

/// Writes the result of every `celery/…` run that finishes in this process.
async fn write_results(engine: Engine, results: RedisResults, mut shutdown: Shutdown) {
    let mut finished = engine.subscribe_finished();
    loop {
        let next = tokio::select! {
            _ = shutdown.raised() => return,
            next = finished.recv() => next,
        };
        let run_id = match next {
            // Only runs a Celery task can have started are loaded (a round trip each).
            Ok(f) if may_be_celery(&engine, &f.function_id) => f.run_id,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "celery adapter: results of finished runs missed"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let run = match engine.state().get_run(&run_id).await {
            Ok(Some(run)) if run.event.name.starts_with("celery/") => run,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, run_id, "celery adapter: cannot read a finished run");
                continue;
            }
        };
        let state = run_result(&engine, &run);
        store(&results, &run.event.id, &state).await;
    }
}

#[async_trait]
impl Adapter for CeleryRedisAdapter {
    fn name(&self) -> &str {
        "celery"
    }

    async fn run(&self, engine: Engine, shutdown: Shutdown) -> Result<()> {
        self.queue.heartbeat(self.lease).await?;
        if let Err(e) = self.queue.recover().await {
            tracing::warn!(error = %e, "celery adapter: handing back dead consumers' tasks failed");
        }
        let keeper = tokio::spawn(keep_alive(self.queue.clone(), self.lease, shutdown.clone()));
        let writer = self
            .results
            .clone()
            .map(|results| tokio::spawn(write_results(engine.clone(), results, shutdown.clone())));
        // A take is never cut short (what it moved would be held by nobody): shutdown is
        // looked at between takes, which wait at most a second.
        while !shutdown.is_raised() {
            match self.queue.take(Duration::from_secs(1)).await {
                Ok(Some(taken)) => self.handle(&engine, &taken, &shutdown).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "celery adapter: taking from Redis failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let _ = keeper.await;
        match self.queue.release_all().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "celery adapter: tasks handed back at shutdown"),
            Err(e) => {
                tracing::warn!(error = %e, "celery adapter: cannot hand back at shutdown; the tasks return when the lease lapses")
            }
        }
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        Ok(())
    }
}
