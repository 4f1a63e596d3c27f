//! Scheduler: fires due timers from the state store — retries go onto the `steps` topic, cron
//! ticks start their function's run — and keeps a timer on each cron trigger's next tick.

use crate::metrics::Role;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::Digest;
use tracing::warn;

use super::{Engine, StopSignal, stopped};
use crate::broker::TOPIC_STEPS;
use crate::error::Result;
use crate::event::{Event, now_ms};
use crate::function::SCHEDULED_EVENT;
use crate::state::{CronTick, Timer, TimerAction};

/// How long a claimed timer is reserved for its claimer before another node may fire it.
const TIMER_LEASE_MS: i64 = 10_000;

/// How often a scheduler makes sure every live cron trigger has a timer on its next tick
/// (cheap and idempotent; it also picks up functions loaded since).
const CRON_SYNC_EVERY: Duration = Duration::from_secs(5);

pub(super) async fn run_loop(engine: Engine, mut stop: StopSignal) {
    let tick = engine.inner.config.scheduler_tick;
    let mut next_cron_sync = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        if tokio::time::Instant::now() >= next_cron_sync {
            if let Err(e) = engine.schedule_cron_ticks().await {
                engine.inner.metrics.engine_error(Role::Scheduler);
                warn!(error = %e, "scheduler: scheduling cron ticks failed; retrying");
            }
            if let Err(e) = engine.schedule_sweep().await {
                engine.inner.metrics.engine_error(Role::Scheduler);
                warn!(error = %e, "scheduler: scheduling the sweeper failed; retrying");
            }
            next_cron_sync = tokio::time::Instant::now() + CRON_SYNC_EVERY;
        }
        match engine.fire_due_timers().await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => {
                engine.inner.metrics.engine_error(Role::Scheduler);
                warn!(error = %e, "scheduler: firing timers failed; retrying");
            }
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// The timer of one cron tick. Its id names the function, the schedule and the tick, so every
/// node scheduling the same tick schedules one timer.
fn cron_timer(function_id: &str, cron: &str, due_ms: i64) -> Timer {
    let schedule = sha2::Sha256::digest(cron.as_bytes());
    Timer {
        id: format!(
            "cron:{function_id}:{:02x}{:02x}{:02x}{:02x}:{due_ms}",
            schedule[0], schedule[1], schedule[2], schedule[3]
        ),
        due_ms,
        action: TimerAction::CronTick(CronTick {
            function_id: function_id.to_string(),
            cron: cron.to_string(),
            due_ms,
        }),
    }
}

/// The event of a cron tick: `weir/scheduled.timer` at the tick's time, with an id derived
/// from the function, schedule and tick — so a tick fired twice (a node died after firing it)
/// is the same event and starts the same, single run.
pub fn cron_event(tick: &CronTick) -> Event {
    let key = format!("{}\n{}\n{}", tick.function_id, tick.cron, tick.due_ms);
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let id = ulid::Ulid::from_parts(tick.due_ms.max(0) as u64, u128::from_be_bytes(random));
    Event {
        name: SCHEDULED_EVENT.to_string(),
        data: serde_json::json!({"cron": tick.cron, "function": tick.function_id}),
        user: serde_json::json!({}),
        id: id.to_string(),
        ts: tick.due_ms,
        v: None,
    }
}

impl Engine {
    /// Fires every timer due now; returns how many fired. Each is claimed with a lease and
    /// completed once its action succeeded; a timer whose action failed (or whose node died)
    /// fires again when the lease runs out.
    pub async fn fire_due_timers(&self) -> Result<usize> {
        let state = &self.inner.state;
        let timers = state
            .claim_due_timers(now_ms(), 512, TIMER_LEASE_MS)
            .await?;
        let n = timers.len();
        for timer in timers {
            let outcome = match &timer.action {
                TimerAction::EnqueueStep(msg) => {
                    let payload = Bytes::from(serde_json::to_vec(msg)?);
                    let broker = &self.inner.broker;
                    broker.publish(TOPIC_STEPS, &msg.run_id, payload).await
                }
                TimerAction::CronTick(tick) => self.fire_cron_tick(tick).await,
                TimerAction::Republish(m) => {
                    let payload = Bytes::from(m.payload.clone().into_bytes());
                    self.inner.broker.publish(&m.topic, &m.key, payload).await
                }
                TimerAction::PauseExpires(p) => self.pause_expired(p).await,
                TimerAction::Sweep { .. } => {
                    // A failed pass is not fired again: the next one, `sweep_every` on, goes
                    // on from where it stopped (other nodes make sure it exists too).
                    if let Err(e) = self.sweep().await {
                        self.inner.metrics.engine_error(Role::Scheduler);
                        warn!(error = %e, "sweeper: the pass failed; the next goes on");
                    }
                    self.schedule_sweep().await
                }
            };
            match outcome {
                Ok(()) => {
                    state.complete_timer(&timer.id).await?;
                    self.inner.metrics.timer_fired();
                }
                Err(e) => {
                    self.inner.metrics.engine_error(Role::Scheduler);
                    warn!(error = %e, timer = %timer.id, "scheduler: timer action failed; it fires again after its lease");
                }
            }
        }
        Ok(n)
    }

    /// Makes sure each live cron trigger's next tick has a timer; returns how many triggers
    /// there are. Idempotent: a tick's timer id names it, so nodes doing this at once schedule
    /// it once.
    pub async fn schedule_cron_ticks(&self) -> Result<usize> {
        let now = now_ms();
        let mut n = 0;
        for function in self.inner.functions.list() {
            for cron in &function.crons {
                n += 1;
                if let Some(due) = cron.next_after(now) {
                    let timer = cron_timer(&function.id, cron.source(), due);
                    self.inner.state.schedule_timer(&timer).await?;
                }
            }
        }
        Ok(n)
    }

    /// Starts the run of one cron tick (its event stored like any other), then schedules the
    /// next tick. A tick whose function or schedule is no longer live is dropped. A tick that
    /// fires late (every scheduler was down) fires once; the ticks missed meanwhile do not.
    async fn fire_cron_tick(&self, tick: &CronTick) -> Result<()> {
        let Some(function) = self.inner.functions.live(&tick.function_id) else {
            return Ok(());
        };
        let Some(cron) = function.crons.iter().find(|c| c.source() == tick.cron) else {
            return Ok(());
        };
        let event = cron_event(tick);
        self.inner.events.append(&[Arc::new(event.clone())]).await?;
        self.start_run(&function, &event).await?;
        if let Some(next) = cron.next_after(tick.due_ms.max(now_ms())) {
            let timer = cron_timer(&function.id, &tick.cron, next);
            self.inner.state.schedule_timer(&timer).await?;
        }
        Ok(())
    }
}
