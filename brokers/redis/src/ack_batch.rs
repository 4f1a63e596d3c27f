//! The acks of one subscription, sent in few commands: acks made while an `XACK` is in flight
//! go out together in the next one (one `XACK` naming every id, up to [`MAX_BATCH`]), so a busy
//! consumer costs Redis one command per batch rather than one per message. An ack still
//! returns only once Redis has it; alone, it is sent at once.

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
        let result = send(&mut target, &batch).await;
        for pending in batch.drain(..) {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(copy(e)),
            };
            // The acker may have stopped waiting (its ack cancelled): the ack stands.
            let _ = pending.done.send(answer);
        }
    }
}

/// One command for acks of the topic stream; acks of the retry stream go with the `XDEL` of
/// their entries in one transaction (an acked retry entry nobody deletes would stay forever).
async fn send(target: &mut AckTarget, batch: &[Pending]) -> Result<()> {
    let ids = |sel: Sel| batch.iter().filter(move |p| p.sel == sel).map(|p| &p.id);
    let (main, retry) = (ids(Sel::Main).count(), ids(Sel::Retry).count());
    let mut pipe = redis::pipe();
    if retry > 0 {
        pipe.atomic();
    }
    if main > 0 {
        pipe.cmd("XACK")
            .arg(&target.stream)
            .arg(&target.group)
            .arg(ids(Sel::Main).collect::<Vec<_>>())
            .ignore();
    }
    if retry > 0 {
        let retry_ids: Vec<_> = ids(Sel::Retry).collect();
        pipe.cmd("XACK")
            .arg(&target.retry)
            .arg(&target.group)
            .arg(&retry_ids)
            .ignore()
            .cmd("XDEL")
            .arg(&target.retry)
            .arg(&retry_ids)
            .ignore();
    }
    pipe.query_async::<()>(&mut target.conn)
        .await
        .map_err(|e| redis_error("ack", e).with_context("messages", batch.len()))
}

/// The same error for every ack of a failed batch.
fn copy(e: &Error) -> Error {
    let copy = Error::new(e.kind(), e.message().to_owned());
    let copy = if e.is_retryable() {
        copy.retryable()
    } else {
        copy.permanent()
    };
    e.context()
        .iter()
        .fold(copy, |c, (k, v)| c.with_context(k, v))
}
