//! Jobs kept for Faktory workers (the job types no weir function handles), in the state
//! store's [`JobStore`], with Faktory's rules: a reservation of `reserve_for` seconds (default
//! 1,800, at least 60, at most 86,400), a FAIL (or a reservation that runs out) retried after
//! Faktory's backoff for `retry` attempts and then dead for 180 days, `retry: 0` dropped on
//! failure, `retry: -1` dead at once.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use weir_core::Result;
use weir_core::jobs::{JobSet, JobStore, Place, QueuedJob};

use crate::job::{Job, rfc3339};

/// A reservation's length when the job names none (seconds).
pub const DEFAULT_RESERVE_FOR: u64 = 1_800;

/// The shortest reservation (seconds): shorter ones are raised to it, as Faktory does.
pub const MIN_RESERVE_FOR: u64 = 60;

/// How long a dead job is kept.
pub const DEAD_FOR: Duration = Duration::from_secs(180 * 24 * 3600);

/// Longest error type, message (bytes) and backtrace (lines) a failure keeps, as Faktory.
const MAX_ERRTYPE: usize = 100;
const MAX_MESSAGE: usize = 1_000;
const MAX_BACKTRACE: usize = 50;

/// The job as the store keeps it: the jid, the queue, its reservation length and its JSON.
pub fn queued(job: &Job) -> QueuedJob {
    let reserve_for = match job.reserve_for {
        0 => DEFAULT_RESERVE_FOR,
        n => n.clamp(MIN_RESERVE_FOR as i64, crate::job::MAX_RESERVE_FOR as i64) as u64,
    };
    QueuedJob {
        id: job.jid.clone(),
        queue: job.queue.clone(),
        reserve_ms: reserve_for * 1_000,
        payload: serde_json::to_vec(job).unwrap_or_default().into(),
    }
}

/// Keeps `job` for the workers: on its queue, or scheduled for `due_ms`.
pub async fn keep(store: &dyn JobStore, job: &Job, due_ms: Option<i64>) -> Result<()> {
    let queued = queued(job);
    match due_ms {
        Some(due) => store.add_to_set(JobSet::Scheduled, &queued, due).await,
        None => store.enqueue(&queued).await,
    }
}

/// What a worker said of a failed job (FAIL's payload).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FailReport {
    /// The job.
    #[serde(default, deserialize_with = "crate::job::null_as_default")]
    pub jid: String,
    /// The error's type.
    #[serde(default, deserialize_with = "crate::job::null_as_default")]
    pub errtype: String,
    /// The error's message.
    #[serde(default, deserialize_with = "crate::job::null_as_default")]
    pub message: String,
    /// The backtrace, a line each.
    #[serde(default)]
    pub backtrace: Option<Vec<String>>,
}

impl FailReport {
    /// The report Faktory makes for a reservation that ran out.
    pub fn reservation_expired(jid: &str) -> FailReport {
        FailReport {
            jid: jid.to_string(),
            errtype: "ReservationExpired".into(),
            message: "Faktory job reservation expired".into(),
            backtrace: None,
        }
    }

    /// Trimmed as Faktory trims it: type and message without surrounding spaces, cut to
    /// 100 and 1,000 bytes (`unknown` when empty); at most 50 backtrace lines.
    fn cleansed(mut self) -> FailReport {
        self.errtype = cut(self.errtype.trim(), MAX_ERRTYPE, "unknown");
        self.message = cut(self.message.trim(), MAX_MESSAGE, "unknown");
        if let Some(lines) = &mut self.backtrace {
            lines.truncate(MAX_BACKTRACE);
        }
        self
    }
}

/// What became of a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// It is retried at this time (epoch ms).
    Retry(i64),
    /// It is dead.
    Dead,
    /// It is dropped (`retry: 0`).
    Dropped,
    /// It was not reserved (unknown, or already settled).
    NotFound,
}

/// Fails the reserved job `report.jid` as Faktory does: its `failure` recorded, then retried
/// after the backoff, dead, or dropped. Counted as processed and failed.
pub async fn fail(store: &dyn JobStore, report: FailReport, now_ms: i64) -> Result<Failed> {
    let report = report.cleansed();
    let Some(reservation) = store.reservation(&report.jid).await? else {
        return Ok(Failed::NotFound);
    };
    let mut job: Value =
        serde_json::from_slice(&reservation.job.payload).unwrap_or_else(|_| json!({}));
    let retry = job.get("retry").and_then(Value::as_i64).unwrap_or(0);
    let failure = next_failure(job.get("failure"), &report, retry, now_ms);
    let count = failure["retry_count"].as_i64().unwrap_or(0);
    let outcome = if retry == 0 {
        Failed::Dropped
    } else if count < retry {
        Failed::Retry(now_ms + backoff(count, rand::random_range(0..30)).as_millis() as i64)
    } else {
        Failed::Dead
    };
    let mut failure = failure;
    if let Failed::Retry(at) = outcome {
        failure["next_at"] = json!(rfc3339(at));
    }
    job["failure"] = failure;
    let payload = bytes::Bytes::from(serde_json::to_vec(&job).unwrap_or_default());
    let place = match outcome {
        Failed::Retry(at) => Place::Set(JobSet::Retries, at, payload),
        Failed::Dead => Place::Set(JobSet::Dead, now_ms + DEAD_FOR.as_millis() as i64, payload),
        Failed::Dropped | Failed::NotFound => Place::Gone,
    };
    // Of two FAILs at once (or a FAIL and the reaper), one settles the reservation.
    if !store.settle(&report.jid, place).await? {
        return Ok(Failed::NotFound);
    }
    // The job has moved: a total that cannot be counted is not the worker's error.
    if let Err(e) = store.record(1, 1).await {
        tracing::debug!(error = %e, "faktory adapter: cannot count a failure");
    }
    Ok(outcome)
}

