//! Executor: runs one step attempt, records it, resolves outgoing edges, finishes the run.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{debug, error, warn};

use super::dead::Owner;
use super::{Engine, RunFinished, StopSignal, next_delivery};
use crate::broker::{Subscription, TOPIC_STEPS};
use crate::driver::StepRequest;
use crate::error::{Error, ErrorKind, Result};
use crate::event::now_ms;
use crate::expr::Vars;
use crate::function::{Function, Join};
use crate::metrics::{AttemptEnd, Role};
use crate::protocol::{Outcome, StepContext, StepInput, classify};
use crate::run::{Run, RunStatus, StepStatus};
use crate::state::{
    AttemptOutcome, JoinRule, RunState, StartAttempt, StepMessage, Timer, TimerAction, Transition,
};

/// Extra time the engine grants a driver past the step timeout before giving up on it.
const DRIVER_GRACE: Duration = Duration::from_secs(5);

pub(super) async fn run_loop(engine: Engine, mut sub: Box<dyn Subscription>, mut stop: StopSignal) {
    let concurrency = engine.inner.config.executor_concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some((permit, delivery)) =
        next_delivery("executor", &permits, &mut sub, &mut stop).await
    {
        let engine = engine.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let msg: StepMessage = match serde_json::from_slice(&delivery.payload) {
                Ok(m) => m,
                Err(e) => {
                    // Given up on at once: it will never decode. Step messages are keyed by
                    // their run, which cannot move on without it: the run is failed.
                    let reason = format!("the step message cannot be decoded: {e}");
                    let run_id = delivery.key.clone();
                    let owner = Owner {
                        run_id: Some(&run_id),
                        event_id: None,
                    };
                    let failures = delivery.redeliveries.saturating_add(1);
                    let (key, payload) = (delivery.key.clone(), delivery.payload.clone());
                    if engine
                        .give_up(TOPIC_STEPS, &key, &payload, reason, failures, owner)
                        .await
                    {
                        let _ = delivery.ack().await;
                    } else {
                        let wait = engine.inner.config.stuck_message_delay;
                        engine.redeliver_later(TOPIC_STEPS, delivery, wait).await;
                    }
                    return;
                }
            };
            match engine.execute(&msg).await {
                Ok(Executed::Done) => {
                    let _ = delivery.ack().await;
                }
                Ok(Executed::Busy(wait)) => {
                    // Another node holds the attempt: look again when its lease runs out.
                    engine.redeliver_later(TOPIC_STEPS, delivery, wait).await;
                }
                Err(e) => {
                    engine.inner.metrics.engine_error(Role::Executor);
                    let owner = Owner {
                        run_id: Some(&msg.run_id),
                        event_id: None,
                    };
                    let key = format!("{}:{}:{}", msg.run_id, msg.step_id, msg.attempt);
                    if engine
                        .give_up_if_due(TOPIC_STEPS, &key, &delivery, &e, owner)
                        .await
                    {
                        let _ = delivery.ack().await;
                        return;
                    }
                    // Kept either way: dropping it would leave the run `running` for good
                    // (the attempt's result, or its children, never recorded). Handled again
                    // later it starts the attempt or, when the attempt ended, moves the run
                    // on from what the store holds.
                    let wait = engine.error_delay(&e, delivery.redeliveries);
                    if engine.retried_soon(&e, wait) {
                        warn!(error = %e, run = %msg.run_id, step = %msg.step_id, retry_in = ?wait, "executor: will handle the message again");
                    } else {
                        error!(error = %e, run = %msg.run_id, step = %msg.step_id, retry_in = ?wait, "executor: the run cannot move on until this is fixed; the message is kept and handled again");
                    }
                    engine.redeliver_later(TOPIC_STEPS, delivery, wait).await;
                }
            }
        });
    }
    // Stopping: wait for the attempts in flight to finish (the caller bounds the wait).
    let _ = permits.acquire_many(concurrency as u32).await;
}

/// What became of a step message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executed {
    /// Handled (run, or found stale): acknowledge it.
    Done,
    /// Another node holds the attempt under a live lease: deliver the message again after
    /// this long (if that node died, the attempt is taken over then).
    Busy(Duration),
}

/// A step that reached a final state and whose outgoing edges must be resolved.
pub(super) struct Done {
    pub(super) step: usize,
    pub(super) status: StepStatus,
    pub(super) output: Option<Value>,
}

