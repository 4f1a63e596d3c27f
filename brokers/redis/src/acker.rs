//! Acknowledgement of one delivery: `XACK`, requeue on nack or drop, delayed nacks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::{debug, warn};
use weir_core::broker::Acker;
use weir_core::{Error, Result};

use crate::MAX_NATIVE_DELAY;
use crate::error::redis_error;
use crate::scripts::{DELAY, REQUEUE};
use crate::stream::{Entry, Sel, delayed_member};
use crate::subscription::Shared;

/// Delayed nacks up to this long also get an in-process timer that moves them promptly when
/// due; longer ones (and those of a process that died) are moved by the periodic promotion
/// every subscriber of the group runs (at most `block` late).
const LOCAL_TIMER_MAX: Duration = Duration::from_secs(60);

/// Puts a pending entry back for its group now: a new entry on the retry stream carrying
/// `redeliveries`, the original acked (and deleted when it was on the retry stream). Does
/// nothing when the entry is no longer pending for this consumer (reclaimed by another).
pub(crate) async fn requeue(
    shared: &Shared,
    sel: Sel,
    id: &str,
    key: &str,
    payload: &[u8],
    redeliveries: u32,
) -> Result<bool> {
    let mut conn = shared.conn.clone();
    let mut inv = REQUEUE.prepare_invoke();
    inv.key(shared.stream(sel))
        .key(&shared.keys.retry)
        .arg(&shared.group)
        .arg(&shared.consumer)
        .arg(id)
        .arg(key)
        .arg(payload)
        .arg(redeliveries)
        .arg(if sel == Sel::Retry { "1" } else { "0" });
    let done: i64 = inv
        .invoke_async(&mut conn)
        .await
        .map_err(|e| redis_error("nack", e))?;
    Ok(done == 1)
}

/// The handle of one delivery.
pub(crate) struct RedisAcker {
    shared: Arc<Shared>,
    sel: Sel,
    id: String,
    key: String,
    payload: Bytes,
    redeliveries: u32,
    /// Acked or nacked (or being so): dropping it then requeues nothing.
    done: bool,
}

impl RedisAcker {
    pub(crate) fn new(shared: Arc<Shared>, entry: &Entry) -> Self {
        RedisAcker {
            shared,
            sel: entry.sel,
            id: entry.id.clone(),
            key: entry.key.clone(),
            payload: entry.payload.clone(),
            redeliveries: entry.redeliveries,
            done: false,
        }
    }
}

#[async_trait]
impl Acker for RedisAcker {
    /// `XACK` (plus `XDEL` for an entry of the retry stream, which only this group reads;
    /// entries of the topic stream are removed by trimming once every group acked them), sent
    /// with the other acks of the subscription made meanwhile (see [`crate::ack_batch`]).
    async fn ack(mut self: Box<Self>) -> Result<()> {
        // From here on a drop (a cancelled ack) requeues nothing: the ack is sent anyway, and
        // if it does not reach Redis the entry is reclaimed after the lease (the heartbeat
        // stops renewing it).
        self.done = true;
        self.shared.acks.ack(self.sel, self.id.clone()).await
    }

    /// Without a delay: `REQUEUE` (new entry on the group's retry stream, original acked), so
    /// any consumer of the group gets it at once. With one: `DELAY` (the entry goes to the
    /// group's delayed sorted set, scored by its due time on the Redis clock, original acked).
    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<()> {
        self.done = true;
        let r = self.redeliveries.saturating_add(1);
        let Some(delay) = delay.filter(|d| !d.is_zero()) else {
            requeue(
                &self.shared,
                self.sel,
                &self.id,
                &self.key,
                &self.payload,
                r,
            )
            .await
            .map_err(|e| e.with_context("id", &self.id))?;
            return Ok(());
        };
        let clamped = delay > MAX_NATIVE_DELAY;
        let delay = delay.min(MAX_NATIVE_DELAY);
        let s = self.shared.clone();
        let mut conn = s.conn.clone();
        let member = delayed_member(self.sel, &self.id, &self.key, &self.payload, r);
        let mut inv = DELAY.prepare_invoke();
        inv.key(s.stream(self.sel))
            .key(&s.keys.delayed)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(&self.id)
            .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            .arg(member)
            .arg(if self.sel == Sel::Retry { "1" } else { "0" });
        let scheduled: i64 = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_error("nack with delay", e).with_context("id", &self.id))?;
        if scheduled == 1
            && delay <= LOCAL_TIMER_MAX
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                let mut conn = s.conn.clone();
                if let Err(e) = s.promote(&mut conn).await {
                    debug!(error = %e, "redis broker: moving a due delayed message failed; a subscriber retries");
                }
            });
        }
        if clamped {
            return Err(Error::invalid(
                "nack delay exceeds the Redis broker's max_native_delay; the message was scheduled at the maximum",
            )
            .with_context("max_native_delay_s", MAX_NATIVE_DELAY.as_secs()));
        }
        Ok(())
    }
}

impl Drop for RedisAcker {
    fn drop(&mut self) {
        if !self.done {
            // Dropped without ack or nack: redeliver it at once (as a nack) when a runtime is
            // there to do it; otherwise it is reclaimed after the lease.
            self.done = true;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let shared = self.shared.clone();
                let (sel, r) = (self.sel, self.redeliveries.saturating_add(1));
                let (id, key) = (std::mem::take(&mut self.id), std::mem::take(&mut self.key));
                let payload = std::mem::take(&mut self.payload);
                runtime.spawn(async move {
                    if let Err(e) = requeue(&shared, sel, &id, &key, &payload, r).await {
                        warn!(error = %e, id = %id, "redis broker: requeueing a dropped delivery failed; it is redelivered after the lease");
                    }
                    shared.release(sel, &id);
                });
                return;
            }
        }
        self.shared.release(self.sel, &self.id);
    }
}
