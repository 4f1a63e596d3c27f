//! Runs: one execution of one function version for one triggering event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;

/// The state of a run as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are pending, queued or running.
    Running,
    /// Every step completed or was skipped.
    Completed,
    /// At least one step failed for good.
    Failed,
    /// Running, but only waiting: for events or for time (a pause), with no step queued,
    /// running or waiting for a retry. Shown in listings and views; stores keep such a run
    /// `Running` (see [`Run::shown_status`]).
    Waiting,
    /// Cancelled (by an event of the function's `cancel` rules, or by a call): its pending
    /// steps, pauses and timers were dropped.
    Cancelled,
}

impl RunStatus {
    /// The status as written in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Waiting => "waiting",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a status as [`RunStatus::as_str`] writes it.
    pub fn parse(s: &str) -> Option<RunStatus> {
        match s {
            "running" => Some(RunStatus::Running),
            "completed" => Some(RunStatus::Completed),
            "failed" => Some(RunStatus::Failed),
            "waiting" => Some(RunStatus::Waiting),
            "cancelled" => Some(RunStatus::Cancelled),
            _ => None,
        }
    }

    /// Whether the run has ended (completed, failed or cancelled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// The state of one step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not yet eligible: some incoming edges are unresolved.
    Pending,
    /// Eligible and enqueued on the `steps` topic.
    Queued,
    /// An attempt is executing.
    Running,
    /// Waiting for a timer (a retry backoff) before the next attempt.
    Waiting,
    /// Finished with an output.
    Completed,
    /// Failed for good (retries exhausted or a non-retriable failure).
    Failed,
    /// Will not run (an edge was not taken, or an ancestor failed or was skipped).
    Skipped,
    /// Dropped (or stopped, when it was running) because its run was cancelled.
    Cancelled,
}

impl StepStatus {
    /// Whether the step has reached a final state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Completed
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
        )
    }

    /// Parses a status as [`StepStatus::as_str`] writes it.
    pub fn parse(s: &str) -> Option<StepStatus> {
        Some(match s {
            "pending" => StepStatus::Pending,
            "queued" => StepStatus::Queued,
            "running" => StepStatus::Running,
            "waiting" => StepStatus::Waiting,
            "completed" => StepStatus::Completed,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            "cancelled" => StepStatus::Cancelled,
            _ => return None,
        })
    }

    /// The timeline entry kind of a step entering this status (`step.queued`, …).
    pub fn history_kind(self) -> &'static str {
        match self {
            StepStatus::Pending => "step.pending",
            StepStatus::Queued => "step.queued",
            StepStatus::Running => "step.started",
            StepStatus::Waiting => "step.waiting",
            StepStatus::Completed => "step.completed",
            StepStatus::Failed => "step.failed",
            StepStatus::Skipped => "step.skipped",
            StepStatus::Cancelled => "step.cancelled",
        }
    }

    /// The status as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Waiting => "waiting",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

/// One step's state inside a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// Where the step is.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The output of the completed step (or of the last failed attempt, when it had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why the last attempt failed, or why the step was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step's log (stderr) of its last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// While running: until when the attempt's holder has it (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
    /// Resolved incoming edges: parent step id → taken.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub edges: BTreeMap<String, bool>,
}

impl StepState {
    /// A fresh pending step.
    pub fn pending() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempts: 0,
            output: None,
            error: None,
            log: None,
            lease_until: None,
            edges: BTreeMap::new(),
        }
    }
}

