//! Run retention: a loop (beside the scheduler) that deletes runs which finished longer than
//! [`EngineConfig::run_retention`](super::EngineConfig::run_retention) ago, so a store holds
//! the runs of the retention window and not every run ever made.

use crate::metrics::Role;
use std::time::Duration;

use tracing::{info, warn};

use super::{Engine, StopSignal, stopped};
use crate::event::now_ms;

/// Runs deleted per store call; a sweep calls again until a call deletes fewer.
const SWEEP_BATCH: usize = 500;

/// How often the loop sweeps: a tenth of the retention, between 100 ms and a minute, so a run
/// is deleted within the retention plus a tenth of it (plus a minute at most).
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

pub(super) async fn run_loop(engine: Engine, mut stop: StopSignal) {
    let Some(retention) = engine.inner.config.run_retention else {
        return;
    };
    let every = sweep_interval(retention);
    loop {
        if *stop.borrow() {
            return;
        }
        let swept = tokio::select! {
            // Stopping mid-sweep is safe: each store call is idempotent.
            _ = stopped(&mut stop) => return,
            swept = engine.delete_expired_runs(retention) => swept,
        };
        match swept {
            Ok(0) => {}
            Ok(n) => info!(
                deleted = n,
                "retention: deleted runs that ended over {retention:?} ago"
            ),
            Err(e) => {
                engine.inner.metrics.engine_error(Role::Scheduler);
                warn!(error = %e, "retention: deleting finished runs failed; retrying");
            }
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

impl Engine {
    /// Deletes every run that ended more than `retention` ago (in batches); answers how many
    /// it deleted. Several nodes may do it at once.
    pub async fn delete_expired_runs(&self, retention: Duration) -> crate::Result<usize> {
        let horizon = now_ms().saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
        let mut total = 0;
        loop {
            let deleted = self
                .inner
                .state
                .delete_finished_runs(horizon, SWEEP_BATCH)
                .await?;
            total += deleted;
            self.inner.metrics.runs_deleted(deleted);
            if deleted < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_every_tenth_of_the_retention_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(sweep_interval(s(7 * 86_400)), s(60), "a week: every minute");
        assert_eq!(sweep_interval(s(100)), s(10));
        assert_eq!(
            sweep_interval(Duration::from_millis(200)),
            Duration::from_millis(100),
            "never busier than every 100 ms"
        );
    }
}