/// What [`Engine::advance`] works through.
pub(super) enum Work {
    /// A step reached a final state: resolve its outgoing edges.
    Done(Done),
    /// Resolve one edge (of a wait that ended).
    Edge {
        /// The edge (index into `Function::edges`).
        edge: usize,
        /// Whether it is taken.
        taken: bool,
        /// Why not, when not.
        reason: String,
    },
}

/// Whether `edge` (out of the completed step `parent`) is taken by its `if`, and why not when
/// it is not. An `if` that fails to evaluate is not taken.
pub(super) fn edge_condition(
    edge: &crate::function::Edge,
    parent: &str,
    event: &crate::event::Event,
    outputs: &serde_json::Map<String, Value>,
    response: Option<&Value>,
) -> (bool, String) {
    let Some(cond) = &edge.condition else {
        return (true, String::new());
    };
    let mut vars = Vars::new();
    vars.set_event("event", event);
    vars.set_json_map("steps", outputs);
    vars.set_json("response", response.unwrap_or(&Value::Null));
    match cond.eval_bool(&vars) {
        Ok(true) => (true, String::new()),
        Ok(false) => (
            false,
            format!("condition {:?} after {parent:?} is false", cond.source()),
        ),
        Err(err) => (false, format!("condition after {parent:?} failed: {err}")),
    }
}

