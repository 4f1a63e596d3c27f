//! Task results as a Celery worker writes them, so unchanged clients read them
//! (`AsyncResult(id).get()`, `.state`).
//!
//! The Redis result backend keeps one key per task, `celery-task-meta-<id>`, holding the JSON
//! meta `{"status", "result", "traceback", "children", "date_done", "task_id"}`, written with
//! an expiry (`result_expires`, 1 day by default) and PUBLISHed on the channel of the same
//! name in the same pipeline: a client blocked in `.get()` is subscribed to it, and returns on
//! the message (without it, `.get()` waits for its timeout). A SUCCESS already stored is never
//! overwritten, as a worker does not.

use std::time::Duration;

use serde_json::{Value, json};
use weir_core::{Error, ErrorKind, Result};

/// How long results are kept by default: Celery's `result_expires`, one day.
pub const DEFAULT_RESULT_EXPIRES: Duration = Duration::from_secs(86_400);

/// The state of a task, as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// The task started (only with Celery's `task_track_started`).
    Started,
    /// The task waits to be tried again; `why` is the error of the last try.
    Retry {
        /// The error of the attempt that failed, as the client's exception message.
        why: String,
    },
    /// The task finished: its return value.
    Success(Value),
    /// The task failed: the client's `.get()` raises `exc_type(message)`; a type the client
    /// cannot import is made up by Celery, in `celery.exceptions`.
    Failure {
        /// The exception's class name (`StepFailed`, `NotRegistered`).
        exc_type: String,
        /// The module the client imports it from (`celery.exceptions`), if any.
        exc_module: Option<String>,
        /// The exception's message.
        message: String,
    },
    /// The task was revoked (it expired before it ran): `TaskRevokedError`.
    Revoked {
        /// Why (`expired`).
        reason: String,
    },
}

impl TaskState {
    /// Celery's name of the state (`SUCCESS`, `FAILURE`, …).
    pub fn status(&self) -> &'static str {
        match self {
            TaskState::Started => "STARTED",
            TaskState::Retry { .. } => "RETRY",
            TaskState::Success(_) => "SUCCESS",
            TaskState::Failure { .. } => "FAILURE",
            TaskState::Revoked { .. } => "REVOKED",
        }
    }

    /// Whether the task is over (the meta then has a `date_done`).
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            TaskState::Success(_) | TaskState::Failure { .. } | TaskState::Revoked { .. }
        )
    }

    /// The `result` of the meta: the value, an exception dict, or null.
    fn result(&self) -> Value {
        let exception = |exc_type: &str, module: Option<&str>, message: &str| json!({"exc_type": exc_type, "exc_message": [message], "exc_module": module});
        match self {
            TaskState::Started => json!({}),
            TaskState::Retry { why } => exception("Retry", Some("celery.exceptions"), why),
            TaskState::Success(value) => value.clone(),
            TaskState::Failure {
                exc_type,
                exc_module,
                message,
            } => exception(exc_type, exc_module.as_deref(), message),
            TaskState::Revoked { reason } => {
                exception("TaskRevokedError", Some("celery.exceptions"), reason)
            }
        }
    }
}

/// The meta of `task_id` in `state`, finished at `date_done` (ISO 8601) when it is ready.
pub fn meta(task_id: &str, state: &TaskState, date_done: &str) -> Value {
    json!({
        "status": state.status(),
        "result": state.result(),
        "traceback": Value::Null,
        "children": [],
        "date_done": if state.is_ready() { json!(date_done) } else { Value::Null },
        "task_id": task_id,
    })
}

/// Now as Python's `datetime.isoformat()` writes an aware UTC time
/// (`2026-12-07T02:52:46.421905+00:00`).
pub fn now_iso() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// The key recording that a task's follow-ups were sent.
fn follow_ups_sent_key(task_id: &str) -> String {
    format!("weir-celery:follow-ups-sent:{task_id}")
}

/// The key (and channel) of a task's result.
pub fn result_key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}

/// Stores the meta and publishes it, unless a SUCCESS is stored already, or the new state is
/// not a final one (ARGV[3] = 0: STARTED, RETRY) and a final one is stored (returns false
/// then: a late progress report never hides a result).
const STORE: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' then
    local status = decoded['status']
    if status == 'SUCCESS' then return 0 end
    if ARGV[3] == '0' and (status == 'FAILURE' or status == 'REVOKED') then return 0 end
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"#;

/// A Celery Redis result backend, written as a Celery worker writes it.
#[derive(Clone)]
pub struct RedisResults {
    conn: redis::aio::MultiplexedConnection,
    expires: Duration,
    script: redis::Script,
    claim_script: redis::Script,
}

