//! The in-memory state store: runs, step transitions and a timer heap.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use async_trait::async_trait;
use parking_lot::Mutex;
use weir_core::dead::{DeadLetter, DeadLetterPage, MAX_DEAD_LETTERS};
use weir_core::pause::{Pause, PauseAnswer, PauseHit, PauseStatus};
use weir_core::run::{HistoryEntry, Run, RunFilter, RunStatus, RunSummary, StepState, StepStatus};
use weir_core::state::{
    AttemptOutcome, CancelRun, CreateRun, EdgeTally, RunOutline, RunRef, RunState, StartAttempt,
    StateStore, Timer, Transition,
};
use weir_core::{Error, Event, Result};

/// Runs and timers kept in memory.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    inner: Mutex<Inner>,
    jobs: std::sync::Arc<crate::jobs::MemoryJobStore>,
    catalog: std::sync::Arc<crate::catalog::MemoryCatalog>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<String, Run>,
    by_key: HashMap<String, String>,
    /// Run ids by creation time, then id: listing walks it backwards (newest first).
    created: BTreeSet<(i64, String)>,
    /// Finished runs by end time (epoch ms), oldest first: what the retention deletes.
    ended: BTreeSet<(i64, String)>,
    /// Timers by id, with the time they are due (or leased until, once claimed).
    timers: HashMap<String, (Timer, i64)>,
    due: BinaryHeap<Reverse<(i64, String)>>,
    /// Claim-checked payloads with the time they expire (epoch ms).
    blobs: HashMap<String, (bytes::Bytes, i64)>,
    /// Waiting pauses filed by (event name, match key).
    pauses: HashMap<(String, String), BTreeMap<String, Filed>>,
    /// Dead letters by id (ULIDs: oldest first).
    dead: BTreeMap<String, DeadLetter>,
    /// Failures counted per message key: (count, forgotten at epoch ms).
    failures: HashMap<String, (u32, i64)>,
}

/// A pause filed for one of its specs, by `pause id#spec`: (run id, pause key, spec).
type Filed = (String, String, usize);

impl Inner {
    /// The runs `filter` lists, newest first, from the cursor and time range on.
    fn listed<'a>(&'a self, filter: &'a RunFilter) -> impl Iterator<Item = &'a Run> + 'a {
        use std::ops::Bound;
        // (T, "") sorts before every id of T.
        let upper = match (&filter.before, filter.to_ms) {
            (Some(c), to) if to.is_none_or(|to| c.created_at < to) => {
                Bound::Excluded((c.created_at, c.id.clone()))
            }
            (_, Some(to)) => Bound::Excluded((to, String::new())),
            (_, None) => Bound::Unbounded,
        };
        let lower = Bound::Included((filter.from_ms.unwrap_or(i64::MIN), String::new()));
        let range = match (&lower, &upper) {
            // BTreeSet::range panics on a reversed range: an empty one instead.
            (Bound::Included(lo), Bound::Excluded(hi)) if lo > hi => None,
            _ => Some(self.created.range((lower, upper))),
        };
        range
            .into_iter()
            .flatten()
            .rev()
            .filter_map(|(_, id)| self.runs.get(id))
    }

    /// Files a run that has just finished under its end time, for the retention.
    fn file_ended(&mut self, run_id: &str) {
        if let Some(ended_at) = self.runs.get(run_id).and_then(|r| r.ended_at) {
            self.ended.insert((ended_at, run_id.to_string()));
        }
    }

    /// Schedules a timer unless one with its id exists.
    fn add_timer(&mut self, timer: &Timer) {
        if !self.timers.contains_key(&timer.id) {
            self.due.push(Reverse((timer.due_ms, timer.id.clone())));
            self.timers
                .insert(timer.id.clone(), (timer.clone(), timer.due_ms));
        }
    }
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of timers scheduled and not yet claimed.
    pub fn pending_timers(&self) -> usize {
        self.inner.lock().timers.len()
    }
}

fn open_steps(run: &Run) -> usize {
    run.steps
        .values()
        .filter(|s| !s.status.is_terminal())
        .count()
}