/// The job's `failure` after one more: the first sets `retry_count` 0 and `failed_at`; later
/// ones count up and keep `failed_at`, as Faktory.
fn next_failure(previous: Option<&Value>, report: &FailReport, retry: i64, now_ms: i64) -> Value {
    let mut failure = match previous {
        Some(Value::Object(previous)) => {
            let mut failure = Value::Object(previous.clone());
            let count = previous
                .get("retry_count")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            failure["retry_count"] = json!(count.saturating_add(1));
            let remaining = previous
                .get("remaining")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            failure["remaining"] = json!(if remaining > 0 {
                remaining - 1
            } else {
                remaining
            });
            failure
        }
        _ => json!({"retry_count": 0, "remaining": retry, "failed_at": rfc3339(now_ms)}),
    };
    failure["message"] = json!(report.message);
    failure["errtype"] = json!(report.errtype);
    failure["backtrace"] = json!(report.backtrace.clone().unwrap_or_default());
    if let Some(object) = failure.as_object_mut() {
        object.remove("next_at");
    }
    failure
}

/// Faktory's backoff after the failure numbered `count` (0 for the first):
/// `count⁴ + 15 + jitter × (count + 1)` seconds, `jitter` in 0..30.
pub fn backoff(count: i64, jitter: u64) -> Duration {
    let count = count.clamp(0, 1_000) as u64;
    Duration::from_secs(count.pow(4) + 15 + jitter * (count + 1))
}

/// `text` cut to at most `max` bytes at a character boundary; `empty` when it is empty.
fn cut(text: &str, max: usize, empty: &str) -> String {
    if text.is_empty() {
        return empty.to_string();
    }
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Moves what is due (scheduled and retried jobs to their queues; dead jobs past their 180
/// days out), and fails the reservations that ran out, as Faktory's reaper does. Returns the
/// outcomes of those failures.
pub async fn maintain(store: &dyn JobStore, now_ms: i64) -> Result<Vec<Failed>> {
    const BATCH: usize = 100;
    for set in [JobSet::Scheduled, JobSet::Retries, JobSet::Dead] {
        while store.promote_due(set, now_ms, BATCH).await? >= BATCH {}
    }
    let mut failed = Vec::new();
    loop {
        let expired = store.expired(now_ms, BATCH).await?;
        let mut moved = 0;
        for reservation in &expired {
            let report = FailReport::reservation_expired(&reservation.job.id);
            // One job that cannot be failed does not stop the others.
            match fail(store, report, now_ms).await {
                Ok(Failed::NotFound) => {}
                Ok(outcome) => {
                    moved += 1;
                    failed.push(outcome);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    jid = reservation.job.id,
                    "faktory adapter: cannot fail an expired reservation"
                ),
            }
        }
        // A full page where nothing moved would come back the same: leave it for the next
        // pass.
        if expired.len() < BATCH || moved == 0 {
            return Ok(failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_is_faktorys() {
        assert_eq!(backoff(0, 0), Duration::from_secs(15));
        assert_eq!(backoff(0, 29), Duration::from_secs(44));
        assert_eq!(backoff(2, 10), Duration::from_secs(16 + 15 + 30));
        assert_eq!(backoff(24, 0).as_secs(), 331_776 + 15);
    }

    #[test]
    fn reports_are_trimmed_as_faktory_trims_them() {
        let report = FailReport {
            jid: "j".into(),
            errtype: "  ".into(),
            message: format!(" {} ", "é".repeat(600)),
            backtrace: Some((0..80).map(|i| i.to_string()).collect()),
        }
        .cleansed();
        assert_eq!(report.errtype, "unknown");
        assert!(report.message.len() <= 1000 && report.message.len() >= 998);
        assert!(report.message.starts_with('é'));
        assert_eq!(report.backtrace.map(|b| b.len()), Some(50));
    }

    #[test]
    fn failures_count_up_and_keep_the_first_time() {
        let report = FailReport {
            message: "boom".into(),
            errtype: "E".into(),
            ..FailReport::default()
        };
        let first = next_failure(None, &report, 3, 1_000);
        assert_eq!(first["retry_count"], 0);
        assert_eq!(first["remaining"], 3);
        let second = next_failure(Some(&first), &report, 3, 99_000);
        assert_eq!(second["retry_count"], 1);
        assert_eq!(second["remaining"], 2);
        assert_eq!(second["failed_at"], first["failed_at"]);
        assert_eq!(second["message"], "boom");
    }

    #[test]
    fn reservations_are_clamped() {
        let mut job = Job::parse(br#"{"jid":"12345678","jobtype":"x","args":[]}"#).unwrap();
        assert_eq!(queued(&job).reserve_ms, 1_800_000);
        job.reserve_for = 5;
        assert_eq!(queued(&job).reserve_ms, 60_000);
        job.reserve_for = 600;
        assert_eq!(queued(&job).reserve_ms, 600_000);
        job.reserve_for = -1;
        assert_eq!(queued(&job).reserve_ms, 60_000, "Faktory raises it to 60 s");
    }
}
