//! What the adapter does with one task message, whatever broker brought it: run it as a weir
//! run (now, or at its `eta`), revoke it (it expired), hand it on to the Celery workers (no weir
//! function handles it and `unhandled=requeue:<queue>`), or answer it with a FAILURE saying
//! why weir does not run it.
//!
//! Decided in one place so that every transport (Redis, AMQP) treats a task alike.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime};
use weir_core::Event;
use weir_core::adapter::Shutdown;
use weir_core::engine::Engine;

use crate::message::{Refused, TaskMessage};
use crate::results::TaskState;

/// What happens to a task no weir function handles (`unhandled=`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Unhandled {
    /// A FAILURE result `NotRegistered`, as a Celery worker that does not know the task writes
    /// (`unhandled=fail`, the default).
    #[default]
    Fail,
    /// Published unchanged to this queue, which Celery workers consume (`unhandled=requeue:Q`):
    /// nothing is lost while tasks move to weir one at a time.
    Requeue(String),
}

impl Unhandled {
    /// Parses the `unhandled` setting: `fail` or `requeue:<queue>`.
    pub fn parse(value: &str) -> Result<Unhandled, String> {
        match value {
            "fail" => Ok(Unhandled::Fail),
            _ => match value.strip_prefix("requeue:") {
                Some(queue) if !queue.is_empty() => Ok(Unhandled::Requeue(queue.to_string())),
                _ => Err(format!(
                    "{value:?} is neither fail nor requeue:<queue> (the queue a Celery worker consumes)"
                )),
            },
        }
    }
}

/// The decision about one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// Ingest the event; its run starts at `due_ms` (epoch milliseconds) when the task has an
    /// `eta` still to come, else at once.
    Run {
        /// The task's event.
        event: Event,
        /// When its run starts, if later than now.
        due_ms: Option<i64>,
    },
    /// Publish the message unchanged to `queue` (for a Celery worker).
    Requeue {
        /// The task id, for the log.
        task_id: String,
        /// Where it goes.
        queue: String,
    },
    /// Not run: `state` (a FAILURE or REVOKED) is the task's result, stored when the task id
    /// is known; `reason` is logged.
    Answer {
        /// The task id, when the message carries one.
        task_id: Option<String>,
        /// The result the client reads.
        state: TaskState,
        /// What happened, for the log.
        reason: String,
    },
}

impl Intake {
    /// The answer to a message weir cannot take (malformed, pickle, protocol 1, …).
    pub fn refused(refused: Refused) -> Intake {
        Intake::Answer {
            task_id: refused.task_id,
            state: TaskState::Failure {
                exc_type: "RefusedByWeir".into(),
                exc_module: None,
                message: refused.reason.clone(),
            },
            reason: refused.reason,
        }
    }
}

/// Decides what to do with `decoded`, taken from `queue`, at `now_ms`: an undecodable message is refused; an
/// expired one revoked (as a worker does; also when it would expire before its `eta`); a task
/// exactly one live weir function handles runs; one no function handles follows `unhandled`;
/// one several functions handle is refused (which one would be a guess).
pub fn decide(
    engine: &Engine,
    decoded: Result<TaskMessage, Refused>,
    queue: &str,
    unhandled: &Unhandled,
    max_event_bytes: usize,
    now_ms: i64,
) -> Intake {
    let message = match decoded {
        Ok(message) => message,
        Err(refused) => {
            // Not weir's to run anyway: hand it to the Celery workers, who may read it.
            if let (Unhandled::Requeue(queue), Some(task), Some(task_id)) =
                (unhandled, &refused.task, &refused.task_id)
                && !engine.functions().may_trigger(&format!("celery/{task}"))
            {
                return Intake::Requeue {
                    task_id: task_id.clone(),
                    queue: queue.clone(),
                };
            }
            return Intake::refused(refused);
        }
    };
    let refuse = |reason: String| {
        Intake::refused(Refused {
            task_id: Some(message.id.clone()),
            task: Some(message.task.clone()),
            reason,
        })
    };
    let eta = match message.eta.as_deref().map(parse_time).transpose() {
        Ok(eta) => eta,
        Err(e) => return refuse(format!("task {}: eta {e}", message.task)),
    };
    let expires = match message.expires.as_deref().map(parse_time).transpose() {
        Ok(expires) => expires,
        Err(e) => return refuse(format!("task {}: expires {e}", message.task)),
    };
    if let Some(expires) = expires
        && expires <= eta.unwrap_or(now_ms).max(now_ms)
    {
        let reason = if expires <= now_ms {
            "expired"
        } else {
            "expires before its eta"
        };
        return Intake::Answer {
            task_id: Some(message.id.clone()),
            state: TaskState::Revoked {
                reason: reason.into(),
            },
            reason: format!("task {} {reason}: revoked", message.task),
        };
    }
    let mut event = match message.to_event() {
        Ok(event) => event,
        Err(refused) => return Intake::refused(refused),
    };
    // The queue it came from: the adapter of that queue answers it (several adapters may run
    // in one process).
    if let Some(data) = event.data.as_object_mut() {
        data.insert("queue".into(), queue.into());
    }
    let bytes = serde_json::to_vec(&event).map_or(0, |b| b.len());
    if bytes > max_event_bytes {
        return refuse(format!(
            "task {}: its event is {bytes} bytes, over the {max_event_bytes} bytes weir takes",
            message.task
        ));
    }
    let handlers = engine.functions().matching(&event);
    match handlers.as_slice() {
        [_] => Intake::Run {
            event,
            due_ms: eta.filter(|eta| *eta > now_ms),
        },
        [] => match unhandled {
            Unhandled::Fail => Intake::Answer {
                task_id: Some(message.id.clone()),
                state: TaskState::Failure {
                    exc_type: "NotRegistered".into(),
                    exc_module: Some("celery.exceptions".into()),
                    message: message.task.clone(),
                },
                reason: format!(
                    "task {}: no weir function is triggered by {}",
                    message.task, event.name
                ),
            },
            Unhandled::Requeue(queue) => Intake::Requeue {
                task_id: message.id.clone(),
                queue: queue.clone(),
            },
        },
        several => {
            let ids: Vec<&str> = several.iter().map(|f| f.id.as_str()).collect();
            refuse(format!(
                "task {}: several weir functions are triggered by {} ({}); exactly one must handle a Celery task",
                message.task,
                event.name,
                ids.join(", ")
            ))
        }
    }
}