/// What happened, for the run's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Epoch milliseconds.
    pub at: i64,
    /// `run.created`, `step.queued`, `step.started`, `step.completed`, `step.failed`,
    /// `step.retry_scheduled`, `step.skipped`, `run.completed`, `run.failed`.
    pub kind: String,
    /// The step concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Free text: an error, a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl HistoryEntry {
    /// A timeline entry of `kind` at the current time.
    pub fn now(kind: &str) -> Self {
        HistoryEntry {
            at: crate::event::now_ms(),
            kind: kind.to_string(),
            step: None,
            attempt: None,
            detail: None,
        }
    }

    /// Sets the step.
    pub fn step(mut self, step: &str) -> Self {
        self.step = Some(step.to_string());
        self
    }

    /// Sets the attempt.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Sets the detail text.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// A run, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// ULID of the run.
    pub id: String,
    /// Idempotency key: one run per key (function id, version and event id).
    pub key: String,
    /// The function's id.
    pub function_id: String,
    /// The function version the run is pinned to.
    pub function_version: String,
    /// The function version's number among its stored versions (`weir versions`), when the
    /// state store keeps versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fn_version: Option<u64>,
    /// The triggering event.
    pub event: Event,
    /// Where the run is.
    pub status: RunStatus,
    /// Every step of the function, by id.
    pub steps: BTreeMap<String, StepState>,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// The timeline.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// The run's waits (for events or for time) that began so far, by key (`step/ordinal`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pauses: BTreeMap<String, crate::pause::Pause>,
}

impl Run {
    /// The id of the run whose idempotency key is `key`, for the event `event_id`: a ULID whose
    /// 80 random bits are the start of the key's SHA-256 and whose time is the event id's when
    /// that is a ULID (ids weir assigns are), else 0. Every node routing the same event picks the
    /// same id, so a store can detect a duplicate run by its id alone (one lookup in the run's
    /// own keys), and run ids sort by when their events were accepted.
    pub fn id_for_key(key: &str, event_id: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let mut random = [0u8; 16];
        random[6..].copy_from_slice(&digest[..10]);
        let ms = ulid::Ulid::from_string(event_id).map_or(0, |u| u.timestamp_ms());
        ulid::Ulid::from_parts(ms, u128::from_be_bytes(random)).to_string()
    }

    /// The status to show: [`RunStatus::Waiting`] for a running run that only waits (a
    /// pause of its steps is waiting, and no step is queued, running or waiting for a retry),
    /// else the stored status.
    pub fn shown_status(&self) -> RunStatus {
        if self.status != RunStatus::Running {
            return self.status;
        }
        let pausing = self
            .pauses
            .values()
            .any(|p| !p.cancels && p.status == crate::pause::PauseStatus::Waiting);
        let busy = self.steps.values().any(|s| {
            matches!(
                s.status,
                StepStatus::Queued | StepStatus::Running | StepStatus::Waiting
            )
        });
        if pausing && !busy {
            RunStatus::Waiting
        } else {
            RunStatus::Running
        }
    }

    /// The run's summary, as listings show it.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            id: self.id.clone(),
            function_id: self.function_id.clone(),
            function_version: self.function_version.clone(),
            fn_version: self.fn_version,
            status: self.shown_status(),
            event_id: self.event.id.clone(),
            event_name: self.event.name.clone(),
            user: self.event.user_key(),
            created_at: self.created_at,
            ended_at: self.ended_at,
        }
    }

    /// The outputs of completed steps, as the `steps` variable of expressions and step input.
    pub fn outputs(&self) -> serde_json::Map<String, Value> {
        self.steps
            .iter()
            .filter_map(|(id, s)| match (s.status, &s.output) {
                (StepStatus::Completed, Some(out)) => Some((id.clone(), out.clone())),
                _ => None,
            })
            .collect()
    }
}

/// A run as listed (`weir runs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// Function id.
    pub function_id: String,
    /// Function version.
    pub function_version: String,
    /// The function version's number among its stored versions (`weir versions`), when the
    /// state store keeps versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fn_version: Option<u64>,
    /// Status.
    pub status: RunStatus,
    /// Triggering event id.
    pub event_id: String,
    /// Triggering event name.
    pub event_name: String,
    /// The user key of the triggering event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
}

/// A place in the run listing, which is newest first: by creation time, then by id (both
/// descending). Runs after it are older, or of the same millisecond with a smaller id.
/// Written `CREATED_AT:ID` (`?before=` of `GET /v1/runs`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunCursor {
    /// The run's creation time (epoch ms).
    pub created_at: i64,
    /// The run's id.
    pub id: String,
}

impl RunCursor {
    /// The place of `run`: the next page starts after it.
    pub fn of(run: &RunSummary) -> Self {
        RunCursor {
            created_at: run.created_at,
            id: run.id.clone(),
        }
    }