/// Finishes `run` (failed when any step failed) when no step is left open; answers the final
/// status when this call finished it.
fn finish_if_done(run: &mut Run) -> Option<RunStatus> {
    if run.status != RunStatus::Running || open_steps(run) > 0 {
        return None;
    }
    let failed = run.steps.values().any(|s| s.status == StepStatus::Failed);
    let status = if failed {
        RunStatus::Failed
    } else {
        RunStatus::Completed
    };
    finish(run, status);
    Some(status)
}

/// Moves a running run to its final status, with its timeline entry.
fn finish(run: &mut Run, status: RunStatus) {
    run.status = status;
    let entry = HistoryEntry::now(if status == RunStatus::Completed {
        "run.completed"
    } else {
        "run.failed"
    });
    run.ended_at = Some(entry.at);
    run.history.push(entry);
}

/// Applies `change` (true: it changed the pause) to the pause `key` of run `run_id` while the
/// run is running, with the timeline entry of the pause's end (`event`: the one that matched).
fn change_pause(
    inner: &mut Inner,
    run_id: &str,
    key: &str,
    event: Option<&Event>,
    change: impl FnOnce(&mut Pause) -> bool,
) -> PauseAnswer {
    let Some(run) = inner.runs.get_mut(run_id) else {
        return PauseAnswer {
            applied: false,
            pause: None,
        };
    };
    let running = run.status == RunStatus::Running;
    let Some(pause) = run.pauses.get_mut(key) else {
        return PauseAnswer {
            applied: false,
            pause: None,
        };
    };
    if !running {
        return ended_run_answer(pause);
    }
    let applied = change(pause);
    if applied && pause.status != PauseStatus::Waiting {
        run.history.push(pause.history_entry(event));
    }
    PauseAnswer {
        applied,
        pause: Some(pause.clone()),
    }
}

/// The answer about a pause of a run that no longer runs: a waiting one is answered
/// `Cancelled` (it can no longer end otherwise; the caller unfiles it), and nothing changes.
fn ended_run_answer(pause: &Pause) -> PauseAnswer {
    let mut pause = pause.clone();
    if pause.status == PauseStatus::Waiting {
        pause.status = PauseStatus::Cancelled;
    }
    PauseAnswer {
        applied: false,
        pause: Some(pause),
    }
}