/// Epoch milliseconds of a Celery time: ISO 8601 with an offset, or without one (a naive
/// `eta=datetime(…)`), which is taken as UTC (Celery's default `timezone`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    // Python's isoformat() with an offset and a space separator.
    if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(t.timestamp_millis());
    }
    Err(format!("{text:?} is not an ISO 8601 time"))
}

/// What became of tasks' events handed to [`ingest`].
#[derive(Debug)]
pub enum Ingested {
    /// Stored (and published, or their timer set): the messages can be acked.
    Stored,
    /// Refused for the events' own fault (invalid, too large): retrying cannot help.
    Refused(weir_core::Error),
    /// The engine kept failing until shutdown: the messages go back to the queue.
    Stopping,
}

/// Ingests `events` (at `due_ms` when given). An error that is the engine's (a store or
/// broker down or misconfigured) is retried with a backoff for as long as it lasts, or until
/// shutdown: the messages stay with the adapter meanwhile (nacking them would count against a
/// quorum queue's delivery limit).
pub async fn ingest(
    engine: &Engine,
    events: &[Event],
    due_ms: Option<i64>,
    shutdown: &Shutdown,
) -> Ingested {
    let mut delay = Duration::from_millis(100);
    loop {
        let ingested = match due_ms {
            Some(due) => engine.ingest_at(events.to_vec(), due).await,
            None => engine.ingest(events.to_vec()).await,
        };
        match ingested {
            Ok(_) => return Ingested::Stored,
            Err(e) if crate::finished::is_the_events_fault(&e) => return Ingested::Refused(e),
            Err(e) if shutdown.is_raised() => {
                tracing::warn!(error = %e, tasks = events.len(), first_task = first_task(events), "celery adapter: ingest failing at shutdown; the tasks go back to the queue");
                return Ingested::Stopping;
            }
            Err(e) => {
                tracing::warn!(error = %e, tasks = events.len(), first_task = first_task(events), retry_in = ?delay, "celery adapter: ingest failed; the tasks are kept and tried again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The event id of the first of `events`, for logs.
fn first_task(events: &[Event]) -> &str {
    events.first().map_or("", |e| e.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celery_times_parse() {
        let utc = 1_796_615_566_421;
        assert_eq!(parse_time("2026-12-07T03:52:46.421905+00:00"), Ok(utc));
        assert_eq!(parse_time("2026-12-07T04:52:46.421905+01:00"), Ok(utc));
        assert_eq!(parse_time("2026-12-07T03:52:46.421905"), Ok(utc));
        assert_eq!(parse_time("2026-12-07 03:52:46.421905+00:00"), Ok(utc));
        assert_eq!(parse_time("2026-12-07T03:52:46+00:00"), Ok(utc - 421));
        assert!(parse_time("tomorrow").is_err());
    }

    #[test]
    fn unhandled_parses() {
        assert_eq!(Unhandled::parse("fail"), Ok(Unhandled::Fail));
        assert_eq!(
            Unhandled::parse("requeue:celery"),
            Ok(Unhandled::Requeue("celery".into()))
        );
        assert!(Unhandled::parse("requeue:").is_err());
        assert!(Unhandled::parse("drop").is_err());
    }
}
