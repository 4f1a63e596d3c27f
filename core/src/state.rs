//! The `StateStore` trait: runs, step transitions and timers.
//!
//! Every transition is **idempotent and atomic**: two nodes (or tasks) attempting the same
//! transition cannot both win. The engine relies on the boolean / tally answers below to decide
//! who enqueues a step, who finishes a run, and which output is kept.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dead::{DeadLetter, DeadLetterPage};
use crate::error::Result;
use crate::event::Event;
use crate::pause::{Pause, PauseAnswer, PauseHit};
use crate::run::{Run, RunFilter, RunStatus, RunSummary, StepStatus};

/// The answer of [`StateStore::create_run`].
#[derive(Debug, Clone, PartialEq)]
pub enum CreateRun {
    /// The run was stored.
    Created,
    /// A run with the same key exists; here it is, unchanged.
    Exists(Box<Run>),
}

/// The answer of [`StateStore::start_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAttempt {
    /// This caller holds the attempt now.
    Started,
    /// Another node holds the attempt; its lease runs out in `lease_left_ms`.
    Busy {
        /// Milliseconds until the holder's lease expires.
        lease_left_ms: i64,
    },
    /// The message is stale: the step is not waiting for this attempt.
    Stale,
}

/// The answer of a step transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Whether this call made the transition (false: the step was not in the expected state).
    pub applied: bool,
    /// Steps of the run not yet in a terminal state, after the transition.
    pub open_steps: usize,
    /// Set when this transition closed the run's last open step: the store finished the run in
    /// the same atomic operation (`Failed` when any step failed, else `Completed`), so a run
    /// ends without a separate round trip. Stores must do this (the conformance suite checks).
    pub finished: Option<RunStatus>,
}

/// The answer of [`StateStore::cancel_run`].
#[derive(Debug, Clone, PartialEq)]
pub struct CancelRun {
    /// Whether this call cancelled the run.
    pub applied: bool,
    /// The run's status after the call; `None` when there is no such run.
    pub status: Option<RunStatus>,
    /// The run's pauses (its waits and cancel rules), as registered.
    pub pauses: Vec<Pause>,
}

/// The answer of [`StateStore::resolve_edge`]: the child's incoming-edge tally after recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeTally {
    /// Whether this call recorded the edge (false: it had been recorded before).
    pub recorded: bool,
    /// Incoming edges of the child resolved as taken so far.
    pub taken: usize,
    /// Incoming edges of the child resolved as not taken so far.
    pub not_taken: usize,
}

/// How a child joins its incoming edges, for [`StateStore::resolve_edge_and_join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRule {
    /// The child's number of incoming edges.
    pub parents: usize,
    /// `join: any` (run on the first taken edge) rather than `all`.
    pub any: bool,
    /// Re-deriving the decision for a node that died (decide from the tally even when the
    /// edge had been recorded before).
    pub recovering: bool,
}

impl JoinRule {
    /// The decision an edge resolution leads to: `Some(true)` queue the child, `Some(false)`
    /// skip it, `None` not decided yet (or decided by another edge).
    pub fn decide(&self, taken: bool, tally: &EdgeTally) -> Option<bool> {
        let resolved = tally.taken + tally.not_taken;
        if self.any {
            let first_taken = taken && tally.taken == 1;
            if tally.taken >= 1 && (first_taken || self.recovering) {
                Some(true)
            } else if resolved == self.parents && tally.taken == 0 {
                Some(false)
            } else {
                None
            }
        } else if resolved == self.parents {
            Some(tally.not_taken == 0)
        } else {
            None
        }
    }
}

/// The answer of [`StateStore::resolve_edge_and_join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeJoin {
    /// The child's tally after recording the edge.
    pub tally: EdgeTally,
    /// `Some(true)` the child is to be queued, `Some(false)` skipped, `None` undecided.
    pub decision: Option<bool>,
    /// The child's `pending → queued|skipped` transition, when a decision was made.
    pub transition: Option<Transition>,
}

