//! The sweeper: enforces "a running run always has something that will move it on" (a leased
//! attempt, a queued message, a timer, a pause). A run that has shown no progress for
//! `stuck_run_grace` and has nothing live (no attempt under a live lease, no retry timer, no
//! pause whose deadline is ahead) may have lost its message (a broker that dropped it, a node
//! that acked too early): the sweeper enqueues its steps again (queued steps, running steps
//! whose lease ran out, and finished steps, whose message makes the executor redo the moves
//! that follow them) — all idempotent. A run it cannot read is failed, saying why.
//!
//! Leader-less: a sweep is a timer (`sweep:<bucket>`, one per `sweep_every`), which one node's
//! scheduler claims; every scheduler makes sure the next one exists. A pass examines at most
//! [`SWEEP_BATCH`] runs and leaves a cursor in the state store, so that the next pass goes on
//! from there through many long-waiting runs.

use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

use super::Engine;
use crate::broker::TOPIC_STEPS;
use crate::error::Result;
use crate::event::now_ms;
use crate::pause::PauseStatus;
use crate::run::{HistoryEntry, Run, RunStatus, StepStatus};
use crate::state::{RunRef, StepMessage, Timer, TimerAction};

/// Runs examined per pass at most.
pub const SWEEP_BATCH: usize = 1000;

/// Where the sweep goes on from (a blob in the state store).
const CURSOR_BLOB: &str = "weir-sweeper-cursor";

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Runs examined.
    pub examined: usize,
    /// Runs whose steps were enqueued again.
    pub repaired: usize,
    /// Runs failed (their state could not be read, or nothing could move them).
    pub failed: usize,
}

/// The messages that would move `run` on if it is stuck: `None` when it is alive (progress
/// within `grace_ms`, an attempt under a live lease, a retry timer, a pause whose deadline is
/// ahead); else one message per queued, running (lease run out) and finished step.
pub fn stuck_messages(run: &Run, now_ms: i64, grace_ms: i64) -> Option<Vec<StepMessage>> {
    if run.status != RunStatus::Running {
        return None;
    }
    let last = run
        .history
        .last()
        .map_or(run.created_at, |e| e.at)
        .max(run.created_at);
    if now_ms.saturating_sub(last) < grace_ms {
        return None;
    }
    let live_step = run.steps.values().any(|s| {
        s.status == StepStatus::Waiting
            || (s.status == StepStatus::Running && s.lease_until.is_some_and(|l| l > now_ms))
    });
    // A pause's expiry timer fires at its deadline; one a grace past it is not firing.
    let live_pause = run.pauses.values().any(|p| {
        p.status == PauseStatus::Waiting && !p.cancels && p.expires_ms > now_ms - grace_ms
    });
    if live_step || live_pause {
        return None;
    }
    Some(frontier_messages(run))
}

/// One message per step of `run` whose message moves it on: queued steps (their next
/// attempt), running steps (their attempt, taken over once its lease ran out) and finished
/// steps (the executor redoes what follows them). Idempotent to send: a duplicate finds its
/// attempt started or ended.
pub fn frontier_messages(run: &Run) -> Vec<StepMessage> {
    run.steps
        .iter()
        .filter_map(|(id, s)| {
            let attempt = match s.status {
                StepStatus::Queued => s.attempts + 1,
                StepStatus::Running
                | StepStatus::Completed
                | StepStatus::Failed
                | StepStatus::Skipped => s.attempts.max(1),
                StepStatus::Pending | StepStatus::Waiting | StepStatus::Cancelled => return None,
            };
            Some(StepMessage {
                run_id: run.id.clone(),
                step_id: id.clone(),
                attempt,
            })
        })
        .collect()
}

/// The sweep timer of the bucket `bucket` (`sweep_every` long).
fn sweep_timer(bucket: i64, every_ms: i64) -> Timer {
    Timer {
        id: format!("sweep:{bucket}"),
        due_ms: bucket.saturating_mul(every_ms),
        action: TimerAction::Sweep { bucket },
    }
}

impl Engine {
    /// Makes sure the next sweep has a timer (idempotent: its id names its time bucket).
    pub async fn schedule_sweep(&self) -> Result<()> {
        let every = self.inner.config.sweep_every.as_millis().max(1) as i64;
        let next = now_ms() / every + 1;
        self.inner
            .state
            .schedule_timer(&sweep_timer(next, every))
            .await
    }

    /// One pass of the sweeper (see the module's doc).
    pub async fn sweep(&self) -> Result<SweepReport> {
        let state = &self.inner.state;
        let grace = self.inner.config.stuck_run_grace.as_millis() as i64;
        let now = now_ms();
        let cursor: Option<RunRef> = state
            .get_blob(CURSOR_BLOB)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
        let runs = state
            .running_runs(now - grace, cursor.as_ref(), SWEEP_BATCH)
            .await?;
        let mut report = SweepReport {
            examined: runs.len(),
            ..SweepReport::default()
        };
        for r in &runs {
            match self.sweep_run(&r.id, now, grace).await? {
                Swept::Alive => {}
                Swept::Repaired => report.repaired += 1,
                Swept::Failed => report.failed += 1,
            }
        }
        // A short page was the end: the next pass starts from the oldest again.
        let next = if runs.len() < SWEEP_BATCH {
            None
        } else {
            runs.last().cloned()
        };
        state
            .put_blob(
                CURSOR_BLOB,
                Bytes::from(serde_json::to_vec(&next)?),
                Duration::from_secs(86_400),
            )
            .await?;
        if report.repaired + report.failed > 0 {
            info!(?report, "sweeper: repaired or failed stuck runs");
        }
        Ok(report)
    }

