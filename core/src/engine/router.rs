//! Router: events → runs. Matches triggers (indexed by event name, expressions compiled at
//! load), creates each run idempotently and enqueues its root steps.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tracing::{error, warn};

use super::dead::Owner;
use super::{Engine, StopSignal, next_delivery};
use crate::broker::{Delivery, Subscription, TOPIC_EVENTS, TOPIC_STEPS};
use crate::error::Result;
use crate::event::{Event, now_ms};
use crate::function::Function;
use crate::metrics::Role;
use crate::run::{Run, RunStatus, StepState, StepStatus};
use crate::state::{CreateRun, StepMessage};

/// The name of an event message, borrowed from the payload.
#[derive(serde::Deserialize)]
struct NameOnly<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
}

pub(super) async fn run_loop(engine: Engine, mut sub: Box<dyn Subscription>, mut stop: StopSignal) {
    // Events are routed concurrently: creating a run is several round trips to the state
    // store, and runs of different events are independent.
    let concurrency = engine.inner.config.router_concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some((permit, delivery)) =
        next_delivery("router", &permits, &mut sub, &mut stop).await
    {
        // Most events trigger nothing: read only the name (no allocation for the rest) and
        // skip the full decode, and the task, when no function listens to it.
        if let Ok(peek) = serde_json::from_slice::<NameOnly>(&delivery.payload)
            && !engine.inner.functions.may_trigger(&peek.name)
            && engine.inner.functions.awaited(&peek.name).is_none()
        {
            engine.inner.metrics.event_unmatched();
            let _ = delivery.ack().await;
            continue;
        }
        let engine = engine.clone();
        tokio::spawn(async move {
            let _permit = permit;
            handle(&engine, delivery).await;
        });
    }
    // Stopping: let the events being routed finish (the caller bounds the wait).
    let _ = permits.acquire_many(concurrency as u32).await;
}

/// Routes one event message, then acks it (or hands it back to be routed again on an error).
async fn handle(engine: &Engine, delivery: Delivery) {
    let event: Event = match serde_json::from_slice(&delivery.payload) {
        Ok(e) => e,
        Err(e) => {
            // Given up on at once: it will never decode.
            let reason = format!("the event message cannot be decoded: {e}");
            let failures = delivery.redeliveries.saturating_add(1);
            let (key, payload) = (delivery.key.clone(), delivery.payload.clone());
            if engine
                .give_up(
                    TOPIC_EVENTS,
                    &key,
                    &payload,
                    reason,
                    failures,
                    Owner::default(),
                )
                .await
            {
                let _ = delivery.ack().await;
            } else {
                let wait = engine.inner.config.stuck_message_delay;
                engine.redeliver_later(TOPIC_EVENTS, delivery, wait).await;
            }
            return;
        }
    };
    match engine.route(&event).await {
        Ok(_) => {
            let _ = delivery.ack().await;
        }
        Err(e) => {
            // Kept either way: dropping it would lose the event's runs, or leave a created
            // run `running` with its root steps never enqueued. Routing is idempotent.
            engine.inner.metrics.engine_error(Role::Router);
            let owner = Owner {
                run_id: None,
                event_id: Some(&event.id),
            };
            if engine
                .give_up_if_due(TOPIC_EVENTS, &event.id, &delivery, &e, owner)
                .await
            {
                let _ = delivery.ack().await;
                return;
            }
            let wait = engine.error_delay(&e, delivery.redeliveries);
            if engine.retried_soon(&e, wait) {
                warn!(error = %e, event = %event.id, retry_in = ?wait, "router: will route the event again");
            } else {
                error!(error = %e, event = %event.id, retry_in = ?wait, "router: the event cannot start its runs until this is fixed; it is kept and routed again");
            }
            engine.redeliver_later(TOPIC_EVENTS, delivery, wait).await;
        }
    }
}

/// The idempotency key of a run: one run per function version and event.
pub fn run_key(function: &Function, event: &Event) -> String {
    run_key_of(&function.id, &function.version, &event.id)
}