impl std::fmt::Debug for RedisResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisResults")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl RedisResults {
    /// Connects to the result backend at `url` (`redis://…/1`); results expire after
    /// `expires` (zero: never), failures too (Celery's `result_failure_expires` is not
    /// separate here yet).
    pub async fn connect(url: &str, expires: Duration) -> Result<Self> {
        let shown = weir_core::redact::redact_url(url);
        let client = redis::Client::open(url).map_err(|e| {
            Error::config(format!("celery results: invalid Redis URL {shown}")).with_source(e)
        })?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&crate::redis_config())
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("celery results: cannot connect to {shown}"),
                )
                .with_source(e)
            })?;
        Ok(RedisResults {
            conn,
            expires,
            script: redis::Script::new(STORE),
            claim_script: redis::Script::new(CLAIM_FOLLOW_UPS),
        })
    }

    /// Stores `state` as the result of `task_id` and publishes it to the clients waiting on
    /// it; false when a SUCCESS was stored already (it is kept).
    pub async fn store(&self, task_id: &str, state: &TaskState) -> Result<bool> {
        let meta = meta(task_id, state, &now_iso()).to_string();
        let mut conn = self.conn.clone();
        let stored: i64 = self
            .script
            .key(result_key(task_id))
            .arg(meta)
            // Zero keeps results for good, as Celery's `result_expires = None` or 0 does; a
            // part of a second counts as a whole one.
            .arg(self.expires.as_secs() + u64::from(self.expires.subsec_nanos() > 0))
            .arg(u8::from(state.is_ready()))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("celery results: storing the result of {task_id} failed"),
                )
                .with_source(e)
            })?;
        Ok(stored == 1)
    }
}

/// Claims the sending of a task's follow-ups (KEYS[1] the claim, KEYS[2] the record that they
/// were sent; ARGV[1] how long the claim holds, ms): 1 when this caller sends them, 2 when they
/// were sent already, 0 when another caller holds the claim.
const CLAIM_FOLLOW_UPS: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"#;

/// What a claim on answering a finished task gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This caller answers the task. `follow_ups_sent`: its follow-ups went already (their
    /// sender died before writing the result, or the result was deleted since): only the
    /// result is owed.
    Won {
        /// Whether the follow-ups were sent already.
        follow_ups_sent: bool,
    },
    /// Another caller is answering it; its claim lapses if it dies, and the sweep then tries
    /// again.
    Held,
    /// It was answered.
    Answered,
}

impl RedisResults {
    /// Claims the sending of `task_id`'s follow-up tasks (a chain's next task, callbacks) for
    /// `hold`. [`Claim::Won`] with `follow_ups_sent` when they were sent already (a result
    /// deleted since, by `forget()` or eviction, does not make them go again), [`Claim::Held`]
    /// when another node is sending them (two nodes answering the same finished run do not
    /// both send; a claim whose holder died lapses).
    pub async fn claim_follow_ups(&self, task_id: &str, hold: Duration) -> Result<Claim> {
        let mut conn = self.conn.clone();
        let claimed: i64 = self
            .claim_script
            .key(format!("weir-celery:follow-ups-claim:{task_id}"))
            .key(follow_ups_sent_key(task_id))
            .arg(hold.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("celery results: claiming the follow-ups of {task_id} failed"),
                )
                .with_source(e)
            })?;
        Ok(match claimed {
            1 => Claim::Won {
                follow_ups_sent: false,
            },
            2 => Claim::Won {
                follow_ups_sent: true,
            },
            _ => Claim::Held,
        })
    }

    /// Records that `task_id`'s follow-ups were sent (kept as long as results are).
    pub async fn follow_ups_sent(&self, task_id: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut set = redis::cmd("SET");
        set.arg(follow_ups_sent_key(task_id)).arg(1);
        if !self.expires.is_zero() {
            set.arg("EX").arg(self.expires.as_secs().max(1));
        }
        set.query_async::<()>(&mut conn).await.map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("celery results: recording the follow-ups of {task_id} failed"),
            )
            .with_source(e)
        })
    }

    /// Whether a final state (SUCCESS, FAILURE, REVOKED) is stored for each of `task_ids`, in
    /// one round trip (a STARTED or RETRY is not one).
    pub async fn finished(&self, task_ids: &[&str]) -> Result<Vec<bool>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = task_ids.iter().map(|id| result_key(id)).collect();
        let mut conn = self.conn.clone();
        let metas: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    "celery results: looking for stored results failed",
                )
                .with_source(e)
            })?;
        Ok(metas
            .into_iter()
            .map(|meta| {
                meta.and_then(|m| serde_json::from_slice::<Value>(&m).ok())
                    .is_some_and(|m| {
                        matches!(
                            m["status"].as_str(),
                            Some("SUCCESS" | "FAILURE" | "REVOKED")
                        )
                    })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_what_a_celery_worker_writes() {
        let done = "2026-12-07T02:52:46.421905+00:00";
        assert_eq!(
            meta("t-1", &TaskState::Success(json!(5)), done),
            json!({"status": "SUCCESS", "result": 5, "traceback": null, "children": [],
                   "date_done": done, "task_id": "t-1"})
        );
        let failure = TaskState::Failure {
            exc_type: "NotRegistered".into(),
            exc_module: Some("celery.exceptions".into()),
            message: "tasks.nope".into(),
        };
        assert_eq!(
            meta("t-2", &failure, done)["result"],
            json!({"exc_type": "NotRegistered", "exc_message": ["tasks.nope"],
                   "exc_module": "celery.exceptions"})
        );
        let started = meta("t-3", &TaskState::Started, done);
        assert_eq!(started["status"], "STARTED");
        assert_eq!(started["date_done"], Value::Null);
        let revoked = meta(
            "t-4",
            &TaskState::Revoked {
                reason: "expired".into(),
            },
            done,
        );
        assert_eq!(revoked["result"]["exc_type"], "TaskRevokedError");
    }

    #[test]
    fn dates_are_written_as_python_writes_them() {
        let now = now_iso();
        assert_eq!(now.len(), "2026-12-07T02:52:46.421905+00:00".len(), "{now}");
        assert!(
            now.ends_with("+00:00") && now.as_bytes()[10] == b'T',
            "{now}"
        );
    }
}