/// How an attempt ended, as [`StateStore::finish_attempt`] records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The step completed with an output.
    Completed {
        /// The step's output.
        output: Value,
        /// The step's log (stderr).
        log: Option<String>,
    },
    /// The step failed for good.
    Failed {
        /// Why.
        error: String,
        /// The output of the failing attempt, if it printed one.
        output: Option<Value>,
        /// The step's log (stderr).
        log: Option<String>,
    },
}

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimerAction {
    /// Publish a step message (a retry after its backoff).
    EnqueueStep(StepMessage),
    /// Start a cron trigger's run for one tick, then schedule the next tick.
    CronTick(CronTick),
    /// Publish a message again: a delivery the broker could not redeliver itself after the
    /// delay asked (it cannot redeliver one message, or not that late).
    Republish(Republish),
    /// End a pause that is still waiting (its `ttl` ran out, or its sleep is over), and take
    /// the edges that follow.
    PauseExpires(crate::pause::PauseRef),
    /// A pass of the sweeper (see `engine::sweeper`); `bucket` names its time slot.
    Sweep {
        /// The slot: the due time divided by `sweep_every`.
        bucket: i64,
    },
}

/// A message to publish again, held by a timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Republish {
    /// The topic.
    pub topic: String,
    /// The message key.
    pub key: String,
    /// The payload (weir's topics carry JSON, so it is text).
    pub payload: String,
}

/// One tick of a function's cron trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronTick {
    /// The function.
    pub function_id: String,
    /// The schedule, as written in the trigger.
    pub cron: String,
    /// The tick, epoch milliseconds.
    pub due_ms: i64,
}

/// A message on the `steps` topic: run attempt `attempt` of `step_id` in `run_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMessage {
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The attempt number, from 1.
    pub attempt: u32,
}

/// The part of a run a step attempt needs (see [`StateStore::get_run_state`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    /// Run id.
    pub id: String,
    /// Function id.
    pub function_id: String,
    /// The pinned function version.
    pub function_version: String,
    /// Run status.
    pub status: RunStatus,
    /// The triggering event.
    pub event: crate::event::Event,
    /// Outputs of the completed steps, by id.
    pub outputs: serde_json::Map<String, Value>,
}

impl RunState {
    /// The run state of a whole run.
    pub fn of(run: &Run) -> RunState {
        RunState {
            id: run.id.clone(),
            function_id: run.function_id.clone(),
            function_version: run.function_version.clone(),
            status: run.status,
            event: run.event.clone(),
            outputs: run.outputs(),
        }
    }
}

/// A timer held by the state store; fires once, on any node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// Unique id: scheduling the same id twice keeps one timer.
    pub id: String,
    /// When it is due, epoch milliseconds.
    pub due_ms: i64,
    /// What to do.
    pub action: TimerAction,
}

