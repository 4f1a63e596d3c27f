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
    /// Gives up on `delivery` from `topic` (its failures counted under `failure_key`) when the
    /// engine has now failed on it with `error` `dead_letter_after` times: fails its run and
    /// records the dead letter. True when it did (the caller acknowledges the message).
    ///
    /// Only errors that are the message's own count: never a retryable one (the store or broker
    /// away), `NotFound` (a function version another node may have loaded) or `Config` (a
    /// credential or permission the operator must fix: it would fail every message at once),
    /// which keep the message until the cause is fixed. Failures are counted in the state
    /// store, not by the broker's redelivery count, which also counts handbacks (a busy lease,
    /// an outage) that are no failure of the message.
    pub(crate) async fn give_up_if_due(
        &self,
        topic: &str,
        failure_key: &str,
        delivery: &Delivery,
        error: &Error,
        owner: Owner<'_>,
    ) -> bool {
        if error.is_retryable() || matches!(error.kind(), ErrorKind::NotFound | ErrorKind::Config) {
            return false;
        }
        let limit = self
            .inner
            .config
            .dead_letter_after
            .clamp(1, MAX_DEAD_LETTER_AFTER);
        // Counted for long enough to see `limit` failures `stuck_message_delay` apart.
        let memory = self
            .inner
            .config
            .stuck_message_delay
            .saturating_mul((limit + 1) * 2)
            .max(Duration::from_secs(3600));
        let failures = match self
            .inner
            .state
            .count_failure(&format!("{topic}:{failure_key}"), memory)
            .await
        {
            Ok(n) => n,
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
            &delivery.key,
            &delivery.payload,
            error.to_string(),
            failures,
            owner,
        )
        .await
    }

    /// Records `payload` (from `topic`, key `key`) as a dead letter for `reason` after
    /// `failures` failures, then fails the run of `owner` (if any) naming it; true when both
    /// were done. When either cannot be, the message is kept (a letter recorded is deleted
    /// again, as far as the store lets it).
    pub(crate) async fn give_up(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        reason: String,
        failures: u32,
        owner: Owner<'_>,
    ) -> bool {
        let state = &self.inner.state;
        let mut dead = DeadLetter::new(topic, key, payload, reason, failures);
        dead.run_id = owner.run_id.map(str::to_owned);
        dead.event_id = owner.event_id.map(str::to_owned);
        if let Err(e) = state.put_dead_letter(&dead).await {
            warn!(error = %e, topic, "cannot record a dead letter; the message is kept");
            return false;
        }
        if let Some(run_id) = owner.run_id {
            let detail = format!(
                "{} {}: the engine gave up on a {topic} message after {failures} failure(s): {}",
                DEAD_LETTER_MARK, dead.id, dead.reason
            );
            match state.fail_run(run_id, &detail, now_ms()).await {
                Ok(true) => self.announce_failed(run_id, None).await,
                Ok(false) => {}
                // A message naming a run that does not exist has no run to fail.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(error = %e, run = run_id, "cannot fail the run of a message given up on; the message is kept");
                    let _ = state.delete_dead_letter(&dead.id).await;
                    return false;
                }
            }
        }
        self.inner.metrics.dead_lettered(topic);
        error!(dead_letter = %dead.id, topic, run = ?dead.run_id, failures, reason = %dead.reason, "gave up on a message: it is a dead letter now (weir dead show ID; weir dead retry ID once the cause is fixed)");
        true
    }

    /// Tells what a run failed outside the executor (a dead letter, the sweeper) to those who
    /// listen for finished runs (an adapter answering its client, the run metrics), and
    /// releases its function's cancel rules: as when a run ends by itself. `function_id` when
    /// known, else read from the store (a run whose state does not decode stays unannounced).
    pub(crate) async fn announce_failed(&self, run_id: &str, function_id: Option<&str>) {
        // A run whose state does not decode reads as an error here: left unannounced.
        let stored = self.inner.state.get_run_state(run_id).await.ok().flatten();
        let Some(function_id) = function_id
            .map(str::to_owned)
            .or_else(|| stored.as_ref().map(|r| r.function_id.clone()))
        else {
            return;
        };
        if let Some(m) = self.inner.metrics.function(&function_id) {
            m.run_finished(crate::run::RunStatus::Failed);
        }
        if let Some(stored) = &stored {
            self.tally_run(&stored.function_id, &stored.function_version, true);
        }
        if let Some(stored) = &stored
            && let Ok(Some(function)) = self
                .function_version(&stored.function_id, &stored.function_version)
                .await
            && let Err(e) = self.release_cancel_rules(&function, run_id).await
        {
            warn!(error = %e, run = run_id, "cannot release the cancel rules of a failed run");
        }
        let _ = self.inner.finished.send(super::RunFinished {
            run_id: run_id.to_owned(),
            function_id,
            status: crate::run::RunStatus::Failed,
        });
    }

    /// Sends the message of dead letter `id` again and deletes the dead letter; returns it. The
    /// run the dead letter failed is reopened first, and every step that can move it on is
    /// enqueued again (work the run did while it was failed was dropped), as the sweeper does.
    /// If the run was failed by something else since, nothing is sent: `AlreadyExists`. If the
    /// engine fails on the message again, it is given up on at that failure: fix the cause
    /// first.
    pub async fn retry_dead_letter(&self, id: &str) -> Result<DeadLetter> {
        let state = &self.inner.state;
        let dead = state
            .get_dead_letter(id)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no dead letter {id:?}")))?;
        let payload = dead.payload_bytes()?;
        let mut more = Vec::new();
        if let Some(run_id) = &dead.run_id {
            let detail = format!("{DEAD_LETTER_MARK} {id} retried");
            let failed_by = format!("{DEAD_LETTER_MARK} {id}:");
            match state
                .reopen_run(run_id, &failed_by, &detail, now_ms())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    let status = state.get_run_outline(run_id).await?.and_then(|o| o.status);
                    if status != Some(crate::run::RunStatus::Running) {
                        return Err(Error::new(
                            ErrorKind::AlreadyExists,
                            format!(
                                "run {run_id} was not failed by dead letter {id} (it is {}): nothing was sent",
                                status.map_or("unknown", |s| s.as_str())
                            ),
                        ));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            // Whatever can move the running run on, as the sweeper would send it (also when an
            // earlier retry reopened it and then failed to send); a run that cannot be read
            // gets the letter's message only.
            match state.get_run(run_id).await {
                Ok(Some(run)) if run.status == crate::run::RunStatus::Running => {
                    more = super::sweeper::frontier_messages(&run);
                }
                Ok(_) => {}
                Err(e) if e.is_retryable() => return Err(e),
                Err(_) => {}
            }
        }
        let broker = &self.inner.broker;
        broker
            .publish(&dead.topic, &dead.key, bytes::Bytes::from(payload))
            .await?;
        for m in &more {
            broker
                .publish(
                    crate::broker::TOPIC_STEPS,
                    &m.run_id,
                    bytes::Bytes::from(serde_json::to_vec(m)?),
                )
                .await?;
        }
        state.delete_dead_letter(id).await?;
        Ok(dead)
    }
}

/// How a timeline entry names a dead letter: `dead letter <id>`.
const DEAD_LETTER_MARK: &str = "dead letter";

/// The most `dead_letter_after` can be.
pub const MAX_DEAD_LETTER_AFTER: u32 = 1000;
