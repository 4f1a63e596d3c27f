//! Giving up on a message: a dead letter, its run failed (see `crate::dead`), and what the
//! API does with dead letters (retry, drop).

use std::time::Duration;

use tracing::{error, warn};

use super::Engine;
use crate::broker::Delivery;
use crate::dead::DeadLetter;
use crate::error::{Error, ErrorKind, Result};
use crate::event::now_ms;

/// What a message the engine gives up on belongs to.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Owner<'a> {
    /// Its run, failed when the message is given up on.
    pub(crate) run_id: Option<&'a str>,
    /// Its event.
    pub(crate) event_id: Option<&'a str>,
}

impl Engine {
    /// Gives up on `delivery` from `topic` (its failures counted under `key`) when the engine
    /// has now failed on it with `error` `dead_letter_after` times: records the dead letter
    /// and fails its run. True when it did (the caller acknowledges the message). A retryable
    /// error (the store or broker away: not the message's fault) or `NotFound` (a function
    /// version another node may have loaded) never gives up.
    pub(crate) async fn give_up_if_due(
        &self,
        topic: &str,
        key: &str,
        delivery: &Delivery,
        error: &Error,
        owner: Owner<'_>,
    ) -> bool {
        if error.is_retryable() || error.kind() == ErrorKind::NotFound {
            return false;
        }
        let limit = self.inner.config.dead_letter_after.max(1);
        // Counted for long enough to see `limit` failures `stuck_message_delay` apart.
        let memory = (self.inner.config.stuck_message_delay * (limit + 1) * 2)
            .max(Duration::from_secs(3600));
        let failures = match self
            .inner
            .state
            .count_failure(&format!("{topic}:{key}"), memory)
            .await
        {
            Ok(n) => n.max(delivery.redeliveries.saturating_add(1)),
            Err(e) => {
                warn!(error = %e, topic, "cannot count a message's failures; it is kept");
                return false;
            }
        };
        if failures < limit {
            return false;
        }
        self.give_up(
            topic,
            key,
            &delivery.payload,
            error.to_string(),
            failures,
            owner,
        )
        .await
    }

    /// Records `payload` (from `topic`, key `key`) as a dead letter for `reason` after
    /// `failures` failures, and fails its run; true when the dead letter was recorded (if it
    /// cannot be, the message is kept).
    pub(crate) async fn give_up(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        reason: String,
        failures: u32,
        owner: Owner<'_>,
    ) -> bool {
        let mut dead = DeadLetter::new(topic, key, payload, reason, failures);
        dead.run_id = owner.run_id.map(str::to_owned);
        dead.event_id = owner.event_id.map(str::to_owned);
        if let Err(e) = self.inner.state.put_dead_letter(&dead).await {
            warn!(error = %e, topic, "cannot record a dead letter; the message is kept");
            return false;
        }
        self.inner.metrics.dead_lettered(topic);
        error!(dead_letter = %dead.id, topic, run = ?dead.run_id, failures, reason = %dead.reason, "gave up on a message: it is a dead letter now (weir dead show ID; weir dead retry ID once the cause is fixed)");
        if let Some(run_id) = owner.run_id {
            let detail = format!(
                "dead letter {}: the engine gave up on a {topic} message after {failures} failure(s): {}",
                dead.id, dead.reason
            );
            match self.inner.state.fail_run(run_id, &detail, now_ms()).await {
                Ok(_) => {}
                // A message naming a run that does not exist has no run to fail.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(error = %e, run = run_id, dead_letter = %dead.id, "cannot fail the run of a dead letter");
                }
            }
        }
        true
    }

    /// Sends the message of dead letter `id` again (reopening its run when the dead letter
    /// failed it) and deletes the dead letter; returns it. If the engine fails on the message
    /// again, it is given up on at that failure: fix the cause first.
    pub async fn retry_dead_letter(&self, id: &str) -> Result<DeadLetter> {
        let state = &self.inner.state;
        let dead = state
            .get_dead_letter(id)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no dead letter {id:?}")))?;
        let payload = dead.payload_bytes()?;
        if let Some(run_id) = &dead.run_id {
            let detail = format!("dead letter {id} retried");
            let failed_by = format!("dead letter {id}:");
            match state
                .reopen_run(run_id, &failed_by, &detail, now_ms())
                .await
            {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.inner
            .broker
            .publish(&dead.topic, &dead.key, bytes::Bytes::from(payload))
            .await?;
        state.delete_dead_letter(id).await?;
        Ok(dead)
    }
}
