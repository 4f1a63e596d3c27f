//! The acks of one subscription, sent in few commands: acks made while an `XACK` is in flight
//! go out together in the next one (one `XACK` naming every id, up to [`MAX_BATCH`]), so a busy
//! consumer costs Redis one command per batch rather than one per message. An ack still
//! returns only once Redis has it; alone, it is sent at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::RedisError;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use weir_core::{Error, Result};

use crate::error::redis_error;
use crate::stream::Sel;

/// The most ids one batch names.
pub(crate) const MAX_BATCH: usize = 512;

/// One ack waiting to be sent.
struct Pending {
    sel: Sel,
    id: String,
    done: oneshot::Sender<Result<()>>,
}

/// Sends a subscription's acks (a task of its own; it ends when the batcher is dropped).
pub(crate) struct AckBatcher {
    tx: mpsc::UnboundedSender<Pending>,
}

/// Where a batcher sends its acks.
pub(crate) struct AckTarget {
    pub conn: ConnectionManager,
    pub stream: String,
    pub retry: String,
    pub group: String,
    /// Counts the ack commands sent (the broker's [`crate::RedisBroker::ack_commands`]).
    pub sent: Arc<AtomicU64>,
}

impl AckBatcher {
    /// Starts the batcher's task on the current tokio runtime.
    pub(crate) fn start(target: AckTarget) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, target));
        AckBatcher { tx }
    }

    /// Acks `id` of stream `sel` (and deletes it, for the retry stream, which only this group
    /// reads); returns once Redis answered the batch it went out in.
    pub(crate) async fn ack(&self, sel: Sel, id: String) -> Result<()> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Pending { sel, id, done })
            .map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> Error {
    Error::unavailable("redis broker: the subscription's ack sender stopped")
}

async fn run(mut rx: mpsc::UnboundedReceiver<Pending>, mut target: AckTarget) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let main = send(&mut target, &batch, Sel::Main).await;
        let retry = send(&mut target, &batch, Sel::Retry).await;
        for pending in batch.drain(..) {
            let result = match pending.sel {
                Sel::Main => &main,
                Sel::Retry => &retry,
            };
            let answer = result
                .as_ref()
                .map_err(|e| redis_error("ack", e.clone()).with_context("id", &pending.id))
                .copied();
            // The acker may have stopped waiting (its ack cancelled): the ack stands.
            let _ = pending.done.send(answer);
        }
    }
}

/// Sends the acks of `batch` for stream `sel`, if any: one `XACK` for the topic stream; for the
/// retry stream, which only this group reads, the `XACK` and the `XDEL` of the entries in one
/// transaction (an acked retry entry nobody deletes would stay for good). The two streams go
/// in separate commands, so a failure of one does not fail the other's acks.
async fn send(
    target: &mut AckTarget,
    batch: &[Pending],
    sel: Sel,
) -> std::result::Result<(), RedisError> {
    let ids: Vec<&str> = batch
        .iter()
        .filter(|p| p.sel == sel)
        .map(|p| p.id.as_str())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    target.sent.fetch_add(1, Ordering::Relaxed);
    match sel {
        Sel::Main => {
            redis::cmd("XACK")
                .arg(&target.stream)
                .arg(&target.group)
                .arg(&ids)
                .query_async::<()>(&mut target.conn)
                .await
        }
        Sel::Retry => {
            redis::pipe()
                .atomic()
                .cmd("XACK")
                .arg(&target.retry)
                .arg(&target.group)
                .arg(&ids)
                .ignore()
                .cmd("XDEL")
                .arg(&target.retry)
                .arg(&ids)
                .ignore()
                .query_async::<()>(&mut target.conn)
                .await
        }
    }
}
