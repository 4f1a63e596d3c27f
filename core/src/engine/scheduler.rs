//! Scheduler: moves due timers from the state store onto the `steps` topic.

use std::time::Duration;

use bytes::Bytes;
use tracing::warn;

use super::Engine;
use crate::broker::TOPIC_STEPS;
use crate::error::Result;
use crate::event::now_ms;
use crate::state::TimerAction;

pub(super) async fn run_loop(engine: Engine) {
    let tick = engine.inner.config.scheduler_tick;
    loop {
        match engine.fire_due_timers().await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "scheduler: firing timers failed; retrying"),
        }
        tokio::time::sleep(tick).await;
    }
}

impl Engine {
    /// Fires every timer due now; returns how many fired. A timer whose action fails is
    /// scheduled again a second later.
    pub async fn fire_due_timers(&self) -> Result<usize> {
        let timers = self.inner.state.claim_due_timers(now_ms(), 512).await?;
        let n = timers.len();
        for timer in timers {
            let outcome = match &timer.action {
                TimerAction::EnqueueStep(msg) => {
                    let payload = Bytes::from(serde_json::to_vec(msg)?);
                    self.inner
                        .broker
                        .publish(TOPIC_STEPS, &msg.run_id, payload)
                        .await
                }
            };
            if let Err(e) = outcome {
                warn!(error = %e, timer = %timer.id, "scheduler: timer action failed; rescheduling");
                let mut again = timer.clone();
                again.due_ms = now_ms() + Duration::from_secs(1).as_millis() as i64;
                self.inner.state.schedule_timer(&again).await?;
            }
        }
        Ok(n)
    }
}