    /// Examines one run; see [`stuck_messages`].
    async fn sweep_run(&self, run_id: &str, now: i64, grace_ms: i64) -> Result<Swept> {
        let state = &self.inner.state;
        let run = match state.get_run(run_id).await {
            Ok(Some(run)) => run,
            Ok(None) => return Ok(Swept::Alive),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                let detail = format!("the sweeper cannot read the run's stored state: {e}");
                warn!(run = run_id, error = %e, "sweeper: failing a run whose state does not decode");
                let failed = state.fail_run(run_id, &detail, now).await?;
                if failed {
                    self.inner.metrics.run_swept("failed");
                }
                return Ok(if failed { Swept::Failed } else { Swept::Alive });
            }
        };
        if self
            .inner
            .functions
            .get(&run.function_id, &run.function_version)
            .is_none()
        {
            // Pinned to a version this node has not loaded: a node that has it sweeps it.
            return Ok(Swept::Alive);
        }
        let Some(messages) = stuck_messages(&run, now, grace_ms) else {
            return Ok(Swept::Alive);
        };
        let idle = Duration::from_millis(grace_ms.max(0) as u64);
        if messages.is_empty() {
            let detail = format!(
                "stuck: no progress for {} and no step that could move the run on",
                humantime::format_duration(idle)
            );
            let failed = state.fail_run(&run.id, &detail, now).await?;
            if failed {
                self.inner.metrics.run_swept("failed");
            }
            return Ok(if failed { Swept::Failed } else { Swept::Alive });
        }
        let steps: Vec<&str> = messages.iter().map(|m| m.step_id.as_str()).collect();
        let mut entry = HistoryEntry::now("run.swept").detail(format!(
            "no progress for {} and nothing live that would move the run on: enqueued again {}",
            humantime::format_duration(idle),
            steps.join(", ")
        ));
        entry.at = now;
        if !state.append_timeline(&run.id, &entry).await? {
            return Ok(Swept::Alive);
        }
        for m in &messages {
            self.inner
                .broker
                .publish(TOPIC_STEPS, &m.run_id, Bytes::from(serde_json::to_vec(m)?))
                .await?;
        }
        warn!(run = %run.id, steps = ?steps, "sweeper: a stuck run's steps were enqueued again");
        self.inner.metrics.run_swept("repaired");
        Ok(Swept::Repaired)
    }
}

/// What the sweeper did with one run.
enum Swept {
    Alive,
    Repaired,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::run::StepState;

    fn run(steps: &[(&str, StepStatus, u32)], last_at: i64) -> Run {
        let event = Event::from_json(serde_json::json!({"name": "t/x"}), "").expect("event");
        let mut map = std::collections::BTreeMap::new();
        for (id, status, attempts) in steps {
            let mut s = StepState::pending();
            s.status = *status;
            s.attempts = *attempts;
            map.insert((*id).to_string(), s);
        }
        let mut entry = HistoryEntry::now("step.queued");
        entry.at = last_at;
        Run {
            id: "r".into(),
            key: "k".into(),
            function_id: "f".into(),
            function_version: "v".into(),
            event,
            status: RunStatus::Running,
            steps: map,
            created_at: 0,
            ended_at: None,
            history: vec![entry],
            pauses: Default::default(),
        }
    }

    #[test]
    fn a_run_is_stuck_only_when_idle_for_the_grace_with_nothing_live() {
        use StepStatus::*;
        let r = run(
            &[("a", Completed, 1), ("b", Queued, 0), ("c", Pending, 0)],
            1000,
        );
        assert_eq!(stuck_messages(&r, 1500, 1000), None, "recent progress");
        let messages = stuck_messages(&r, 2000, 1000).expect("stuck");
        let sent: Vec<(&str, u32)> = messages
            .iter()
            .map(|m| (m.step_id.as_str(), m.attempt))
            .collect();
        assert_eq!(sent, [("a", 1), ("b", 1)]);
        let retrying = run(&[("a", Waiting, 1)], 0);
        assert_eq!(stuck_messages(&retrying, 5000, 1000), None, "a retry timer");
        let mut leased = run(&[("a", Running, 2)], 0);
        leased.steps.get_mut("a").unwrap().lease_until = Some(6000);
        assert_eq!(stuck_messages(&leased, 5000, 1000), None, "a live lease");
        let lapsed = stuck_messages(&leased, 7000, 1000).expect("lapsed lease");
        assert_eq!(
            lapsed[0].attempt, 2,
            "the running attempt, to be taken over"
        );
        let mut done = run(&[("a", Completed, 1)], 0);
        done.status = RunStatus::Completed;
        assert_eq!(stuck_messages(&done, 9000, 1000), None);
    }
}
