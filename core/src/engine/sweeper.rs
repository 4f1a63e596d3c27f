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

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

use super::Engine;
use crate::broker::TOPIC_STEPS;
use crate::error::{ErrorKind, Result};
use crate::event::now_ms;
use crate::pause::PauseStatus;
use crate::run::{HistoryEntry, Run, RunStatus, StepStatus};
use crate::state::{RunRef, StepMessage, Timer, TimerAction};

/// Runs examined per pass at most.
pub const SWEEP_BATCH: usize = 1000;

/// How long a pass may take at most (the sweep timer's lease is 10 s): the next pass goes on
/// from where it stopped.
const PASS_TIME: Duration = Duration::from_secs(5);

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
/// within the grace, an attempt under a live lease, a pause whose deadline is ahead); else one
/// message per queued, waiting (its retry's backoff is over), running (lease run out) and
/// finished step.
///
/// The grace is `grace_ms`, doubled for each `run.swept` entry the run ends with (a run the
/// sweeper could not move is looked at less and less often), and a step waiting for a retry
/// counts as live for `retry_max_ms` more (its timer is due by then at the latest).
pub fn stuck_messages(
    run: &Run,
    now_ms: i64,
    grace_ms: i64,
    retry_max_ms: i64,
) -> Option<Vec<StepMessage>> {
    if run.status != RunStatus::Running {
        return None;
    }
    let last = run
        .history
        .last()
        .map_or(run.created_at, |e| e.at)
        .max(run.created_at);
    let swept = run
        .history
        .iter()
        .rev()
        .take_while(|e| e.kind == "run.swept")
        .count()
        .min(6) as u32;
    let grace_ms = grace_ms.saturating_mul(1 << swept);
    let idle = now_ms.saturating_sub(last);
    if idle < grace_ms {
        return None;
    }
    let live_step = run.steps.values().any(|s| {
        (s.status == StepStatus::Waiting && idle < grace_ms.saturating_add(retry_max_ms))
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

/// One message per step of `run` whose message moves it on: queued and waiting steps (their
/// next attempt), running steps (their attempt, taken over once its lease ran out) and
/// finished steps (the executor redoes what follows them). Idempotent to send: a duplicate
/// finds its attempt started or ended. (Send a waiting step's only once its backoff is over.)
pub fn frontier_messages(run: &Run) -> Vec<StepMessage> {
    run.steps
        .iter()
        .filter_map(|(id, s)| {
            let attempt = match s.status {
                StepStatus::Queued | StepStatus::Waiting => s.attempts + 1,
                StepStatus::Running
                | StepStatus::Completed
                | StepStatus::Failed
                | StepStatus::Skipped => s.attempts.max(1),
                StepStatus::Pending | StepStatus::Cancelled => return None,
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
        if self.inner.unsweepable.load(Ordering::Relaxed) {
            return Ok(());
        }
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
        let runs = match state
            .running_runs(now - grace, cursor.as_ref(), SWEEP_BATCH)
            .await
        {
            Ok(runs) => runs,
            // A store that cannot be swept (a third party's): no more sweeps.
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                self.inner.unsweepable.store(true, Ordering::Relaxed);
                warn!(error = %e, "sweeper: this state store cannot be swept; stuck runs are not repaired");
                return Ok(SweepReport::default());
            }
            Err(e) => return Err(e),
        };
        let mut report = SweepReport::default();
        let started = std::time::Instant::now();
        let mut next = None;
        for r in &runs {
            // Within its timer's lease: another node would fire the timer again.
            if started.elapsed() > PASS_TIME {
                next = Some(r.clone());
                break;
            }
            report.examined += 1;
            match self.sweep_run(&r.id, now, grace).await {
                Ok(Swept::Alive) => {}
                Ok(Swept::Repaired) => report.repaired += 1,
                Ok(Swept::Failed) => report.failed += 1,
                // The store away: the pass ends here, and goes on from this run next time.
                Err(e) if e.is_retryable() => {
                    next = Some(r.clone());
                    warn!(error = %e, "sweeper: the pass stopped; the next goes on from here");
                    break;
                }
                // One run's trouble is not the others': counted, logged, passed over.
                Err(e) => {
                    self.inner
                        .metrics
                        .engine_error(crate::metrics::Role::Scheduler);
                    warn!(run = %r.id, error = %e, "sweeper: cannot examine a run; passed over");
                }
            }
        }
        // The cursor is the last run examined (so `next` above is one before the next to
        // examine); a short page was the end: the next pass starts from the oldest again.
        let next = match next {
            Some(stopped_at) => runs
                .iter()
                .take_while(|r| **r != stopped_at)
                .last()
                .cloned()
                .or(cursor),
            None if runs.len() < SWEEP_BATCH => None,
            None => runs.last().cloned(),
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
            Err(e) if !matches!(e.kind(), ErrorKind::Internal | ErrorKind::InvalidInput) => {
                return Err(e);
            }
            Err(e) => {
                // Stored data that does not decode. Failed only once it has been idle for the
                // grace (as what can be read of it says): a run the executor still moves is
                // left to it (its message becomes a dead letter if it cannot be handled).
                let idle_since = state
                    .get_run_outline(run_id)
                    .await?
                    .and_then(|o| o.history.last().map(|h| h.at).or(o.created_at));
                if idle_since.is_none_or(|at| now.saturating_sub(at) < grace_ms) {
                    return Ok(Swept::Alive);
                }
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
            .function_version(&run.function_id, &run.function_version)
            .await?
            .is_none()
        {
            // Pinned to a version this node has not loaded: a node that has it sweeps it.
            return Ok(Swept::Alive);
        }
        let retry_max = self.inner.config.retry_max.as_millis() as i64;
        let Some(messages) = stuck_messages(&run, now, grace_ms, retry_max) else {
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
                self.announce_failed(&run.id, Some(&run.function_id)).await;
            }
            return Ok(if failed { Swept::Failed } else { Swept::Alive });
        }
        let steps: Vec<&str> = messages.iter().map(|m| m.step_id.as_str()).collect();
        for m in &messages {
            self.inner
                .broker
                .publish(TOPIC_STEPS, &m.run_id, Bytes::from(serde_json::to_vec(m)?))
                .await?;
        }
        // Said once sent, so that the timeline never claims what did not happen.
        let mut entry = HistoryEntry::now("run.swept").detail(format!(
            "no progress for {} and nothing live that would move the run on: enqueued again {}",
            humantime::format_duration(idle),
            steps.join(", ")
        ));
        entry.at = now;
        state.append_timeline(&run.id, &entry).await?;
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
            fn_version: None,
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
        assert_eq!(stuck_messages(&r, 1500, 1000, 100), None, "recent progress");
        let messages = stuck_messages(&r, 2000, 1000, 100).expect("stuck");
        let sent: Vec<(&str, u32)> = messages
            .iter()
            .map(|m| (m.step_id.as_str(), m.attempt))
            .collect();
        assert_eq!(sent, [("a", 1), ("b", 1)]);
        let retrying = run(&[("a", Waiting, 1)], 0);
        assert_eq!(
            stuck_messages(&retrying, 5000, 1000, 10_000),
            None,
            "a retry timer"
        );
        let lost = stuck_messages(&retrying, 12_000, 1000, 10_000).expect("its timer is long due");
        assert_eq!(
            (lost[0].step_id.as_str(), lost[0].attempt),
            ("a", 2),
            "the next attempt"
        );
        let mut leased = run(&[("a", Running, 2)], 0);
        leased.steps.get_mut("a").unwrap().lease_until = Some(6000);
        assert_eq!(
            stuck_messages(&leased, 5000, 1000, 100),
            None,
            "a live lease"
        );
        let lapsed = stuck_messages(&leased, 7000, 1000, 100).expect("lapsed lease");
        assert_eq!(
            lapsed[0].attempt, 2,
            "the running attempt, to be taken over"
        );
        let mut done = run(&[("a", Completed, 1)], 0);
        done.status = RunStatus::Completed;
        assert_eq!(stuck_messages(&done, 9000, 1000, 100), None);
        // A run the sweeper could not move: looked at again after twice the grace, and so on.
        let mut swept = run(&[("b", Queued, 0)], 0);
        let mut entry = HistoryEntry::now("run.swept");
        entry.at = 1000;
        swept.history.push(entry);
        assert_eq!(stuck_messages(&swept, 2500, 1000, 100), None, "backs off");
        assert!(stuck_messages(&swept, 3000, 1000, 100).is_some());
    }
}
