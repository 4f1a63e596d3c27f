//! What happens once a task is answered: its result written where its client reads it (the
//! Redis result backend, or an `rpc://` reply), from the finished run or from the adapter's
//! own answer (refused, revoked, not registered).

use std::time::Duration;

use serde_json::{Map, Value};
use weir_core::adapter::Shutdown;
use weir_core::engine::Engine;
use weir_core::run::{Run, RunStatus, StepStatus};
use weir_core::{Event, Result};

use crate::results::{RedisResults, TaskState};
use crate::rpc_results::RpcResults;

/// How often a failed result write is tried before it is left.
const WRITE_TRIES: u32 = 3;

/// Where the results of the tasks weir runs go (`results=` of the adapter URL).
#[derive(Debug, Clone)]
pub enum Results {
    /// The Redis result backend (`results=redis://…`).
    Redis(RedisResults),
    /// A reply to each task's `reply_to` queue (`results=rpc`, RabbitMQ only).
    Rpc(RpcResults),
}

impl Results {
    /// Writes `state` as the result of `task_id`; `reply_to` is the task message's (`rpc://`
    /// replies go there; a task without one gets no reply, as a worker sends none).
    pub async fn store(
        &self,
        task_id: &str,
        reply_to: Option<&str>,
        state: &TaskState,
    ) -> Result<()> {
        match self {
            Results::Redis(redis) => redis.store(task_id, state).await.map(|_| ()),
            Results::Rpc(rpc) => match reply_to {
                Some(reply_to) => rpc.reply(reply_to, task_id, state).await,
                None => Ok(()),
            },
        }
    }
}

/// The task id a `celery/…` event's result is stored under: its data's `task_id` (the event
/// id has a suffix for a retried or replaced task), else the event id.
pub fn task_id_of(event: &Event) -> String {
    event.data["task_id"]
        .as_str()
        .unwrap_or(&event.id)
        .to_string()
}

/// Stores `state` as the result of the task of `event` (or of `task_id` when there is no
/// event), trying again on errors; a result that cannot be stored is logged.
pub async fn store(results: &Results, task_id: &str, reply_to: Option<&str>, state: &TaskState) {
    for tries in 1..=WRITE_TRIES {
        match results.store(task_id, reply_to, state).await {
            Ok(()) => return,
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
pub async fn write_results(engine: Engine, results: Results, mut shutdown: Shutdown) {
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
        let reply_to = run.event.data["reply_to"].as_str();
        store(&results, &task_id_of(&run.event), reply_to, &state).await;
    }
}