    /// Reads `CREATED_AT:ID`.
    pub fn parse(text: &str) -> Option<Self> {
        let (at, id) = text.split_once(':')?;
        Some(RunCursor {
            created_at: at.parse().ok()?,
            id: id.to_string(),
        })
    }
}

impl std::fmt::Display for RunCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.created_at, self.id)
    }
}

/// How many runs a filter matches, by status (`StateStore::count_runs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Running or waiting (the stores index both as running).
    pub running: u64,
    /// Completed.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Counting stopped at [`MAX_COUNTED_RUNS`] runs: the counts are at least these.
    pub capped: bool,
}

impl RunCounts {
    /// Counts one run in `status`.
    pub fn add(&mut self, status: RunStatus) {
        match status {
            RunStatus::Running | RunStatus::Waiting => self.running += 1,
            RunStatus::Completed => self.completed += 1,
            RunStatus::Failed => self.failed += 1,
            RunStatus::Cancelled => self.cancelled += 1,
        }
    }

    /// Every run counted.
    pub fn total(&self) -> u64 {
        self.running + self.completed + self.failed + self.cancelled
    }
}

/// The most runs `StateStore::count_runs` reads for one count, when it reads them one by one
/// (a filter by function or user).
pub const MAX_COUNTED_RUNS: usize = 100_000;

/// Filters for listing runs; every set field must match. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs of this function.
    pub function_id: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs whose event's user key is this.
    pub user: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
    /// Only runs created at or after this time (epoch ms).
    #[serde(default)]
    pub from_ms: Option<i64>,
    /// Only runs created before this time (epoch ms).
    #[serde(default)]
    pub to_ms: Option<i64>,
    /// Only runs that come after this one in the listing (older): the previous page's last
    /// run, to list the next page.
    #[serde(default)]
    pub before: Option<RunCursor>,
}

impl RunFilter {
    /// Whether `run` passes the filter.
    pub fn matches(&self, run: &RunSummary) -> bool {
        self.function_id
            .as_ref()
            .is_none_or(|f| *f == run.function_id)
            && self.status.is_none_or(|s| s == run.status)
            && self
                .user
                .as_ref()
                .is_none_or(|u| run.user.as_ref() == Some(u))
            && self.in_range(run.created_at, &run.id)
    }

    /// Whether a run created at `created_at` with id `id` is in the filter's time range and
    /// after its cursor.
    pub fn in_range(&self, created_at: i64, id: &str) -> bool {
        self.from_ms.is_none_or(|from| created_at >= from)
            && self.to_ms.is_none_or(|to| created_at < to)
            && self
                .before
                .as_ref()
                .is_none_or(|c| (created_at, id) < (c.created_at, c.id.as_str()))
    }

    /// The effective limit.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(100)
    }
}

#[cfg(test)]
mod tests {
    use super::Run;

    #[test]
    fn run_ids_come_from_keys_and_sort_by_event_time() {
        let event = ulid::Ulid::from_parts(1_700_000_000_000, 7).to_string();
        let a = Run::id_for_key(&format!("signup:v1:{event}"), &event);
        assert_eq!(a, Run::id_for_key(&format!("signup:v1:{event}"), &event));
        assert_ne!(a, Run::id_for_key(&format!("signup:v2:{event}"), &event));
        let time = |id: &str| ulid::Ulid::from_string(id).expect("a ULID").timestamp_ms();
        assert_eq!(time(&a), 1_700_000_000_000, "the event's time");
        let later = ulid::Ulid::from_parts(1_700_000_000_001, 7).to_string();
        assert!(Run::id_for_key(&format!("signup:v1:{later}"), &later) > a);
        // A producer's own event id (not a ULID): time 0, still one id per key.
        let own = Run::id_for_key("signup:v1:order-42", "order-42");
        assert_eq!(time(&own), 0);
        assert_eq!(own, Run::id_for_key("signup:v1:order-42", "order-42"));
        assert_ne!(own, Run::id_for_key("signup:v1:order-43", "order-43"));
    }
}
