//! Where the adapter records that a finished task was answered (its result written, its
//! follow-up tasks sent), so that one node sends a task's follow-ups, once, and the sweep
//! finds the tasks still owed: those finished on a node that died before answering them, on a
//! node without the adapter, or missed by a writer that fell behind.
//!
//! - With the Redis result backend the result itself says a task was answered, and the
//!   follow-ups' claim and sent record live beside it (see [`RedisResults::claim_follow_ups`]).
//! - Otherwise (`results=rpc`, `results=none`) a blob in weir's state store does both: claimed
//!   while a node answers the task (it lapses if that node dies), then kept as the record that
//!   it was answered, for as long as the sweep looks back.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use weir_core::Result;
use weir_core::state::StateStore;

use crate::finished::SWEEP_WINDOW;
use crate::results::RedisResults;

/// How long a node's claim on answering a task holds (it lapses if the node dies).
pub const CLAIM_HOLDS: Duration = Duration::from_secs(60);

/// How long the record that a task was answered is kept in the state store: longer than the
/// sweep looks back.
const ANSWERED_KEPT: Duration = Duration::from_secs(SWEEP_WINDOW.as_secs() * 2);

/// State-store lookups a sweep makes at once.
const LOOKUPS: usize = 32;

/// The record of answered tasks.
#[derive(Clone)]
pub enum Ledger {
    /// The Redis result backend.
    Redis(RedisResults),
    /// Blobs in weir's state store.
    State(Arc<dyn StateStore>),
}

impl Ledger {
    /// Whether a node must claim `task_id` before answering it: with the Redis backend only
    /// when it has follow-ups (a result written twice is harmless); otherwise when it has
    /// follow-ups or the sweep answers it (the record is made by the claim).
    pub fn must_claim(&self, has_follow_ups: bool, from_sweep: bool) -> bool {
        match self {
            Ledger::Redis(_) => has_follow_ups,
            Ledger::State(_) => has_follow_ups || from_sweep,
        }
    }

    /// Claims the answering of `task_id` for [`CLAIM_HOLDS`]: false when it was answered
    /// already or another node is answering it.
    pub async fn claim(&self, task_id: &str) -> Result<bool> {
        match self {
            Ledger::Redis(redis) => redis.claim_follow_ups(task_id, CLAIM_HOLDS).await,
            Ledger::State(state) => {
                state
                    .claim_blob(
                        &answer_blob_id(task_id),
                        bytes::Bytes::from_static(b"claimed"),
                        CLAIM_HOLDS,
                    )
                    .await
            }
        }
    }

    /// Records that `task_id` was answered: with the Redis backend, that its follow-ups were
    /// sent (the result is written apart); otherwise, that it needs nothing more.
    pub async fn answered(&self, task_id: &str, follow_ups_sent: bool) -> Result<()> {
        match self {
            Ledger::Redis(redis) if follow_ups_sent => redis.follow_ups_sent(task_id).await,
            Ledger::Redis(_) => Ok(()),
            Ledger::State(state) => {
                state
                    .put_blob(
                        &answer_blob_id(task_id),
                        bytes::Bytes::from_static(b"answered"),
                        ANSWERED_KEPT,
                    )
                    .await
            }
        }
    }

    /// For each of `task_ids`, whether it was answered or a node is answering it: with the
    /// Redis backend, whether its final result is stored (one round trip); otherwise whether
    /// its state-store record exists.
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

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ledger::Redis(redis) => f.debug_tuple("Redis").field(redis).finish(),
            Ledger::State(_) => f.write_str("State"),
        }
    }
}

/// The state-store blob that records a task's answer.
fn answer_blob_id(task_id: &str) -> String {
    format!("celery-answer:{task_id}")
}
