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

use crate::redis_envelope;
use crate::redis_queue::{RedisQueue, Taken};
use crate::results::{DEFAULT_RESULT_EXPIRES, RedisResults, TaskState};

/// How long a consumer's heartbeat lasts: a node that died holding messages has them handed
/// back this long after its last beat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The adapter of `celery+redis://` URLs.
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
        let Some(rest) = url.strip_prefix("celery+redis://") else {
            return Err(Error::config(
                "the Celery adapter takes celery+redis:// URLs",
            ));
        };
        let (base, _) = rest.split_once('?').unwrap_or((rest, ""));
        let broker = format!("redis://{base}");
        let (mut queue, mut results, mut lease) = (None, None, DEFAULT_LEASE);
        let params = QueryParams::parse("celery adapter", url, &["queue", "results", "lease"]);
        for param in &params {
            match param.name() {
                "queue" => queue = Some(param.value()?),
                "results" => results = Some(param.value()?),
                "lease" => lease = param.duration()?,
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

    /// Ingests the task of `taken` (or reports why it cannot run), then acks it; an error
    /// leaves it unacked (it is handed back when this consumer's heartbeat lapses).
    async fn handle(&self, engine: &Engine, taken: &Taken, shutdown: &Shutdown) -> Result<()> {
        let event = match redis_envelope::decode(&taken.entry).and_then(|m| m.to_event()) {
            Ok(event) => event,
            Err(refused) => {
                tracing::warn!(task_id = ?refused.task_id, reason = %refused.reason, "celery task refused");
                if let (Some(results), Some(task_id)) = (&self.results, &refused.task_id) {
                    let state = TaskState::Failure {
                        exc_type: "RefusedByWeir".into(),
                        exc_module: None,
                        message: refused.reason.clone(),
                    };
                    results.store(task_id, &state).await?;
                }
                self.queue.ack(taken).await?;
                return Ok(());
            }
        };
        // Stored and published before the ack: a crash in between takes the task again, and
        // its event id (the task id) starts no second run.
        loop {
            match engine.ingest(vec![event.clone()]).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && !shutdown.is_raised() => {
                    tracing::warn!(error = %e, "celery adapter: ingest failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.queue.ack(taken).await?;
        Ok(())
    }
}

/// The result of a finished run of a Celery task: the output of its last step (an object of
/// the outputs by step id when it has several last steps), or a failure naming the step.
pub fn run_result(engine: &Engine, run: &Run) -> TaskState {
    if run.status != RunStatus::Completed {
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
    let outputs: Map<String, Value> = leaves
        .iter()
        .filter_map(|id| {
            let step = run.steps.get(id)?;
            (step.status == StepStatus::Completed)
                .then(|| (id.clone(), step.output.clone().unwrap_or(Value::Null)))
        })
        .collect();
    match outputs.len() {
        1 => TaskState::Success(
            outputs
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or_default(),
        ),
        _ => TaskState::Success(Value::Object(outputs)),
    }
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
            Ok(f) => f.run_id,
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
        if let Err(e) = results.store(&run.event.id, &state).await {
            tracing::warn!(error = %e, task_id = run.event.id, "celery adapter: cannot store a result");
        }
    }
}

#[async_trait]
impl Adapter for CeleryRedisAdapter {
    fn name(&self) -> &str {
        "celery"
    }

    async fn run(&self, engine: Engine, mut shutdown: Shutdown) -> Result<()> {
        let beat_every = self.lease / 3;
        self.queue.heartbeat(self.lease).await?;
        self.queue.recover().await?;
        let writer = self
            .results
            .clone()
            .map(|results| tokio::spawn(write_results(engine.clone(), results, shutdown.clone())));
        let mut last_beat = tokio::time::Instant::now();
        let result = loop {
            if last_beat.elapsed() >= beat_every {
                if let Err(e) = self.queue.heartbeat(self.lease).await {
                    break Err(e);
                }
                if let Err(e) = self.queue.recover().await {
                    tracing::warn!(error = %e, "celery adapter: recovery failed");
                }
                last_beat = tokio::time::Instant::now();
            }
            let taken = tokio::select! {
                _ = shutdown.raised() => break Ok(()),
                taken = self.queue.take(beat_every.min(Duration::from_secs(1))) => taken,
            };
            match taken {
                Ok(Some(taken)) => {
                    if let Err(e) = self.handle(&engine, &taken, &shutdown).await {
                        tracing::warn!(error = %e, "celery adapter: a task stays unacked");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "celery adapter: taking from Redis failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        if let Some(writer) = writer {
            // It stops at shutdown; on an error of this loop it is stopped here.
            writer.abort();
            let _ = writer.await;
        }
        result
    }
}
