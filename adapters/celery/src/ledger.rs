//! Where the adapter records that a finished task was answered (its result written, its
//! follow-up tasks sent), so that one node sends a task's follow-ups, once, and the sweep
//! finds the tasks still owed: those finished on a node that died before answering them, on a
//! node without the adapter, or missed by a writer that fell behind.
//!
//! - With the Redis result backend the result itself says a task was answered, and the
//!   follow-ups' claim and sent record live beside it (see [`RedisResults::claim_follow_ups`]).
//! - Otherwise (`results=rpc`, `results=none`) two blobs in weir's state store: the task's
//!   answer blob, claimed while a node answers it (the claim lapses if that node dies) and
//!   then kept as the record that it was answered, for as long as the sweep looks back; and a
//!   record that its follow-ups were sent, so that a node that dies after sending them but
//!   before the reply has them sent once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use weir_core::Result;
use weir_core::state::StateStore;

use crate::finished::SWEEP_WINDOW;
use crate::results::{Claim, RedisResults};

/// How long a node's claim on answering a task holds: it lapses if the node dies, and the
/// sweep then answers the task. Answering takes far less, unless RabbitMQ stalls the
/// follow-ups' publishes for minutes; then a second node may send them again.
pub const CLAIM_HOLDS: Duration = Duration::from_secs(120);

/// How long the records of a task's answer are kept in the state store: as long as the sweep
/// looks back, and a minute more.
const ANSWERED_KEPT: Duration = Duration::from_secs(SWEEP_WINDOW.as_secs() + 60);

/// State-store lookups a sweep makes at once.
const LOOKUPS: usize = 32;

/// What the answer blob holds once the task was answered (a claim holds `claimed`).
const ANSWERED: &[u8] = b"answered";

/// The record of answered tasks.
#[derive(Clone)]
pub enum Ledger {
    /// The Redis result backend.
    Redis(RedisResults),
    /// Blobs in weir's state store.
    State(Arc<dyn StateStore>),
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ledger::Redis(redis) => f.debug_tuple("Redis").field(redis).finish(),
            Ledger::State(_) => f.write_str("State"),
        }
    }
}

impl Ledger {
    /// Whether a node must claim a task before answering it: with the Redis backend when it
    /// has follow-ups (they go once; a result written twice is harmless); with the
    /// state-store ledger always (the claim is the record the sweep looks for, so a writer
    /// that fell behind and a sweep do not both reply).
    pub fn must_claim(&self, has_follow_ups: bool) -> bool {
        match self {
            Ledger::Redis(_) => has_follow_ups,
            Ledger::State(_) => true,
        }
    }

    /// Claims the answering of `task_id` for [`CLAIM_HOLDS`].
    pub async fn claim(&self, task_id: &str, has_follow_ups: bool) -> Result<Claim> {
        match self {
            Ledger::Redis(redis) => redis.claim_follow_ups(task_id, CLAIM_HOLDS).await,
            Ledger::State(state) => {
                let won = state
                    .claim_blob(
                        &answer_blob_id(task_id),
                        bytes::Bytes::from_static(b"claimed"),
                        CLAIM_HOLDS,
                    )
                    .await?;
                if !won {
                    let blob = state.get_blob(&answer_blob_id(task_id)).await?;
                    return Ok(match blob.as_deref() {
                        Some(ANSWERED) => Claim::Answered,
                        _ => Claim::Held,
                    });
                }
                let follow_ups_sent =
                    has_follow_ups && state.get_blob(&sent_blob_id(task_id)).await?.is_some();
                Ok(Claim::Won { follow_ups_sent })
            }
        }
    }

    /// Records that `task_id`'s follow-ups were sent (kept as long as the answer's record).
    pub async fn follow_ups_sent(&self, task_id: &str) -> Result<()> {
        match self {
            Ledger::Redis(redis) => redis.follow_ups_sent(task_id).await,
            Ledger::State(state) => {
                state
                    .put_blob(
                        &sent_blob_id(task_id),
                        bytes::Bytes::from_static(b"sent"),
                        ANSWERED_KEPT,
                    )
                    .await
            }
        }
    }

    /// Records that `task_id` was answered, with the state-store ledger (with the Redis
    /// backend, the result is the record).
    pub async fn answered(&self, task_id: &str) -> Result<()> {
        match self {
            Ledger::Redis(_) => Ok(()),
            Ledger::State(state) => {
                state
                    .put_blob(
                        &answer_blob_id(task_id),
                        bytes::Bytes::from_static(ANSWERED),
                        ANSWERED_KEPT,
                    )
                    .await
            }
        }
    }

    /// For each of `task_ids`, whether it was answered or a node is answering it: with the
    /// Redis backend, whether its final result is stored (one round trip); otherwise whether
    /// its answer blob exists.
    pub async fn settled(&self, task_ids: &[&str]) -> Result<Vec<bool>> {
        match self {
            Ledger::Redis(redis) => redis.finished(task_ids).await,
            Ledger::State(state) => {
                let blobs: Vec<String> = task_ids.iter().map(|id| answer_blob_id(id)).collect();
                let lookups = blobs.into_iter().map(|blob| {
                    let state = state.clone();
                    async move { state.get_blob(&blob).await.map(|b| b.is_some()) }
                });
                futures::stream::iter(lookups)
                    .buffered(LOOKUPS)
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }
}

/// The state-store blob that claims, then records, a task's answer.
fn answer_blob_id(task_id: &str) -> String {
    format!("celery-answer:{task_id}")
}

/// The state-store blob that records that a task's follow-ups were sent.
fn sent_blob_id(task_id: &str) -> String {
    format!("celery-sent:{task_id}")
}