/// [`run_key`] from the ids.
pub(crate) fn run_key_of(function_id: &str, version: &str, event_id: &str) -> String {
    format!("{function_id}:{version}:{event_id}")
}

impl Engine {
    /// Starts the runs `event` triggers (idempotent per function version and event id) and
    /// enqueues their root steps, then resumes the pauses it matches; returns the run ids
    /// started.
    pub async fn route(&self, event: &Event) -> Result<Vec<String>> {
        let matching = self.inner.functions.matching(event);
        let mut runs = Vec::with_capacity(matching.len());
        for function in matching {
            let function = self.inner.functions.routed(function, event);
            runs.push(self.start_run(&function, event).await?);
        }
        let resumed = self.resume_pauses(event).await?;
        if runs.is_empty() && resumed == 0 {
            self.inner.metrics.event_unmatched();
        }
        Ok(runs)
    }

    /// Starts `function`'s run for `event` (idempotent: the run id derives from both) and
    /// enqueues its root steps; returns the run id.
    pub(super) async fn start_run(&self, function: &Function, event: &Event) -> Result<String> {
        let mut steps = BTreeMap::new();
        for (i, step) in function.steps.iter().enumerate() {
            let mut state = StepState::pending();
            if function.roots.contains(&i) {
                state.status = StepStatus::Queued;
            }
            steps.insert(step.id.clone(), state);
        }
        let key = run_key(function, event);
        let id = Run::id_for_key(&key, &event.id);
        let now = now_ms();
        let cancels = super::waits::cancel_pauses(function, &id, event, now);
        let run = Run {
            id,
            key,
            function_id: function.id.clone(),
            function_version: function.version.clone(),
            fn_version: self.version_number(&function.id, &function.version),
            event: event.clone(),
            status: RunStatus::Running,
            steps,
            created_at: now,
            ended_at: None,
            history: Vec::new(),
            pauses: cancels.iter().map(|p| (p.key(), p.clone())).collect(),
        };
        let (run_id, to_enqueue): (String, Vec<String>) =
            match self.inner.state.create_run(&run).await? {
                CreateRun::Created => {
                    if let Some(m) = self.inner.metrics.function(&function.id) {
                        m.run_started();
                    }
                    let roots = function
                        .roots
                        .iter()
                        .map(|&i| function.steps[i].id.clone())
                        .collect();
                    (run.id, roots)
                }
                // Redelivered event: re-enqueue roots that never started (the executor dedupes).
                CreateRun::Exists(existing) => {
                    let roots = existing
                        .steps
                        .iter()
                        .filter(|(_, s)| s.status == StepStatus::Queued && s.attempts == 0)
                        .map(|(id, _)| id.clone())
                        .collect();
                    (existing.id, roots)
                }
            };
        if !cancels.is_empty() {
            // Filed (again, on a redelivery) before the roots run, then looked back for: an
            // event that would cancel the run may have come before it was created.
            let rules: Vec<_> = match self.inner.state.get_run(&run_id).await? {
                Some(stored) if stored.status == RunStatus::Running => {
                    stored.pauses.into_values().filter(|p| p.cancels).collect()
                }
                _ => Vec::new(),
            };
            let (waiting, ended): (Vec<_>, Vec<_>) = rules
                .into_iter()
                .partition(|p| p.status == crate::pause::PauseStatus::Waiting);
            // A rule matched by a node that died before cancelling: cancel now.
            for rule in &ended {
                self.follow_pause(function, rule, true).await?;
            }
            self.open_pauses(function, event, waiting).await?;
        }
        let messages = to_enqueue
            .into_iter()
            .map(|step_id| {
                let msg = StepMessage {
                    run_id: run_id.clone(),
                    step_id,
                    attempt: 1,
                };
                (
                    run_id.clone(),
                    Bytes::from(serde_json::to_vec(&msg).unwrap_or_default()),
                )
            })
            .collect();
        self.inner
            .broker
            .publish_batch(TOPIC_STEPS, messages)
            .await?;
        Ok(run_id)
    }
}
