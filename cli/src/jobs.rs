//! The jobs a state store keeps for outside workers (the Faktory adapter's), listed like runs:
//! `GET /v1/jobs` and `weir jobs`.
//!
//! Each job is `{"id", "queue", "state", "jobtype", "failures", "last_error", "at", "job"}`:
//! `state` is `queued`, `reserved`, `scheduled`, `retries` or `dead`; `at` is when a scheduled
//! or retried job is due, when a dead one goes, or when a reservation runs out (epoch ms);
//! `jobtype`, `failures` and `last_error` are read from the job's JSON (Faktory's `jobtype` and
//! `failure`) when it has them; `job` is the job itself. A listing filtered by queue looks at
//! no more than 10,000 entries of each state.

use std::fmt::Write as _;

use serde_json::{Value, json};
use weir_core::Result;
use weir_core::jobs::{JobSet, JobStore, QueuedJob};

/// The states a listing may ask for, in the order an unfiltered listing gives them.
pub const STATES: [&str; 5] = ["queued", "reserved", "scheduled", "retries", "dead"];

/// Up to `limit` jobs in `state` (every state when `None`), of `queue` when given.
pub async fn list(
    store: &dyn JobStore,
    state: Option<&str>,
    queue: Option<&str>,
    limit: usize,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for s in STATES {
        if state.is_some_and(|want| want != s) {
            continue;
        }
        let left = limit.saturating_sub(out.len());
        if left == 0 {
            break;
        }
        let keep = |job: &QueuedJob| queue.is_none_or(|q| q == job.queue);
        match s {
            "queued" => {
                let queues: Vec<String> = match queue {
                    Some(q) => vec![q.to_string()],
                    None => store
                        .counts()
                        .await?
                        .queues
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(q, _)| q)
                        .collect(),
                };
                for q in queues {
                    let left = limit.saturating_sub(out.len());
                    if left == 0 {
                        break;
                    }
                    for job in store.queue_jobs(&q, 0, left).await? {
                        out.push(view(&job, s, None));
                    }
                }
            }
            "reserved" => {
                // Read in pages, filtered by queue here, up to SCAN entries.
                let mut offset = 0;
                while out.len() < limit && offset < SCAN {
                    let page = store
                        .reservations(offset, page_size(queue, limit - out.len()))
                        .await?;
                    for r in page.iter().filter(|r| keep(&r.job)) {
                        if out.len() < limit {
                            out.push(view(&r.job, s, Some(r.expires_ms)));
                        }
                    }
                    if page.is_empty() {
                        break;
                    }
                    offset += page.len();
                }
            }
            _ => {
                let set = match s {
                    "scheduled" => JobSet::Scheduled,
                    "retries" => JobSet::Retries,
                    _ => JobSet::Dead,
                };
                let mut offset = 0;
                while out.len() < limit && offset < SCAN {
                    let page = store
                        .set_jobs(set, offset, page_size(queue, limit - out.len()))
                        .await?;
                    for (job, at) in page.iter().filter(|(j, _)| keep(j)) {
                        if out.len() < limit {
                            out.push(view(job, s, Some(*at)));
                        }
                    }
                    // A page shorter than asked may have skipped a record that went meanwhile:
                    // only an empty one ends the set.
                    if page.is_empty() {
                        break;
                    }
                    offset += page.len();
                }
            }
        }
    }
    Ok(out)
}

/// Jobs read from the store at a time, when filtering by queue.
const PAGE: usize = 1_000;

/// Entries of one state a listing looks at, at most: filtering a large dead set by queue stops
/// there.
const SCAN: usize = 10_000;

/// How many to read next: what is still wanted, or a page when a queue filter may drop some.
fn page_size(queue: Option<&str>, wanted: usize) -> usize {
    match queue {
        Some(_) => PAGE,
        None => wanted.min(PAGE),
    }
}

/// One job as the listing shows it.
fn view(job: &QueuedJob, state: &str, at: Option<i64>) -> Value {
    let body: Value = serde_json::from_slice(&job.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&job.payload).into_owned()));
    let failure = &body["failure"];
    let failures = failure["retry_count"].as_i64().map(|n| n + 1).unwrap_or(0);
    let last_error = match (failure["errtype"].as_str(), failure["message"].as_str()) {
        (Some(t), Some(m)) => json!(format!("{t}: {m}")),
        (None, Some(m)) | (Some(m), None) => json!(m),
        (None, None) => Value::Null,
    };
    json!({
        "id": job.id,
        "queue": job.queue,
        "state": state,
        "jobtype": body["jobtype"].as_str(),
        "failures": failures,
        "last_error": last_error,
        "at": at,
        "job": body,
    })
}

/// One line per job for `weir jobs`.
pub fn render(jobs: &[Value]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32}  {:<16}  {:<9}  {:<20}  {:>8}  LAST ERROR",
        "JOB", "QUEUE", "STATE", "JOBTYPE", "FAILURES"
    );
    for j in jobs {
        let text = |v: &Value| {
            v.as_str()
                .map(|t| crate::view::printable(t).into_owned())
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            out,
            "{:<32}  {:<16}  {:<9}  {:<20}  {:>8}  {}",
            text(&j["id"]),
            text(&j["queue"]),
            text(&j["state"]),
            text(&j["jobtype"]),
            j["failures"].as_i64().unwrap_or(0),
            text(&j["last_error"])
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_are_listed_by_state_and_queue_with_their_last_error() {
        let store = weir_state_memory::MemoryJobStore::default();
        let job = |id: &str, queue: &str, failure: Value| QueuedJob {
            id: id.into(),
            queue: queue.into(),
            reserve_ms: 60_000,
            payload: json!({"jid": id, "jobtype": "email", "failure": failure})
                .to_string()
                .into(),
        };
        store.enqueue(&job("q1", "a", Value::Null)).await.unwrap();
        store.enqueue(&job("q2", "b", Value::Null)).await.unwrap();
        let failed = json!({"retry_count": 1, "errtype": "E", "message": "boom"});
        store
            .add_to_set(JobSet::Retries, &job("r1", "a", failed), 5)
            .await
            .unwrap();
        let all = list(&store, None, None, 100).await.unwrap();
        let ids: Vec<&str> = all.iter().map(|j| j["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["q1", "q2", "r1"]);
        assert_eq!(all[2]["state"], "retries");
        assert_eq!(all[2]["failures"], 2);
        assert_eq!(all[2]["last_error"], "E: boom");
        assert_eq!(all[2]["at"], 5);
        let only_a = list(&store, None, Some("a"), 100).await.unwrap();
        assert_eq!(only_a.len(), 2);
        let queued = list(&store, Some("queued"), None, 1).await.unwrap();
        assert_eq!(queued.len(), 1, "the limit holds");
        let table = render(&all);
        assert!(
            table.contains("E: boom") && table.lines().count() == 4,
            "{table}"
        );
    }
}