impl Engine {
    /// Executes one step message: runs the attempt and moves the run forward. Idempotent: a
    /// message for an attempt that already ended (or is not due) is answered `Done` and
    /// ignored; one whose attempt another node holds is answered `Busy`.
    pub async fn execute(&self, msg: &StepMessage) -> Result<Executed> {
        let state = &self.inner.state;
        let lease_ms = self.inner.config.step_lease.as_millis() as i64;
        let (started, run) = state
            .start_attempt_with_state(&msg.run_id, &msg.step_id, msg.attempt, now_ms(), lease_ms)
            .await?;
        let Some(run) = run else {
            warn!(run = %msg.run_id, "executor: no such run; dropping the message");
            return Ok(Executed::Done);
        };
        let Some(function) = self
            .inner
            .functions
            .get(&run.function_id, &run.function_version)
        else {
            if started == StartAttempt::Started {
                // Hand the attempt back at once (expire the lease this call just took), before
                // fetching: a fetch can take longer than a lease.
                state
                    .renew_attempt(&run.id, &msg.step_id, msg.attempt, now_ms() - 1)
                    .await?;
            }
            if self
                .function_version(&run.function_id, &run.function_version)
                .await?
                .is_some()
            {
                // Fetched from the catalog: the message comes back soon and finds it.
                return Err(Error::unavailable(format!(
                    "function {} version {} was fetched from the catalog; the step runs at its next delivery",
                    run.function_id, run.function_version
                )));
            }
            // Not transient: the version is neither loaded here nor stored in the catalog (or
            // this node does not serve the function). The message is handed back with a
            // growing delay (`handback_delay`), for a node that has the version to take.
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "function {} version {} is not loaded on this node nor stored in the catalog; the run waits for a node that has that version",
                    run.function_id, run.function_version
                ),
            ));
        };
        let Some(&index) = function.index.get(&msg.step_id) else {
            warn!(run = %msg.run_id, step = %msg.step_id, "executor: step not in the function; dropping");
            return Ok(Executed::Done);
        };
        match started {
            StartAttempt::Started => {}
            StartAttempt::Busy { lease_left_ms } => {
                let wait = Duration::from_millis(lease_left_ms.clamp(10, lease_ms) as u64 + 10);
                return Ok(Executed::Busy(wait));
            }
            StartAttempt::Stale => {
                debug!(run = %msg.run_id, step = %msg.step_id, attempt = msg.attempt, "stale step message");
                self.recover(&function, run, index).await?;
                return Ok(Executed::Done);
            }
        }
        let step = &function.steps[index];
        self.report_progress(
            &run,
            &step.id,
            msg.attempt,
            super::StepProgressKind::Started,
        );
        let (async_event, async_index) = match step.async_wait {
            Some(w) => self.async_input(&function, w, &run.id).await?,
            None => (None, None),
        };
        let input = StepInput {
            event: &run.event,
            steps: &run.outputs,
            async_event: async_event.as_ref(),
            ctx: StepContext {
                fn_id: &function.id,
                fn_version: &function.version,
                run_id: &run.id,
                step_id: &step.id,
                attempt: msg.attempt,
                async_index,
            },
        }
        .encode();
        let metrics = self.inner.metrics.function(&function.id);
        let began = std::time::Instant::now();
        let (outcome, log) = {
            let _running = self.inner.metrics.attempt_running();
            self.attempt(&function, index, &run, msg.attempt, input)
                .await
        };
        if let Some(m) = &metrics {
            m.attempt_took(&step.id, began.elapsed());
        }
        let mut retry_scheduled = false;
        // The waits the step's completion begins (its `async` and `wait` edges); a `wait`
        // expression that fails fails the step instead.
        let mut pauses = Vec::new();
        // The step has run: nothing that can fail may stand between it and recording its
        // result, so a failed read is an empty list (the lookback reads it again).
        let begins_waits = matches!(outcome, Outcome::Completed(_))
            && function.waits.iter().any(|w| w.parent == index);
        let exclude = if begins_waits {
            self.events_used(&function, &run.id)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %e, run = %run.id, "executor: could not read the events the run's earlier waits consumed");
                    Vec::new()
                })
        } else {
            Vec::new()
        };
        let outcome = match outcome {
            Outcome::Completed(output) => {
                match self.arm_waits(&function, index, &run, &output, &exclude) {
                    Ok(armed) => {
                        pauses = armed;
                        Outcome::Completed(output)
                    }
                    Err(error) => Outcome::Failed {
                        error,
                        retryable: false,
                        output: Some(output),
                    },
                }
            }
            other => other,
        };
        // The step has run: from here on its result is kept or the attempt is failed, never
        // left for a redelivery to run the step again (see `fail_unrecorded`).
        let recorded = match outcome {
            Outcome::Completed(output) => {
                let record = AttemptOutcome::Completed {
                    output: output.clone(),
                    log,
                };
                let (t, status) = self
                    .finish_or_fail(
                        &run.id,
                        &step.id,
                        msg.attempt,
                        &record,
                        &pauses,
                        "its output",
                    )
                    .await?;
                let output = (status == StepStatus::Completed).then_some(output);
                Some((t, status, output))
            }
            Outcome::Failed {
                error, retryable, ..
            } if retryable && msg.attempt < step.attempts => {
                let next = msg.attempt + 1;
                let delay = super::retry_delay(
                    self.inner.config.retry_base,
                    self.inner.config.retry_max,
                    next,
                );
                let timer = Timer {
                    id: format!("retry:{}:{}:{next}", run.id, step.id),
                    due_ms: now_ms() + delay.as_millis() as i64,
                    action: TimerAction::EnqueueStep(StepMessage {
                        run_id: run.id.clone(),
                        step_id: step.id.clone(),
                        attempt: next,
                    }),
                };
                let scheduled = state
                    .retry_attempt(
                        &run.id,
                        &step.id,
                        msg.attempt,
                        &error,
                        log.as_deref(),
                        &timer,
                    )
                    .await;
                match scheduled {
                    Ok(applied) => {
                        retry_scheduled = applied;
                        if applied {
                            let kind = super::StepProgressKind::WaitingRetry {
                                error: error.clone(),
                            };
                            self.report_progress(&run, &step.id, msg.attempt, kind);
                        }
                        None
                    }
                    Err(e) if e.is_retryable() => return Err(e),
                    Err(e) => {
                        let t = self
                            .fail_unrecorded(&run.id, &step.id, msg.attempt, &e, "its retry")
                            .await?;
                        Some((t, StepStatus::Failed, None))
                    }
                }
            }
            Outcome::Failed {
                error,
                output,
                retryable,
            } => {
                let error = if retryable {
                    format!("{error} (attempt {} of {})", msg.attempt, step.attempts)
                } else {
                    format!("{error} (not retried)")
                };
                let record = AttemptOutcome::Failed { error, output, log };
                let (t, status) = self
                    .finish_or_fail(&run.id, &step.id, msg.attempt, &record, &[], "its failure")
                    .await?;
                Some((t, status, None))
            }
        };
        // Counted as recorded (another node's result may have won, the store may have
        // refused this one), not as the driver answered.
        let counted = match &recorded {
            Some((t, StepStatus::Completed, _)) if t.applied => Some(AttemptEnd::Completed),
            Some((t, _, _)) if t.applied => Some(AttemptEnd::Failed),
            None if retry_scheduled => Some(AttemptEnd::Retried),
            _ => None,
        };
        if let (Some(m), Some(counted)) = (&metrics, counted) {
            m.attempt_ended(&step.id, counted);
        }
        if let Some((t, status, output)) = recorded
            && t.applied
        {
            let completed = status == StepStatus::Completed;
            let trigger = (completed && !pauses.is_empty()).then(|| run.event.clone());
            let done = Done {
                step: index,
                status,
                output,
            };
            self.advance(&function, run, vec![Work::Done(done)], t, None)
                .await?;
            if let Some(trigger) = trigger {
                self.open_pauses(&function, &trigger, pauses).await?;
            }
        }
        Ok(Executed::Done)
    }

    /// Ends the attempt with `outcome`: the transition and the step's new status. When the store
    /// refuses it for good, the attempt fails instead (see [`Engine::fail_unrecorded`]); `what`
    /// names what could not be recorded.
    async fn finish_or_fail(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        pauses: &[crate::pause::Pause],
        what: &str,
    ) -> Result<(Transition, StepStatus)> {
        let status = match outcome {
            AttemptOutcome::Completed { .. } => StepStatus::Completed,
            AttemptOutcome::Failed { .. } => StepStatus::Failed,
        };
        match self
            .inner
            .state
            .finish_attempt_with_pauses(run_id, step_id, attempt, outcome, pauses)
            .await
        {
            Ok(t) => Ok((t, status)),
            Err(e) if e.is_retryable() => Err(e),
            Err(e) => {
                let t = self
                    .fail_unrecorded(run_id, step_id, attempt, &e, what)
                    .await?;
                Ok((t, StepStatus::Failed))
            }
        }
    }

    /// Records the attempt as failed with `error`, the store's refusal, for good (not retryable)
    /// to keep `what` of it: the run moves on and the step is not run again for a result that
    /// cannot be kept. Only if this fails too does the error go back to the caller (and the
    /// message is handled again later).
    async fn fail_unrecorded(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &Error,
        what: &str,
    ) -> Result<Transition> {
        warn!(error = %error, run = %run_id, step = %step_id, attempt, "executor: the state store refused the attempt's result; failing the attempt");
        let record = AttemptOutcome::Failed {
            error: format!("weir could not record {what}: {error} (not retried)"),
            output: None,
            log: None,
        };
        self.inner
            .state
            .finish_attempt(run_id, step_id, attempt, &record)
            .await
    }

    /// Runs one attempt on its driver, bounding it by the step timeout.
    async fn attempt(
        &self,
        function: &Function,
        index: usize,
        run: &RunState,
        attempt: u32,
        input: Bytes,
    ) -> (Outcome, Option<String>) {
        let step = &function.steps[index];
        let Some(driver) = self.inner.drivers.get(&step.runtime_type) else {
            let error = format!(
                "runtime {:?} is not available on this node",
                step.runtime_type
            );
            return (
                Outcome::Failed {
                    error,
                    retryable: false,
                    output: None,
                },
                None,
            );
        };
        let request = StepRequest {
            input,
            function_id: function.id.clone(),
            function_dir: function.dir.clone(),
            run_id: run.id.clone(),
            step_id: step.id.clone(),
            attempt,
            path: step.path.clone(),
            runtime: step.runtime.clone(),
            timeout: step.timeout,
            max_output_bytes: self.inner.config.max_output_bytes,
            env: function.env.clone(),
        };
        let work = tokio::time::timeout(step.timeout + DRIVER_GRACE, driver.execute(request));
        let Some(result) = self.renewing_lease(&run.id, &step.id, attempt, work).await else {
            return (
                Outcome::Failed {
                    error: "the run was cancelled".into(),
                    retryable: false,
                    output: None,
                },
                None,
            );
        };
        match result {
            Ok(Ok(result)) => {
                let log = (!result.log.is_empty()).then(|| result.log.clone());
                (classify(&result), log)
            }
            Ok(Err(e)) => {
                let error = if e.kind() == ErrorKind::Timeout {
                    format!(
                        "timed out after {}",
                        humantime::format_duration(step.timeout)
                    )
                } else {
                    e.to_string()
                };
                (
                    Outcome::Failed {
                        error,
                        retryable: e.is_retryable(),
                        output: None,
                    },
                    None,
                )
            }
            Err(_) => {
                let error = format!(
                    "timed out after {} (driver did not stop it)",
                    humantime::format_duration(step.timeout)
                );
                (
                    Outcome::Failed {
                        error,
                        retryable: true,
                        output: None,
                    },
                    None,
                )
            }
        }
    }

    /// Drives `work` while renewing the attempt's lease, so other nodes see the attempt as
    /// held for as long as it runs; `None` when the run was cancelled meanwhile (the work is
    /// dropped: drivers stop what they run when their future is dropped). The lease is renewed
    /// every `cancel_check` (at most every third of the lease): a renewal that fails because
    /// the step is no longer running is how a cancel is seen.
    async fn renewing_lease<T>(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let lease = self.inner.config.step_lease;
        // Not `interval()`: its immediate first tick still goes through the timer wheel, which
        // cost every attempt up to a millisecond (measured: p50 event→step-start 0.4 → 1.4 ms).
        let every = (lease / 3)
            .min(self.inner.config.cancel_check)
            .max(Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tick.tick() => {
                    let until = now_ms() + lease.as_millis() as i64;
                    match self.inner.state.renew_attempt(run_id, step_id, attempt, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let cancelled = matches!(
                                self.inner.state.get_run_state(run_id).await,
                                Ok(Some(run)) if run.status == RunStatus::Cancelled
                            );
                            if cancelled {
                                warn!(run = %run_id, step = %step_id, attempt, "the run was cancelled: stopping the attempt");
                                return None;
                            }
                            warn!(run = %run_id, step = %step_id, attempt, "lost the attempt's lease (taken over); its first result wins");
                        }
                        Err(e) => warn!(error = %e, run = %run_id, step = %step_id, "renewing the attempt's lease failed"),
                    }
                }
            }
        }
    }

    /// Resolves the outgoing edges of finished steps: enqueues children that became ready,
    /// skips children that will not run (and their descendants), and finishes the run when no
    /// step is left open. `work` starts with the finished step, or with the edges of a wait
    /// that ended (see `waits.rs`).
    ///
    /// The edges of a completed step's waits (`async` and `wait` edges whose `if` holds) are
    /// left to the wait; the others are resolved here.
    ///
    /// `recovering` holds a snapshot of the whole run when this repeats the work of a node that
    /// recorded the step's end and then died: every decision is then re-derived from the stored
    /// tallies, and children already queued (or skipped) are enqueued (or followed) again —
    /// duplicates are harmless, since an attempt starts once.
    pub(super) async fn advance(
        &self,
        function: &Function,
        run: RunState,
        mut work: Vec<Work>,
        transition: Transition,
        recovering: Option<&Run>,
    ) -> Result<()> {
        let RunState {
            id: run_id,
            event,
            mut outputs,
            ..
        } = run;
        let mut open = transition.open_steps;
        let mut finished = transition.finished;
        while let Some(item) = work.pop() {
            let resolutions: Vec<(usize, bool, String)> = match item {
                Work::Edge {
                    edge,
                    taken,
                    reason,
                } => vec![(edge, taken, reason)],
                Work::Done(done) => {
                    let parent = &function.steps[done.step];
                    if let Some(out) = &done.output {
                        outputs.insert(parent.id.clone(), out.clone());
                    }
                    let mut out = Vec::new();
                    for &e in &function.children[done.step] {
                        let edge = &function.edges[e];
                        if done.status != StepStatus::Completed {
                            let why = format!("parent {:?} {}", parent.id, done.status.as_str());
                            out.push((e, false, why));
                            continue;
                        }
                        let (taken, why_not) = edge_condition(
                            edge,
                            &parent.id,
                            &event,
                            &outputs,
                            done.output.as_ref(),
                        );
                        if let (Some(w), Some(r)) = (edge.wait, recovering) {
                            // Repeating a dead node's work: the wait's pause says whether this
                            // edge was armed (its `if` when the step completed), not the `if`
                            // evaluated again now.
                            let wait = &function.waits[w];
                            let key = crate::pause::pause_key(&parent.id, wait.ordinal);
                            // (A pause from before pauses recorded their edges: the `if`.)
                            let armed = r.pauses.get(&key).map(|p| {
                                if p.edges.is_empty() {
                                    taken
                                } else {
                                    p.edges.contains(&e)
                                }
                            });
                            if armed != Some(true) {
                                let why = format!(
                                    "the wait after {:?} was not armed for this edge",
                                    parent.id
                                );
                                out.push((e, false, why));
                            }
                            continue;
                        }
                        if edge.wait.is_some() && taken {
                            continue; // resolved when its wait ends
                        }
                        out.push((e, taken, why_not));
                    }
                    out
                }
            };
            for (e, taken, why_not) in resolutions {
                let edge = &function.edges[e];
                let parent = &function.steps[edge.parent];
                let child = &function.steps[edge.child];
                let rule = JoinRule {
                    parents: child.parents.len(),
                    any: child.join == Join::Any,
                    recovering: recovering.is_some(),
                };
                let reason = if taken {
                    "not every incoming edge was taken".to_string()
                } else {
                    why_not
                };
                let joined = self
                    .inner
                    .state
                    .resolve_edge_and_join(&run_id, &child.id, &parent.id, taken, rule, &reason)
                    .await?;
                let applied = joined.transition.is_some_and(|t| t.applied);
                let snapshot = recovering.and_then(|r| r.steps.get(&child.id));
                match joined.decision {
                    Some(true) => {
                        let lost_message = snapshot
                            .is_some_and(|s| s.status == StepStatus::Queued && s.attempts == 0);
                        if applied || lost_message {
                            let msg = StepMessage {
                                run_id: run_id.clone(),
                                step_id: child.id.clone(),
                                attempt: 1,
                            };
                            let payload = Bytes::from(serde_json::to_vec(&msg)?);
                            self.inner
                                .broker
                                .publish(TOPIC_STEPS, &run_id, payload)
                                .await?;
                        }
                    }
                    Some(false) => {
                        if let Some(t) = joined.transition.filter(|t| t.applied) {
                            open = t.open_steps;
                            finished = finished.or(t.finished);
                        }
                        let skipped_before =
                            snapshot.is_some_and(|s| s.status == StepStatus::Skipped);
                        if applied || skipped_before {
                            work.push(Work::Done(Done {
                                step: edge.child,
                                status: StepStatus::Skipped,
                                output: None,
                            }));
                        }
                    }
                    None => {}
                }
            }
        }
        if let Some(status) = finished {
            // The store finished the run with the transition that closed its last step.
            if let Some(m) = self.inner.metrics.function(&function.id) {
                m.run_finished(status);
            }
            self.tally_run(&function.id, &function.version, status == RunStatus::Failed);
            self.release_cancel_rules(function, &run_id).await?;
            let _ = self.inner.finished.send(RunFinished {
                run_id,
                function_id: function.id.clone(),
                status,
            });
        } else if open == 0 || recovering.is_some() {
            self.finish(function, &run_id).await?;
        }
        Ok(())
    }

    /// A message for an attempt that already ended: its node may have died after recording
    /// the end and before moving the run on, so move it on again (idempotently).
    async fn recover(&self, function: &Function, run: RunState, index: usize) -> Result<()> {
        let Some(full) = self.inner.state.get_run(&run.id).await? else {
            return Ok(());
        };
        let step = &function.steps[index];
        let Some(state) = full.steps.get(&step.id) else {
            return Ok(());
        };
        if full.status != RunStatus::Running {
            // Finished: repeat the (idempotent) finish, which repairs what the dead node may
            // have left half-done (a store's listing indexes, the cancel rules' filing).
            self.inner.state.finish_run(&full.id, full.status).await?;
            self.release_cancel_rules(function, &full.id).await?;
            return Ok(());
        }
        if !state.status.is_terminal() {
            return Ok(());
        }
        let output = (state.status == StepStatus::Completed)
            .then(|| state.output.clone().unwrap_or(Value::Null));
        let done = Done {
            step: index,
            status: state.status,
            output,
        };
        let unknown = Transition {
            applied: true,
            open_steps: usize::MAX,
            finished: None,
        };
        let completed = done.status == StepStatus::Completed;
        let (event, outputs) = (run.event.clone(), run.outputs.clone());
        self.advance(function, run, vec![Work::Done(done)], unknown, Some(&full))
            .await?;
        if completed {
            // The waits the step began: watched again, followed if they ended.
            self.recover_waits(function, &full, index, &event, &outputs)
                .await?;
        }
        Ok(())
    }

    async fn finish(&self, function: &Function, run_id: &str) -> Result<()> {
        let Some(run) = self.inner.state.get_run(run_id).await? else {
            return Ok(());
        };
        if run.steps.values().any(|s| !s.status.is_terminal()) {
            return Ok(());
        }
        let failed = run.steps.values().any(|s| s.status == StepStatus::Failed);
        let status = if failed {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        if self.inner.state.finish_run(run_id, status).await? {
            if let Some(m) = self.inner.metrics.function(&run.function_id) {
                m.run_finished(status);
            }
            self.tally_run(&run.function_id, &run.function_version, failed);
            self.release_cancel_rules(function, run_id).await?;
            let _ = self.inner.finished.send(RunFinished {
                run_id: run_id.to_string(),
                function_id: run.function_id.clone(),
                status,
            });
        }
        Ok(())
    }
}
