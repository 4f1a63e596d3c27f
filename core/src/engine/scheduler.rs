//! Scheduler: moves due timers from the state store onto the `steps` topic.

use bytes::Bytes;
use tracing::warn;

use super::{Engine, StopSignal, stopped};
use crate::broker::TOPIC_STEPS;
use crate::error::Result;
use crate::event::now_ms;
use crate::state::TimerAction;

/// How long a claimed timer is reserved for its claimer before another node may fire it.
const TIMER_LEASE_MS: i64 = 10_000;

pub(super) async fn run_loop(engine: Engine, mut stop: StopSignal) {
    let tick = engine.inner.config.scheduler_tick;
    loop {
        if *stop.borrow() {
            return;
        }
        match engine.fire_due_timers().await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "scheduler: firing timers failed; retrying"),
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(tick) => {}
        }
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
            };
            match outcome {
                Ok(()) => state.complete_timer(&timer.id).await?,
                Err(e) => {
                    warn!(error = %e, timer = %timer.id, "scheduler: timer action failed; it fires again after its lease");
                }
            }
        }
        Ok(n)
    }
}
