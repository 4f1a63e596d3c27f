//! What happens once a task is answered: its result written where its client reads it (the
//! Redis result backend, or an `rpc://` reply), from the finished run or from the adapter's
//! own answer (refused, revoked, not registered).

use std::time::Duration;

use serde_json::{Map, Value};
use weir_core::adapter::Shutdown;
use weir_core::engine::Engine;
use weir_core::run::{Run, RunStatus, StepStatus};
use weir_core::{Event, Result};

use crate::amqp_link::Publisher;
use crate::chain::{self, Outgoing, Routes};
use crate::ledger::{CLAIM_HOLDS, Ledger};
pub use crate::progress_gate::ProgressGate;
use crate::redis_queue::RedisQueue;
use crate::results::{Claim, RedisResults, TaskState};
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

/// How the tasks that follow a finished one (chains, callbacks) are sent: on the adapter's
/// broker, to the queue its `routes` name.
#[derive(Debug, Clone)]
pub struct FollowUps {
    /// The queue the adapter consumes: it answers the runs of the tasks taken from there.
    pub queue: String,
    /// The broker.
    pub sender: Sender,
    /// Task name → queue.
    pub routes: Routes,
}

/// The broker a follow-up task is published on.
#[derive(Debug, Clone)]
pub enum Sender {
    /// RabbitMQ: the default exchange, routing key = the queue (declared first as Celery
    /// declares it, once per queue), confirmed.
    Amqp(AmqpSender),
    /// Redis: LPUSH onto the queue's list, as kombu does.
    Redis(Box<RedisQueue>),
}