fn step_mut<'a>(
    inner: &'a mut Inner,
    run_id: &str,
    step_id: &str,
) -> Result<(&'a mut Run, String)> {
    let run = inner
        .runs
        .get_mut(run_id)
        .ok_or_else(|| Error::new(weir_core::ErrorKind::NotFound, format!("no run {run_id:?}")))?;
    if !run.steps.contains_key(step_id) {
        return Err(Error::new(
            weir_core::ErrorKind::NotFound,
            format!("run {run_id:?} has no step {step_id:?}"),
        ));
    }
    Ok((run, step_id.to_string()))
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn create_run(&self, run: &Run) -> Result<CreateRun> {
        let mut inner = self.inner.lock();
        if let Some(id) = inner.by_key.get(&run.key) {
            let existing = inner.runs.get(id).cloned();
            if let Some(existing) = existing {
                return Ok(CreateRun::Exists(Box::new(existing)));
            }
        }
        if let Some(other) = inner.runs.get(&run.id) {
            return Err(Error::new(
                weir_core::ErrorKind::AlreadyExists,
                format!(
                    "run id {} of key {:?} is taken by key {:?} (run ids must come from Run::id_for_key)",
                    run.id, run.key, other.key
                ),
            ));
        }
        let mut run = run.clone();
        run.history.push(
            HistoryEntry::now("run.created")
                .detail(format!("event {} ({})", run.event.id, run.event.name)),
        );
        for (id, step) in &run.steps {
            if step.status == StepStatus::Queued {
                run.history.push(HistoryEntry::now("step.queued").step(id));
            }
        }
        inner.by_key.insert(run.key.clone(), run.id.clone());
        inner.created.insert((run.created_at, run.id.clone()));
        inner.runs.insert(run.id.clone(), run);
        Ok(CreateRun::Created)
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<Run>> {
        Ok(self.inner.lock().runs.get(run_id).cloned())
    }

    async fn get_run_state(&self, run_id: &str) -> Result<Option<RunState>> {
        let inner = self.inner.lock();
        Ok(inner.runs.get(run_id).map(RunState::of))
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let inner = self.inner.lock();
        Ok(inner
            .listed(filter)
            .map(Run::summary)
            .filter(|s| filter.matches(s))
            .take(filter.limit())
            .collect())
    }

    async fn count_runs(&self, filter: &RunFilter) -> Result<weir_core::run::RunCounts> {
        let inner = self.inner.lock();
        let everything = RunFilter {
            before: None,
            ..filter.clone()
        };
        let mut counts = weir_core::run::RunCounts::default();
        let user_of = |run: &Run| run.event.user_key();
        for run in inner.listed(&everything) {
            let passes = filter
                .function_id
                .as_ref()
                .is_none_or(|f| *f == run.function_id)
                && filter
                    .user
                    .as_ref()
                    .is_none_or(|u| user_of(run).as_ref() == Some(u));
            if !passes {
                continue;
            }
            if counts.total() as usize == weir_core::run::MAX_COUNTED_RUNS {
                counts.capped = true;
                break;
            }
            counts.add(run.status);
        }
        Ok(counts)
    }

    async fn start_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<StartAttempt> {
        let mut inner = self.inner.lock();
        let (run, step_id) = step_mut(&mut inner, run_id, step_id)?;
        let Some(step) = run.steps.get_mut(&step_id) else {
            return Ok(StartAttempt::Stale);
        };
        let fresh = matches!(step.status, StepStatus::Queued | StepStatus::Waiting)
            && step.attempts + 1 == attempt;
        let running_here = step.status == StepStatus::Running && step.attempts == attempt;
        let lease_until = step.lease_until.unwrap_or(0);
        let entry = if fresh {
            HistoryEntry::now("step.started")
                .step(&step_id)
                .attempt(attempt)
        } else if running_here && lease_until <= now_ms {
            HistoryEntry::now("step.started")
                .step(&step_id)
                .attempt(attempt)
                .detail("taken over: the lease of the previous holder expired")
        } else if running_here {
            return Ok(StartAttempt::Busy {
                lease_left_ms: lease_until - now_ms,
            });
        } else {
            return Ok(StartAttempt::Stale);
        };
        step.status = StepStatus::Running;
        step.attempts = attempt;
        step.lease_until = Some(now_ms + lease_ms);
        run.history.push(entry);
        Ok(StartAttempt::Started)
    }

    async fn renew_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        until_ms: i64,
    ) -> Result<bool> {
        let mut inner = self.inner.lock();
        let (run, step_id) = step_mut(&mut inner, run_id, step_id)?;
        let Some(step) = run.steps.get_mut(&step_id) else {
            return Ok(false);
        };
        if step.status != StepStatus::Running || step.attempts != attempt {
            return Ok(false);
        }
        step.lease_until = Some(until_ms);
        Ok(true)
    }

    async fn finish_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
    ) -> Result<Transition> {
        self.finish_attempt_with_pauses(run_id, step_id, attempt, outcome, &[])
            .await
    }

    async fn finish_attempt_with_pauses(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        pauses: &[Pause],
    ) -> Result<Transition> {
        let mut inner = self.inner.lock();
        let (run, step_id) = step_mut(&mut inner, run_id, step_id)?;
        let Some(step) = run.steps.get_mut(&step_id) else {
            return Ok(Transition {
                applied: false,
                open_steps: 0,
                finished: None,
            });
        };
        if step.status != StepStatus::Running || step.attempts != attempt {
            return Ok(Transition {
                applied: false,
                open_steps: open_steps(run),
                finished: None,
            });
        }
        step.lease_until = None;
        let entry = match outcome {
            AttemptOutcome::Completed { output, log } => {
                step.status = StepStatus::Completed;
                step.output = Some(output.clone());
                step.log = log.clone();
                step.error = None;
                let mut entry = HistoryEntry::now("step.completed")
                    .step(&step_id)
                    .attempt(attempt);
                // The pauses' waits count from the completion: one time for both.
                if let Some(p) = pauses.first() {
                    entry.at = p.registered_ms;
                }
                entry
            }
            AttemptOutcome::Failed { error, output, log } => {
                step.status = StepStatus::Failed;
                step.output = output.clone();
                step.log = log.clone();
                step.error = Some(error.clone());
                HistoryEntry::now("step.failed")
                    .step(&step_id)
                    .attempt(attempt)
                    .detail(error)
            }
        };
        let completed = matches!(outcome, AttemptOutcome::Completed { .. });
        run.history.push(entry);
        for pause in pauses.iter().filter(|_| completed) {
            if !run.pauses.contains_key(&pause.key()) {
                run.history.push(pause.history_entry(None));
                run.pauses.insert(pause.key(), pause.clone());
            }
        }
        let transition = Transition {
            finished: finish_if_done(run),
            applied: true,
            open_steps: open_steps(run),
        };
        if transition.finished.is_some() {
            inner.file_ended(run_id);
        }
        Ok(transition)
    }

    async fn retry_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &str,
        log: Option<&str>,
        timer: &Timer,
    ) -> Result<bool> {
        let mut inner = self.inner.lock();
        let (run, step_id) = step_mut(&mut inner, run_id, step_id)?;
        let Some(step) = run.steps.get_mut(&step_id) else {
            return Ok(false);
        };
        if step.status != StepStatus::Running || step.attempts != attempt {
            return Ok(false);
        }
        step.status = StepStatus::Waiting;
        step.lease_until = None;
        step.error = Some(error.to_string());
        step.log = log.map(str::to_string);
        run.history.push(
            HistoryEntry::now("step.retry_scheduled")
                .step(&step_id)
                .attempt(attempt)
                .detail(format!(
                    "{error}; attempt {} at {}",
                    attempt + 1,
                    timer.due_ms
                )),
        );
        inner.add_timer(timer);
        Ok(true)
    }

    async fn transition_step(
        &self,
        run_id: &str,
        step_id: &str,
        from: StepStatus,
        to: StepStatus,
        detail: Option<&str>,
    ) -> Result<Transition> {
        let mut inner = self.inner.lock();
        let (run, step_id) = step_mut(&mut inner, run_id, step_id)?;
        let Some(step) = run.steps.get_mut(&step_id) else {
            return Ok(Transition {
                applied: false,
                open_steps: 0,
                finished: None,
            });
        };
        if step.status != from {
            return Ok(Transition {
                applied: false,
                open_steps: open_steps(run),
                finished: None,
            });
        }
        step.status = to;
        if to == StepStatus::Skipped
            && let Some(d) = detail
        {
            step.error = Some(d.to_string());
        }
        let mut entry = HistoryEntry::now(to.history_kind()).step(&step_id);
        if let Some(d) = detail {
            entry = entry.detail(d);
        }
        run.history.push(entry);
        let transition = Transition {
            finished: finish_if_done(run),
            applied: true,
            open_steps: open_steps(run),
        };
        if transition.finished.is_some() {
            inner.file_ended(run_id);
        }
        Ok(transition)
    }

    async fn resolve_edge(
        &self,
        run_id: &str,
        child: &str,
        parent: &str,
        taken: bool,
    ) -> Result<EdgeTally> {
        let mut inner = self.inner.lock();
        let (run, child) = step_mut(&mut inner, run_id, child)?;
        let step: &mut StepState = run
            .steps
            .get_mut(&child)
            .ok_or_else(|| Error::internal("step vanished"))?;
        let recorded = !step.edges.contains_key(parent);
        if recorded {
            step.edges.insert(parent.to_string(), taken);
        }
        let taken_n = step.edges.values().filter(|t| **t).count();
        Ok(EdgeTally {
            recorded,
            taken: taken_n,
            not_taken: step.edges.len() - taken_n,
        })
    }

    async fn running_runs(
        &self,
        created_before_ms: i64,
        after: Option<&RunRef>,
        limit: usize,
    ) -> Result<Vec<RunRef>> {
        let inner = self.inner.lock();
        let mut found: Vec<RunRef> = inner
            .runs
            .values()
            .filter(|r| r.status == RunStatus::Running && r.created_at < created_before_ms)
            .map(|r| RunRef {
                created_at: r.created_at,
                id: r.id.clone(),
            })
            .filter(|r| after.is_none_or(|a| r > a))
            .collect();
        found.sort_unstable();
        found.truncate(limit);
        Ok(found)
    }

    async fn append_timeline(&self, run_id: &str, entry: &HistoryEntry) -> Result<bool> {
        let mut inner = self.inner.lock();
        match inner.runs.get_mut(run_id) {
            Some(run) if run.status == RunStatus::Running => {
                run.history.push(entry.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_run_outline(&self, run_id: &str) -> Result<Option<RunOutline>> {
        Ok(self.inner.lock().runs.get(run_id).map(|run| RunOutline {
            status: Some(run.status),
            created_at: Some(run.created_at),
            ended_at: run.ended_at,
            history: run.history.clone(),
        }))
    }

    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<()> {
        let mut inner = self.inner.lock();
        inner
            .dead
            .entry(dead.id.clone())
            .or_insert_with(|| dead.clone());
        while inner.dead.len() > MAX_DEAD_LETTERS {
            inner.dead.pop_first();
        }
        Ok(())
    }

    async fn list_dead_letters(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage> {
        let inner = self.inner.lock();
        let older = match before {
            Some(id) => inner
                .dead
                .range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(id))),
            None => inner.dead.range::<str, _>(..),
        };
        let mut items: Vec<DeadLetter> = older
            .rev()
            .take(limit + 1)
            .map(|(_, d)| d.clone())
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(DeadLetterPage { items, next })
    }

    async fn get_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
        Ok(self.inner.lock().dead.get(id).cloned())
    }

    async fn delete_dead_letter(&self, id: &str) -> Result<bool> {
        Ok(self.inner.lock().dead.remove(id).is_some())
    }

    async fn count_failure(&self, key: &str, ttl: std::time::Duration) -> Result<u32> {
        let now = weir_core::event::now_ms();
        let mut inner = self.inner.lock();
        if inner.failures.len() >= 1024 {
            inner.failures.retain(|_, (_, until)| *until > now);
        }
        let until = now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        let count = inner.failures.entry(key.to_owned()).or_insert((0, until));
        if count.1 <= now {
            count.0 = 0;
        }
        *count = (count.0 + 1, until);
        Ok(count.0)
    }

    async fn fail_run(&self, run_id: &str, detail: &str, now_ms: i64) -> Result<bool> {
        let mut inner = self.inner.lock();
        let Some(run) = inner.runs.get_mut(run_id) else {
            return Err(Error::new(
                weir_core::ErrorKind::NotFound,
                format!("no run {run_id:?}"),
            ));
        };
        if run.status != RunStatus::Running {
            return Ok(false);
        }
        run.status = RunStatus::Failed;
        run.ended_at = Some(now_ms);
        let mut entry = HistoryEntry::now("run.failed");
        entry.at = now_ms;
        entry.detail = Some(detail.to_owned());
        run.history.push(entry);
        inner.file_ended(run_id);
        Ok(true)
    }

    async fn reopen_run(
        &self,
        run_id: &str,
        failed_by: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let mut inner = self.inner.lock();
        let Some(run) = inner.runs.get_mut(run_id) else {
            return Err(Error::new(
                weir_core::ErrorKind::NotFound,
                format!("no run {run_id:?}"),
            ));
        };
        // Its last failing entry (steps that ended since may have added entries).
        let failed_so = run
            .history
            .iter()
            .rev()
            .find(|e| e.kind == "run.failed")
            .is_some_and(|e| e.detail.as_deref().is_some_and(|d| d.contains(failed_by)));
        if run.status != RunStatus::Failed || !failed_so {
            return Ok(false);
        }
        let ended_at = run.ended_at.take();
        run.status = RunStatus::Running;
        let mut entry = HistoryEntry::now("run.reopened");
        entry.at = now_ms;
        entry.detail = Some(detail.to_owned());
        run.history.push(entry);
        if let Some(at) = ended_at {
            inner.ended.remove(&(at, run_id.to_owned()));
        }
        Ok(true)
    }

    async fn finish_run(&self, run_id: &str, status: RunStatus) -> Result<bool> {
        let mut inner = self.inner.lock();
        let Some(run) = inner.runs.get_mut(run_id) else {
            return Err(Error::new(
                weir_core::ErrorKind::NotFound,
                format!("no run {run_id:?}"),
            ));
        };
        if run.status != RunStatus::Running || status == RunStatus::Running {
            return Ok(false);
        }
        finish(run, status);
        inner.file_ended(run_id);
        Ok(true)
    }

    async fn delete_finished_runs(&self, ended_before_ms: i64, limit: usize) -> Result<usize> {
        let mut inner = self.inner.lock();
        let mut deleted = 0;
        while deleted < limit {
            let Some((ended_at, id)) = inner.ended.first().cloned() else {
                break;
            };
            if ended_at >= ended_before_ms {
                break;
            }
            inner.ended.pop_first();
            if let Some(run) = inner.runs.remove(&id) {
                inner.by_key.remove(&run.key);
                inner.created.remove(&(run.created_at, id));
            }
            deleted += 1;
        }
        Ok(deleted)
    }

    async fn schedule_timer(&self, timer: &Timer) -> Result<()> {
        self.inner.lock().add_timer(timer);
        Ok(())
    }

    async fn claim_due_timers(
        &self,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<Timer>> {
        let mut inner = self.inner.lock();
        let mut out = Vec::new();
        while out.len() < limit {
            match inner.due.peek() {
                Some(Reverse((due, _))) if *due <= now_ms => {}
                _ => break,
            }
            let Some(Reverse((due, id))) = inner.due.pop() else {
                break;
            };
            let leased_until = now_ms + lease_ms;
            // Heap entries of completed or re-leased timers are stale: skip them.
            let Some((timer, current_due)) = inner.timers.get_mut(&id) else {
                continue;
            };
            if *current_due != due {
                continue;
            }
            *current_due = leased_until;
            out.push(timer.clone());
            inner.due.push(Reverse((leased_until, id)));
        }
        Ok(out)
    }

    async fn complete_timer(&self, timer_id: &str) -> Result<()> {
        self.inner.lock().timers.remove(timer_id);
        Ok(())
    }

    async fn put_blob(&self, id: &str, data: bytes::Bytes, ttl: std::time::Duration) -> Result<()> {
        let now = weir_core::event::now_ms();
        let mut inner = self.inner.lock();
        // Expired blobs go when the map doubles, so the sweep costs O(1) per put on average.
        if inner.blobs.len() >= 64 && inner.blobs.len().is_power_of_two() {
            inner.blobs.retain(|_, (_, expires)| *expires > now);
        }
        let expires = now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        inner.blobs.insert(id.to_string(), (data, expires));
        Ok(())
    }

    async fn watch_pauses(&self, pauses: &[Pause]) -> Result<()> {
        let mut inner = self.inner.lock();
        for pause in pauses {
            let waiting = inner
                .runs
                .get(&pause.run_id)
                .and_then(|r| r.pauses.get(&pause.key()))
                .is_some_and(|p| p.status == PauseStatus::Waiting);
            if !waiting {
                continue;
            }
            for (i, spec) in pause.specs.iter().enumerate() {
                inner
                    .pauses
                    .entry((spec.event.clone(), spec.key.clone()))
                    .or_default()
                    .insert(
                        format!("{}#{i}", pause.id()),
                        (pause.run_id.clone(), pause.key(), i),
                    );
            }
            inner.add_timer(&pause.expiry_timer());
        }
        Ok(())
    }

    async fn find_pauses(&self, name: &str, keys: &[String]) -> Result<Vec<PauseHit>> {
        let inner = self.inner.lock();
        let mut hits = Vec::new();
        for key in keys {
            let Some(filed) = inner.pauses.get(&(name.to_string(), key.clone())) else {
                continue;
            };
            // Filed pauses are answered until unfiled, ended or not (the engine follows an
            // ended one again: its follower may have failed).
            for (run_id, pause_key, spec) in filed.values() {
                let pause = inner.runs.get(run_id).and_then(|r| r.pauses.get(pause_key));
                if let Some(pause) = pause {
                    hits.push(PauseHit {
                        pause: pause.clone(),
                        spec: *spec,
                    });
                }
            }
        }
        Ok(hits)
    }

    async fn resume_pause(
        &self,
        run_id: &str,
        key: &str,
        spec: usize,
        event: &Event,
        now_ms: i64,
    ) -> Result<PauseAnswer> {
        let mut inner = self.inner.lock();
        Ok(change_pause(&mut inner, run_id, key, Some(event), |p| {
            p.record_match(spec, event, now_ms)
        }))
    }

    async fn expire_pause(&self, run_id: &str, key: &str, now_ms: i64) -> Result<PauseAnswer> {
        let mut inner = self.inner.lock();
        Ok(change_pause(&mut inner, run_id, key, None, |p| {
            p.end(PauseStatus::TimedOut, now_ms)
        }))
    }

    async fn unwatch_pause(&self, pause: &Pause) -> Result<()> {
        let mut inner = self.inner.lock();
        let id = pause.id();
        for (i, spec) in pause.specs.iter().enumerate() {
            let filed = (spec.event.clone(), spec.key.clone());
            if let Some(entries) = inner.pauses.get_mut(&filed) {
                entries.remove(&format!("{id}#{i}"));
                if entries.is_empty() {
                    inner.pauses.remove(&filed);
                }
            }
        }
        inner.timers.remove(&pause.expiry_timer().id);
        Ok(())
    }

    async fn cancel_run(&self, run_id: &str, detail: &str, now_ms: i64) -> Result<CancelRun> {
        let mut inner = self.inner.lock();
        let Some(run) = inner.runs.get_mut(run_id) else {
            return Ok(CancelRun {
                applied: false,
                status: None,
                pauses: Vec::new(),
            });
        };
        let pauses: Vec<Pause> = run.pauses.values().cloned().collect();
        if run.status != RunStatus::Running {
            return Ok(CancelRun {
                applied: false,
                status: Some(run.status),
                pauses,
            });
        }
        for step in run.steps.values_mut() {
            if !step.status.is_terminal() {
                step.status = StepStatus::Cancelled;
                step.lease_until = None;
            }
        }
        for pause in run.pauses.values_mut() {
            pause.end(PauseStatus::Cancelled, now_ms);
        }
        run.status = RunStatus::Cancelled;
        run.ended_at = Some(now_ms);
        let mut entry = HistoryEntry::now("run.cancelled");
        entry.at = now_ms;
        run.history.push(entry.detail(detail));
        inner.file_ended(run_id);
        Ok(CancelRun {
            applied: true,
            status: Some(RunStatus::Cancelled),
            pauses,
        })
    }

    async fn get_pause(&self, run_id: &str, key: &str) -> Result<Option<Pause>> {
        let inner = self.inner.lock();
        Ok(inner
            .runs
            .get(run_id)
            .and_then(|r| r.pauses.get(key))
            .cloned())
    }

    fn jobs(&self) -> Option<std::sync::Arc<dyn weir_core::jobs::JobStore>> {
        Some(self.jobs.clone())
    }

    fn catalog(&self) -> Option<std::sync::Arc<dyn weir_core::catalog::Catalog>> {
        Some(self.catalog.clone())
    }

    async fn claim_blob(
        &self,
        id: &str,
        data: bytes::Bytes,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let now = weir_core::event::now_ms();
        let mut inner = self.inner.lock();
        if inner
            .blobs
            .get(id)
            .is_some_and(|(_, expires)| *expires > now)
        {
            return Ok(false);
        }
        // As in `put_blob`: expired blobs go when the map doubles.
        if inner.blobs.len() >= 64 && inner.blobs.len().is_power_of_two() {
            inner.blobs.retain(|_, (_, expires)| *expires > now);
        }
        let expires = now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        inner.blobs.insert(id.to_string(), (data, expires));
        Ok(true)
    }

    async fn get_blob(&self, id: &str) -> Result<Option<bytes::Bytes>> {
        let now = weir_core::event::now_ms();
        let inner = self.inner.lock();
        Ok(inner
            .blobs
            .get(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(data, _)| data.clone()))
    }
}