/// Durable state of runs and timers.
///
/// Contract (checked by the conformance suite, `testkit::state`): several engine processes
/// share one store and race on the same run, so every transition is a compare-and-set that
/// says whether *this* call applied it (two callers never both win); a transition appends to
/// the run's history itself; timers fire once across all processes. Errors are weir errors:
/// an unreachable store is [`ErrorKind::Unavailable`] (retryable: the engine handles the
/// message again soon), anything retrying cannot cure is permanent.
///
/// [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Stores a new run unless a run with the same `key` exists (then returns it). The engine
    /// derives run ids from keys ([`Run::id_for_key`]), so a store may find the duplicate by id.
    async fn create_run(&self, run: &Run) -> Result<CreateRun>;

    /// Loads a run with its steps and history.
    async fn get_run(&self, run_id: &str) -> Result<Option<Run>>;

    /// Loads what executing a step needs: the run's function version, status, event and the
    /// outputs of its completed steps (no history). Stores should answer it in one round trip;
    /// the default loads the whole run.
    async fn get_run_state(&self, run_id: &str) -> Result<Option<RunState>> {
        Ok(self.get_run(run_id).await?.as_ref().map(RunState::of))
    }

    /// Lists runs matching `filter`, newest first: by creation time, then by id (see
    /// [`RunCursor`](crate::run::RunCursor), which `filter.before` pages with).
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>>;

    /// How many runs match `filter` (its function, user and time range; not its status,
    /// limit or cursor), by status. Counting stops at
    /// [`MAX_COUNTED_RUNS`](crate::run::MAX_COUNTED_RUNS) (`capped`). The default lists them.
    async fn count_runs(&self, filter: &RunFilter) -> Result<crate::run::RunCounts> {
        let all = RunFilter {
            status: None,
            before: None,
            limit: Some(crate::run::MAX_COUNTED_RUNS + 1),
            ..filter.clone()
        };
        let runs = self.list_runs(&all).await?;
        let mut counts = crate::run::RunCounts {
            capped: runs.len() > crate::run::MAX_COUNTED_RUNS,
            ..Default::default()
        };
        for run in runs.iter().take(crate::run::MAX_COUNTED_RUNS) {
            counts.add(run.status);
        }
        Ok(counts)
    }

    /// Starts attempt `attempt`, leased until `now_ms + lease_ms`:
    /// - `Queued | Waiting` with `attempts == attempt - 1` → `Running`: [`StartAttempt::Started`];
    /// - `Running` at this attempt with an expired lease (its node died): taken over,
    ///   [`StartAttempt::Started`] again (the attempt runs twice; its first result wins);
    /// - `Running` at this attempt with a live lease: [`StartAttempt::Busy`];
    /// - anything else (done, superseded, not yet eligible): [`StartAttempt::Stale`].
    async fn start_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<StartAttempt>;

    /// [`StateStore::start_attempt`] and [`StateStore::get_run_state`] together (the state as of
    /// the start): what the executor needs for one step message. Stores should answer it in one
    /// round trip; the default makes both calls. `(Stale, None)` when the run does not exist.
    async fn start_attempt_with_state(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<(StartAttempt, Option<RunState>)> {
        let Some(state) = self.get_run_state(run_id).await? else {
            return Ok((StartAttempt::Stale, None));
        };
        let started = self
            .start_attempt(run_id, step_id, attempt, now_ms, lease_ms)
            .await?;
        Ok((started, Some(state)))
    }

    /// Extends the lease of a running attempt to `until_ms`; false when the step is no longer
    /// running at that attempt.
    async fn renew_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        until_ms: i64,
    ) -> Result<bool>;

    /// Ends attempt `attempt` for good: `Running` at that attempt → `Completed | Failed`.
    /// The first writer wins; later calls return `applied: false` and change nothing.
    async fn finish_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
    ) -> Result<Transition>;

    /// Ends attempt `attempt` with a retryable failure: `Running` → `Waiting`, recording the
    /// error and log, and schedules `timer` in the same atomic step. False if not applied.
    async fn retry_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &str,
        log: Option<&str>,
        timer: &Timer,
    ) -> Result<bool>;

    /// Moves a step `from` → `to` (e.g. `Pending` → `Queued`, `Pending` → `Skipped`) if it is in
    /// `from`; `detail` goes into the timeline entry.
    async fn transition_step(
        &self,
        run_id: &str,
        step_id: &str,
        from: StepStatus,
        to: StepStatus,
        detail: Option<&str>,
    ) -> Result<Transition>;

    /// Records that the edge `parent → child` resolved (`taken` or not); idempotent per edge.
    async fn resolve_edge(
        &self,
        run_id: &str,
        child: &str,
        parent: &str,
        taken: bool,
    ) -> Result<EdgeTally>;

    /// Records edge `parent → child` and applies the child's join rule in one step: when the
    /// edge decides the join, moves the child `pending → queued` (or `pending → skipped`, with
    /// `skip_reason`). Stores should do it in one round trip; the default composes
    /// [`StateStore::resolve_edge`] and [`StateStore::transition_step`].
    async fn resolve_edge_and_join(
        &self,
        run_id: &str,
        child: &str,
        parent: &str,
        taken: bool,
        rule: JoinRule,
        skip_reason: &str,
    ) -> Result<EdgeJoin> {
        let tally = self.resolve_edge(run_id, child, parent, taken).await?;
        if !tally.recorded && !rule.recovering {
            return Ok(EdgeJoin {
                tally,
                decision: None,
                transition: None,
            });
        }
        let decision = rule.decide(taken, &tally);
        let transition = match decision {
            Some(true) => Some(
                self.transition_step(run_id, child, StepStatus::Pending, StepStatus::Queued, None)
                    .await?,
            ),
            Some(false) => Some(
                self.transition_step(
                    run_id,
                    child,
                    StepStatus::Pending,
                    StepStatus::Skipped,
                    Some(skip_reason),
                )
                .await?,
            ),
            None => None,
        };
        Ok(EdgeJoin {
            tally,
            decision,
            transition,
        })
    }

    /// Marks the run finished (`Running` → `status`); true for the one call that did it. Calling
    /// it again on a finished run changes nothing but may repair derived data (indexes).
    async fn finish_run(&self, run_id: &str, status: RunStatus) -> Result<bool>;

    /// Lists up to `limit` runs that ended in `from_ms..=to_ms` (epoch ms), earliest end first
    /// (for adapters that answer finished runs, e.g. a sweep for results a node did not
    /// write). The default filters [`StateStore::list_runs`] (at most the newest 10,000 runs);
    /// a store that indexes runs by end time answers from that index.
    async fn list_ended(&self, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<RunSummary>> {
        let filter = crate::run::RunFilter {
            limit: Some(10_000),
            ..Default::default()
        };
        let mut runs: Vec<RunSummary> = self
            .list_runs(&filter)
            .await?
            .into_iter()
            .filter(|r| r.ended_at.is_some_and(|t| (from_ms..=to_ms).contains(&t)))
            .collect();
        runs.sort_by(|a, b| (a.ended_at, &a.id).cmp(&(b.ended_at, &b.id)));
        runs.truncate(limit);
        Ok(runs)
    }

    /// Deletes up to `limit` runs that ended before `ended_before_ms` (epoch ms) — the run, its
    /// outputs, timeline and listing-index entries — oldest end first; answers how many it
    /// deleted (fewer than `limit`: none was left to delete). Running runs are never deleted.
    /// The engine calls it to keep finished runs for the run retention only (see
    /// `EngineConfig::run_retention`); calling it twice, or from two nodes at once, is safe.
    async fn delete_finished_runs(&self, ended_before_ms: i64, limit: usize) -> Result<usize>;

    /// Schedules a timer; a timer with the same id is kept as it was.
    async fn schedule_timer(&self, timer: &Timer) -> Result<()>;

    /// Claims up to `limit` timers due at `now_ms`, earliest first, each for `lease_ms`: a
    /// claimed timer is not handed out again until the lease runs out, so if its claimer dies
    /// before [`StateStore::complete_timer`], another node fires it (at least once).
    async fn claim_due_timers(
        &self,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<Timer>>;

    /// Deletes a fired timer for good.
    async fn complete_timer(&self, timer_id: &str) -> Result<()>;

    /// Keeps `data` under `id` for `ttl`, replacing a blob with that id: the payload of a
    /// message too large for the broker, which then carries only the id (see
    /// [`crate::claim_check`]).
    async fn put_blob(&self, id: &str, data: bytes::Bytes, ttl: std::time::Duration) -> Result<()>;

    /// The blob stored under `id`, unless it expired.
    async fn get_blob(&self, id: &str) -> Result<Option<bytes::Bytes>>;

    /// Keeps `data` under `id` for `ttl` unless a blob that has not expired has that id; true
    /// when this call stored it. Atomic: of several calls at once (from any node), one gets
    /// true. A claim that lapses with its `ttl` can be taken again, so a claimer that dies
    /// frees its work (adapters use it so that one node sends what a finished task owes).
    async fn claim_blob(
        &self,
        id: &str,
        data: bytes::Bytes,
        ttl: std::time::Duration,
    ) -> Result<bool>;

    /// [`StateStore::finish_attempt`], and in the same atomic step, when it applies, records
    /// `pauses` (waiting) in the run, each with its `pause.registered` timeline entry: the
    /// waits that begin with the step's completion (see [`crate::pause`]). The completion's
    /// timeline entry takes the pauses' `registered_ms` as its time (their waits count from
    /// it). The default
    /// handles no pauses (a store that keeps none answers `Unsupported` for functions with
    /// `async` or `wait` edges).
    async fn finish_attempt_with_pauses(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        pauses: &[Pause],
    ) -> Result<Transition> {
        if !pauses.is_empty() {
            return Err(no_pauses());
        }
        self.finish_attempt(run_id, step_id, attempt, outcome).await
    }

    /// Files `pauses` (recorded in their runs by [`StateStore::finish_attempt_with_pauses`]) so
    /// that [`StateStore::find_pauses`] finds those still waiting, and schedules each one's
    /// [`Pause::expiry_timer`]. Idempotent: the engine calls it again when it repeats the
    /// work of a node that died.
    async fn watch_pauses(&self, pauses: &[Pause]) -> Result<()> {
        let _ = pauses;
        Err(no_pauses())
    }

    /// The pauses filed under event name `name` and any of `keys` (`""` for the pauses filed
    /// without a key), each with the spec the name and key belong to: the waiting ones, and
    /// ended ones not yet unfiled (the engine follows those again, then unfiles them).
    async fn find_pauses(&self, name: &str, keys: &[String]) -> Result<Vec<PauseHit>> {
        let _ = (name, keys);
        Err(no_pauses())
    }

    /// Records `event` as the match of spec `spec` of the pause `key` of run `run_id` (see
    /// [`Pause::record_match`]), with a `pause.matched` timeline entry when it resolves it,
    /// atomically: of several calls at once (from any node) for one pause, one resolves it.
    /// The pause stays filed, with its expiry timer, until the engine has followed it
    /// ([`StateStore::unwatch_pause`]): the timer repairs a follow that failed. A waiting pause
    /// of a run that no longer runs is not changed, and answered `Cancelled`.
    async fn resume_pause(
        &self,
        run_id: &str,
        key: &str,
        spec: usize,
        event: &Event,
        now_ms: i64,
    ) -> Result<PauseAnswer> {
        let _ = (run_id, key, spec, event, now_ms);
        Err(no_pauses())
    }

    /// Ends the pause `key` of run `run_id` with `TimedOut` if it is still waiting, with its
    /// timeline entry, atomically (a match and a timeout cannot both win). It stays filed
    /// until followed, as after [`StateStore::resume_pause`]; a waiting pause of a run that no
    /// longer runs is not changed, and answered `Cancelled`.
    async fn expire_pause(&self, run_id: &str, key: &str, now_ms: i64) -> Result<PauseAnswer> {
        let _ = (run_id, key, now_ms);
        Err(no_pauses())
    }

    /// Unfiles `pause` (so that [`StateStore::find_pauses`] no longer answers it) and
    /// deletes its expiry timer: the engine calls it once it has followed the pause's end.
    /// Idempotent.
    async fn unwatch_pause(&self, pause: &Pause) -> Result<()> {
        let _ = pause;
        Err(no_pauses())
    }

    /// Cancels a running run, atomically: its status becomes `Cancelled` (ended now), every
    /// step not in a final state becomes `Cancelled` (a running attempt's result is then not
    /// recorded), every waiting pause `Cancelled`, and the timeline gets a `run.cancelled`
    /// entry with `detail` (what cancelled it). Answers whether this call cancelled it, the
    /// run's status after the call (`None`: no such run), and every pause of the run (for the
    /// caller to unwatch).
    async fn cancel_run(&self, run_id: &str, detail: &str, now_ms: i64) -> Result<CancelRun> {
        let _ = (run_id, detail, now_ms);
        Err(no_pauses())
    }

    /// The pause `key` of run `run_id`.
    async fn get_pause(&self, run_id: &str, key: &str) -> Result<Option<Pause>> {
        let _ = (run_id, key);
        Err(no_pauses())
    }

    /// Up to `limit` running runs created before `created_before_ms`, oldest first (by
    /// creation time, then id), after `after` (the last of the previous page): what the sweeper
    /// examines (see `engine::sweeper`).
    async fn running_runs(
        &self,
        created_before_ms: i64,
        after: Option<&RunRef>,
        limit: usize,
    ) -> Result<Vec<RunRef>> {
        let _ = (created_before_ms, after, limit);
        Err(no_dead_letters())
    }

    /// Appends `entry` to the timeline of run `run_id` while it is running; true when it did.
    async fn append_timeline(
        &self,
        run_id: &str,
        entry: &crate::run::HistoryEntry,
    ) -> Result<bool> {
        let _ = (run_id, entry);
        Err(no_dead_letters())
    }

    /// What can be read of run `run_id` when its state does not decode: its status, times and
    /// the timeline entries that decode. `None` when there is no such run.
    async fn get_run_outline(&self, run_id: &str) -> Result<Option<RunOutline>> {
        let _ = run_id;
        Err(no_dead_letters())
    }

    /// Records a dead letter (see `crate::dead`); recording the same id again changes
    /// nothing. The store keeps the newest [`MAX_DEAD_LETTERS`](crate::dead::MAX_DEAD_LETTERS).
    async fn put_dead_letter(&self, dead: &DeadLetter) -> Result<()> {
        let _ = dead;
        Err(no_dead_letters())
    }

    /// Up to `limit` dead letters, newest first; with `before`, those older than the dead
    /// letter of that id (the `next` of the previous page).
    async fn list_dead_letters(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage> {
        let _ = (before, limit);
        Err(no_dead_letters())
    }

    /// The dead letter `id`.
    async fn get_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
        let _ = id;
        Err(no_dead_letters())
    }

    /// Deletes the dead letter `id`; true when it existed.
    async fn delete_dead_letter(&self, id: &str) -> Result<bool> {
        let _ = id;
        Err(no_dead_letters())
    }

    /// Counts one more failure of the engine on the message `key` and answers the count so
    /// far; the count is forgotten `ttl` after its last failure. (Brokers count redeliveries,
    /// but a message handed back through a timer is a new message to them.)
    async fn count_failure(&self, key: &str, ttl: std::time::Duration) -> Result<u32> {
        let _ = (key, ttl);
        Err(no_dead_letters())
    }

    /// Fails a running run without reading its state (which may not decode): status `failed`,
    /// a `run.failed` timeline entry with `detail`, filed as any finished run. True when this
    /// call failed it; false when it was not running; `NotFound` when there is no such run.
    async fn fail_run(&self, run_id: &str, detail: &str, now_ms: i64) -> Result<bool> {
        let _ = (run_id, detail, now_ms);
        Err(no_dead_letters())
    }

    /// Reopens a run that [`fail_run`](StateStore::fail_run) failed with a detail containing
    /// `failed_by` (a dead letter retried): status `running` again, its end time cleared, a
    /// `run.reopened` timeline entry with `detail`. True when this call reopened it; false
    /// when it is not failed, or was not failed so (its last `run.failed` entry does not name
    /// `failed_by`); `NotFound` when there is no such run.
    async fn reopen_run(
        &self,
        run_id: &str,
        failed_by: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let _ = (run_id, failed_by, detail, now_ms);
        Err(no_dead_letters())
    }

    /// The store's [`JobStore`](crate::jobs::JobStore), when it keeps jobs for outside
    /// workers (a capability: `None` by default; an adapter that needs one says so).
    fn jobs(&self) -> Option<std::sync::Arc<dyn crate::jobs::JobStore>> {
        None
    }

    /// The store's [`Catalog`](crate::catalog::Catalog) of shared definitions (pushed event
    /// schemas), when it keeps one (a capability: `None` by default; `weir serve` and the
    /// schema API then have only the schema files of each node).
    fn catalog(&self) -> Option<std::sync::Arc<dyn crate::catalog::Catalog>> {
        None
    }
}

/// A run by creation time and id: a place in [`StateStore::running_runs`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunRef {
    /// Creation time (epoch ms).
    pub created_at: i64,
    /// Run id.
    pub id: String,
}

/// What is known of a run whose state does not decode (see
/// [`StateStore::get_run_outline`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutline {
    /// Its stored status (`None`: not one weir knows).
    pub status: Option<RunStatus>,
    /// Creation time (epoch ms), when it decodes.
    pub created_at: Option<i64>,
    /// End time (epoch ms), when ended and it decodes.
    pub ended_at: Option<i64>,
    /// The timeline entries that decode.
    pub history: Vec<crate::run::HistoryEntry>,
}

/// The error of a store that keeps no dead letters (nor sweeps runs).
fn no_dead_letters() -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Unsupported,
        "this state store keeps no dead letters and cannot be swept",
    )
}

/// The error of a store that keeps no pauses.
fn no_pauses() -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Unsupported,
        "this state store keeps no pauses: functions with async or wait edges need one that does (memory, redis)",
    )
}