impl Sender {
    /// Publishes one task message, trying again on errors.
    async fn send(&self, outgoing: &Outgoing) -> Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = match self {
                Sender::Amqp(amqp) => amqp.send(outgoing).await,
                Sender::Redis(queue) => queue.publish(outgoing).await,
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(e) if tries < WRITE_TRIES => {
                    tracing::debug!(error = %e, task = outgoing.task, "celery adapter: sending a follow-up task failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Publishes follow-up tasks on RabbitMQ, declaring each queue as Celery does before its
/// first message (a Celery producer declares the queue it publishes to).
#[derive(Debug, Clone)]
pub struct AmqpSender {
    link: crate::amqp_link::AmqpLink,
    publisher: Publisher,
    declared: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl AmqpSender {
    /// A sender on `link`, publishing through `publisher`.
    pub fn new(link: crate::amqp_link::AmqpLink, publisher: Publisher) -> Self {
        AmqpSender {
            link,
            publisher,
            declared: Default::default(),
        }
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<()> {
        let queue = outgoing.queue.as_str();
        let known = self
            .declared
            .lock()
            .map(|d| d.contains(queue))
            .unwrap_or(false);
        if !known {
            let shape = crate::amqp_link::QueueShape::celery_default(queue);
            let channel = crate::amqp_link::ensure_queue(&self.link, queue, &shape).await?;
            let _ = channel.close(200, "declared".into()).await;
            if let Ok(mut declared) = self.declared.lock() {
                declared.insert(queue.to_string());
            }
        }
        let properties = crate::amqp_message::properties_of(outgoing);
        self.publisher
            .publish("", queue, &outgoing.body, properties, true)
            .await
    }
}

/// Stores `state` as the result of `task_id`, trying again on errors; false (and logged) when
/// it could not be stored.
pub async fn store(
    results: &Results,
    task_id: &str,
    reply_to: Option<&str>,
    state: &TaskState,
) -> bool {
    for tries in 1..=WRITE_TRIES {
        match results.store(task_id, reply_to, state).await {
            Ok(()) => return true,
            Err(e) if tries < WRITE_TRIES => {
                tracing::debug!(error = %e, task_id, "celery adapter: storing a result failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, task_id, "celery adapter: cannot store the task's result");
            }
        }
    }
    false
}

/// Whether an error weir gave for a task's event is the event's own fault (it can never be
/// accepted: the task gets a FAILURE), rather than the engine's or a store's (the task is kept
/// and tried again until that is fixed).
pub fn is_the_events_fault(error: &weir_core::Error) -> bool {
    matches!(
        error.kind(),
        weir_core::ErrorKind::InvalidInput | weir_core::ErrorKind::TooLarge
    )
}

/// The result of a finished run of a Celery task: the output of its last step (an object of
/// the outputs by step id when it has several last steps), or a failure naming the step.
pub fn run_result(engine: &Engine, run: &Run) -> TaskState {
    let failed = match run.status {
        RunStatus::Completed => false,
        // A cancelled run is a revoked task (`TaskRevokedError`), as `revoke` makes one.
        RunStatus::Cancelled => {
            return TaskState::Revoked {
                reason: "cancelled".into(),
            };
        }
        RunStatus::Failed | RunStatus::Running | RunStatus::Waiting => true,
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

/// At shutdown, the writer stops once no run has finished for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(2);

/// Results written at once, by the writer of finished runs.
const WRITERS: usize = 32;

/// How often the runs finished lately are swept for tasks still owed an answer.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// How far back a sweep looks: runs that finished longer ago are left alone (they were
/// answered, or their result has expired since).
pub const SWEEP_WINDOW: Duration = Duration::from_secs(600);

/// How long after its run finished a task's follow-ups are tried again when the broker
/// fails them (then the rest of its chain gets a FAILURE): the sweep's window, less the
/// claims that must lapse between tries.
const KEEP_TRYING_FOLLOW_UPS: Duration =
    Duration::from_secs(SWEEP_WINDOW.as_secs() - 3 * CLAIM_HOLDS.as_secs());

/// How long after a run finished the sweep first looks at it: the writer of the node that
/// finished it has had its chance (see [`crate::ledger`] for how the two never both send a
/// task's follow-ups).
pub const SWEEP_GRACE: Duration = Duration::from_secs(5);

/// Runs a sweep looks at, at most.
pub const SWEEP_RUNS: usize = 2_000;

/// What the writer of finished runs and the sweep need to answer a task.
#[derive(Debug, Clone)]
struct Answering {
    engine: Engine,
    results: Option<Results>,
    follow_ups: FollowUps,
    ledger: Ledger,
    gate: ProgressGate,
}

/// What became of a finished run handed to [`write_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Its task was answered here (result, follow-ups, record).
    Written,
    /// Nothing is owed for it (not a Celery task of this queue, answered already; with the
    /// Redis backend, an `ignore_result` task once its follow-ups were sent).
    NotOwed,
    /// Another node answers it, or it could not be answered now (the sweep tries again).
    NotHere,
}

/// The tasks that answer finished runs ([`write_results`]) and report progress
/// ([`write_progress`], when results are written), sharing one [`ProgressGate`].
#[derive(Debug)]
pub struct Answerers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Answerers {
    /// Starts them; they stop at `shutdown` (see [`Answerers::join`]).
    pub fn start(
        engine: &Engine,
        results: Option<Results>,
        follow_ups: FollowUps,
        track_started: bool,
        shutdown: &Shutdown,
    ) -> Self {
        // Only `rpc://` replies need the gates: the Redis backend refuses a late report.
        let gate = match &results {
            Some(Results::Rpc(_)) => ProgressGate::on(),
            _ => ProgressGate::off(),
        };
        let mut tasks = Vec::with_capacity(2);
        if let Some(results) = results.clone() {
            tasks.push(tokio::spawn(write_progress(
                engine.clone(),
                results,
                follow_ups.queue.clone(),
                track_started,
                gate.clone(),
                shutdown.clone(),
            )));
        }
        tasks.push(tokio::spawn(write_results(
            engine.clone(),
            results,
            follow_ups,
            gate,
            shutdown.clone(),
        )));
        Answerers { tasks }
    }

    /// Waits until they stopped, after shutdown: the runs finishing meanwhile are answered.
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Answers every `celery/…` run that finishes in this process (its result, its follow-up
/// tasks), several at once, and sweeps the runs finished lately (on any node, or in a node
/// that died before answering them) for tasks still owed, every [`SWEEP_EVERY`]. `gate` is
/// shared with [`write_progress`], so that no progress report follows a final state.
pub async fn write_results(
    engine: Engine,
    results: Option<Results>,
    follow_ups: FollowUps,
    gate: ProgressGate,
    mut shutdown: Shutdown,
) {
    let ledger = match &results {
        Some(Results::Redis(redis)) => Ledger::Redis(redis.clone()),
        _ => Ledger::State(engine.state().clone()),
    };
    let answering = Answering {
        engine: engine.clone(),
        results,
        follow_ups,
        ledger,
        gate,
    };
    let sweeper = tokio::spawn(sweep(answering.clone(), shutdown.clone()));
    let writers = std::sync::Arc::new(tokio::sync::Semaphore::new(WRITERS));
    let mut writes = tokio::task::JoinSet::new();
    let mut finished = engine.subscribe_finished();
    let mut stopping = false;
    loop {
        // At shutdown the engine still finishes the steps in flight: their results are
        // written until no run has finished for a while.
        let next = if stopping {
            match tokio::time::timeout(DRAIN_QUIET, finished.recv()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                _ = shutdown.raised() => {
                    stopping = true;
                    continue;
                }
                next = finished.recv() => next,
            }
        };
        let run_id = match next {
            // Only runs a Celery task can have started are loaded (a round trip each).
            Ok(f) if may_be_celery(&engine, &f.function_id) => f.run_id,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "celery adapter: finished runs missed by the writer (the sweep answers their tasks)"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        // The receiving never waits for a writer (a full broadcast would drop finished runs):
        // each write is a task that waits for its turn.
        let answering = answering.clone();
        let writers = writers.clone();
        writes.spawn(async move {
            let Ok(_permit) = writers.acquire_owned().await else {
                return;
            };
            let _ = write_run(&answering, &run_id).await;
        });
        while writes.try_join_next().is_some() {}
    }
    // Let the writes under way finish.
    while writes.join_next().await.is_some() {}
    let _ = sweeper.await;
}

/// Writes the STARTED (with `track_started`, as Celery's `task_track_started`) and RETRY
/// states of the `celery/…` runs whose steps start or wait for a retry in this process, until
/// shutdown. STARTED when a first step's first attempt starts, or an attempt after a retry;
/// RETRY when a step failed and waits for its backoff. A final state stored already is never
/// replaced by these (the Redis backend refuses them; `gate`, shared with [`write_results`],
/// keeps this process from sending one after the final state).
pub async fn write_progress(
    engine: Engine,
    results: Results,
    queue: String,
    track_started: bool,
    gate: ProgressGate,
    mut shutdown: Shutdown,
) {
    let mut progress = engine.subscribe_progress();
    loop {
        let next = tokio::select! {
            _ = shutdown.raised() => return,
            next = progress.recv() => next,
        };
        let p = match next {
            Ok(p) => p,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if !p.event_name.starts_with("celery/") {
            continue;
        }
        let state = match &p.kind {
            weir_core::engine::StepProgressKind::Started if track_started => {
                let first_step = engine
                    .functions()
                    .live(&p.function_id)
                    .is_some_and(|f| f.index.get(&p.step_id).is_some_and(|i| f.roots.contains(i)));
                // The task starts with its first steps; an attempt after a retry starts it
                // again.
                let after_retry = p.attempt > 1;
                if !(first_step || after_retry) {
                    continue;
                }
                TaskState::Started
            }
            weir_core::engine::StepProgressKind::WaitingRetry { error } => TaskState::Retry {
                why: format!("step {} failed: {error}", p.step_id),
            },
            _ => continue,
        };
        // Loaded only now: most step starts are not reported.
        let event = match engine.events().get(&p.event_id).await {
            Ok(Some(event)) if is_ours(&event, &queue) => event,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "celery adapter: cannot load a task's event to report its progress");
                continue;
            }
        };
        if event.data["ignore_result"] == true {
            continue;
        }
        let task_id = task_id_of(&event);
        let Some(_pass) = gate.report(&task_id).await else {
            continue;
        };
        let reply_to = event.data["reply_to"].as_str();
        let _ = store(&results, &task_id, reply_to, &state).await;
    }
}

/// Whether the task of `event` was taken from `queue` (events from before the queue was
/// recorded count as anyone's).
fn is_ours(event: &Event, queue: &str) -> bool {
    event.data.get("queue").is_none_or(|q| q == queue)
}

/// Answers the task of the finished run `run_id`: sends the tasks that follow it (chain,
/// callbacks, errbacks) and records that they were sent, then writes its result, then records
/// that it was answered (so that a crash in between leaves the task owed, and the sweep
/// answers it again: the follow-ups at least once, usually once). Where the [`Ledger`] says
/// so (see [`Ledger::must_claim`]), the node first claims the task, so that of a writer and
/// sweeps at once, one answers it; a task another node holds is left to it (or, if it dies, to
/// a sweep once its claim lapses). Follow-ups the broker refuses for a while are left to a
/// sweep too, until [`KEEP_TRYING_FOLLOW_UPS`] after the run ended.
async fn write_run(a: &Answering, run_id: &str) -> Answer {
    let run = match a.engine.state().get_run(run_id).await {
        Ok(Some(run)) if run.event.name.starts_with("celery/") => run,
        Ok(_) => return Answer::NotOwed,
        Err(e) => {
            tracing::warn!(error = %e, run_id, "celery adapter: cannot read a finished run");
            return Answer::NotHere;
        }
    };
    if !is_ours(&run.event, &a.follow_ups.queue) {
        return Answer::NotOwed;
    }
    let ignore_result = run.event.data["ignore_result"] == true;
    let replies = a.results.as_ref().filter(|_| !ignore_result);
    let state = run_result(&a.engine, &run);
    let task_id = task_id_of(&run.event);
    let plan = chain::follow_ups(&run.event.data, &state, &a.follow_ups.routes);
    let has_follow_ups = !plan.send.is_empty();
    // With the Redis backend an `ignore_result` task's answer is its follow-ups alone.
    if matches!(a.ledger, Ledger::Redis(_)) && replies.is_none() && !has_follow_ups {
        return Answer::NotOwed;
    }
    let claimed_at = std::time::Instant::now();
    let claim = if a.ledger.must_claim(has_follow_ups) {
        match a.ledger.claim(&task_id, has_follow_ups).await {
            Ok(claim) => claim,
            Err(e) => {
                tracing::warn!(error = %e, task_id, "celery adapter: cannot claim the task's answer; the sweep tries again");
                return Answer::NotHere;
            }
        }
    } else {
        Claim::Won {
            follow_ups_sent: false,
        }
    };
    let follow_ups_sent = match claim {
        Claim::Won { follow_ups_sent } => follow_ups_sent,
        // Another node answers it; if it dies, its claim lapses and a sweep answers it.
        Claim::Held => return Answer::NotHere,
        Claim::Answered => return Answer::NotOwed,
    };
    let mut broken = plan.unsupported;
    if has_follow_ups && !follow_ups_sent {
        if chain::has_chord(&run.event.data) {
            tracing::warn!(
                task_id,
                "celery adapter: the task is part of a chord, which weir does not follow: the chord's callback is not sent"
            );
        }
        let mut sent = true;
        for outgoing in &plan.send {
            // Past half its claim, this node leaves the task to a sweep once the claim lapses
            // (sending on might overlap a second node's sends).
            if claimed_at.elapsed() > CLAIM_HOLDS / 2 {
                tracing::warn!(
                    task_id,
                    "celery adapter: sending the task's follow-ups is taking too long; a sweep sends them once this node's claim lapses"
                );
                return Answer::NotHere;
            }
            if let Err(e) = a.follow_ups.sender.send(outgoing).await {
                // A broker that is away for a while: a sweep tries again once the claim
                // lapses, until the sweep's window nearly ends.
                let ended_ms = run.ended_at.unwrap_or_else(weir_core::event::now_ms);
                let ended_ago = weir_core::event::now_ms().saturating_sub(ended_ms);
                if e.is_retryable() && ended_ago < KEEP_TRYING_FOLLOW_UPS.as_millis() as i64 {
                    tracing::warn!(error = %e, task_id, "celery adapter: cannot send the task's follow-ups now; a sweep tries again once this node's claim lapses");
                    return Answer::NotHere;
                }
                broken = Some(format!(
                    "weir could not send the next task ({}) to queue {}: {e}",
                    outgoing.task, outgoing.queue
                ));
                sent = false;
                break;
            }
        }
        // Recorded before the result, which the sweep looks for: a node dying in between
        // leaves the result owed, not the follow-ups.
        if sent && let Err(e) = a.ledger.follow_ups_sent(&task_id).await {
            tracing::warn!(error = %e, task_id, "celery adapter: cannot record that the task's follow-ups were sent");
        }
    }
    if let Some(why) = &broken {
        tracing::error!(
            task_id,
            why,
            "celery adapter: the chain stops here; its remaining tasks get a FAILURE"
        );
    }
    let mut stored = true;
    if let Some(results) = replies {
        let reply_to = run.event.data["reply_to"].as_str();
        // A failed task fails the rest of its chain, as a worker marks it: each task of it
        // that the client may wait on gets the same FAILURE; so does a chain weir cannot go
        // on with.
        let rest_fails = match (&state, broken) {
            (TaskState::Failure { .. }, _) => Some(state.clone()),
            (_, Some(why)) => Some(TaskState::Failure {
                exc_type: "ChainNotContinued".into(),
                exc_module: None,
                message: why,
            }),
            _ => None,
        };
        if let Some(failure) = rest_fails {
            for id in chain::rest_of_chain_ids(&run.event.data) {
                let _ = store(results, &id, reply_to, &failure).await;
            }
        }
        a.gate.close(&task_id).await;
        stored = store(results, &task_id, reply_to, &state).await;
    }
    // A reply that could not be sent leaves the task owed: the sweep tries again once the
    // claim (if any) lapses.
    if !stored {
        return Answer::NotHere;
    }
    // With the Redis backend an `ignore_result` task leaves no result to find: the sweep must
    // not load it again.
    if replies.is_none() && matches!(a.ledger, Ledger::Redis(_)) {
        return Answer::NotOwed;
    }
    if let Err(e) = a.ledger.answered(&task_id).await {
        tracing::warn!(error = %e, task_id, "celery adapter: cannot record that the task was answered");
    }
    Answer::Written
}

/// Runs a sweep found owing nothing, so that it does not load them again; forgotten
/// wholesale past this many.
const NOT_OWED_KEPT: usize = 100_000;

/// Every [`SWEEP_EVERY`] until shutdown: the runs of Celery tasks that finished in the last
/// [`SWEEP_WINDOW`] (and over [`SWEEP_GRACE`] ago, so the writer had its chance) whose task
/// the [`Ledger`] does not show answered are answered. Covers a node that died between
/// finishing a run and answering its task, runs finished on nodes without the adapter, and a
/// writer that fell behind.
async fn sweep(a: Answering, mut shutdown: Shutdown) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursor = SweepCursor::default();
    let mut sweeps: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.raised() => return,
            _ = every.tick() => {}
        }
        if cursor.not_owed.len() > NOT_OWED_KEPT {
            cursor.not_owed.clear();
        }
        // From time to time the whole window again: a task whose answer failed then (or
        // whose claimer died) is tried once more.
        // Not while the cursor is behind: the runs that ended lately come first.
        if sweeps.is_multiple_of(FULL_PASS_EVERY) {
            cursor.full_pass_due = true;
        }
        if cursor.full_pass_due && !cursor.behind {
            cursor.from_ms = None;
            cursor.full_pass_due = false;
        }
        sweeps += 1;
        if let Err(e) = sweep_once(&a, &mut cursor, &shutdown).await {
            tracing::warn!(error = %e, "celery adapter: sweeping for tasks still owed failed");
        }
    }
}

/// Where the sweep goes on from, and the runs it found owing nothing.
#[derive(Debug, Default)]
struct SweepCursor {
    /// The end time the next sweep starts at (`None`: the start of the window).
    from_ms: Option<i64>,
    /// The last sweep read a full page: more runs ended since than it looked at.
    behind: bool,
    /// A pass over the whole window is due once the cursor caught up.
    full_pass_due: bool,
    /// Runs known to owe nothing (`ignore_result`, another queue's).
    not_owed: std::collections::HashSet<String>,
}

/// Every this many sweeps, the sweep goes over the whole window again.
const FULL_PASS_EVERY: u64 = 30;

/// One sweep (see [`sweep`]): the runs that ended between the cursor (or the start of the
/// window) and [`SWEEP_GRACE`] ago, at most [`SWEEP_RUNS`], earliest end first
/// (`StateStore::list_ended`); the cursor moves past them. Stops early at shutdown. Returns
/// how many tasks it answered.
async fn sweep_once(a: &Answering, cursor: &mut SweepCursor, shutdown: &Shutdown) -> Result<usize> {
    let now = weir_core::event::now_ms();
    let oldest = now - SWEEP_WINDOW.as_millis() as i64;
    let newest = now - SWEEP_GRACE.as_millis() as i64;
    let from = cursor.from_ms.unwrap_or(oldest).max(oldest);
    let ended = a
        .engine
        .state()
        .list_ended(from, newest, SWEEP_RUNS)
        .await?;
    cursor.behind = ended.len() >= SWEEP_RUNS;
    cursor.from_ms = Some(match ended.last() {
        // A full page: go on from its last end (runs ending in the same millisecond are
        // looked at again, harmlessly).
        Some(last) if ended.len() >= SWEEP_RUNS => last.ended_at.unwrap_or(newest),
        _ => newest,
    });
    let not_owed = &mut cursor.not_owed;
    let owed: Vec<_> = ended
        .into_iter()
        .filter(|r| r.event_name.starts_with("celery/") && !not_owed.contains(&r.id))
        .collect();
    if owed.is_empty() {
        return Ok(0);
    }
    let task_ids: Vec<&str> = owed
        .iter()
        .map(|r| task_id_of_event_id(&r.event_id))
        .collect();
    let settled = a.ledger.settled(&task_ids).await?;
    let mut written = 0;
    for (run, settled) in owed.iter().zip(settled) {
        // What is left is swept by a node still up (or this one, after a restart).
        if shutdown.is_raised() {
            break;
        }
        if settled {
            continue;
        }
        match write_run(a, &run.id).await {
            Answer::Written => {
                written += 1;
                not_owed.insert(run.id.clone());
            }
            Answer::NotOwed => {
                not_owed.insert(run.id.clone());
            }
            Answer::NotHere => {}
        }
    }
    if written > 0 {
        tracing::info!(
            tasks = written,
            "celery adapter: tasks answered by the sweep"
        );
    }
    Ok(written)
}

/// The task id of a `celery/…` event id: the event id without the `/r<retries>` and
/// `/n<nesting>` suffixes [`crate::TaskMessage::event_id`] adds.
pub fn task_id_of_event_id(event_id: &str) -> &str {
    let mut id = event_id;
    for mark in ["/n", "/r"] {
        if let Some((head, tail)) = id.rsplit_once(mark)
            && !tail.is_empty()
            && tail.bytes().all(|b| b.is_ascii_digit())
        {
            id = head;
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_id_of_an_event_id_drops_the_retry_and_replace_marks() {
        assert_eq!(task_id_of_event_id("abc"), "abc");
        assert_eq!(task_id_of_event_id("abc/r2"), "abc");
        assert_eq!(task_id_of_event_id("abc/n1"), "abc");
        assert_eq!(task_id_of_event_id("abc/r2/n1"), "abc");
        // A task id of its own with a slash is kept whole.
        assert_eq!(task_id_of_event_id("a/rb"), "a/rb");
        assert_eq!(task_id_of_event_id("a/r"), "a/r");
    }
}
